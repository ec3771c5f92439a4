"""Label volumes beside subtomograms: writing, the STAR column, lazy reading, broken files."""

from __future__ import annotations

import io
import re
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile

from skdistill.io import SubtomogramStack, read_subtomograms, write_subtomograms
from skdistill.io.labels import MaskStack, read_segmentation_subtomograms

N, SIZE, VOXEL_SIZE = 5, 8, 2.5


@pytest.fixture
def data(seed):
    """Five 8^3 volumes, labels and label volumes with values 0..3."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, SIZE, SIZE, SIZE)).astype(np.float32)
    masks = rng.integers(0, 4, size=(N, SIZE, SIZE, SIZE))
    return X, np.array([0, 2, 1, 0, 2]), masks


@pytest.fixture
def star(tmp_path, data) -> Path:
    X, y, masks = data
    return write_subtomograms(tmp_path / "out", X, y, voxel_size=VOXEL_SIZE, masks=masks)


def _mask(star: Path, i: int) -> Path:
    return star.parent / f"subtomo_{i:06d}_mask.mrc"


def _write_mrc(path: Path, data: np.ndarray) -> None:
    path.unlink(missing_ok=True)
    with mrcfile.new(path, data) as mrc:
        mrc.voxel_size = VOXEL_SIZE


# Round trips ------------------------------------------------------------------------------


def test_round_trip_in_int8_files(star, data):
    X, y, masks = data
    X_read, masks_read = read_segmentation_subtomograms(star)
    np.testing.assert_array_equal(X_read, X)
    np.testing.assert_array_equal(masks_read, masks)
    assert masks_read.dtype == np.int16
    with mrcfile.open(_mask(star, 1), permissive=False) as mrc:
        assert int(mrc.header.mode) == 0 and mrc.data.dtype == np.int8
        assert float(mrc.voxel_size.x) == pytest.approx(VOXEL_SIZE)
    assert mrcfile.validate(str(_mask(star, 1)), print_file=io.StringIO())
    # Images and class labels read as before.
    X_plain, y_plain = read_subtomograms(star)
    np.testing.assert_array_equal(X_plain, X)
    np.testing.assert_array_equal(y_plain, y)


@pytest.mark.parametrize(
    ("values", "mode"),
    [
        (np.array([-128, 0, 127]), 0),
        (np.array([0, 1, 128]), 1),
        (np.array([-32768, 5, 32767]), 1),
        (np.array([0.0, 2.0, 3.0]), 0),  # floats holding whole numbers
        (np.array([False, True, True]), 0),
    ],
)
def test_round_trip_chooses_int8_or_int16(tmp_path, data, values, mode):
    X = data[0]
    masks = np.resize(values, X.shape)
    star = write_subtomograms(tmp_path, X, voxel_size=1.0, masks=masks)
    with mrcfile.open(_mask(star, 2), permissive=False) as mrc:
        assert int(mrc.header.mode) == mode
    np.testing.assert_array_equal(read_segmentation_subtomograms(tmp_path)[1], masks)


def test_masks_with_a_channel_axis(tmp_path, data):
    X, _, masks = data
    write_subtomograms(tmp_path, X[:, None], voxel_size=1.0, masks=masks[:, None])
    np.testing.assert_array_equal(read_segmentation_subtomograms(tmp_path)[1], masks)


def test_star_lists_the_label_volumes(star):
    particles = starfile.read(star, always_dict=True)["particles"]
    assert list(particles["rlnMaskName"]) == [f"subtomo_{i:06d}_mask.mrc" for i in range(1, 6)]
    assert list(particles["rlnImageName"]) == [f"subtomo_{i:06d}.mrc" for i in range(1, 6)]
    names = sorted(path.name for path in star.parent.iterdir())
    assert len(names) == 2 * N + 1  # images, label volumes, particles.star: no temporaries


def test_mask_stack_is_lazy_and_indexes_like_numpy(star, data):
    masks = data[2]
    stack = MaskStack(star.parent)
    assert len(stack) == N and stack.shape == masks.shape and stack.ndim == 4
    assert stack.dtype == np.int16 and stack.voxel_size == pytest.approx(VOXEL_SIZE)
    assert stack.star_path == star and stack.paths[0] == _mask(star, 1)
    assert stack.image_paths[0] == star.parent / "subtomo_000001.mrc"
    keys = [2, -1, slice(1, 4), [4, 0, 0], np.array([True, False, True, False, True]), (1, 2)]
    for key in keys:
        np.testing.assert_array_equal(stack[key], masks[key])
    np.testing.assert_array_equal(stack[()], masks)
    np.testing.assert_array_equal(np.asarray(stack), masks)
    np.testing.assert_array_equal(np.stack(list(stack)), masks)
    assert "MaskStack(n=5" in repr(stack)
    with pytest.raises(IndexError):
        stack[5]
    with pytest.raises(ValueError, match="copy"):
        np.array(stack, copy=False)


def test_label_volumes_in_a_stack_file(tmp_path, data):
    X, _, masks = data
    write_subtomograms(tmp_path, X[:2], voxel_size=VOXEL_SIZE)
    _write_mrc(tmp_path / "labels.mrc", masks[:2][::-1].astype(np.int8))
    star = tmp_path / "particles.star"
    blocks = starfile.read(star, always_dict=True)
    blocks["particles"]["rlnMaskName"] = ["2@labels.mrc", "1@labels.mrc"]
    starfile.write(blocks, star)
    np.testing.assert_array_equal(np.asarray(MaskStack(star)), masks[:2])

    blocks["particles"]["rlnMaskName"] = ["labels.mrc", "1@labels.mrc"]
    starfile.write(blocks, star)
    with pytest.raises(ValueError, match="without a volume number"):
        MaskStack(star)
    blocks["particles"]["rlnMaskName"] = ["3@labels.mrc", "1@labels.mrc"]
    starfile.write(blocks, star)
    with pytest.raises(ValueError, match=r"label volume 3 of .*holds only 2"):
        MaskStack(star)


# No overwriting ---------------------------------------------------------------------------


def test_existing_label_volume_is_never_overwritten(tmp_path, data):
    X, _, masks = data
    target = tmp_path / "subtomo_000004_mask.mrc"
    target.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match=re.escape(str(target))):
        write_subtomograms(tmp_path, X, voxel_size=1.0, masks=masks)
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]
    assert target.read_bytes() == b"precious"


def test_rewriting_needs_overwrite(star, data):
    X, _, masks = data
    before = {path: path.read_bytes() for path in star.parent.iterdir()}
    with pytest.raises(FileExistsError):
        write_subtomograms(star.parent, X, voxel_size=1.0, masks=masks + 1)
    assert {path: path.read_bytes() for path in star.parent.iterdir()} == before
    write_subtomograms(star.parent, X, voxel_size=1.0, masks=masks + 1, overwrite=True)
    np.testing.assert_array_equal(read_segmentation_subtomograms(star)[1], masks + 1)


def test_overwrite_without_masks_removes_the_old_label_volumes(star, data):
    X, _, _ = data
    write_subtomograms(star.parent, X[:2], voxel_size=1.0, overwrite=True)
    names = sorted(path.name for path in star.parent.iterdir())
    assert names == ["particles.star", "subtomo_000001.mrc", "subtomo_000002.mrc"]
    with pytest.raises(ValueError, match="lists no label volumes"):
        MaskStack(star)


def test_failed_label_write_keeps_existing_files(star, data, monkeypatch):
    X, _, masks = data
    before = {path: path.read_bytes() for path in star.parent.iterdir()}
    original_new = mrcfile.new

    def failing_new(path, data=None, **kwargs):
        if "_mask" in str(path) and np.asarray(data).max() > 3:
            raise OSError("disk full")
        return original_new(path, data, **kwargs)

    monkeypatch.setattr(mrcfile, "new", failing_new)
    with pytest.raises(OSError, match="disk full"):
        write_subtomograms(star.parent, X + 1, voxel_size=1.0, masks=masks + 1, overwrite=True)
    assert {path: path.read_bytes() for path in star.parent.iterdir()} == before


@pytest.mark.parametrize(
    ("masks", "match"),
    [
        (
            np.zeros((N, SIZE, SIZE, 4), dtype=int),
            r"masks has shape \(5, 8, 8, 4\).*\(5, 8, 8, 8\)",
        ),
        (np.zeros((N - 1, SIZE, SIZE, SIZE), dtype=int), r"masks has shape \(4, 8, 8, 8\)"),
        (np.full((N, SIZE, SIZE, SIZE), 0.5), r"masks\[\(0, 0, 0, 0\)\] is 0\.5"),
        (np.full((N, SIZE, SIZE, SIZE), np.nan), "integer labels"),
        (np.full((N, SIZE, SIZE, SIZE), 40000), "-32768..32767"),
        (np.full((N, SIZE, SIZE, SIZE), "a"), "dtype <U1"),
    ],
)
def test_write_validates_masks(tmp_path, data, masks, match):
    with pytest.raises(ValueError, match=match):
        write_subtomograms(tmp_path / "out", data[0], voxel_size=1.0, masks=masks)
    assert not (tmp_path / "out").exists()


# Broken files -----------------------------------------------------------------------------


def test_label_volume_of_another_shape_names_both_files(star):
    mask, image = _mask(star, 3), star.parent / "subtomo_000003.mrc"
    _write_mrc(mask, np.zeros((6, 6, 6), dtype=np.int8))
    message = (
        rf"{re.escape(str(mask))} has shape \(6, 6, 6\) but its image "
        rf"{re.escape(str(image))} has shape \(8, 8, 8\)"
    )
    with pytest.raises(ValueError, match=message):
        read_segmentation_subtomograms(star)


def test_missing_label_volume_names_it_and_the_star_file(star):
    _mask(star, 2).unlink()
    message = rf"1 of 5 label volumes .*{re.escape(str(star))}.*{re.escape(str(_mask(star, 2)))}"
    with pytest.raises(FileNotFoundError, match=message):
        read_segmentation_subtomograms(star)
    # Images alone still read.
    assert read_subtomograms(star)[0].shape == (N, SIZE, SIZE, SIZE)


def test_non_integer_label_volume_names_the_file(star, data):
    values = np.zeros((SIZE, SIZE, SIZE), dtype=np.float32)
    values[4, 4, 4] = 0.5
    _write_mrc(_mask(star, 4), values)
    stack = MaskStack(star)  # headers only: the values are checked when read
    np.testing.assert_array_equal(stack[2], data[2][2])
    with pytest.raises(ValueError, match=re.escape(str(_mask(star, 4))) + r".*\(e\.g\. 0\.5\)"):
        stack[3]
    with pytest.raises(ValueError, match=re.escape(str(_mask(star, 4)))):
        read_segmentation_subtomograms(star)


def test_float_label_volume_of_whole_numbers_is_accepted(star, data):
    _write_mrc(_mask(star, 1), data[2][0].astype(np.float32))
    np.testing.assert_array_equal(read_segmentation_subtomograms(star)[1], data[2])


def test_labels_outside_int16_name_the_file(star):
    _write_mrc(_mask(star, 5), np.full((SIZE, SIZE, SIZE), 40000, dtype=np.uint16))
    with pytest.raises(ValueError, match=re.escape(str(_mask(star, 5))) + ".*int16"):
        read_segmentation_subtomograms(star)


def test_corrupt_label_volume_names_the_file(star):
    _mask(star, 2).write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(ValueError, match=re.escape(str(_mask(star, 2)))):
        MaskStack(star)


def test_star_without_label_volumes(tmp_path, data):
    star = write_subtomograms(tmp_path, data[0], voxel_size=1.0)
    with pytest.raises(ValueError, match=re.escape(str(star)) + ".*no rlnMaskName column"):
        read_segmentation_subtomograms(tmp_path)


def test_sources_that_list_no_label_volumes(star, tmp_path):
    with pytest.raises(ValueError, match="not a STAR file"):
        MaskStack(star.parent / "subtomo_000001.mrc")
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "particles.star"))):
        MaskStack(tmp_path)
    with pytest.raises(TypeError, match="list"):
        MaskStack([star])


def test_stack_of_images_ignores_the_label_column(star, data):
    stack = SubtomogramStack(star)
    np.testing.assert_array_equal(np.asarray(stack), data[0])
    table = pd.DataFrame(starfile.read(star, always_dict=True)["particles"])
    assert "rlnMaskName" in table.columns
