"""A simulated RELION 5 tomography project: tomograms, ``tomograms.star`` and ``particles.star``.

:func:`write_relion_project` writes what a RELION 5 project holds after reconstruction and
picking, for tomograms of :func:`~skdistill.datasets.make_tomogram` with the true classes and
poses of their particles::

    folder/
        Tomograms/TS_01.mrc, TS_02.mrc, ...   float32 MRC, voxel size in the header
        tomograms.star                        data_global: one row per tomogram
        particles.star                        data_optics, data_particles, data_skdistill_classes

The labels follow RELION 5's own files (``tomograms.star`` of its ReconstructTomograms job,
particle tables of its Refine3D/Class3D jobs, e.g. ``tests/data/relion5_3d_run_it050_data
.star``) and ``src/metadata_label.h``:

- ``tomograms.star``: ``rlnTomoName``; ``rlnTomoReconstructedTomogram``, the MRC file relative
  to the project folder (RELION's paths are relative to the project, where it runs);
  ``rlnTomoTiltSeriesPixelSize`` (Å) and ``rlnTomoTomogramBinning``, whose product is the
  tomogram's voxel size; ``rlnTomoSizeX/Y/Z``, the tomogram's extent in *unbinned* (tilt
  series) pixels; ``rlnVoltage`` (kV), ``rlnSphericalAberration`` (mm) and
  ``rlnAmplitudeContrast`` (0: the simulated CTF is a pure phase contrast,
  :func:`~skdistill.datasets.physics.ctf`); ``rlnTomoHand`` -1, the value of RELION's own
  projects (it only matters for per-particle defocus, which the simulation does not vary);
  ``rlnOpticsGroupName``, the tomogram's name.
- ``particles.star``: ``data_optics`` with one optics group per tomogram (named after it, as
  RELION 5 writes them); ``data_particles`` with ``rlnTomoName``, ``rlnTomoParticleName``
  (``TS_01/1``: tomogram and 1-based particle number within it), the centre as
  ``rlnCenteredCoordinate{X,Y,Z}Angst``, the pose as ``rlnAngleRot/Tilt/Psi`` (ZYZ, as
  :func:`~skdistill.datasets.make_subtomograms` writes them), ``rlnOpticsGroup`` and the true
  class as ``rlnClassNumber`` (1-based); ``data_skdistill_classes`` maps class numbers to class
  names (``skdistillClassName``), as :mod:`skdistill.io.star` reads them. No ``rlnImageName``: the
  particles are picks in the tomograms, not extracted subtomograms.

There are no tilt series, so RELION jobs that start from them (subtomogram extraction,
reconstruction, CTF refinement) cannot run on the project; readers of reconstructed tomograms
and picks (skdistill's ``SubtomogramStack.from_tomograms``, napari, ArtiaX) can.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path

import numpy as np
import pandas as pd
import starfile

from ..io.atomic import publish_directory
from ..io.conventions import centered_angstrom
from ..io.mrc import write_new_volume
from ..io.star import CLASS_NAME_LABEL, CLASSES_BLOCK
from .simulation import seed_entropy
from .tomogram import _TomogramPlan

__all__ = ["RelionProject", "write_relion_project"]

#: Folder of the tomograms, inside the project folder.
TOMOGRAMS_FOLDER = "Tomograms"
#: File names of the project's STAR files.
TOMOGRAMS_STAR, PARTICLES_STAR = "tomograms.star", "particles.star"
_OUTPUTS = {TOMOGRAMS_FOLDER, TOMOGRAMS_STAR, PARTICLES_STAR}
# RELION's own projects use -1 (see the module docstring).
_TOMO_HAND = -1.0
# The simulated CTF (physics.ctf) is a pure phase contrast.
_AMPLITUDE_CONTRAST = 0.0


@dataclass(frozen=True)
class RelionProject:
    """The files of a project written by :func:`write_relion_project`.

    Attributes
    ----------
    folder : Path
        The project folder (absolute).
    tomogram_names : list of str
        ``rlnTomoName`` of each tomogram: ``TS_01``, ``TS_02``, ...
    tomograms : list of Path
        The MRC file of each tomogram, in the order of ``tomogram_names``.
    tomograms_star : Path
        ``tomograms.star``.
    particles_star : Path
        ``particles.star``.
    class_names : list of str
        Name of class number ``k + 1`` (``rlnClassNumber``) at index ``k``.
    """

    folder: Path
    tomogram_names: list[str]
    tomograms: list[Path]
    tomograms_star: Path
    particles_star: Path
    class_names: list[str]


def write_relion_project(
    folder: str | os.PathLike,
    *,
    n_tomograms: int = 2,
    shape: tuple[int, int, int] = (64, 256, 256),
    n_particles: int = 50,
    n_classes: int = 3,
    templates=None,
    voxel_size: float = 10.0,
    binning: int = 2,
    snr: float | None = 0.05,
    tilt_range: tuple[float, float] = (-60, 60),
    random_state=None,
    overwrite: bool = False,
) -> RelionProject:
    """Write a small simulated RELION 5 tomography project with the true particle classes.

    Each tomogram is simulated by :func:`~skdistill.datasets.make_tomogram`; the files and
    their labels are described in :mod:`skdistill.datasets.relion_project`. The project is
    written into a hidden folder beside ``folder`` and moved into place in one step
    (:func:`~skdistill.io.atomic.publish_directory`), so ``folder`` never holds a partial
    project.

    Coordinates: a particle at voxel position ``(z, y, x)`` (voxel ``k`` centred at ``k``) of
    a tomogram of ``(D, H, W)`` voxels is written as ``rlnCenteredCoordinateXAngst = (x - W
    / 2) * voxel_size`` and likewise for Y (``H``) and Z (``D``). So ``x = X / voxel_size + W
    / 2``, with ``W = rlnTomoSizeX / rlnTomoTomogramBinning`` and ``voxel_size =
    rlnTomoTiltSeriesPixelSize * rlnTomoTomogramBinning``.

    Parameters
    ----------
    folder : path-like
        The project folder; created, with its parents. It must not exist or be empty unless
        ``overwrite``.
    n_tomograms : int, default=2
        Number of tomograms.
    shape : (int, int, int), default=(64, 256, 256)
        Shape of each tomogram in voxels, ordered (z, y, x).
    n_particles : int, default=50
        Particles per tomogram.
    n_classes : int, default=3
        Number of classes (the first synthetic templates), or of ``templates``.
    templates : list of (ndarray or path-like), default=None
        Own template maps, as in :func:`~skdistill.datasets.make_tomogram`.
    voxel_size : float, default=10.0
        Voxel size of the tomograms in Å.
    binning : int, default=2
        ``rlnTomoTomogramBinning``: the tomograms are this many times coarser than the
        (notional) tilt series, whose pixel size ``rlnTomoTiltSeriesPixelSize`` is therefore
        ``voxel_size / binning``; ``rlnTomoSize{X,Y,Z}`` are ``shape * binning``.
    snr : float or None, default=0.05
        Signal-to-noise ratio around a particle (see
        :func:`~skdistill.datasets.make_tomogram`); None for noise-free tomograms.
    tilt_range : (float, float), default=(-60, 60)
        Tilt angles in degrees; the rest of Fourier space is the missing wedge.
    random_state : int, RandomState instance or None, default=None
        Seed: the same seed writes identical files.
    overwrite : bool, default=False
        Replace an existing project in ``folder`` (one holding only a project's files).

    Returns
    -------
    RelionProject
        The folder, tomogram names and files, STAR files and class names.

    Raises
    ------
    FileExistsError
        If ``folder`` exists and is not empty, and ``overwrite`` is false; or it holds files
        other than a project's.
    ValueError
        If a parameter is out of range or the particles do not fit (see
        :func:`~skdistill.datasets.make_tomogram`).
    MemoryError
        If this machine lacks the memory to simulate one tomogram (before any work).

    Examples
    --------
    >>> import tempfile, starfile
    >>> from skdistill.datasets import write_relion_project
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     project = write_relion_project(
    ...         f"{tmp}/project", shape=(48, 96, 96), n_particles=6, random_state=0)
    ...     particles = starfile.read(project.particles_star)["particles"]
    >>> project.tomogram_names, len(particles)
    (['TS_01', 'TS_02'], 12)
    """
    for name, value in (("n_tomograms", n_tomograms), ("binning", binning)):
        if not isinstance(value, Integral) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an integer of at least 1, got {value!r}.")
    if not isinstance(overwrite, bool):
        raise ValueError(f"overwrite must be True or False, got {overwrite!r}.")
    plan = _TomogramPlan(
        shape,
        n_classes=n_classes,
        templates=templates,
        voxel_size=voxel_size,
        snr=snr,
        tilt_range=tilt_range,
        defocus=-5.0,
        voltage=300.0,
        cs=2.0,
    )
    plan.check_n_particles(n_particles)
    entropy = seed_entropy(random_state)
    digits = max(2, len(str(n_tomograms)))
    names = [f"TS_{i + 1:0{digits}d}" for i in range(n_tomograms)]
    relative = [f"{TOMOGRAMS_FOLDER}/{name}.mrc" for name in names]

    with publish_directory(
        folder, overwrite=overwrite, replaceable=lambda entry: entry in _OUTPUTS
    ) as staging:
        (staging / TOMOGRAMS_FOLDER).mkdir()
        tables = []
        for i, (name, path) in enumerate(zip(names, relative, strict=True)):
            rng = np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=(i,)))
            tomogram = plan.simulate(n_particles, rng)
            write_new_volume(staging / path, tomogram.volume, voxel_size=plan.voxel_size)
            tables.append(_particle_rows(tomogram.particles, name, i + 1, plan))
            del tomogram  # before the next one is simulated: one tomogram in memory at a time
        optics = _optics(names, plan, binning)
        starfile.write(
            {"global": _global(names, relative, optics, plan, binning)},
            staging / TOMOGRAMS_STAR,
        )
        class_names = plan.class_names
        classes = pd.DataFrame(
            {
                "rlnClassNumber": np.arange(1, len(class_names) + 1),
                CLASS_NAME_LABEL: class_names,
            }
        )
        starfile.write(
            {
                "optics": optics,
                "particles": pd.concat(tables, ignore_index=True),
                CLASSES_BLOCK: classes,
            },
            staging / PARTICLES_STAR,
        )
    root = Path(os.path.realpath(folder))
    return RelionProject(
        folder=root,
        tomogram_names=names,
        tomograms=[root / path for path in relative],
        tomograms_star=root / TOMOGRAMS_STAR,
        particles_star=root / PARTICLES_STAR,
        class_names=class_names,
    )


def _optics(names: list[str], plan: _TomogramPlan, binning: int) -> pd.DataFrame:
    """One optics group per tomogram, named after it, as RELION 5 writes them."""
    n = len(names)
    return pd.DataFrame(
        {
            "rlnOpticsGroup": np.arange(1, n + 1),
            "rlnOpticsGroupName": names,
            "rlnVoltage": np.full(n, plan.voltage),
            "rlnSphericalAberration": np.full(n, plan.cs),
            "rlnAmplitudeContrast": np.full(n, _AMPLITUDE_CONTRAST),
            "rlnTomoTiltSeriesPixelSize": np.full(n, plan.voxel_size / binning),
        }
    )


def _global(
    names: list[str],
    relative: list[str],
    optics: pd.DataFrame,
    plan: _TomogramPlan,
    binning: int,
) -> pd.DataFrame:
    n = len(names)
    depth, height, width = plan.shape
    return pd.DataFrame(
        {
            "rlnTomoName": names,
            "rlnVoltage": optics["rlnVoltage"],
            "rlnSphericalAberration": optics["rlnSphericalAberration"],
            "rlnAmplitudeContrast": optics["rlnAmplitudeContrast"],
            "rlnTomoHand": np.full(n, _TOMO_HAND),
            "rlnOpticsGroupName": names,
            "rlnTomoTiltSeriesPixelSize": optics["rlnTomoTiltSeriesPixelSize"],
            "rlnTomoTomogramBinning": np.full(n, float(binning)),
            "rlnTomoSizeX": np.full(n, width * binning),
            "rlnTomoSizeY": np.full(n, height * binning),
            "rlnTomoSizeZ": np.full(n, depth * binning),
            "rlnTomoReconstructedTomogram": relative,
        }
    )


def _particle_rows(
    particles: pd.DataFrame, name: str, optics_group: int, plan: _TomogramPlan
) -> pd.DataFrame:
    n = len(particles)
    positions = particles[["z", "y", "x"]].to_numpy()
    centred = centered_angstrom(positions, plan.shape, plan.voxel_size)
    return pd.DataFrame(
        {
            "rlnTomoName": [name] * n,
            "rlnTomoParticleName": [f"{name}/{k}" for k in range(1, n + 1)],
            "rlnCenteredCoordinateXAngst": centred[:, 0],
            "rlnCenteredCoordinateYAngst": centred[:, 1],
            "rlnCenteredCoordinateZAngst": centred[:, 2],
            "rlnAngleRot": particles["rot"].to_numpy(),
            "rlnAngleTilt": particles["tilt"].to_numpy(),
            "rlnAnglePsi": particles["psi"].to_numpy(),
            "rlnOpticsGroup": np.full(n, optics_group),
            "rlnClassNumber": particles["class"].to_numpy() + 1,
        }
    )
