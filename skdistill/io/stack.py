"""``SubtomogramStack``: subtomograms on disk, read lazily through memory maps."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ._lazy import LazyVolumes
from .mrc import MrcInfo, read_header
from .star import PARTICLES_STAR, ParticleTable, read_particles_star

__all__ = ["SubtomogramStack"]

_SOURCES_HELP = (
    "Pass a particles.star file, a directory (with particles.star, or with *.mrc files), "
    "one MRC file (a volume or a volume stack) or a list of MRC files."
)


class SubtomogramStack(LazyVolumes):
    """Subtomograms stored as MRC files, indexed like a float32 array ``(n, D, H, W)``.

    Construction reads only the MRC headers, to check that every file is a valid MRC file
    and that all volumes share one cubic shape. Volumes are read on access through
    :func:`mrcfile.mmap` and files are closed again right away, so a stack over thousands
    of particles holds no open files.

    Parameters
    ----------
    source : str, path-like or sequence of them
        One of

        - a STAR file (``.star``), such as the ``particles.star`` written by
          :func:`~skdistill.io.write_subtomograms`, whose ``rlnImageName`` paths are read
          relative to the STAR file's directory;
        - a directory: its ``particles.star`` if present, else all its ``*.mrc`` files
          sorted by name;
        - one MRC file holding a volume or a volume stack;
        - a list of MRC files (volume stacks contribute all their volumes).

    Attributes
    ----------
    voxel_size : float or None
        Voxel size in Å, from the STAR optics block (``rlnImagePixelSize``) or else the MRC
        headers; None when neither gives one.
    labels : ndarray of int64, shape (n,), or None
        0-based class labels (``rlnClassNumber - 1``), or None without labels.
    class_names : list of str or None
        Names of the classes 0..K-1, or None when the STAR file names none.
    rotations : ndarray of shape (n, 3) or None
        ZYZ Euler angles ``(rot, tilt, psi)`` in degrees, or None.
    shifts : ndarray of shape (n, 3) or None
        Particle offsets from the box centre in voxels, ordered ``(z, y, x)``, or None.
    paths : list of Path
        The file of each volume (a stack file repeats once per volume it holds).
    shape : tuple of int
        ``(n, D, H, W)``.
    ndim : int
        4.
    dtype : numpy.dtype
        float32, the type volumes are returned in whatever the file's MRC mode.

    See Also
    --------
    read_subtomograms : Read all volumes into memory at once.
    write_subtomograms : Write volumes and their metadata.

    Notes
    -----
    Indexing with an integer returns one volume ``(D, H, W)``; slices, integer sequences and
    boolean masks return ``(k, D, H, W)`` arrays. Each access reads from disk and returns a
    new array; ``np.asarray(stack)`` reads everything.
    """

    def __init__(self, source: str | os.PathLike | Sequence[str | os.PathLike]) -> None:
        table, description = _particle_table(source)
        infos = {path: read_header(path) for path in dict.fromkeys(table.paths)}
        self._volume_shape = _common_volume_shape(infos.values())
        self._paths, self._stack_indices = _volume_entries(table, infos)
        self._description = description
        self.voxel_size = (
            table.voxel_size if table.voxel_size is not None else _header_voxel_size(infos)
        )
        self.labels = table.labels
        self.class_names = table.class_names
        self.rotations = table.rotations
        self.shifts = table.shifts

    @property
    def dtype(self) -> np.dtype:
        """float32."""
        return np.dtype(np.float32)

    def __repr__(self) -> str:
        labels = "None" if self.labels is None else f"{int(self.labels.max()) + 1} classes"
        if self.class_names is not None:
            labels = f"{len(self.class_names)} named classes"
        return (
            f"SubtomogramStack(n={len(self)}, volume_shape={self._volume_shape}, "
            f"voxel_size={self.voxel_size}, labels={labels}, source={self._description!r})"
        )


def _particle_table(source) -> tuple[ParticleTable, str]:
    """The particles a source lists, and a short description of the source."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist. {_SOURCES_HELP}")
        if path.is_dir():
            star = path / PARTICLES_STAR
            if star.is_file():
                return read_particles_star(star), str(star)
            files = sorted(path.glob("*.mrc"))
            if not files:
                raise ValueError(
                    f"Directory {path} holds neither {PARTICLES_STAR} nor any *.mrc file. "
                    f"{_SOURCES_HELP}"
                )
            return _mrc_table(files), str(path)
        if path.suffix.lower() == ".star":
            return read_particles_star(path), str(path)
        return _mrc_table([path]), str(path)
    if not isinstance(source, Sequence):
        raise TypeError(f"Cannot read subtomograms from {type(source).__name__}. {_SOURCES_HELP}")
    files = [Path(item) for item in source]
    if not files:
        raise ValueError(f"The list of MRC files is empty. {_SOURCES_HELP}")
    missing = [file for file in files if not file.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {len(files)} MRC files do not exist, the first being "
            f"{missing[0]}. Check the paths."
        )
    return _mrc_table(files), f"{len(files)} MRC files"


def _mrc_table(files: list[Path]) -> ParticleTable:
    return ParticleTable(paths=list(files), stack_indices=[None] * len(files))


def _common_volume_shape(infos) -> tuple[int, int, int]:
    first: MrcInfo | None = None
    for info in infos:
        shape = info.volume_shape
        if len(set(shape)) != 1:
            raise ValueError(
                f"MRC file {info.path} holds volumes of shape {shape}, which are not cubic. "
                "skdistill needs cubic subtomograms (D == H == W); crop or pad them to a cube "
                "or extract them again with a cubic box."
            )
        if first is None:
            first = info
        elif shape != first.volume_shape:
            raise ValueError(
                f"Subtomograms have different shapes: {first.path} holds {first.volume_shape} "
                f"but {info.path} holds {shape}. All subtomograms must share one box size; "
                "crop, pad or extract them again to one size."
            )
    return first.volume_shape


def check_volume_number(
    star: Path, path: Path, index: int | None, n_volumes: int, *, column: str, what: str = "volume"
) -> None:
    """Raise unless a STAR row's ``k@file`` reference names one existing volume of ``path``.

    Parameters
    ----------
    star : Path
        The STAR file, for the message.
    path : Path
        The MRC file the row refers to.
    index : int or None
        The 0-based volume number from ``k@file``; ``None`` when the row gives none.
    n_volumes : int
        Volumes in ``path``.
    column : str
        The STAR column holding the reference (``rlnImageName``, ``rlnMaskName``).
    what : str, default="volume"
        What the volumes are, for the message.
    """
    if index is None and n_volumes > 1:
        raise ValueError(
            f"STAR file {star} lists {path}, a stack of {n_volumes} {what}s, without a volume "
            f"number; name one volume as 'k@{path.name}' (k = 1..{n_volumes}) in {column}."
        )
    if index is not None and index >= n_volumes:
        raise ValueError(
            f"STAR file {star} refers to {what} {index + 1} of {path}, which holds only "
            f"{n_volumes}; fix {column}."
        )


def _volume_entries(table: ParticleTable, infos: dict) -> tuple[tuple[Path, ...], np.ndarray]:
    """File and in-file index of each volume (-1 for a single-volume file).

    A plain list of MRC files contributes every volume of each stack; a STAR file names
    exactly one volume per row.
    """
    paths: list[Path] = []
    indices: list[int] = []
    for path, index in zip(table.paths, table.stack_indices, strict=True):
        info = infos[path]
        if table.star_path is None:
            count = info.n_volumes
            paths.extend([path] * count)
            indices.extend(range(count) if info.is_stack else [-1])
            continue
        check_volume_number(table.star_path, path, index, info.n_volumes, column="rlnImageName")
        paths.append(path)
        indices.append((index or 0) if info.is_stack else -1)
    return tuple(paths), np.asarray(indices, dtype=np.intp)


def _header_voxel_size(infos: dict) -> float | None:
    known = [info for info in infos.values() if info.voxel_size is not None]
    for info in known[1:]:
        if not np.isclose(info.voxel_size, known[0].voxel_size, rtol=1e-3):
            raise ValueError(
                f"MRC files have different voxel sizes: {known[0].path} has "
                f"{known[0].voxel_size} Å but {info.path} has {info.voxel_size} Å. Subtomograms "
                "of one data set must share a voxel size; rescale them to one size."
            )
    return known[0].voxel_size if known else None
