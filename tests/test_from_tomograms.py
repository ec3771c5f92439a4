"""SubtomogramStack.from_tomograms: subtomograms cut from tomograms at picked coordinates."""

from __future__ import annotations

import warnings

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile

from skdistill import Cnn3DClassifier
from skdistill.io import EdgePaddingWarning, SubtomogramStack
from skdistill.io.conventions import tomogram_key

from .conftest import FAST

#: Tomogram shape (z, y, x) and voxel size of the synthetic tomograms.
SHAPE = (32, 48, 64)
VOXEL = 10.0


def index_tomogram() -> np.ndarray:
    """A tomogram whose voxel (z, y, x) holds z * 10000 + y * 100 + x, to locate crops."""
    z, y, x = np.indices(SHAPE)
    return (z * 10000 + y * 100 + x).astype(np.float32)


def code(z, y, x) -> float:
    return z * 10000 + y * 100 + x


def write_mrc(path, data, voxel_size=VOXEL):
    path.parent.mkdir(parents=True, exist_ok=True)
    with mrcfile.new(path, data=np.asarray(data, dtype=np.float32)) as mrc:
        mrc.voxel_size = voxel_size
    return path


def centred_angst(zyx, voxel=VOXEL, shape=SHAPE):
    """RELION 5 centred coordinates (x, y, z) in Å of voxel position (z, y, x)."""
    return [(zyx[axis] - shape[axis] / 2) * voxel for axis in (2, 1, 0)]


@pytest.fixture(scope="module")
def relion5(tmp_path_factory):
    """A RELION 5 project: tomograms.star two levels below the project folder."""
    project = tmp_path_factory.mktemp("relion5")
    write_mrc(project / "Tomograms/job002/tomograms/rec_TS_01.mrc", index_tomogram())
    write_mrc(project / "Tomograms/job002/tomograms/rec_TS_02.mrc", -index_tomogram())
    tomograms_star = project / "Tomograms/job002/tomograms.star"
    # Tilt series at 5 Å binned by 2: 10 Å voxels; rlnTomoSize in unbinned pixels.
    starfile.write(
        {
            "global": pd.DataFrame(
                {
                    "rlnTomoName": ["TS_01", "TS_02"],
                    "rlnTomoReconstructedTomogram": [
                        f"Tomograms/job002/tomograms/rec_{name}.mrc" for name in ("TS_01", "TS_02")
                    ],
                    "rlnTomoTiltSeriesPixelSize": [5.0, 5.0],
                    "rlnTomoTomogramBinning": [2.0, 2.0],
                    "rlnTomoSizeX": [128, 128],
                    "rlnTomoSizeY": [96, 96],
                    "rlnTomoSizeZ": [64, 64],
                }
            )
        },
        tomograms_star,
    )
    positions = [(10, 20, 30), (5, 6, 7), (16, 24, 32)]
    coordinates = np.array([centred_angst(p) for p in positions])
    particles = pd.DataFrame(
        {
            "rlnTomoName": ["TS_01", "TS_02", "TS_01"],
            "rlnCenteredCoordinateXAngst": coordinates[:, 0],
            "rlnCenteredCoordinateYAngst": coordinates[:, 1],
            "rlnCenteredCoordinateZAngst": coordinates[:, 2],
            # Particle 3's centre is 10 Å to -x of its coordinate: centre = coordinate - origin.
            "rlnOriginXAngst": [0.0, 0.0, 10.0],
            "rlnOriginYAngst": [0.0, 0.0, 0.0],
            "rlnOriginZAngst": [0.0, 0.0, 0.0],
            "rlnAngleRot": [1.0, 2.0, 3.0],
            "rlnAngleTilt": [0.0, 0.0, 0.0],
            "rlnAnglePsi": [0.0, 0.0, 0.0],
            "rlnClassNumber": [2, 1, 2],
            "rlnOpticsGroup": [1, 1, 1],
            "rlnTomoParticleName": ["TS_01/1", "TS_02/1", "TS_01/2"],
        }
    )
    optics = pd.DataFrame(
        {
            "rlnOpticsGroup": [1],
            "rlnOpticsGroupName": ["optics1"],
            "rlnTomoTiltSeriesPixelSize": [5.0],
            "rlnVoltage": [300.0],
        }
    )
    star = project / "Extract/job003/particles.star"
    star.parent.mkdir(parents=True)
    starfile.write({"optics": optics, "particles": particles}, star)
    return star, tomograms_star


def test_relion5_centred_coordinates_and_origins_land_on_the_right_voxel(relion5):
    star, tomograms_star = relion5
    stack = SubtomogramStack.from_tomograms(star, tomograms_star, box_size=8)
    assert isinstance(stack, SubtomogramStack)
    assert stack.shape == (3, 8, 8, 8) and stack.voxel_size == VOXEL
    volumes = np.asarray(stack)
    assert volumes[0, 4, 4, 4] == code(10, 20, 30)
    assert volumes[1, 4, 4, 4] == -code(5, 6, 7)
    assert volumes[2, 4, 4, 4] == code(16, 24, 31)  # origin +10 Å in x: one voxel to -x
    np.testing.assert_array_equal(volumes[0], index_tomogram()[6:14, 16:24, 26:34])
    np.testing.assert_array_equal(stack[2], volumes[2])
    np.testing.assert_array_equal(np.concatenate(list(stack.iter_batches(2))), volumes)
    np.testing.assert_array_equal(stack.labels, [1, 0, 1])
    np.testing.assert_array_equal(stack.groups, ["TS_01", "TS_02", "TS_01"])
    assert stack.rotations[:, 0].tolist() == [1.0, 2.0, 3.0]
    assert stack.star_path == star and stack.n_padded == 0 and stack.skipped.empty
    assert list(stack.particles.columns) == list(starfile.read(star)["particles"].columns)
    assert stack.optics["rlnOpticsGroupName"].tolist() == ["optics1"]


def test_reads_open_each_tomogram_once_per_batch(relion5, monkeypatch):
    star, tomograms_star = relion5
    stack = SubtomogramStack.from_tomograms(star, tomograms_star, box_size=4)
    opened = []
    original = mrcfile.mmap
    monkeypatch.setattr(
        mrcfile, "mmap", lambda path, **kw: opened.append(path) or original(path, **kw)
    )
    stack[[0, 1, 2]]
    assert sorted(str(path.name) for path in opened) == ["rec_TS_01.mrc", "rec_TS_02.mrc"]


def pixel_table(positions, names, **columns) -> pd.DataFrame:
    """Particles at pixel coordinates (z, y, x positions given) of the named tomograms."""
    positions = np.asarray(positions, dtype=np.float64)
    table = pd.DataFrame(
        {
            "rlnCoordinateX": positions[:, 2],
            "rlnCoordinateY": positions[:, 1],
            "rlnCoordinateZ": positions[:, 0],
        }
    )
    for name, value in {**names, **columns}.items():
        table[name] = value
    return table


def test_relion4_unbinned_pixel_coordinates_with_a_mapping(tmp_path):
    tomogram = write_mrc(tmp_path / "TS_01.mrc", index_tomogram())
    # RELION 4: coordinates in unbinned 5 Å tilt-series pixels; rlnImagePixelSize (20 Å, the
    # subtomograms') must not be used for them.
    particles = pixel_table(
        [(20, 40, 60), (8, 12, 16)],
        {"rlnTomoName": "TS_01", "rlnMicrographName": "other.tomostar"},
        rlnOpticsGroup=1,
    )
    optics = pd.DataFrame(
        {"rlnOpticsGroup": [1], "rlnTomoTiltSeriesPixelSize": [5.0], "rlnImagePixelSize": [20.0]}
    )
    star = tmp_path / "particles.star"
    starfile.write({"optics": optics, "particles": particles}, star)
    stack = SubtomogramStack.from_tomograms(star, {"TS_01": tomogram}, box_size=6)
    assert stack[0][3, 3, 3] == code(10, 20, 30)
    assert stack[1][3, 3, 3] == code(4, 6, 8)


def test_warp_micrograph_names_with_a_folder_and_pixel_origins(tmp_path):
    folder = tmp_path / "reconstruction"
    write_mrc(folder / "TS_01_10.00Apx.mrc", index_tomogram())
    write_mrc(folder / "TS_02_10.00Apx.mrc", -index_tomogram())
    # Warp: coordinates in rlnDetectorPixelSize x 10^4 / rlnMagnification = 5 Å pixels.
    particles = pixel_table(
        [(20, 40, 60), (20, 40, 60)],
        {"rlnMicrographName": ["TS_01.tomostar", "TS_02.tomostar"]},
        rlnDetectorPixelSize=5.0,
        rlnMagnification=10000.0,
        rlnOriginX=[0.0, 2.0],  # pixels of the coordinates: 10 Å, one tomogram voxel
    )
    stack = SubtomogramStack.from_tomograms(particles, folder, box_size=6)
    assert stack.star_path is None and stack.optics is None
    assert stack[0][3, 3, 3] == code(10, 20, 30)
    assert stack[1][3, 3, 3] == -code(10, 20, 29)
    # coordinate_pixel_size= wins over the table's.
    stack = SubtomogramStack.from_tomograms(
        particles, folder, box_size=6, coordinate_pixel_size=2.5
    )
    assert stack[0][3, 3, 3] == code(5, 10, 15)


def test_coordinates_in_tomogram_voxels_without_pixel_size(tmp_path):
    write_mrc(tmp_path / "tomo_a.rec", index_tomogram())
    particles = pixel_table([(3, 4, 5)], {"rlnMicrographName": "tomo_a.rec"})
    stack = SubtomogramStack.from_tomograms(particles, tmp_path, box_size=2)
    assert stack[0][1, 1, 1] == code(3, 4, 5)


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("tomograms/TS_001/TS_001_aligned.st:mrc", "TS_001_aligned"),
        ("TS_01.tomostar", "TS_01"),
        ("TS_01_10.00Apx.mrc", "TS_01"),
        ("rec_TS_02.mrc", "rec_TS_02"),
        ("TS_3", "TS_3"),
    ],
)
def test_tomogram_names_are_normalised(name, key):
    assert tomogram_key(name) == key


def test_edge_particles_are_padded_with_the_mean_and_warned_once(tmp_path):
    data = np.full(SHAPE, 3.0, dtype=np.float32)
    data[0, 0, 0] = 100.0  # the mean changes, so fill comes from the mean, not a neighbour
    tomogram = write_mrc(tmp_path / "TS_01.mrc", data)
    particles = pixel_table([(1, 1, 1), (0, 47, 63), (16, 24, 32)], {"rlnTomoName": "TS_01"})
    with pytest.warns(EdgePaddingWarning, match="2 of 3") as record:
        stack = SubtomogramStack.from_tomograms(particles, {"TS_01": tomogram}, box_size=6)
    assert len(record) == 1 and stack.n_padded == 2
    volumes = np.asarray(stack)
    mean = float(data.mean(dtype=np.float64))
    assert volumes[0, 1, 1, 1] == pytest.approx(mean) != 3.0
    assert volumes[0, 2, 2, 2] == 100.0 and volumes[0, 3, 3, 3] == 3.0
    assert volumes[1, 4, 0, 4] == pytest.approx(mean)  # beyond y = 47
    assert np.all(volumes[2] == 3.0)


def test_strided_mean_when_the_header_has_no_statistics(tmp_path):
    data = np.full(SHAPE, 2.0, dtype=np.float32)
    tomogram = write_mrc(tmp_path / "TS_01.mrc", data)
    with mrcfile.open(tomogram, "r+") as mrc:
        mrc.header.dmin, mrc.header.dmax, mrc.header.dmean = 0.0, -1.0, -2.0
    particles = pixel_table([(0, 0, 0)], {"rlnTomoName": "TS_01"})
    with pytest.warns(EdgePaddingWarning):
        stack = SubtomogramStack.from_tomograms(particles, {"TS_01": tomogram}, box_size=4)
    assert np.all(stack[0] == 2.0)


def test_particles_outside_raise_or_are_skipped(relion5):
    star, tomograms_star = relion5
    table = starfile.read(star)["particles"]
    table.loc[1, "rlnCenteredCoordinateXAngst"] = 400.0  # x voxel 72 of 64
    with pytest.raises(ValueError, match=r"row 2 \(TS_02/1\).*64 x 48 x 32"):
        SubtomogramStack.from_tomograms(table, tomograms_star, box_size=4)
    stack = SubtomogramStack.from_tomograms(table, tomograms_star, box_size=4, on_outside="skip")
    assert len(stack) == 2 and stack.particles.index.tolist() == [0, 2]
    assert stack.skipped["rlnTomoParticleName"].tolist() == ["TS_02/1"]
    np.testing.assert_array_equal(stack.labels, [1, 1])
    np.testing.assert_array_equal(stack.groups, ["TS_01", "TS_01"])
    assert stack[1][2, 2, 2] == code(16, 24, 31)


def gaussian_tomogram(centre_angst, sigma_angst, voxel) -> np.ndarray:
    """A Gaussian blob at ``centre_angst`` (z, y, x) in a tomogram of 320 x 480 x 640 Å."""
    shape = tuple(round(extent / voxel) for extent in (320, 480, 640))
    grids = np.meshgrid(*[np.arange(n) * voxel for n in shape], indexing="ij")
    squared = sum((g - c) ** 2 for g, c in zip(grids, centre_angst, strict=True))
    return np.exp(-squared / (2 * sigma_angst**2)).astype(np.float32)


@pytest.mark.parametrize("output_voxel", [10.0, 7.5, 4.0])
def test_resampled_blob_is_centred_with_its_physical_width(tmp_path, output_voxel):
    input_voxel, sigma = 5.0, 10.0
    centre = np.array([163.0, 241.5, 318.0])  # Å, off the voxel grid
    tomogram = write_mrc(
        tmp_path / "TS_01.mrc", gaussian_tomogram(centre, sigma, input_voxel), input_voxel
    )
    particles = pixel_table([centre / input_voxel], {"rlnTomoName": "TS_01"})
    box = 16
    stack = SubtomogramStack.from_tomograms(
        particles, {"TS_01": tomogram}, box_size=box, voxel_size=output_voxel
    )
    assert stack.voxel_size == output_voxel and stack.shape == (1, box, box, box)
    cube = stack[0].astype(np.float64)
    grid = np.indices(cube.shape).reshape(3, -1).T
    weights = cube.ravel() / cube.sum()
    centroid = weights @ grid
    np.testing.assert_allclose(centroid, box // 2, atol=0.05)
    width = np.sqrt(weights @ (grid[:, 2] - centroid[2]) ** 2) * output_voxel
    antialias = max(0.0, (output_voxel / input_voxel - 1) / 2) * input_voxel
    assert width == pytest.approx(np.hypot(sigma, antialias), rel=0.05)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"box_size": 0}, "box_size must be a positive integer"),
        ({"box_size": 2.5}, "box_size must be a positive integer"),
        ({"box_size": True}, "box_size must be a positive integer"),
        ({"box_size": 4, "voxel_size": -1.0}, "voxel_size must be a positive"),
        ({"box_size": 4, "on_outside": "drop"}, "on_outside must be 'error' or 'skip'"),
    ],
)
def test_bad_arguments(relion5, kwargs, match):
    star, tomograms_star = relion5
    with pytest.raises(ValueError, match=match):
        SubtomogramStack.from_tomograms(star, tomograms_star, **kwargs)


def test_bad_tables_and_tomograms(tmp_path, relion5):
    star, _ = relion5
    tomogram = write_mrc(tmp_path / "TS_01.mrc", index_tomogram())
    good = pixel_table([(3, 4, 5)], {"rlnTomoName": "TS_01"})
    with pytest.raises(ValueError, match=r"rlnCenteredCoordinateXAngst.*rlnCoordinateX"):
        SubtomogramStack.from_tomograms(
            good.drop(columns="rlnCoordinateZ"), {"TS_01": tomogram}, box_size=4
        )
    with pytest.raises(ValueError, match="no tomogram name column"):
        SubtomogramStack.from_tomograms(
            good.drop(columns="rlnTomoName"), {"TS_01": tomogram}, box_size=4
        )
    with pytest.raises(ValueError, match=r"\['TS_09'\]; available: \['TS_01'\]"):
        SubtomogramStack.from_tomograms(
            good.assign(rlnTomoName="TS_09"), {"TS_01": tomogram}, box_size=4
        )
    with pytest.raises(FileNotFoundError, match=r"missing\.mrc"):
        SubtomogramStack.from_tomograms(good, {"TS_01": tmp_path / "missing.mrc"}, box_size=4)
    with pytest.raises(ValueError, match=r"pass tomograms= as RELION's tomograms\.star"):
        SubtomogramStack.from_tomograms(star, box_size=4)
    unknown = write_mrc(tmp_path / "unknown.mrc", index_tomogram(), voxel_size=0.0)
    with pytest.raises(ValueError, match="no voxel size in its header"):
        SubtomogramStack.from_tomograms(good, {"TS_01": unknown}, box_size=4)
    flat = write_mrc(tmp_path / "flat.mrc", np.zeros((1, 48, 64)))
    with pytest.raises(ValueError, match="2D image"):
        SubtomogramStack.from_tomograms(good, {"TS_01": flat}, box_size=4)
    squashed = write_mrc(tmp_path / "squashed.mrc", index_tomogram())
    with mrcfile.open(squashed, "r+") as mrc:
        mrc.voxel_size = (10.0, 10.0, 20.0)
    with pytest.raises(ValueError, match="non-cubic voxels"):
        SubtomogramStack.from_tomograms(good, {"TS_01": squashed}, box_size=4)


def test_relative_tomogram_paths_not_found_name_where_they_were_looked_for(tmp_path):
    tomograms_star = tmp_path / "deep/tomograms.star"
    tomograms_star.parent.mkdir()
    starfile.write(
        {
            "global": pd.DataFrame(
                {"rlnTomoName": ["TS_01"], "rlnTomoReconstructedTomogram": ["rec/TS_01.mrc"]}
            )
        },
        tomograms_star,
    )
    particles = pixel_table([(3, 4, 5)], {"rlnTomoName": "TS_01"})
    with pytest.raises(FileNotFoundError, match=r"deep/rec/TS_01.mrc.*project folder"):
        SubtomogramStack.from_tomograms(particles, tomograms_star, box_size=4)


def test_construction_reads_headers_only(relion5, monkeypatch):
    star, tomograms_star = relion5
    monkeypatch.setattr(mrcfile, "mmap", lambda *a, **k: pytest.fail("data read at construction"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stack = SubtomogramStack.from_tomograms(star, tomograms_star, box_size=4)
    assert len(stack) == 3


def test_predict_streams_a_tomogram_stack(relion5, volumes):
    star, tomograms_star = relion5
    X, y = volumes
    model = Cnn3DClassifier(arch="tiny", random_state=0, **FAST).fit(X, y)
    stack = SubtomogramStack.from_tomograms(star, tomograms_star, box_size=8)
    expected = model.predict(np.asarray(stack))
    np.testing.assert_array_equal(model.predict(stack), expected)
    assert model.predict_proba(stack).shape == (3, 3)


def test_origins_are_rotated_by_the_subtomogram_orientation(relion5):
    # RELION 5 subtracts A_subtomogram * origin; a 90 degree tilt turns an x origin into z.
    star, tomograms_star = relion5
    table = starfile.read(star)["particles"].assign(
        rlnTomoSubtomogramRot=0.0, rlnTomoSubtomogramTilt=90.0, rlnTomoSubtomogramPsi=0.0
    )
    stack = SubtomogramStack.from_tomograms(table, tomograms_star, box_size=4)
    assert stack[2][2, 2, 2] == code(15, 24, 32)


def test_all_particles_outside_is_an_error_even_when_skipping(relion5):
    _, tomograms_star = relion5
    table = pd.DataFrame(
        {
            "rlnTomoName": ["TS_01"],
            "rlnCenteredCoordinateXAngst": [1e6],
            "rlnCenteredCoordinateYAngst": [0.0],
            "rlnCenteredCoordinateZAngst": [0.0],
        }
    )
    with pytest.raises(ValueError, match=r"No particle is left.*pixel size"):
        SubtomogramStack.from_tomograms(table, tomograms_star, box_size=4, on_outside="skip")
