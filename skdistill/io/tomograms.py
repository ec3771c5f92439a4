"""Tomograms to extract from: found by name (STAR file, folder, mapping), checked by header.

Helpers of :meth:`~skdistill.io.SubtomogramStack.from_tomograms`. Only headers are read here;
the conventions used to find files are in :mod:`skdistill.io.conventions`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import starfile
from mrcfile.utils import data_dtype_from_header, data_shape_from_header

from ._star_values import numeric
from .conventions import candidate_paths, tomogram_key
from .mrc import _compression, _open, _strictly

__all__ = ["Tomogram", "TomogramEntry", "find_tomograms", "read_tomogram", "resolve"]

#: Relative difference between voxel sizes along x, y and z that is refused.
_ANISOTROPY_TOLERANCE = 1e-3
#: File extensions of tomograms in a folder.
_TOMOGRAM_EXTENSIONS = (".mrc", ".rec", ".map")
_TOMOGRAMS_HELP = (
    "Pass tomograms= as a tomograms STAR file (RELION's tomograms.star), a folder of "
    "tomograms named after the tomograms (TS_01.mrc), or a mapping {name: path}."
)


@dataclass(frozen=True)
class TomogramEntry:
    """A tomogram as a STAR file, folder or mapping lists it (before its header is read).

    Attributes
    ----------
    listed : str
        The file as listed (a path, possibly relative to ``star``'s project).
    star : Path or None
        The tomograms STAR file that lists it, or None for a folder or mapping.
    voxel_size : float or None
        ``rlnTomoTiltSeriesPixelSize * rlnTomoTomogramBinning`` from a tomograms STAR file.
    tilt_series_pixel_size : float or None
        ``rlnTomoTiltSeriesPixelSize``.
    size : tuple of float or None
        ``rlnTomoSize{Z,Y,X} / rlnTomoTomogramBinning``: the extent in tomogram voxels RELION
        centres coordinates on.
    """

    listed: str
    star: Path | None = None
    voxel_size: float | None = None
    tilt_series_pixel_size: float | None = None
    size: tuple[float, float, float] | None = None

    def locate(self, name: str) -> Path:
        """The tomogram file of tomogram ``name``; ``FileNotFoundError`` saying where it looked."""
        if self.star is not None:
            return resolve(self.listed, self.star, f"The tomogram of {name!r}")
        path = Path(self.listed)
        if not path.is_file():
            raise FileNotFoundError(f"Tomogram {path} (of {name!r}) does not exist.")
        return path


@dataclass(frozen=True)
class Tomogram:
    """A tomogram file checked by its header.

    Attributes
    ----------
    path : Path
    shape : tuple of int
        ``(D, H, W)``.
    voxel_size : float or None
        Header voxel size in Å (None when unset).
    header_mean : float or None
        The header's mean value when the header's statistics are valid, else None.
    """

    path: Path
    shape: tuple[int, int, int]
    voxel_size: float | None
    header_mean: float | None


def read_tomogram(path: Path) -> Tomogram:
    """Read and check a tomogram's header: a real 3D volume, uncompressed, cubic voxels."""
    if not path.is_file():
        raise FileNotFoundError(f"Tomogram {path} does not exist.")
    if _compression(path) is not None:
        raise ValueError(
            f"Tomogram {path} is {_compression(path)}-compressed, so it cannot be memory-"
            "mapped and every particle would decompress it whole. Decompress it first "
            f"(gunzip / bunzip2) and pass the .mrc file."
        )
    with _strictly(path):
        with _open(mrcfile.open, path, header_only=True) as mrc:
            header = mrc.header
            shape = tuple(int(n) for n in data_shape_from_header(header))
            dtype = data_dtype_from_header(header)
            sizes = np.array([mrc.voxel_size.x, mrc.voxel_size.y, mrc.voxel_size.z], float)
            offset = header.nbytes + int(header.nsymbt)
            stats = (float(header.dmin), float(header.dmax), float(header.dmean))
    if len(shape) == 2 or (len(shape) == 3 and shape[0] == 1):
        raise ValueError(
            f"Tomogram {path} holds a 2D image of {shape[-2]} x {shape[-1]} pixels, not a "
            "3D tomogram. Pass the reconstructed tomogram (rlnTomoReconstructedTomogram), not "
            "a tilt image or a projection."
        )
    if len(shape) != 3 or path.suffix.lower() == ".mrcs":
        raise ValueError(
            f"Tomogram {path} holds data of shape {shape}"
            f"{' and is named .mrcs (a stack of 2D images)' if len(shape) == 3 else ''}, not "
            "one 3D tomogram. Pass the reconstructed tomogram."
        )
    if path.stat().st_size != offset + int(np.prod(shape)) * dtype.itemsize:
        raise ValueError(
            f"Tomogram {path} has {path.stat().st_size} bytes, but its header describes "
            f"{shape} voxels of {dtype.name} after a {offset}-byte header: it is truncated or "
            "its header is wrong. Copy or export it again."
        )
    if dtype.kind == "c":
        raise ValueError(f"Tomogram {path} holds complex data; pass a real-valued tomogram.")
    known = sizes[sizes > 0]
    if len(known) > 1 and np.ptp(known) > _ANISOTROPY_TOLERANCE * known.max():
        raise ValueError(
            f"Tomogram {path} has non-cubic voxels of {sizes[0]:g} x {sizes[1]:g} x "
            f"{sizes[2]:g} Å (x, y, z); subtomograms need the same voxel size along every "
            "axis. Resample the tomogram to cubic voxels."
        )
    dmin, dmax, dmean = stats
    valid = np.isfinite([dmin, dmax, dmean]).all() and dmin < dmax and dmin <= dmean <= dmax
    return Tomogram(
        path=path,
        shape=shape,
        voxel_size=float(sizes[0]) if sizes[0] > 0 else None,
        header_mean=dmean if valid else None,
    )


def find_tomograms(tomograms) -> dict[str, TomogramEntry]:
    """The tomograms ``tomograms=`` lists, by :func:`~skdistill.io.conventions.tomogram_key`.

    Parameters
    ----------
    tomograms : str, path-like or mapping
        A tomograms STAR file, a folder of tomograms, or a mapping name -> path.
    """
    if isinstance(tomograms, Mapping):
        return {tomogram_key(name): TomogramEntry(str(path)) for name, path in tomograms.items()}
    if not isinstance(tomograms, (str, os.PathLike)):
        raise TypeError(
            f"tomograms must be a path or a mapping, not {type(tomograms).__name__}. "
            f"{_TOMOGRAMS_HELP}"
        )
    path = Path(tomograms)
    if path.is_dir():
        return _folder(path)
    if not path.is_file():
        raise FileNotFoundError(f"tomograms={str(path)!r} does not exist. {_TOMOGRAMS_HELP}")
    if path.suffix.lower() != ".star":
        raise ValueError(
            f"tomograms={str(path)!r} is not a .star file or folder. {_TOMOGRAMS_HELP}"
        )
    return _tomograms_star(path)


def resolve(name: str, star: Path | None, what: str) -> Path:
    """The file a STAR file names (see :func:`~skdistill.io.conventions.candidate_paths`)."""
    tried = candidate_paths(name, star)
    for candidate in tried:
        if candidate.is_file():
            return candidate
    listed = ", ".join(str(path) for path in tried[:6])
    more = f" and {len(tried) - 6} more" if len(tried) > 6 else ""
    raise FileNotFoundError(
        f"{what} {name!r} (listed in {star}) was not found; tried {listed}{more}. RELION "
        "writes paths relative to its project folder: keep the STAR file inside the project, "
        "run from the project folder, or pass tomograms= as a mapping {name: path}."
    )


def _folder(folder: Path) -> dict[str, TomogramEntry]:
    found: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in _TOMOGRAM_EXTENSIONS:
            found.setdefault(tomogram_key(path.name), []).append(path)
    if not found:
        raise ValueError(
            f"Folder {folder} holds no tomograms (files ending in "
            f"{', '.join(_TOMOGRAM_EXTENSIONS)}). {_TOMOGRAMS_HELP}"
        )
    ambiguous = {key: paths for key, paths in found.items() if len(paths) > 1}
    if ambiguous:
        key, paths = next(iter(ambiguous.items()))
        raise ValueError(
            f"Folder {folder} holds several tomograms named {key!r}: "
            f"{[path.name for path in paths]}. Pass tomograms= as a mapping {{name: path}}."
        )
    return {key: TomogramEntry(str(paths[0])) for key, paths in found.items()}


def _tomograms_star(path: Path) -> dict[str, TomogramEntry]:
    try:
        blocks = starfile.read(path, always_dict=True, parse_as_string=["rlnTomoName"])
    except ValueError as exc:
        raise ValueError(f"Cannot parse tomograms STAR file {path} ({exc}).") from exc
    table = blocks.get("global", next(iter(blocks.values()), None) if len(blocks) == 1 else None)
    if isinstance(table, dict):
        table = pd.DataFrame([table])
    needed = {"rlnTomoName", "rlnTomoReconstructedTomogram"}
    if not isinstance(table, pd.DataFrame) or not needed <= set(table.columns):
        raise ValueError(
            f"Tomograms STAR file {path} has no data_global table with rlnTomoName and "
            "rlnTomoReconstructedTomogram (RELION 5's tomograms.star after Reconstruct "
            "tomograms). Reconstruct the tomograms in RELION, or pass tomograms= as a folder "
            "or a mapping {name: path}."
        )
    block = "data_global"
    ts_pixel = None
    if "rlnTomoTiltSeriesPixelSize" in table.columns:
        ts_pixel = np.asarray(numeric(path, table, "rlnTomoTiltSeriesPixelSize", block), float)
    binning = np.ones(len(table))
    if "rlnTomoTomogramBinning" in table.columns:
        binning = np.asarray(numeric(path, table, "rlnTomoTomogramBinning", block), float)
    size_labels = ("rlnTomoSizeZ", "rlnTomoSizeY", "rlnTomoSizeX")
    sizes = None
    if all(label in table.columns for label in size_labels):
        sizes = np.stack(
            [np.asarray(numeric(path, table, label, block), float) for label in size_labels], 1
        )
    entries = {}
    for row, (name, file_name) in enumerate(
        zip(table["rlnTomoName"].astype(str), table["rlnTomoReconstructedTomogram"], strict=True)
    ):
        entries[tomogram_key(name)] = TomogramEntry(
            listed=str(file_name),
            star=path,
            voxel_size=None if ts_pixel is None else float(ts_pixel[row] * binning[row]),
            tilt_series_pixel_size=None if ts_pixel is None else float(ts_pixel[row]),
            size=None if sizes is None else tuple(float(v) for v in sizes[row] / binning[row]),
        )
    return entries
