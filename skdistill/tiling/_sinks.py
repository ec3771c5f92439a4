"""Where a tiler's finished slabs go: an array in memory, or an MRC file written slab by slab."""

from __future__ import annotations

import os
from pathlib import Path

import mrcfile
import numpy as np

__all__ = ["ArraySink", "MrcSink"]


class ArraySink:
    """Collect the slabs of a ``shape`` volume (or volume stack) in one array.

    Parameters
    ----------
    shape : tuple of int
        ``(D, H, W)``, or ``(C, D, H, W)`` for one volume per class.
    dtype : numpy dtype
    """

    def __init__(self, shape: tuple[int, ...], dtype) -> None:
        self.array = np.empty(shape, dtype=dtype)
        self.dtype = self.array.dtype

    def write(self, z: int, y: int, block: np.ndarray) -> None:
        """Store ``block``: slices from ``z``, rows from ``y``, all columns."""
        self.array[..., z : z + block.shape[-3], y : y + block.shape[-2], :] = block

    def result(self) -> np.ndarray:
        """The collected volume."""
        return self.array


class MrcSink:
    """Write the slabs of a volume (or volume stack) to a new MRC file, without a memory map.

    The header is written first (mrcfile sets the mode, dimensions and, for a
    ``(C, D, H, W)`` stack, the volume-stack space group 401), then every slab with
    a seek and a write at its offset, so the process holds one slab at a time; the density
    statistics (min, max, mean, RMS) are accumulated on the way and written into the header
    at the end.

    Parameters
    ----------
    path : Path
        A new file (the caller publishes it atomically).
    shape : tuple of int
        ``(D, H, W)`` or ``(C, D, H, W)``.
    dtype : numpy dtype
        int8 (MRC mode 0), int16 (mode 1) or float32 (mode 2).
    voxel_size : float or None
        Voxel size in Å of the header; None leaves mrcfile's default (0).
    origin : tuple of float
        The header's origin ``(x, y, z)`` in Å.
    """

    _MODES = {np.dtype(np.int8): 0, np.dtype(np.int16): 1, np.dtype(np.float32): 2}

    def __init__(self, path: Path, shape, dtype, *, voxel_size, origin) -> None:
        self.path, self.shape, self.dtype = Path(path), tuple(shape), np.dtype(dtype)
        mode = self._MODES[self.dtype]
        with mrcfile.new_mmap(self.path, shape=self.shape, mrc_mode=mode, fill=None) as mrc:
            if voxel_size:
                mrc.voxel_size = voxel_size
            mrc.header.origin = origin
            self.header = mrc.header.copy()
        self.offset = int(self.header.nbytes) + int(self.header.nsymbt)
        self.stats = [np.inf, -np.inf, 0.0, 0.0]  # min, max, sum, sum of squares
        self.file = open(self.path, "r+b")  # closed in result() or close()

    def write(self, z: int, y: int, block: np.ndarray) -> None:
        """Write ``block``: slices from ``z``, rows from ``y``, all columns, of every volume.

        The rows of one slice are contiguous in the file: one write per slice and volume.
        """
        block = np.ascontiguousarray(block, dtype=self.dtype)
        volumes = block.reshape(-1, *block.shape[-3:])
        depth, height, width = self.shape[-3:]
        row = width * self.dtype.itemsize
        for index, volume in enumerate(volumes):
            for offset, plane in enumerate(volume):
                self.file.seek(self.offset + ((index * depth + z + offset) * height + y) * row)
                self.file.write(plane.data)
        values = block.astype(np.float64, copy=False)
        self.stats[0] = min(self.stats[0], float(values.min()))
        self.stats[1] = max(self.stats[1], float(values.max()))
        self.stats[2] += float(values.sum())
        self.stats[3] += float(np.square(values).sum())

    def result(self) -> None:
        """Write the statistics into the header, flush and close the file."""
        count = float(np.prod(self.shape))
        mean = self.stats[2] / count
        self.header.dmin, self.header.dmax = self.stats[0], self.stats[1]
        self.header.dmean = mean
        self.header.rms = np.sqrt(max(self.stats[3] / count - mean**2, 0.0))
        self.file.seek(0)
        self.file.write(self.header.tobytes())
        self.file.flush()
        os.fsync(self.file.fileno())
        self.close()

    def close(self) -> None:
        """Close the file (also after a failure)."""
        self.file.close()
