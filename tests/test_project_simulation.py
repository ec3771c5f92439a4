"""Simulated tomograms and RELION 5 projects: the particles are where the files say they are."""

from __future__ import annotations

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile

from skdistill.datasets import make_templates, make_tomogram, write_relion_project
from skdistill.datasets.physics import (
    apply_fourier_filter,
    ctf,
    missing_wedge_mask,
    rotation_matrices,
    transform_volumes,
)
from skdistill.datasets.templates import synthetic_assemblies
from skdistill.io import SubtomogramStack

# Tiny but crowded: at 20 Å the largest of the first three templates is 15 voxels across.
SHAPE, VOXEL_SIZE, N_PARTICLES, BOX = (32, 64, 64), 20.0, 9, 24


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    folder = tmp_path_factory.mktemp("relion") / "project"
    return write_relion_project(
        folder,
        shape=SHAPE,
        n_particles=N_PARTICLES,
        voxel_size=VOXEL_SIZE,
        snr=None,
        random_state=0,
    )


def _voxel_positions(particles: pd.DataFrame, tomogram: pd.Series) -> np.ndarray:
    """Positions (z, y, x) in voxels from RELION 5 centred Å coordinates (the convention)."""
    binning = tomogram["rlnTomoTomogramBinning"]
    voxel_size = tomogram["rlnTomoTiltSeriesPixelSize"] * binning
    size = tomogram[["rlnTomoSizeZ", "rlnTomoSizeY", "rlnTomoSizeX"]].to_numpy(float) / binning
    angstrom = particles[
        [
            "rlnCenteredCoordinateZAngst",
            "rlnCenteredCoordinateYAngst",
            "rlnCenteredCoordinateXAngst",
        ]
    ].to_numpy(float)
    return angstrom / voxel_size + size / 2


def _crop(volume: np.ndarray, position: np.ndarray, box: int) -> np.ndarray:
    start = np.round(position).astype(int) - box // 2
    out = np.zeros((box,) * 3, dtype=np.float32)
    inside = tuple(
        slice(max(s, 0), min(s + box, n)) for s, n in zip(start, volume.shape, strict=True)
    )
    out[tuple(slice(i.start - s, i.stop - s) for i, s in zip(inside, start, strict=True))] = volume[
        inside
    ]
    return out


def _expected(class_index: int, angles, shift) -> np.ndarray:
    """The noise-free particle as the simulator makes it: template at pose, CTF and wedge."""
    _, templates = make_templates(3, size=BOX, voxel_size=VOXEL_SIZE)
    rotated = transform_volumes(
        templates[class_index : class_index + 1],
        rotation_matrices(np.asarray([angles])),
        np.asarray([shift]),
    )
    return apply_fourier_filter(rotated, ctf(BOX, VOXEL_SIZE) * missing_wedge_mask(BOX))[0]


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_project_files_follow_relion5(project):
    assert sorted(p.name for p in project.folder.iterdir()) == [
        "Tomograms",
        "particles.star",
        "tomograms.star",
    ]
    tomograms = starfile.read(project.tomograms_star)
    assert tomograms["rlnTomoName"].tolist() == project.tomogram_names == ["TS_01", "TS_02"]
    for (_, row), path in zip(tomograms.iterrows(), project.tomograms, strict=True):
        assert project.folder / row["rlnTomoReconstructedTomogram"] == path
        assert row["rlnTomoTomogramBinning"] == 2
        assert row["rlnTomoTiltSeriesPixelSize"] == VOXEL_SIZE / 2
        sizes = row[["rlnTomoSizeZ", "rlnTomoSizeY", "rlnTomoSizeX"]].tolist()
        assert sizes == [2 * n for n in SHAPE]  # unbinned pixels
        with mrcfile.open(path, permissive=False) as mrc:
            assert mrc.data.dtype == np.float32 and mrc.data.shape == SHAPE
            assert float(mrc.voxel_size.x) == VOXEL_SIZE

    blocks = starfile.read(project.particles_star, always_dict=True)
    assert list(blocks) == ["optics", "particles", "skdistill_classes"]
    optics, particles, classes = (
        blocks["optics"],
        blocks["particles"],
        blocks["skdistill_classes"],
    )
    assert optics["rlnOpticsGroupName"].tolist() == project.tomogram_names
    assert (optics["rlnTomoTiltSeriesPixelSize"] == VOXEL_SIZE / 2).all()
    assert len(particles) == 2 * N_PARTICLES
    assert particles["rlnTomoParticleName"].iloc[:3].tolist() == ["TS_01/1", "TS_01/2", "TS_01/3"]
    groups = particles["rlnOpticsGroup"].map(
        dict(zip(optics.rlnOpticsGroup, optics.rlnOpticsGroupName, strict=True))
    )
    assert (groups == particles["rlnTomoName"]).all()
    # Balanced, 1-based classes, named in the data_classes block skdistill reads.
    for _, table in particles.groupby("rlnTomoName"):
        assert table["rlnClassNumber"].value_counts().to_dict() == {1: 3, 2: 3, 3: 3}
    assert classes["rlnClassNumber"].tolist() == [1, 2, 3]
    assert classes["skdistillClassName"].tolist() == project.class_names
    assert project.class_names == ["globule", "C6-ring", "actin-like-filament"]


def test_particles_are_where_the_files_say(project):
    """Crops at the STAR coordinates match the true class at the true pose, and only there."""
    tomograms = starfile.read(project.tomograms_star)
    particles = starfile.read(project.particles_star)["particles"]
    rng = np.random.default_rng(0)
    own, others, wrong_pose, elsewhere = [], [], [], []
    for _, tomogram in tomograms.iterrows():
        volume = mrcfile.read(project.folder / tomogram["rlnTomoReconstructedTomogram"])
        table = particles[particles["rlnTomoName"] == tomogram["rlnTomoName"]]
        positions = _voxel_positions(table, tomogram)
        for (_, row), position in zip(table.iterrows(), positions, strict=True):
            crop = _crop(volume, position, BOX)
            angles = row[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy(float)
            shift = position - np.round(position)
            k = int(row["rlnClassNumber"]) - 1
            expected = _expected(k, angles, shift)
            own.append(_correlation(crop, expected))
            others.append(
                max(_correlation(crop, _expected(j, angles, shift)) for j in {0, 1, 2} - {k})
            )
            if k > 0:  # the globule looks the same in every pose
                turned = _expected(k, angles + np.array([90.0, 0.0, 0.0]), shift)
                wrong_pose.append(_correlation(crop, turned))
            offset = rng.uniform(6, 10, size=3) * rng.choice([-1, 1], size=3)
            elsewhere.append(_correlation(_crop(volume, position + offset, BOX), expected))
    own = np.array(own)
    assert (own > np.array(others)).all()  # every particle is of its written class
    assert np.median(own) > 0.8
    assert np.median(wrong_pose) < 0.3
    assert np.max(elsewhere) < np.median(own) and np.median(elsewhere) < 0.3


def test_make_tomogram_places_particles_apart_and_inside():
    tomogram = make_tomogram(SHAPE, 12, voxel_size=VOXEL_SIZE, snr=None, random_state=1)
    table = tomogram.particles
    assert list(table.columns) == ["class", "class_name", "z", "y", "x", "rot", "tilt", "psi"]
    radii = np.array([a.radius / VOXEL_SIZE for a in synthetic_assemblies(3)])[table["class"]]
    positions = table[["z", "y", "x"]].to_numpy()
    assert (positions >= radii[:, None]).all()
    assert (positions <= np.array(SHAPE) - 1 - radii[:, None]).all()
    distances = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    np.fill_diagonal(distances, np.inf)
    assert (distances >= radii[:, None] + radii[None]).all()
    assert table["class_name"].tolist() == [tomogram.class_names[c] for c in table["class"]]
    assert tomogram.templates.shape[0] == 3 and tomogram.volume.dtype == np.float32
    volume, particles = tomogram  # the tomogram and its particle table
    assert volume is tomogram.volume and particles is tomogram.particles


def test_snr_is_measured_around_the_particles():
    kwargs = {"voxel_size": VOXEL_SIZE, "random_state": 2}
    clean = make_tomogram(SHAPE, 8, snr=None, **kwargs)
    noisy = make_tomogram(SHAPE, 8, snr=0.5, **kwargs)
    pd.testing.assert_frame_equal(clean.particles, noisy.particles)  # same particles, poses
    noise = noisy.volume - clean.volume
    box = clean.templates.shape[-1]
    positions = clean.particles[["z", "y", "x"]].to_numpy()
    signal = np.mean([_crop(clean.volume, p, box).var() for p in positions])
    # Crops at the edge are zero-padded here, so the ratio is close to, not exactly, 0.5.
    assert signal / noise.var() == pytest.approx(0.5, rel=0.15)
    assert abs(noise.mean()) < 0.01 * noise.std()


def test_same_random_state_same_project(tmp_path):
    kwargs = {"n_tomograms": 1, "shape": SHAPE, "n_particles": 3, "voxel_size": VOXEL_SIZE}
    first = write_relion_project(tmp_path / "a", random_state=7, **kwargs)
    second = write_relion_project(tmp_path / "b", random_state=7, **kwargs)
    third = write_relion_project(tmp_path / "c", random_state=8, **kwargs)
    assert first.tomograms[0].read_bytes() == second.tomograms[0].read_bytes()
    assert first.tomograms[0].read_bytes() != third.tomograms[0].read_bytes()
    for a, b in ((first, second), (first, third)):
        pd.testing.assert_frame_equal(
            starfile.read(a.tomograms_star), starfile.read(b.tomograms_star)
        )
    same = starfile.read(first.particles_star)["particles"]
    assert same.equals(starfile.read(second.particles_star)["particles"])
    assert not same.equals(starfile.read(third.particles_star)["particles"])


def test_existing_project_needs_overwrite(tmp_path):
    kwargs = {"n_tomograms": 1, "shape": SHAPE, "n_particles": 2, "voxel_size": VOXEL_SIZE}
    folder = tmp_path / "project"
    write_relion_project(folder, random_state=0, **kwargs)
    before = (folder / "particles.star").read_bytes()
    with pytest.raises(FileExistsError, match="overwrite"):
        write_relion_project(folder, random_state=1, **kwargs)
    assert (folder / "particles.star").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project"]  # no leftovers

    replaced = write_relion_project(folder, random_state=1, overwrite=True, **kwargs)
    assert replaced.particles_star.read_bytes() != before

    (folder / "notes.txt").write_text("mine")  # a folder with other files is never replaced
    with pytest.raises(FileExistsError):
        write_relion_project(folder, random_state=2, overwrite=True, **kwargs)
    assert (folder / "notes.txt").read_text() == "mine"


def test_own_template_maps(tmp_path):
    grid = np.indices((12, 12, 12)) - 6
    ball = (np.sqrt((grid**2).sum(0)) < 4).astype(np.float32)
    bar = ((abs(grid[0]) < 5) & (abs(grid[1]) < 2) & (abs(grid[2]) < 2)).astype(np.float32)
    # The bar as an MRC map at twice the voxel size: resampled to 2 x 12 = 24 voxels.
    mrcfile.write(tmp_path / "bar.mrc", bar, voxel_size=2 * VOXEL_SIZE)
    tomogram = make_tomogram(
        (32, 48, 48),
        4,
        templates=[ball, tmp_path / "bar.mrc"],
        voxel_size=VOXEL_SIZE,
        snr=1.0,
        random_state=0,
    )
    assert tomogram.class_names == ["template-0", "bar"]
    assert sorted(tomogram.particles["class"]) == [0, 0, 1, 1]
    assert tomogram.templates.shape == (2, 24, 24, 24)
    positions = tomogram.particles[["z", "y", "x"]].to_numpy()
    # The bar is 18 voxels long at this voxel size, the ball 7 across: no centre comes closer
    # to a bar's than the bar's half-length plus the ball's radius.
    distances = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    near_bar = (tomogram.particles["class"].to_numpy() == 1)[:, None] & ~np.eye(4, dtype=bool)
    assert distances[near_bar | near_bar.T].min() > 9 + 3.5


def test_the_stack_reader_finds_the_class_names(project, tmp_path):
    # The data_classes block is the one skdistill.io reads (here through an extracted copy).
    particles = starfile.read(project.particles_star, always_dict=True)
    table = particles["particles"].iloc[:3].copy()
    tomograms = starfile.read(project.tomograms_star)
    volume = mrcfile.read(project.tomograms[0])
    names = []
    for i, position in enumerate(_voxel_positions(table, tomograms.iloc[0])):
        names.append(f"p{i}.mrc")
        mrcfile.write(tmp_path / names[-1], _crop(volume, position, BOX), voxel_size=VOXEL_SIZE)
    table["rlnImageName"] = names
    optics = particles["optics"].assign(rlnImagePixelSize=VOXEL_SIZE, rlnImageSize=BOX)
    optics["rlnImageDimensionality"] = 3
    starfile.write(
        {"optics": optics, "particles": table, "skdistill_classes": particles["skdistill_classes"]},
        tmp_path / "extracted.star",
    )
    stack = SubtomogramStack(tmp_path / "extracted.star")
    assert stack.class_names == project.class_names
    assert stack.labels.tolist() == (table["rlnClassNumber"] - 1).tolist()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"shape": (64, 64)}, ValueError, r"three integers \(z, y, x\)"),
        ({"shape": (32, 64.0, 64)}, ValueError, "three integers"),
        ({"shape": (12, 64, 64)}, ValueError, "every axis needs at least 15 voxels"),
        ({"n_particles": 0}, ValueError, "at least 1"),
        ({"n_particles": 60}, ValueError, r"Only \d+ of the 60 particles fit .*about \d+ fit"),
        ({"n_particles": 10_000}, ValueError, r"at most \d+ particles of these classes fit"),
        ({"snr": 0.0}, ValueError, "snr=0.0 is outside the accepted range"),
        ({"voxel_size": 1000.0}, ValueError, "voxel_size=1000.0 Å is outside"),
        ({"tilt_range": (60, -60)}, ValueError, "tilt_range"),
        ({"n_classes": 2, "templates": [np.ones((4, 4, 4))]}, ValueError, "n_classes=2 but 1"),
        ({"shape": (4000, 40000, 40000)}, MemoryError, "tomogram of 4000x40000x40000"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, match):
    arguments = {"shape": SHAPE, "n_particles": 4, "voxel_size": VOXEL_SIZE, "random_state": 0}
    with pytest.raises(error, match=match):
        make_tomogram(**{**arguments, **kwargs})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_tomograms": 0}, "n_tomograms must be an integer of at least 1"),
        ({"binning": 1.5}, "binning must be an integer"),
        ({"n_particles": 60}, "about \\d+ fit"),
    ],
)
def test_bad_project_arguments_write_nothing(tmp_path, kwargs, match):
    arguments = {"shape": SHAPE, "n_particles": 4, "voxel_size": VOXEL_SIZE, "random_state": 0}
    with pytest.raises(ValueError, match=match):
        write_relion_project(tmp_path / "project", **{**arguments, **kwargs})
    assert list(tmp_path.iterdir()) == []
