"""``LazyVolumes``: the array protocol of volume stacks read from MRC files on access."""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .mrc import read_volumes

__all__ = ["LazyVolumes"]

#: Volumes read per file access when iterating one volume at a time.
_ITER_BATCH_SIZE = 32


class LazyVolumes:
    """Same-shape volumes stored in MRC files, indexed like an array ``(n, D, H, W)``.

    The base of :class:`~skdistill.io.SubtomogramStack` and :class:`~skdistill.io.MaskStack`.
    Indexing, ``np.asarray``, iteration and :meth:`iter_batches` read the volumes they need
    from disk and return new arrays. A subclass's ``__init__`` sets

    - ``_paths``: tuple of Path, the file of each volume;
    - ``_stack_indices``: ndarray of intp, each volume's index in its file (-1 for a file
      holding one volume);
    - ``_volume_shape``: tuple of int, ``(D, H, W)``;

    and the subclass defines the property ``dtype``, the type volumes are returned in. It may
    override :meth:`_read_file` to check or convert the float32 values read.
    """

    _paths: tuple[Path, ...]
    _stack_indices: np.ndarray
    _volume_shape: tuple[int, ...]

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
                f"{type(self).__name__} takes an integer, a slice, a 1D sequence of integers or "
                f"a boolean mask as index, got {key!r}."
            )
        return self._read(self._check_indices(indices))

    def __iter__(self) -> Iterator[np.ndarray]:
        for batch in self.iter_batches(_ITER_BATCH_SIZE):
            yield from batch

    def __array__(self, dtype=None, copy: bool | None = None) -> np.ndarray:
        if copy is False:
            raise ValueError(
                f"A {type(self).__name__} reads its volumes from disk, so they cannot be "
                "returned without a copy; use np.asarray(stack) instead of copy=False."
            )
        volumes = self._read(np.arange(len(self)))
        return volumes if dtype is None else volumes.astype(dtype, copy=False)

    def iter_batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """Yield consecutive volumes as ``dtype`` arrays ``(k, D, H, W)``, ``k <= batch_size``.

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
        runs = [
            (path, np.fromiter(run, dtype=np.intp))
            for path, run in itertools.groupby(indices, key=self._paths.__getitem__)
        ]
        if len(runs) == 1:
            # One file (e.g. a batch of an MRC stack): no intermediate buffer.
            return self._read_file(*runs[0])
        volumes = np.empty((len(indices), *self._volume_shape), dtype=self.dtype)
        start = 0
        for path, run in runs:
            volumes[start : start + len(run)] = self._read_file(path, run)
            start += len(run)
        return volumes

    def _read_file(self, path: Path, run: np.ndarray) -> np.ndarray:
        """Read the volumes ``run`` (indices into the stack), all of them stored in ``path``."""
        return read_volumes(path, self._stack_indices[run], self._volume_shape)
