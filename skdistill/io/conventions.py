"""Where a picked particle is in its tomogram: the conventions of RELION, Warp and others.

Everything skdistill assumes about other programs' particle tables lives here, with its
source. :meth:`~skdistill.io.SubtomogramStack.from_tomograms` uses these functions to turn a
particle table into voxel positions ``(z, y, x)`` in a tomogram array.

Voxel grid
    Voxel ``i`` of a tomogram axis has its centre at coordinate ``i`` (0-based), and covers
    ``[i - 0.5, i + 0.5]``. RELION reconstructs voxel ``i`` at unbinned tilt-series position
    ``origin + i * binning`` with origin 0 since RELION 4.1 (``reconstruct_tomogram.cpp``,
    "use zero-origins from relion-4.1 onwards"; ``real_backprojection.h`` samples
    ``origin + x * spacing``); RELION 4.0 used origin 1 and added 1 to every coordinate in
    ``ParticleSet::getPosition``, which is the same mapping. Warp: "coordinates are interpreted
    as pixel coordinates in a tomogram, starting from zero at the center of the first voxel"
    (https://warpem.github.io/warp/reference/warptools/tomogram_particle_files).

RELION 5 centred coordinates
    ``rlnCenteredCoordinate{X,Y,Z}Angst`` are Å from the tomogram centre
    (relion-documents ``Reference/STA/Datatypes/particle_set.rst``).
    ``ParticleSet::getParticleCoordDecenteredPixel`` (3dem/relion
    ``src/jaz/tomography/particle_set.cpp``) divides them by ``rlnTomoTiltSeriesPixelSize`` and
    adds the tomogram centre, which ``TomogramSet::loadTomogram`` sets to ``rlnTomoSize / 2.0``
    (float division, unbinned tilt-series pixels). In voxels of a tomogram binned by
    ``rlnTomoTomogramBinning``: ``x_vox = x_Å / voxel_size + size_vox / 2`` with
    ``voxel_size = rlnTomoTiltSeriesPixelSize * rlnTomoTomogramBinning`` and
    ``size_vox = rlnTomoSize / rlnTomoTomogramBinning``.

Pixel coordinates (RELION 3 and 4, Warp, pytom-match-pick, converted Dynamo/STOPGAP)
    ``rlnCoordinate{X,Y,Z}`` in pixels, 0-based as above. The pixel size they are in, first
    found of:

    1. ``coordinate_pixel_size=`` given by the caller;
    2. ``rlnTomoTiltSeriesPixelSize`` (RELION 4: coordinates are in unbinned tilt-series
       pixels; ``ParticleSet::getPosition`` converts origins with that size; read from the
       particle's optics group, the particle table, or its tomogram in ``tomograms.star``);
    3. ``rlnDetectorPixelSize * 10^4 / rlnMagnification`` (RELION 3.0; Warp writes the
       coordinates in that pixel size, with magnification 10000: ``ts_export_particles``
       writes ``position / BinnedPixelSize`` next to ``rlnDetectorPixelSize BinnedPixelSize``,
       and Warp's tomogram particle import reads it the same way);
    4. ``rlnDetectorPixelSize`` alone, in Å (pytom-match-pick writes the tomogram's voxel
       size there: https://sbc-utrecht.github.io/pytom-match-pick/Developers);
    5. ``rlnPixelSize`` (Warp's and TOMOMAN/STOPGAP's RELION tables: the coordinates' pixel
       size; WarpTools ``ExportParticlesTiltseries.cs`` writes it equal to the output pixel
       size the coordinates are divided by);
    6. ``rlnImagePixelSize``, only when none of the above is there (RELION 3.1 subtomogram
       averaging extracted subtomograms at the coordinates' pixel size). In RELION 4 it is
       the pixel size of the extracted subtomograms (``rlnTomoTiltSeriesPixelSize *
       rlnTomoSubtomogramBinning``), not of the coordinates; rule 2 applies there first;
    7. the tomogram's own voxel size (MRC header or ``tomograms.star``).

Origins
    RELION's particle centre is ``coordinate - origin``: ``ParticleSet::getPosition`` subtracts
    ``A_subtomogram * rlnOrigin{X,Y,Z}Angst / rlnTomoTiltSeriesPixelSize``, ``A_subtomogram``
    being the rotation of ``rlnTomoSubtomogram{Rot,Tilt,Psi}`` (identity without them).
    RELION 3.0's ``rlnOrigin{X,Y,Z}`` are in pixels of the coordinates.

Tomogram names
    ``rlnTomoName`` (RELION 4, 5) is preferred; else ``rlnMicrographName`` (RELION 3.0, Warp's
    ``TS_01.tomostar``, cryoET data portal's ``TS_001_aligned.st:mrc``). Names are matched
    after :func:`tomogram_key` strips folders, IMOD-style ``:mrc`` suffixes, the extensions
    ``.tomostar .mrc .rec .map .st`` and Warp's pixel-size suffix (``TS_01_10.00Apx.mrc``,
    WarpTools ``ts_reconstruct``).

Project paths
    RELION writes paths relative to the project folder it runs in (``tomograms.star`` lies in
    ``Project/ReconstructTomograms/job006/`` and names ``ReconstructTomograms/job006/
    tomograms/rec_TS_01.mrc``). :func:`candidate_paths` tries the STAR file's folder, then each
    folder above it, then the working directory.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from ._star_values import numeric, three_columns

__all__ = [
    "CENTERED_LABELS",
    "PIXEL_LABELS",
    "TOMOGRAM_NAME_LABELS",
    "candidate_paths",
    "centered_angstrom",
    "coordinate_pixel_sizes",
    "coordinates",
    "origins_angst",
    "relion_rotation_matrices",
    "tomogram_key",
    "tomogram_name_label",
]

#: RELION 5 particle coordinates: Å from the tomogram centre, (x, y, z).
CENTERED_LABELS = (
    "rlnCenteredCoordinateXAngst",
    "rlnCenteredCoordinateYAngst",
    "rlnCenteredCoordinateZAngst",
)


def centered_angstrom(
    positions: np.ndarray, shape: tuple[int, int, int], voxel_size: float
) -> np.ndarray:
    """RELION 5 centred coordinates in Å, ordered (x, y, z), of positions in voxels (z, y, x).

    Voxel ``k`` of an axis has its centre at coordinate ``k``; the centred coordinate is
    ``(k - n / 2) * voxel_size`` along an axis of ``n`` voxels, and STAR's X, Y and Z are the
    array axes 2, 1 and 0.
    """
    centred = (np.asarray(positions, dtype=float) - np.asarray(shape, dtype=float) / 2) * voxel_size
    return centred[:, ::-1]


#: RELION 3 and 4, Warp, pytom-match-pick: pixel coordinates, (x, y, z).
PIXEL_LABELS = ("rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ")
#: Columns naming a particle's tomogram, in order of preference.
TOMOGRAM_NAME_LABELS = ("rlnTomoName", "rlnMicrographName")
_ORIGIN_ANGST_LABELS = ("rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst")
_ORIGIN_PIXEL_LABELS = ("rlnOriginX", "rlnOriginY", "rlnOriginZ")
_SUBTOMOGRAM_ANGLE_LABELS = (
    "rlnTomoSubtomogramRot",
    "rlnTomoSubtomogramTilt",
    "rlnTomoSubtomogramPsi",
)
#: Extensions stripped from tomogram names and file names before matching them.
_NAME_EXTENSIONS = (".tomostar", ".mrc", ".rec", ".map", ".st")
#: Warp / WarpTools name reconstructions ``<name>_<pixel size>Apx.mrc``.
_WARP_PIXEL_SUFFIX = re.compile(r"_\d+(\.\d+)?Apx$")


def tomogram_key(name: str) -> str:
    """The name a tomogram is matched by: no folders, ``:mrc`` suffix or known extensions.

    ``"tomograms/TS_001/TS_001_aligned.st:mrc"`` gives ``"TS_001_aligned"``,
    ``"TS_01.tomostar"`` and ``"TS_01_10.00Apx.mrc"`` give ``"TS_01"``.
    """
    key = str(name).strip().replace("\\", "/").rsplit("/", 1)[-1]
    key = key.split(":", 1)[0]
    stripped = True
    while stripped:
        stripped = False
        for extension in _NAME_EXTENSIONS:
            if key.lower().endswith(extension) and len(key) > len(extension):
                key, stripped = key[: -len(extension)], True
    return _WARP_PIXEL_SUFFIX.sub("", key)


def tomogram_name_label(particles: pd.DataFrame) -> str | None:
    """The column naming each particle's tomogram (``rlnTomoName`` preferred), or None."""
    return next((label for label in TOMOGRAM_NAME_LABELS if label in particles.columns), None)


def candidate_paths(name: str, star: Path | None) -> list[Path]:
    """Where a path written in a STAR file may be, in the order tried.

    An absolute path is itself. A relative one is tried relative to the STAR file's folder,
    each folder above it (RELION writes paths relative to its project folder, two levels
    above a job's STAR files) and the working directory.
    """
    path = Path(name.removesuffix(":mrc"))
    if path.is_absolute():
        return [path]
    folders = [] if star is None else [star.parent.absolute(), *star.parent.absolute().parents]
    folders.append(Path.cwd())
    return list(dict.fromkeys(folder / path for folder in folders))


def coordinate_pixel_sizes(
    star: Path | str,
    particles: pd.DataFrame,
    optics: pd.DataFrame | None,
    tomogram_sizes: dict[str, float] | None = None,
    names: Iterable[str] | None = None,
) -> tuple[np.ndarray | None, str | None]:
    """The pixel size (Å) of each particle's ``rlnCoordinate``, and where it was read.

    Parameters
    ----------
    star : Path or str
        The particle table's file, for messages.
    particles : DataFrame
        The particle table.
    optics : DataFrame or None
        The ``data_optics`` row of each particle (in particle order), or None.
    tomogram_sizes : dict or None
        ``rlnTomoTiltSeriesPixelSize`` by tomogram key, from ``tomograms.star``.
    names : iterable of str or None
        Each particle's tomogram key, to look ``tomogram_sizes`` up.

    Returns
    -------
    sizes : ndarray of shape (n,) or None
        None when the tables give none (then the tomogram's voxel size applies).
    label : str or None
        The STAR labels read, for messages.
    """
    for frame, block in ((optics, "data_optics"), (particles, "data_particles")):
        if frame is not None and "rlnTomoTiltSeriesPixelSize" in frame.columns:
            sizes = numeric(star, frame, "rlnTomoTiltSeriesPixelSize", block)
            return np.asarray(sizes, dtype=np.float64), f"rlnTomoTiltSeriesPixelSize ({block})"
    if tomogram_sizes and names is not None:
        names = list(names)
        if all(name in tomogram_sizes for name in names):
            sizes = np.array([tomogram_sizes[name] for name in names], dtype=np.float64)
            return sizes, "rlnTomoTiltSeriesPixelSize (tomograms STAR file)"
    for frame, block in ((optics, "data_optics"), (particles, "data_particles")):
        if frame is None or "rlnDetectorPixelSize" not in frame.columns:
            continue
        detector = np.asarray(numeric(star, frame, "rlnDetectorPixelSize", block), float)
        if "rlnMagnification" in frame.columns:
            magnification = np.asarray(numeric(star, frame, "rlnMagnification", block), float)
            return detector * 1e4 / magnification, "rlnDetectorPixelSize x 10^4 / rlnMagnification"
        return detector, "rlnDetectorPixelSize (Å, as pytom-match-pick writes it)"
    # RELION 3.x subtomogram averaging extracted subtomograms at the pixel size of the
    # coordinates, and Warp's and TOMOMAN/STOPGAP's RELION tables give it as rlnPixelSize
    # (warpem/warp ExportParticlesTiltseries.cs writes rlnPixelSize = the coordinates' pixel
    # size). Without a tilt-series pixel size (RELION 4+, read above), rlnPixelSize and then
    # rlnImagePixelSize (RELION 3.1's optics) are the coordinates' pixel size.
    for label in ("rlnPixelSize", "rlnImagePixelSize"):
        for frame, block in ((particles, "data_particles"), (optics, "data_optics")):
            if frame is not None and label in frame.columns:
                sizes = numeric(star, frame, label, block)
                return np.asarray(sizes, dtype=np.float64), f"{label} ({block})"
    return None, None


def relion_rotation_matrices(angles: np.ndarray) -> np.ndarray:
    """RELION's rotation matrices ``A`` for ZYZ Euler angles ``(rot, tilt, psi)`` in degrees.

    The matrix of ``Euler::anglesToMatrix3`` (3dem/relion ``src/jaz/math/
    Euler_angles_relion.h``), ``A = R_z(psi) R_y(tilt) R_z(rot)``, acting on ``(x, y, z)``.
    """
    phi, theta, psi = np.deg2rad(np.asarray(angles, dtype=np.float64)).T
    sp, cp, st, ct, ss, cs = (
        np.sin(phi),
        np.cos(phi),
        np.sin(theta),
        np.cos(theta),
        np.sin(psi),
        np.cos(psi),
    )
    rows = [
        [cs * ct * cp - ss * sp, cs * ct * sp + ss * cp, -cs * st],
        [-ss * ct * cp - cs * sp, -ss * ct * sp + cs * cp, ss * st],
        [st * cp, st * sp, ct],
    ]
    return np.moveaxis(np.array(rows), -1, 0)


def origins_angst(
    star: Path | str, particles: pd.DataFrame, coordinate_pixel_size: np.ndarray
) -> np.ndarray:
    """Each particle's origin ``(x, y, z)`` in Å, rotated as RELION applies it; zeros if none.

    The particle centre is ``coordinate - origin`` (see the module docstring). Origins in
    pixels (``rlnOriginX``) are in the coordinates' pixels, ``coordinate_pixel_size`` Å each.
    """
    if any(label in particles.columns for label in _ORIGIN_ANGST_LABELS):
        origins = _three_columns(star, particles, _ORIGIN_ANGST_LABELS)
    elif any(label in particles.columns for label in _ORIGIN_PIXEL_LABELS):
        origins = _three_columns(star, particles, _ORIGIN_PIXEL_LABELS)
        origins = origins * np.asarray(coordinate_pixel_size, dtype=np.float64).reshape(-1, 1)
    else:
        return np.zeros((len(particles), 3))
    if all(label in particles.columns for label in _SUBTOMOGRAM_ANGLE_LABELS):
        angles = _three_columns(star, particles, _SUBTOMOGRAM_ANGLE_LABELS)
        origins = np.einsum("nij,nj->ni", relion_rotation_matrices(angles), origins)
    return origins


def _three_columns(star, particles: pd.DataFrame, labels: tuple[str, str, str]) -> np.ndarray:
    """Columns ``labels`` as an ``(n, 3)`` array, all zeros when none is there."""
    columns = three_columns(star, particles, labels)
    return np.zeros((len(particles), 3)) if columns is None else columns


def coordinates(
    star: Path | str, particles: pd.DataFrame, labels: tuple[str, str, str]
) -> np.ndarray:
    """The coordinate columns ``labels`` ``(x, y, z)`` as an ``(n, 3)`` float array."""
    return np.stack(
        [
            np.asarray(numeric(star, particles, label, "data_particles"), dtype=np.float64)
            for label in labels
        ],
        axis=1,
    )
