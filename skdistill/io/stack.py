"""``SubtomogramStack``: subtomograms on disk, read lazily through memory maps."""

from __future__ import annotations

import itertools
import numbers
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from .mrc import MrcInfo, read_header, read_volumes
from .star import PARTICLES_STAR, ParticleTable, read_particles_star

__all__ = ["SubtomogramStack"]

#: Volumes read per file access when iterating one volume at a time.
_ITER_BATCH_SIZE = 32

_SOURCES_HELP = (
    "Pass a particles.star file, a directory (with particles.star, or with *.mrc files), "
    "one MRC file (a volume or a volume stack) or a list of MRC files."
)


class SubtomogramStack:
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
    def paths(self) -> list[Path]:
        """The file of each volume."""
        return list(self._paths)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(n, D, H, W)``."""
        return (len(self), *self._volume_shape)

    @property
    def ndim(self) -> int:
        """Number of array dimensions, 4."""
        return 4

    @property
    def dtype(self) -> np.dtype:
        """float32."""
        return np.dtype(np.float32)

    def __len__(self) -> int:
        return len(self._paths)

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, tuple):
            if not key:
                return np.asarray(self)
            volumes = self[key[0]]
            rest = key[1:] if volumes.ndim == 3 else (slice(None), *key[1:])
            return volumes[rest]
        if isinstance(key, numbers.Integral) and not isinstance(key, bool):
            return self._read(self._check_indices(np.array([key])))[0]
        if isinstance(key, slice):
            return self._read(np.arange(len(self))[key])
        indices = np.asarray(key)
        if indices.dtype == bool:
            if indices.shape != (len(self),):
                raise IndexError(
                    f"Boolean index of shape {indices.shape} does not match the "
                    f"{len(self)} volumes of the stack; pass a mask of shape ({len(self)},)."
                )
            return self._read(np.flatnonzero(indices))
        if indices.size == 0:
            indices = indices.astype(np.intp)
        if indices.ndim != 1 or indices.dtype.kind not in "iu":
            raise IndexError(
                f"SubtomogramStack takes an integer, a slice, a 1D sequence of integers or a "
                f"boolean mask as index, got {key!r}."
            )
        return self._read(self._check_indices(indices))

    def __iter__(self) -> Iterator[np.ndarray]:
        for batch in self.iter_batches(_ITER_BATCH_SIZE):
            yield from batch

    def __array__(self, dtype=None, copy: bool | None = None) -> np.ndarray:
        if copy is False:
            raise ValueError(
                "A SubtomogramStack reads its volumes from disk, so they cannot be returned "
                "without a copy; use np.asarray(stack) instead of copy=False."
            )
        volumes = self._read(np.arange(len(self)))
        return volumes if dtype is None else volumes.astype(dtype, copy=False)

    def iter_batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """Yield consecutive volumes as float32 arrays ``(k, D, H, W)``, ``k <= batch_size``.

        Parameters
        ----------
        batch_size : int
            Number of volumes per batch (the last batch may be smaller).
        """
        if (
            isinstance(batch_size, bool)
            or not isinstance(batch_size, numbers.Integral)
            or batch_size < 1
        ):
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
        return self._batches(int(batch_size))

    def __repr__(self) -> str:
        labels = "None" if self.labels is None else f"{int(self.labels.max()) + 1} classes"
        if self.class_names is not None:
            labels = f"{len(self.class_names)} named classes"
        return (
            f"SubtomogramStack(n={len(self)}, volume_shape={self._volume_shape}, "
            f"voxel_size={self.voxel_size}, labels={labels}, source={self._description!r})"
        )

    def _batches(self, batch_size: int) -> Iterator[np.ndarray]:
        for start in range(0, len(self), batch_size):
            yield self._read(np.arange(start, min(start + batch_size, len(self))))

    def _check_indices(self, indices: np.ndarray) -> np.ndarray:
        n = len(self)
        bad = (indices < -n) | (indices >= n)
        if np.any(bad):
            raise IndexError(f"Index {indices[bad][0]} is out of range for a stack of {n} volumes.")
        return np.where(indices < 0, indices + n, indices).astype(np.intp)

    def _read(self, indices: np.ndarray) -> np.ndarray:
        """Read the volumes at ``indices``, opening each file once per run of its volumes."""
        first = self._paths[indices[0]] if len(indices) else None
        if first is not None and all(self._paths[i] == first for i in indices):
            # One file (e.g. a batch of an MRC stack): no intermediate buffer.
            return read_volumes(first, self._stack_indices[indices], self._volume_shape)
        volumes = np.empty((len(indices), *self._volume_shape), dtype=np.float32)
        start = 0
        for path, run in itertools.groupby(indices, key=self._paths.__getitem__):
            run = np.fromiter(run, dtype=np.intp)
            stop = start + len(run)
            volumes[start:stop] = read_volumes(path, self._stack_indices[run], self._volume_shape)
            start = stop
        return volumes


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
        if index is None and info.n_volumes > 1:
            raise ValueError(
                f"STAR file {table.star_path} lists {path}, a stack of {info.n_volumes} "
                f"volumes, without a volume number; name one volume as 'k@{path.name}' "
                f"(k = 1..{info.n_volumes}) in rlnImageName."
            )
        if index is not None and index >= info.n_volumes:
            raise ValueError(
                f"STAR file {table.star_path} refers to volume {index + 1} of {path}, which "
                f"holds only {info.n_volumes}; fix rlnImageName."
            )
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
