"""Tests of skdistill.io: MRC/STAR round trips, lazy stacks, safe writes, broken files."""

from __future__ import annotations

import os
import re
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile

from skdistill.io import SubtomogramStack, read_subtomograms, write_subtomograms

N, SIZE, VOXEL_SIZE = 5, 8, 2.5
CLASS_NAMES = ["ribosome", "proteasome 26S", "1"]


@pytest.fixture
def data(seed):
    """Volumes, labels, rotations and shifts of five 8^3 subtomograms."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, SIZE, SIZE, SIZE)).astype(np.float32)
    y = np.array([0, 2, 1, 0, 2])
    rotations = rng.uniform(-180, 180, size=(N, 3))
    shifts = rng.uniform(-2, 2, size=(N, 3))
    return X, y, rotations, shifts


@pytest.fixture
def star(tmp_path, data) -> Path:
    """A written data set with every kind of metadata."""
    X, y, rotations, shifts = data
    return write_subtomograms(
        tmp_path / "out",
        X,
        y,
        voxel_size=VOXEL_SIZE,
        class_names=CLASS_NAMES,
        rotations=rotations,
        shifts=shifts,
    )


def _write_mrc(path: Path, data: np.ndarray, voxel_size: float = VOXEL_SIZE) -> Path:
    with mrcfile.new(path, data.astype(np.float32)) as mrc:
        mrc.voxel_size = voxel_size
    return path


# Round trips ------------------------------------------------------------------------------


def test_round_trip_of_values_and_metadata(star, data):
    X, y, rotations, shifts = data
    stack = SubtomogramStack(star)
    np.testing.assert_array_equal(np.asarray(stack), X)
    np.testing.assert_array_equal(stack.labels, y)
    assert stack.labels.dtype == np.int64
    assert stack.voxel_size == pytest.approx(VOXEL_SIZE)
    assert stack.class_names == CLASS_NAMES
    np.testing.assert_allclose(stack.rotations, rotations, atol=1e-5)
    np.testing.assert_allclose(stack.shifts, shifts, atol=1e-5)
    assert stack.paths == [star.parent / f"subtomo_{i:06d}.mrc" for i in range(1, N + 1)]


def test_written_files_follow_mrc_and_relion_conventions(star, data):
    X, y, rotations, shifts = data
    with mrcfile.open(star.parent / "subtomo_000002.mrc", permissive=False) as mrc:
        assert mrc.header.mode == 2
        assert mrc.voxel_size.x == pytest.approx(VOXEL_SIZE)
        np.testing.assert_array_equal(mrc.data, X[1])

    blocks = starfile.read(star, always_dict=True, parse_as_string=["skdistillClassName"])
    optics, particles, classes = blocks["optics"], blocks["particles"], blocks["skdistill_classes"]
    assert optics.loc[0, "rlnOpticsGroup"] == 1
    assert optics.loc[0, "rlnImagePixelSize"] == pytest.approx(VOXEL_SIZE)
    assert optics.loc[0, "rlnImageSize"] == SIZE
    assert optics.loc[0, "rlnImageDimensionality"] == 3
    assert particles["rlnImageName"].tolist()[0] == "subtomo_000001.mrc"
    assert (particles["rlnOpticsGroup"] == 1).all()
    np.testing.assert_array_equal(particles["rlnClassNumber"], y + 1)
    np.testing.assert_allclose(particles["rlnAngleTilt"], rotations[:, 1], atol=1e-5)
    # RELION's origin re-centres the particle: origin = -shift (x from the last axis), in Å.
    np.testing.assert_allclose(particles["rlnOriginXAngst"], -shifts[:, 2] * VOXEL_SIZE, atol=1e-5)
    np.testing.assert_allclose(particles["rlnOriginZAngst"], -shifts[:, 0] * VOXEL_SIZE, atol=1e-5)
    assert classes["rlnClassNumber"].tolist() == [1, 2, 3]
    assert classes["skdistillClassName"].tolist() == CLASS_NAMES


def test_unlabelled_channel_axis_input(tmp_path, data):
    X = data[0]
    star = write_subtomograms(tmp_path, X[:, np.newaxis], voxel_size=1.0)
    stack = SubtomogramStack(star)
    assert stack.labels is None
    assert stack.class_names is stack.rotations is stack.shifts is None
    X_read, y_read = read_subtomograms(star)
    np.testing.assert_array_equal(X_read, X)
    assert y_read is None


@pytest.mark.parametrize("source", ["star", "directory", "paths", "mrc_only_directory"])
def test_read_subtomograms_sources(star, data, source):
    X, y = data[0], data[1]
    files = sorted(star.parent.glob("*.mrc"))
    if source == "mrc_only_directory":
        star.unlink()
    arg = {"star": star, "directory": star.parent, "paths": [str(f) for f in files]}.get(
        source, star.parent
    )
    X_read, y_read = read_subtomograms(arg)
    assert X_read.dtype == np.float32
    np.testing.assert_array_equal(X_read, X)
    if source in ("star", "directory"):
        assert y_read.dtype == np.int64
        np.testing.assert_array_equal(y_read, y)
    else:
        assert y_read is None


def test_single_mrc_stack_and_single_volume(tmp_path, data):
    X = data[0]
    path = _write_mrc(tmp_path / "stack.mrc", X, voxel_size=3.0)
    stack = SubtomogramStack(path)
    assert stack.shape == X.shape
    assert stack.voxel_size == pytest.approx(3.0)
    assert stack.paths == [path] * N
    np.testing.assert_array_equal(stack[[4, 1]], X[[4, 1]])
    np.testing.assert_array_equal(read_subtomograms(path)[0], X)

    volume = _write_mrc(tmp_path / "volume.mrc", X[2])
    np.testing.assert_array_equal(read_subtomograms(volume)[0], X[2:3])


def test_star_referring_to_volumes_of_a_stack(tmp_path, data):
    X = data[0]
    _write_mrc(tmp_path / "stack.mrc", X)
    particles = pd.DataFrame(
        {"rlnImageName": ["3@stack.mrc", "1@stack.mrc"], "rlnClassNumber": [2, 1]}
    )
    starfile.write({"particles": particles}, tmp_path / "p.star")
    X_read, y_read = read_subtomograms(tmp_path / "p.star")
    np.testing.assert_array_equal(X_read, X[[2, 0]])
    np.testing.assert_array_equal(y_read, [1, 0])


# SubtomogramStack ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        2,
        -1,
        np.int64(3),
        slice(1, 4),
        slice(None, None, -2),
        [3, 0, 3],
        np.array([1, 2]),
        [],
        np.array([True, False, True, False, True]),
        (1, slice(2, 4)),
        (slice(0, 2), 0),
    ],
    ids=repr,
)
def test_stack_indexing_matches_numpy(star, data, key):
    X = data[0]
    got = SubtomogramStack(star)[key]
    expected = X[key]
    assert got.dtype == np.float32
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


def test_stack_array_protocol_and_iteration(star, data):
    X = data[0]
    stack = SubtomogramStack(star)
    assert len(stack) == N
    assert stack.shape == (N, SIZE, SIZE, SIZE)
    assert stack.ndim == 4
    assert stack.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(stack), X)
    assert np.asarray(stack, dtype=np.float64).dtype == np.float64
    np.testing.assert_array_equal(np.stack(list(stack)), X)
    batches = list(stack.iter_batches(2))
    assert [len(batch) for batch in batches] == [2, 2, 1]
    np.testing.assert_array_equal(np.concatenate(batches), X)
    assert "n=5" in repr(stack) and "3 named classes" in repr(stack)


@pytest.mark.parametrize(
    ("key", "error"),
    [(5, IndexError), (-6, IndexError), ([0, 7], IndexError), (np.ones(3, bool), IndexError)],
)
def test_stack_rejects_bad_indices(star, key, error):
    with pytest.raises(error):
        SubtomogramStack(star)[key]


@pytest.mark.parametrize("batch_size", [0, -1, 1.5, True])
def test_iter_batches_rejects_bad_batch_size(star, batch_size):
    with pytest.raises(ValueError, match="batch_size"):
        SubtomogramStack(star).iter_batches(batch_size)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
def test_stack_keeps_no_files_open(tmp_path, seed):
    X = np.random.default_rng(seed).normal(size=(60, 4, 4, 4)).astype(np.float32)
    star = write_subtomograms(tmp_path, X, voxel_size=1.0)
    before = len(os.listdir("/proc/self/fd"))
    stack = SubtomogramStack(star)
    np.testing.assert_array_equal(stack[::-1], X[::-1])
    assert len(os.listdir("/proc/self/fd")) == before


# Safe writes --------------------------------------------------------------------------------


@pytest.mark.parametrize("existing", ["subtomo_000003.mrc", "particles.star"])
def test_existing_files_are_never_overwritten(tmp_path, data, existing):
    X = data[0]
    target = tmp_path / existing
    target.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match=re.escape(str(target)) + ".*overwrite=True"):
        write_subtomograms(tmp_path, X, voxel_size=1.0)
    assert target.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == [existing]


def test_rewriting_needs_overwrite(star, data):
    X = data[0]
    before = {path: path.read_bytes() for path in star.parent.iterdir()}
    with pytest.raises(FileExistsError, match=re.escape(str(star.parent)) + " is not empty"):
        write_subtomograms(star.parent, X + 1, voxel_size=1.0)
    assert {path: path.read_bytes() for path in star.parent.iterdir()} == before

    write_subtomograms(star.parent, X + 1, voxel_size=1.0, overwrite=True)
    stack = SubtomogramStack(star)
    np.testing.assert_array_equal(np.asarray(stack), X + 1)
    assert stack.labels is None
    assert stack.voxel_size == pytest.approx(1.0)


def test_no_temporary_files_left(star):
    names = sorted(path.name for path in star.parent.iterdir())
    assert names == sorted([f"subtomo_{i:06d}.mrc" for i in range(1, N + 1)] + ["particles.star"])


def test_failed_write_keeps_existing_files_and_leaves_no_temporaries(star, data, monkeypatch):
    X = data[0]
    before = {path: path.read_bytes() for path in star.parent.iterdir()}
    calls = []
    original_new = mrcfile.new

    def failing_new(*args, **kwargs):
        calls.append(args)
        if len(calls) == 3:
            raise OSError("disk full")
        return original_new(*args, **kwargs)

    monkeypatch.setattr(mrcfile, "new", failing_new)
    with pytest.raises(OSError, match="disk full"):
        write_subtomograms(star.parent, X + 1, voxel_size=1.0, overwrite=True)
    assert {path: path.read_bytes() for path in star.parent.iterdir()} == before


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"X": np.zeros((2, 4, 4, 5))}, "not cubic"),
        ({"X": np.zeros((4, 4, 4))}, r"\(n, D, H, W\)"),
        ({"X": np.zeros((2, 2, 4, 4, 4))}, r"\(n, 1, D, H, W\)"),
        ({"X": np.full((2, 4, 4, 4), np.nan)}, r"X\[0\].*NaN"),
        ({"y": [0, 1, 0]}, r"y has shape \(3,\).*2 subtomograms"),
        ({"y": [0, -1]}, r"y\[1\] is -1"),
        ({"y": ["a", "b"]}, "LabelEncoder"),
        ({"voxel_size": 0}, "voxel_size must be a positive"),
        ({"voxel_size": -1.0}, "voxel_size must be a positive"),
        ({"voxel_size": float("nan")}, "voxel_size must be a positive"),
        ({"y": [0, 2], "class_names": ["a", "b"]}, "at least 3 names"),
        ({"class_names": ["a", "a"]}, "duplicates"),
        ({"class_names": ['say "hi"']}, "cannot be stored"),
        ({"rotations": np.zeros((2, 2))}, r"rotations has shape \(2, 2\)"),
        ({"shifts": np.full((2, 3), np.inf)}, "shifts holds NaN or infinite"),
    ],
)
def test_write_validates_inputs(tmp_path, kwargs, match):
    arguments = {"X": np.zeros((2, 4, 4, 4)), "voxel_size": 1.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        write_subtomograms(tmp_path / "out", **arguments)
    assert not (tmp_path / "out").exists()


# Broken files -------------------------------------------------------------------------------


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-10])


def _garbage(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(2000))


def _bad_header(path: Path) -> None:
    content = bytearray(path.read_bytes())
    content[208:212] = b"XXXX"  # the 'MAP ' identifier
    path.write_bytes(bytes(content))


def _too_short(path: Path) -> None:
    path.write_bytes(b"MRC")


@pytest.mark.parametrize("damage", [_truncate, _garbage, _bad_header, _too_short])
@pytest.mark.parametrize("via", ["star", "file"])
def test_broken_mrc_files_raise_value_error_naming_them(star, damage, via):
    broken = star.parent / "subtomo_000002.mrc"
    damage(broken)
    with pytest.raises(ValueError, match=re.escape(str(broken))) as info:
        SubtomogramStack(star if via == "star" else broken)
    if damage is not _truncate:
        assert info.value.__cause__ is not None


def test_file_truncated_after_construction_raises_on_access(star):
    stack = SubtomogramStack(star)
    broken = star.parent / "subtomo_000004.mrc"
    _truncate(broken)
    with pytest.raises(ValueError, match=re.escape(str(broken))):
        stack[3]


def test_missing_images_name_image_and_star_file(star):
    (star.parent / "subtomo_000002.mrc").unlink()
    (star.parent / "subtomo_000005.mrc").unlink()
    message = rf"2 of 5 .*{re.escape(str(star))}.*{re.escape('subtomo_000002.mrc')}"
    with pytest.raises(FileNotFoundError, match=message):
        read_subtomograms(star)


def test_mixed_shapes_name_both_files(tmp_path):
    first = _write_mrc(tmp_path / "a.mrc", np.zeros((8, 8, 8)))
    second = _write_mrc(tmp_path / "b.mrc", np.zeros((6, 6, 6)))
    message = rf"{re.escape(str(first))}.*\(8, 8, 8\).*{re.escape(str(second))}.*\(6, 6, 6\)"
    with pytest.raises(ValueError, match=message):
        SubtomogramStack([first, second])


def test_non_cubic_volume(tmp_path):
    path = _write_mrc(tmp_path / "flat.mrc", np.zeros((4, 6, 6)))
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*not cubic"):
        SubtomogramStack(tmp_path)


def test_star_without_image_names(tmp_path):
    path = tmp_path / "particles.star"
    starfile.write({"particles": pd.DataFrame({"rlnClassNumber": [1, 2]})}, path)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*rlnImageName"):
        SubtomogramStack(path)


def test_star_file_that_is_not_a_star_file(tmp_path):
    path = tmp_path / "particles.star"
    path.write_text("not a STAR file\n")
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*no data blocks"):
        SubtomogramStack(tmp_path)


@pytest.mark.parametrize("relative", ["missing.star", "missing.mrc", "missing_dir"])
def test_nonexistent_source(tmp_path, relative):
    path = tmp_path / relative
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        read_subtomograms(path)
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        read_subtomograms([path])


def test_empty_sources(tmp_path):
    with pytest.raises(ValueError, match=re.escape(str(tmp_path))):
        SubtomogramStack(tmp_path)
    with pytest.raises(ValueError, match="empty"):
        SubtomogramStack([])
