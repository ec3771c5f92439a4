"""Whole-tomogram segmentation: tiles, blending, seams, edges, memory maps, MRC output."""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest

from skdistill import Cnn3DSegmenter, PrunedSegmenter, segment_tomogram
from skdistill.datasets import make_segmentation_subtomograms
from skdistill.tiling import tile_starts, tile_weights, write_segmentation

SIZE = 16


@pytest.fixture(scope="module")
def data():
    return make_segmentation_subtomograms(
        48, size=SIZE, n_classes=4, snr=1.0, crowding=3, mask_threshold=0.2, random_state=0
    )


@pytest.fixture(scope="module")
def segmenter(data):
    """A small U-Net trained briefly: it finds particles but is unsure of many voxels."""
    X, y = data
    return Cnn3DSegmenter(
        arch="unet", levels=2, base_filters=4, max_epochs=3, batch_size=8, lr=1e-2,
        validation_fraction=None, class_weight="balanced", random_state=0,
    ).fit(X, y)  # fmt: skip


@pytest.fixture(scope="module")
def tomogram(data):
    """32 x 48 x 44 voxels of training subtomograms side by side (not a tile multiple)."""
    X, _ = data
    blocks = [[[X[9 * i + 3 * j + k] for k in range(3)] for j in range(3)] for i in range(2)]
    return np.block(blocks).astype(np.float32)[:, :, :44]


def near_tile_borders(shape, tile, overlap, margin=2):
    """Voxels within ``margin`` of an inner tile border (the volume's faces excluded)."""
    mask = np.zeros(shape, bool)
    for axis, (n, t) in enumerate(zip(shape, tile, strict=True)):
        line = np.zeros(n, bool)
        for start in tile_starts(n, t, overlap):
            for edge in (start, start + t - 1):
                line[max(0, edge - margin) : edge + margin + 1] = True
        line[: margin + 1] = line[n - margin - 1 :] = False
        index = [None, None, None]
        index[axis] = slice(None)
        mask |= np.broadcast_to(line[tuple(index)], shape)
    return mask


# -- the grid and the weights ---------------------------------------------------------------


def test_tile_starts_cover_the_axis_and_end_at_its_edge():
    assert tile_starts(40, 16, 0.25) == [0, 12, 24]
    assert tile_starts(41, 16, 0.25) == [0, 12, 24, 25]
    assert tile_starts(16, 16, 0.9) == [0]
    assert tile_starts(20, 16, 0.0) == [0, 4]
    for size, tile, overlap in [(200, 24, 0.25), (64, 16, 0.5), (37, 8, 0.1)]:
        starts = tile_starts(size, tile, overlap)
        covered = np.zeros(size, bool)
        for start in starts:
            covered[start : start + tile] = True
        assert covered.all() and starts[-1] == size - tile
        assert max(np.diff(starts)) <= max(1, int(tile * (1 - overlap)))


def test_tile_weights_follow_monai_and_are_lowest_at_the_border():
    gaussian = tile_weights((16, 16, 16), "gaussian")
    assert gaussian.max() == pytest.approx(1.0, abs=1e-2)
    assert gaussian.min() >= 1e-3
    # Separable with sigma = 0.125 * 16 = 2 voxels: one voxel from the centre pair.
    profile = np.exp(-((np.arange(16) - 7.5) ** 2) / 8)
    expected = profile[:, None, None] * profile[None, :, None] * profile[None, None, :]
    expected = np.maximum(expected / expected.max(), 1e-3)
    np.testing.assert_allclose(gaussian, expected, rtol=1e-5)
    linear = tile_weights((8, 8, 8), "linear")
    assert linear[0, 4, 4] < linear[2, 4, 4] < linear[4, 4, 4] == 1.0
    assert (tile_weights((4, 5, 6), "constant") == 1).all()
    with pytest.raises(ValueError, match="blend must be one of"):
        tile_weights((4, 4, 4), "cosine")


# -- agreement with a whole-volume prediction -------------------------------------------------


@pytest.fixture(scope="module")
def whole(segmenter, tomogram):
    """Probabilities of the whole volume in one forward pass (a single tile)."""
    return segment_tomogram(segmenter, tomogram, tile_size=tomogram.shape, probabilities=True)


def test_the_net_is_not_trivially_confident(whole):
    labels = whole.argmax(axis=0)
    assert len(np.unique(labels)) >= 2
    assert (whole.max(axis=0) < 0.9).mean() > 0.02


@pytest.mark.parametrize(
    ("tile", "overlap", "blend"),
    [(None, 0.25, "gaussian"), ((16, 16, 16), 0.5, "gaussian"), ((16, 32, 16), 0.5, "linear")],
)
def test_tiled_agrees_with_whole_also_at_the_seams(
    segmenter, tomogram, whole, tile, overlap, blend
):
    labels = segment_tomogram(segmenter, tomogram, tile_size=tile, overlap=overlap, blend=blend)
    expected = whole.argmax(axis=0)
    assert labels.shape == tomogram.shape and labels.dtype == np.int8
    assert (labels == expected).mean() >= 0.995
    shape = tile or (16, 48, 32)  # the default: training depth, multiples of 16 within
    seams = near_tile_borders(tomogram.shape, shape, overlap)
    assert seams.sum() > 1000
    assert (labels == expected)[seams].mean() >= 0.99


def test_probabilities_are_blended_distributions(segmenter, tomogram):
    probabilities = segment_tomogram(segmenter, tomogram, tile_size=16, probabilities=True)
    assert probabilities.shape == (segmenter.n_classes_, *tomogram.shape)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=0), 1.0, atol=1e-5)


def test_a_single_tile_is_the_segmenters_own_prediction(segmenter, data):
    X, _ = data
    np.testing.assert_array_equal(segment_tomogram(segmenter, X[0]), segmenter.predict(X[:1])[0])


def test_anisotropic_tomogram_not_a_multiple_of_the_tile(segmenter, seed):
    rng = np.random.default_rng(seed)
    tomogram = rng.normal(size=(64, 200, 180)).astype(np.float32)
    tomogram[20:40, 50:90, 100:130] += 3
    labels = segment_tomogram(segmenter, tomogram, tile_size=16)
    assert labels.shape == (64, 200, 180)
    # Every voxel, the last row and column included, got a label of the model.
    assert set(np.unique(labels)) <= set(range(segmenter.n_classes_))


# -- memory maps and MRC files ------------------------------------------------------------------


@pytest.fixture
def tomogram_file(tmp_path, tomogram):
    path = tmp_path / "TS_01.mrc"
    with mrcfile.new(path, data=tomogram) as mrc:
        mrc.voxel_size = 9.2
        mrc.header.origin = (10.0, 20.0, 30.0)
    return path


def test_memory_mapped_input_gives_the_arrays_result(segmenter, tomogram, tomogram_file):
    expected = segment_tomogram(segmenter, tomogram, tile_size=16)
    mapped = np.load(_saved(tomogram, tomogram_file.with_suffix(".npy")), mmap_mode="r")
    np.testing.assert_array_equal(segment_tomogram(segmenter, mapped, tile_size=16), expected)
    np.testing.assert_array_equal(
        segment_tomogram(segmenter, tomogram_file, tile_size=16), expected
    )


def _saved(array, path):
    np.save(path, array)
    return path


def test_mrc_output_has_the_tomograms_header(segmenter, tomogram, tomogram_file, tmp_path):
    out = tmp_path / "labels" / "TS_01_labels.mrc"
    written = segment_tomogram(segmenter, tomogram_file, tile_size=16, out=out)
    assert written == out
    expected = segment_tomogram(segmenter, tomogram, tile_size=16)
    with mrcfile.open(out, permissive=False) as mrc:
        np.testing.assert_array_equal(mrc.data, expected)
        assert mrc.data.dtype == np.int8
        assert mrc.voxel_size.x == pytest.approx(9.2)
        assert (mrc.header.origin.x, mrc.header.origin.z) == (10.0, 30.0)
        assert mrc.header.dmax == expected.max() and mrc.header.dmin == expected.min()
        assert mrc.header.dmean == pytest.approx(expected.mean(), rel=1e-5)
    assert sorted(p.name for p in out.parent.iterdir()) == ["TS_01_labels.mrc"]


def test_labels_and_probabilities_written_in_one_pass(segmenter, tomogram_file, tmp_path):
    labels, probabilities = tmp_path / "l.mrc", tmp_path / "p.mrc"
    write_segmentation(
        segmenter, tomogram_file, labels=labels, probabilities=probabilities, tile_size=16
    )
    with mrcfile.open(labels) as l_mrc, mrcfile.open(probabilities) as p_mrc:
        assert p_mrc.is_volume_stack()
        assert p_mrc.data.shape == (segmenter.n_classes_, 32, 48, 44)
        np.testing.assert_array_equal(l_mrc.data, p_mrc.data.argmax(axis=0))


def test_existing_output_is_kept_without_overwrite(segmenter, tomogram, tmp_path):
    out = tmp_path / "labels.mrc"
    out.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        segment_tomogram(segmenter, tomogram, out=out)
    assert out.read_bytes() == b"precious"
    segment_tomogram(segmenter, tomogram, out=out, overwrite=True)
    with mrcfile.open(out) as mrc:
        assert mrc.data.shape == tomogram.shape


def test_a_failure_half_way_leaves_no_file(segmenter, tomogram, tmp_path):
    broken = tomogram.copy()
    broken[-1, 5, 5] = np.nan  # found in the last slab, after earlier slabs were written
    out = tmp_path / "labels.mrc"
    with pytest.raises(ValueError, match=r"NaN or infinite values in slices"):
        segment_tomogram(segmenter, broken, tile_size=16, out=out)
    assert list(tmp_path.iterdir()) == []


# -- what the tiler accepts -------------------------------------------------------------------


def test_pruned_segmenter_is_accepted(segmenter, data, tomogram):
    X, y = data
    from sklearn.frozen import FrozenEstimator

    pruned = PrunedSegmenter(
        FrozenEstimator(segmenter), amount=0.25, steps=1, finetune_epochs=0, random_state=0
    ).fit(X, y)
    labels = segment_tomogram(pruned, tomogram, tile_size=16)
    assert labels.shape == tomogram.shape


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tile_size": 9}, "do not fit a 3D U-Net"),
        ({"tile_size": (16, 16)}, "3 positive ints"),
        ({"tile_size": 64}, "smaller than a tile"),
        ({"overlap": 1.0}, r"overlap must be a fraction in \[0, 1\)"),
        ({"blend": "max"}, "blend must be one of"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
    ],
)
def test_bad_arguments_are_explained(segmenter, tomogram, kwargs, message):
    with pytest.raises(ValueError, match=message):
        segment_tomogram(segmenter, tomogram, **kwargs)


def test_bad_inputs_are_explained(segmenter, tomogram):
    with pytest.raises(ValueError, match="one 3D volume"):
        segment_tomogram(segmenter, tomogram[None, None])
    with pytest.raises(ValueError, match="smaller than a tile"):
        segment_tomogram(segmenter, tomogram[:8])
    with pytest.raises(TypeError, match="fitted volume segmenter"):
        segment_tomogram(object(), tomogram)
    with pytest.raises(FileNotFoundError):
        segment_tomogram(segmenter, "missing.mrc")


# -- the command line -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_file(segmenter, tmp_path_factory):
    from skdistill import save_model

    path = tmp_path_factory.mktemp("model") / "unet.safetensors"
    save_model(segmenter, path)
    return path


def _main(capsys, *args):
    from skdistill.cli import main

    code = main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_segment_writes_labels_and_probabilities(
    model_file, segmenter, tomogram, tomogram_file, tmp_path, capsys
):
    out, probabilities = tmp_path / "labels.mrc", tmp_path / "probabilities.mrc"
    code, stdout, _ = _main(
        capsys, "segment", "--model", model_file, "--tomogram", tomogram_file, "--out", out,
        "--probabilities", probabilities, "--tile-size", 16, "--overlap", 0.5, "-q",
    )  # fmt: skip
    assert code == 0 and "Segmented" in stdout
    expected = segment_tomogram(segmenter, tomogram, tile_size=16, overlap=0.5)
    with mrcfile.open(out) as mrc:
        np.testing.assert_array_equal(mrc.data, expected)
        assert mrc.voxel_size.x == pytest.approx(9.2)
    with mrcfile.open(probabilities) as mrc:
        assert mrc.data.shape == (segmenter.n_classes_, *tomogram.shape)
    # An existing output is refused before any work, in one line.
    code, _, err = _main(
        capsys, "segment", "--model", model_file, "--tomogram", tomogram_file, "--out", out
    )
    assert code != 0 and "--overwrite" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [(["--overlap", "1"], "[0, 1)"), (["--tile-size", "0"], ">= 1"), (["--blend", "x"], "blend")],
)
def test_cli_segment_bad_options(model_file, tomogram_file, tmp_path, capsys, extra, fragment):
    code, _, err = _main(capsys, "segment", "--model", model_file, "--tomogram", tomogram_file,
                         "--out", tmp_path / "l.mrc", *extra)  # fmt: skip
    assert code == 2 and fragment in err


def test_cli_segment_missing_tomogram(model_file, tmp_path, capsys):
    code, _, err = _main(capsys, "segment", "--model", model_file, "--tomogram",
                         tmp_path / "none.mrc", "--out", tmp_path / "l.mrc")  # fmt: skip
    assert code != 0 and "does not exist" in err


def test_bands_give_the_same_result_as_one_band(segmenter, tomogram, monkeypatch, tmp_path):
    from skdistill.tiling import _blend

    kwargs = {"tile_size": 16, "overlap": 0.25}
    whole_band = segment_tomogram(segmenter, tomogram, probabilities=True, **kwargs)
    monkeypatch.setattr(_blend, "BAND_BYTES", 1)  # one row of tiles per band
    plan_rows = [band[1:] for band in _blend._bands(_Rows(), 44, 2, 48)]
    assert plan_rows == [(0, 12), (12, 24), (24, 32), (32, 48)]  # one per tile row, a partition
    banded = segment_tomogram(segmenter, tomogram, probabilities=True, **kwargs)
    np.testing.assert_allclose(banded, whole_band, rtol=0, atol=1e-6)
    out = tmp_path / "labels.mrc"
    segment_tomogram(segmenter, tomogram, out=out, **kwargs)
    with mrcfile.open(out) as mrc:
        np.testing.assert_array_equal(mrc.data, whole_band.argmax(axis=0))


class _Rows:
    """The part of a tiling plan that sets the bands: 16³ tiles, 48 rows, overlap 0.25."""

    tile = (16, 16, 16)
    starts = ([0], tile_starts(48, 16, 0.25), [0])
