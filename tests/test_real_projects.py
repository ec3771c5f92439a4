"""Real STAR files from RELION 3.1, 4 and 5, Warp and TOMOMAN: extraction and write-back.

Each case lays out a project as the program that wrote the STAR file would have, writes small
tomograms of random noise at the paths or names the file gives, extracts with
:meth:`SubtomogramStack.from_tomograms` as a new user would, and writes predictions back with
:func:`write_predictions`. Every box is compared with the same box cut from the tomogram by the
test itself, so a box from the wrong place (a wrong pixel size, origin sign, axis order or
centre) cannot pass.

The real coordinates are in full-size pixels (thousands); the tomograms here are coarse (a
voxel 16 or 25 coordinate pixels wide, or as small as the file allows) with the header voxel
size that keeps the physical positions where the file puts them. The conventions the test
uses to find each particle (the sources are cited in tests/data/README.md and the user
guide):

- voxel ``i`` has its centre at 0-based coordinate ``i`` (RELION, Warp: "starting from zero
  at the center of the first voxel"); X/Y/Z are array axes 2/1/0; a box of ``b`` voxels
  starts at ``round(position) - b // 2``;
- RELION 5: ``position = (rlnCenteredCoordinateAngst - rlnOriginAngst) / voxel + size / 2``
  with the tomogram's voxel size ``rlnTomoTiltSeriesPixelSize * rlnTomoTomogramBinning`` and
  size ``rlnTomoSize / rlnTomoTomogramBinning`` (RELION's ``ParticleSet::
  getParticleCoordDecenteredPixel``, ``TomogramSet``: ``centre = size / 2``);
- RELION 4: ``rlnCoordinate`` in unbinned tilt-series pixels (``rlnTomoTiltSeriesPixelSize``);
- RELION 3.x and Warp: ``rlnCoordinate`` in the pixels of the exported subtomograms
  (``rlnDetectorPixelSize * 1e4 / rlnMagnification`` = ``rlnPixelSize``); the particle is at
  ``rlnCoordinate - rlnOrigin`` (``rlnOriginAngst`` divided by that pixel size).
"""

from __future__ import annotations

import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile

from skdistill.io import EdgePaddingWarning, SubtomogramStack, write_predictions
from skdistill.io.star import CLASSES_BLOCK

DATA = Path(__file__).parent / "data"
XYZ = ("X", "Y", "Z")
NEW_COLUMNS = ["rlnClassNumber", "rlnMaxValueProbDistribution"]


@dataclass
class Project:
    """A real STAR file in a project folder, with the tomograms it names."""

    star: Path  # the particles STAR file to read
    tomograms: object  # what is passed as from_tomograms(tomograms=...)
    kwargs: dict  # other keyword arguments (box_size, coordinate_pixel_size)
    volumes: dict  # tomogram name in the STAR file -> (z, y, x) array written
    names: np.ndarray  # the tomogram of each particle row
    centres: np.ndarray  # (n, 3) expected particle centres in tomogram voxels, (z, y, x)
    folder: Path  # the project folder (the working directory, as RELION runs there)

    @property
    def box(self) -> int:
        return self.kwargs["box_size"]

    def inside(self) -> np.ndarray:
        """Rows whose centre lies in its tomogram."""
        shapes = np.array([self.volumes[name].shape for name in self.names])
        return np.all((self.centres >= -0.5) & (self.centres < shapes - 0.5), axis=1)


def _particles(star: Path) -> tuple[str, pd.DataFrame]:
    blocks = starfile.read(star, always_dict=True)
    name = "particles" if "particles" in blocks else next(iter(blocks))
    return name, blocks[name]


def _write_tomogram(path: Path, shape, voxel_size: float, rng) -> tuple[np.ndarray, float]:
    """Random-noise tomogram; returns it and the voxel size as the header stores it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    volume = rng.standard_normal(shape).astype(np.float32)
    with mrcfile.new(path, volume) as mrc:
        mrc.voxel_size = voxel_size
    with mrcfile.open(path, header_only=True) as mrc:
        return volume, float(mrc.voxel_size.x)  # float32, as a reader sees it


def _pixel_centres(table: pd.DataFrame, pixel_size: float) -> np.ndarray:
    """``rlnCoordinate - rlnOrigin`` in coordinate pixels, (x, y, z)."""
    xyz = table[[f"rlnCoordinate{a}" for a in XYZ]].to_numpy(float)
    if f"rlnOrigin{XYZ[0]}Angst" in table:
        xyz -= table[[f"rlnOrigin{a}Angst" for a in XYZ]].to_numpy(float) / pixel_size
    elif "rlnOriginX" in table:
        xyz -= table[[f"rlnOrigin{a}" for a in XYZ]].to_numpy(float)
    return xyz


def _check_unambiguous(project: Project) -> Project:
    """The test data must not put a centre on a rounding tie or on a tomogram's edge."""
    fraction = project.centres - np.floor(project.centres)
    assert np.abs(fraction - 0.5).min() > 5e-3, "a centre is on a rounding tie"
    shapes = np.array([project.volumes[name].shape for name in project.names])
    for edge in (-0.5, shapes - 0.5):
        assert np.abs(project.centres - edge).min() > 5e-3, "a centre is on an edge"
    return project


# The projects -----------------------------------------------------------------------------


def _relion5(tmp_path, rng, particles: str, star_path: str) -> Project:
    """RELION 5: particles + tomograms.star; tomograms at rlnTomoReconstructedTomogram."""
    star = tmp_path / star_path
    star.parent.mkdir(parents=True)
    shutil.copy(DATA / particles, star)
    tomograms_star = tmp_path / "Tomograms" / "job_tomo" / "tomograms.star"
    tomograms_star.parent.mkdir(parents=True)
    shutil.copy(DATA / "relion5_tomograms.star", tomograms_star)
    table = starfile.read(tomograms_star)
    volumes, geometry = {}, {}
    for row in table.itertuples():
        binning = row.rlnTomoTomogramBinning
        size_xyz = np.array([row.rlnTomoSizeX, row.rlnTomoSizeY, row.rlnTomoSizeZ]) / binning
        shape = tuple(round(float(s)) for s in size_xyz[::-1])
        volume, voxel = _write_tomogram(
            tmp_path / row.rlnTomoReconstructedTomogram,
            shape,
            row.rlnTomoTiltSeriesPixelSize * binning,
            rng,
        )
        volumes[row.rlnTomoName] = volume
        geometry[row.rlnTomoName] = (voxel, np.array(shape[::-1]))
    _, parts = _particles(star)
    names = parts["rlnTomoName"].astype(str).to_numpy()
    angst = parts[[f"rlnCenteredCoordinate{a}Angst" for a in XYZ]].to_numpy(float)
    if "rlnOriginXAngst" in parts:
        angst -= parts[[f"rlnOrigin{a}Angst" for a in XYZ]].to_numpy(float)
    centres = np.array(
        [a / geometry[n][0] + geometry[n][1] / 2 for a, n in zip(angst, names, strict=True)]
    )[:, ::-1]
    return Project(star, tomograms_star, {"box_size": 8}, volumes, names, centres, folder=tmp_path)


def _tomograms_by_name(tmp_path, rng, names, shape, voxel_size, file_name) -> tuple:
    """Tomograms in tmp_path/tomograms, one per name; returns (volumes, paths, voxel)."""
    volumes, paths = {}, {}
    for name in dict.fromkeys(names):
        path = tmp_path / "tomograms" / file_name(name)
        volumes[name], voxel = _write_tomogram(path, shape, voxel_size, rng)
        paths[name] = path
    return volumes, paths, voxel


def _pixel_project(
    tmp_path,
    rng,
    particles: str,
    *,
    name_column: str,
    pixel_size: float,
    factor: float,
    shape,
    file_name,
    as_dict: bool = False,
    box_size: int = 6,
    coordinate_pixel_size: float | None = None,
) -> Project:
    """RELION 3/4, Warp, TOMOMAN: pixel coordinates; tomograms ``factor`` times coarser."""
    star = tmp_path / "project" / particles
    star.parent.mkdir(parents=True)
    shutil.copy(DATA / particles, star)
    _, table = _particles(star)
    names = table[name_column].astype(str).to_numpy()
    volumes, paths, voxel = _tomograms_by_name(
        tmp_path, rng, names, shape, pixel_size * factor, file_name
    )
    centres = (_pixel_centres(table, pixel_size) * pixel_size / voxel)[:, ::-1]
    kwargs = {"box_size": box_size}
    if coordinate_pixel_size is not None:
        kwargs["coordinate_pixel_size"] = coordinate_pixel_size
    tomograms = paths if as_dict else tmp_path / "tomograms"
    return Project(star, tomograms, kwargs, volumes, names, centres, folder=star.parent)


def _stem(name: str) -> str:
    return Path(name).stem + ".mrc"


PROJECTS = {
    # RELION 5 Refine3D output, two optics groups, origins in Å; rows 1 and 3 lie outside.
    "relion5_refine3d": lambda tmp, rng: _relion5(
        tmp, rng, "relion5_3d_run_it050_data.star", "Refine3D/job_refine/run_it050_data.star"
    ),
    # RELION 5 picks: only rlnTomoName and centred coordinates, no optics table.
    "relion5_picks": lambda tmp, rng: _relion5(
        tmp, rng, "relion5_picks_particles.star", "Picks/job_picks/particles.star"
    ),
    # RELION 4: unbinned tilt-series pixels (1.971 Å), not rlnImagePixelSize (3.942 Å).
    "relion4_pseudosubtomo": lambda tmp, rng: _pixel_project(
        tmp,
        rng,
        "relion4_pseudosubtomo_data.star",
        name_column="rlnTomoName",
        pixel_size=1.971,
        factor=25,
        shape=(48, 112, 96),
        file_name=lambda name: f"{name}.mrc",
    ),
    # RELION 4 by the cryoET Data Portal: rlnTomoName is used, not rlnMicrographName; the
    # file gives no tilt-series pixel size, so the user passes it.
    "portal_relion4": lambda tmp, rng: _pixel_project(
        tmp,
        rng,
        "portal_relion4_particles.star",
        name_column="rlnTomoName",
        pixel_size=1.0,
        factor=1,
        shape=(16, 16, 16),
        file_name=lambda name: f"{name}.mrc",
        coordinate_pixel_size=1.0,
    ),
    # Warp / RELION 3.0 layout: tomo_1.tomostar -> tomograms/tomo_1.mrc; pixel origins.
    "portal_warp": lambda tmp, rng: _pixel_project(
        tmp,
        rng,
        "portal_warp_particles.star",
        name_column="rlnMicrographName",
        pixel_size=1.7005,
        factor=1,
        shape=(16, 16, 16),
        file_name=_stem,
    ),
    # TOMOMAN/STOPGAP -> RELION: rlnPixelSize 1.96, pixel origins, tomograms by a mapping;
    # the tomogram is 3x coarser, so its voxel size cannot stand in for rlnPixelSize.
    "portal_tomoman": lambda tmp, rng: _pixel_project(
        tmp,
        rng,
        "portal_tomoman_relion.star",
        name_column="rlnTomoName",
        pixel_size=1.96,
        factor=3,
        shape=(16, 16, 16),
        file_name=lambda name: f"{name}.mrc",
        as_dict=True,
    ),
    # Warp 1 export: coordinates in 5 Å pixels, tomogram Warp's tomo_ts01.mrc_15.00Apx.mrc.
    "warp_one_loop": lambda tmp, rng: _pixel_project(
        tmp,
        rng,
        "warp_one_loop.star",
        name_column="rlnMicrographName",
        pixel_size=5.0,
        factor=16,
        shape=(64, 72, 100),
        file_name=lambda name: name,
    ),
    # Warp 1 export, RELION 3.0 style, tomogram named by an absolute path of another machine.
    "warp_relion30": lambda tmp, rng: _pixel_project(
        tmp,
        rng,
        "warp_relion30.star",
        name_column="rlnMicrographName",
        pixel_size=5.364,
        factor=16,
        shape=(32, 64, 72),
        file_name=lambda name: Path(name).name,
    ),
    # RELION 3.1 refinement of Warp subtomograms: optics block, rlnImagePixelSize 3.3 Å,
    # tomogram TS.mrc.tomostar given by a mapping from that exact name.
    "relion31_warp_refine": lambda tmp, rng: _pixel_project(
        tmp,
        rng,
        "relion31_warp_refine_data.star",
        name_column="rlnMicrographName",
        pixel_size=3.3,
        factor=16,
        shape=(72, 80, 80),
        file_name=lambda name: "TS_10.00Apx.mrc",
        as_dict=True,
    ),
}


@pytest.fixture(params=sorted(PROJECTS))
def project(request, tmp_path, monkeypatch) -> Project:
    built = _check_unambiguous(PROJECTS[request.param](tmp_path, np.random.default_rng(0)))
    monkeypatch.chdir(built.folder)  # RELION runs in, and names paths from, the project
    return built


def _read(project: Project, **kwargs) -> SubtomogramStack:
    """from_tomograms as a user calls it; padding warnings are checked by their own test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EdgePaddingWarning)
        return SubtomogramStack.from_tomograms(
            project.star, project.tomograms, **project.kwargs, **kwargs
        )


def _expected_box(volume: np.ndarray, centre_zyx: np.ndarray, box: int) -> np.ndarray:
    """The box around ``centre_zyx`` cut by hand, padded with the tomogram's mean."""
    start = np.floor(centre_zyx + 0.5).astype(int) - box // 2
    out = np.full((box,) * 3, volume.mean(dtype=np.float64), dtype=np.float64)
    src = tuple(slice(max(s, 0), min(s + box, n)) for s, n in zip(start, volume.shape, strict=True))
    dst = tuple(slice(r.start - s, r.stop - s) for r, s in zip(src, start, strict=True))
    out[dst] = volume[src]
    return out


# Reading and extracting -------------------------------------------------------------------


def test_every_box_is_the_tomogram_around_its_particle(project):
    stack = _read(project, on_outside="skip")
    kept = np.flatnonzero(project.inside())
    assert len(stack) == len(kept)
    assert stack.voxel_size == pytest.approx(next(iter(_voxel_sizes(project).values())), rel=1e-6)
    for i, row in enumerate(kept):
        volume = project.volumes[project.names[row]]
        np.testing.assert_allclose(
            stack[i],
            _expected_box(volume, project.centres[row], project.box),
            rtol=1e-6,
            atol=1e-6,
            err_msg=f"row {row + 1} ({project.names[row]}, centre zyx {project.centres[row]})",
        )


def _voxel_sizes(project: Project) -> dict:
    sizes = {}
    for name in project.volumes:
        path = _tomogram_path(project, name)
        with mrcfile.open(path, header_only=True) as mrc:
            sizes[name] = float(mrc.voxel_size.x)
    return sizes


def _tomogram_path(project: Project, name: str) -> Path:
    if isinstance(project.tomograms, dict):
        return project.tomograms[name]
    if isinstance(project.tomograms, Path) and project.tomograms.is_dir():
        matches = [
            p
            for p in project.tomograms.iterdir()
            if p.name in (name, Path(name).name, Path(name).stem + ".mrc")
        ]
        return matches[0]
    table = starfile.read(project.tomograms)
    row = table[table["rlnTomoName"].astype(str) == name].iloc[0]
    return project.folder / row["rlnTomoReconstructedTomogram"]


def test_stack_keeps_the_kept_rows_tables_and_tomogram_groups(project):
    stack = _read(project, on_outside="skip")
    kept = np.flatnonzero(project.inside())
    blocks = starfile.read(project.star, always_dict=True)
    _, table = _particles(project.star)
    pd.testing.assert_frame_equal(
        stack.particles.reset_index(drop=True), table.iloc[kept].reset_index(drop=True)
    )
    if "optics" in blocks:
        pd.testing.assert_frame_equal(stack.optics, blocks["optics"])
    else:
        assert stack.optics is None
    np.testing.assert_array_equal(stack.groups, project.names[kept])
    assert _skipped_rows(stack) == np.flatnonzero(~project.inside()).tolist()


def _skipped_rows(stack) -> list[int]:
    """0-based rows of the STAR file that were skipped."""
    skipped = stack.skipped
    if isinstance(skipped, pd.DataFrame):
        return sorted(int(i) for i in skipped.index)
    return sorted(int(i) for i in np.asarray(skipped).ravel())


def test_particles_outside_their_tomogram_are_an_error_naming_them(project):
    outside = np.flatnonzero(~project.inside())
    if not len(outside):
        stack = _read(project)  # the default, on_outside="error", reads them all
        assert len(stack) == len(project.names)
        return
    with pytest.raises(ValueError) as error:
        _read(project)
    message = str(error.value)
    _, table = _particles(project.star)
    for row in outside:
        assert re.search(rf"\b{row + 1}\b", message), f"row {row + 1} not named: {message}"
        if "rlnTomoParticleName" in table:
            assert str(table["rlnTomoParticleName"].iloc[row]) in message
    shape = project.volumes[project.names[outside[0]]].shape
    for n in shape:
        assert re.search(rf"\b{n}\b", message), f"tomogram size {shape} not given: {message}"


def test_boxes_over_a_tomogram_edge_are_padded_counted_and_warned_once(project):
    kept = np.flatnonzero(project.inside())
    shapes = np.array([project.volumes[project.names[r]].shape for r in kept])
    start = np.floor(project.centres[kept] + 0.5).astype(int) - project.box // 2
    over_edge = int(np.sum(np.any((start < 0) | (start + project.box > shapes), axis=1)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stack = SubtomogramStack.from_tomograms(
            project.star, project.tomograms, **project.kwargs, on_outside="skip"
        )
        for i in range(len(stack)):
            stack[i]
    assert stack.n_padded == over_edge
    padding = [w for w in caught if issubclass(w.category, EdgePaddingWarning)]
    assert len(padding) == (1 if over_edge else 0), [str(w.message) for w in caught]


# Writing back -----------------------------------------------------------------------------


def test_predictions_written_back_keep_every_block_column_and_row(project, tmp_path):
    stack = _read(project, on_outside="skip")
    classes = np.array(["membrane", "ribosome", "tric"])
    n = len(stack)
    labels = classes[np.arange(n) % 3]  # as predict returns them
    proba = np.random.default_rng(1).dirichlet(np.ones(3), n)
    out = write_predictions(stack, tmp_path / "classified.star", labels, proba, classes=classes)

    before = starfile.read(project.star, always_dict=True)
    after = starfile.read(out, always_dict=True)
    block, table = _particles(project.star)
    assert list(after) == [*before, CLASSES_BLOCK]
    for key, value in before.items():
        if key == block:
            continue
        if isinstance(value, pd.DataFrame):
            pd.testing.assert_frame_equal(after[key], value)
        else:
            assert after[key] == value
    kept = table.iloc[np.flatnonzero(project.inside())].reset_index(drop=True)
    written = after[block]
    columns = [c for c in table.columns if c not in NEW_COLUMNS]
    assert [c for c in written.columns if c in columns] == columns
    pd.testing.assert_frame_equal(written[columns], kept[columns])
    np.testing.assert_array_equal(written["rlnClassNumber"], np.arange(n) % 3 + 1)
    np.testing.assert_allclose(written["rlnMaxValueProbDistribution"], proba.max(axis=1))
    assert after[CLASSES_BLOCK]["skdistillClassName"].tolist() == classes.tolist()


@pytest.mark.parametrize(
    "name",
    [
        "relion5_tomograms.star",
        "relion5_picks_particles.star",
        "relion4_pseudosubtomo_data.star",
        "portal_relion4_particles.star",
        "portal_warp_particles.star",
        "portal_tomoman_relion.star",
        "warp_one_loop.star",
        "relion31_warp_refine_data.star",
    ],
)
def test_every_real_file_round_trips_through_write_predictions(tmp_path, name):
    """All rows, by path: only the two class columns and the class-name block are new."""
    if name == "relion5_tomograms.star":  # not a particle table: refused, nothing written
        with pytest.raises(ValueError):
            write_predictions(DATA / name, tmp_path / "out.star", np.ones(2, int))
        assert not (tmp_path / "out.star").exists()
        return
    before = starfile.read(DATA / name, always_dict=True)
    block, table = _particles(DATA / name)
    labels = np.arange(len(table)) % 2 + 7
    out = write_predictions(DATA / name, tmp_path / "out.star", labels, classes=[7, 8])
    after = starfile.read(out, always_dict=True)
    assert list(after) == [*before, CLASSES_BLOCK]
    columns = [c for c in table.columns if c not in NEW_COLUMNS]
    pd.testing.assert_frame_equal(after[block][columns], table[columns])
    np.testing.assert_array_equal(after[block]["rlnClassNumber"], labels - 6)
