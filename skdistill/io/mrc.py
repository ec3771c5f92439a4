"""MRC files through :mod:`mrcfile`: header checks, memory-mapped reads, float32 writes.

Every reader opens files with ``permissive=False`` and turns mrcfile's ``ValueError`` into one
that names the file and says what to do, chained to the original error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np
from mrcfile.utils import data_dtype_from_header, data_shape_from_header

__all__ = ["MrcInfo", "read_header", "read_volumes", "write_new_volume"]


@dataclass(frozen=True)
class MrcInfo:
    """What the header of an MRC file says about its data.

    Attributes
    ----------
    path : Path
        The file.
    shape : tuple of int
        Data shape: ``(D, H, W)`` for one volume, ``(n, D, H, W)`` for a volume stack.
    voxel_size : float or None
        Voxel size along x in Å, or None when the header leaves it unset (zero).
    """

    path: Path
    shape: tuple[int, ...]
    voxel_size: float | None

    @property
    def is_stack(self) -> bool:
        """Whether the file holds a stack of volumes rather than one volume."""
        return len(self.shape) == 4

    @property
    def n_volumes(self) -> int:
        """Number of volumes in the file."""
        return self.shape[0] if self.is_stack else 1

    @property
    def volume_shape(self) -> tuple[int, int, int]:
        """Shape ``(D, H, W)`` of one volume."""
        depth, height, width = self.shape[-3:]
        return depth, height, width


def read_header(path: str | os.PathLike) -> MrcInfo:
    """Read and check the header of an MRC file without reading its data.

    Parameters
    ----------
    path : str or path-like
        An MRC file holding one volume or a stack of volumes.

    Returns
    -------
    MrcInfo

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the header is corrupt, the file is shorter than its header says (truncated), the
        data are complex, or the file holds a 2D image rather than a volume.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MRC file {path} does not exist.")
    try:
        with mrcfile.open(path, header_only=True, permissive=False) as mrc:
            header = mrc.header
            shape = tuple(int(size) for size in data_shape_from_header(header))
            dtype = data_dtype_from_header(header)
            voxel_size = float(mrc.voxel_size.x)
            data_offset = header.nbytes + int(header.nsymbt)
    except ValueError as exc:
        raise _invalid_file_error(path, exc) from exc

    if any(size <= 0 for size in shape):
        raise ValueError(
            f"MRC file {path} has a corrupt header: it gives the data shape {shape}. Export or "
            "copy the file again."
        )
    expected = data_offset + int(np.prod(shape)) * dtype.itemsize
    actual = path.stat().st_size
    if actual < expected:
        raise ValueError(
            f"MRC file {path} is truncated: its header describes data of shape {shape} "
            f"({expected} bytes with the header) but the file has only {actual} bytes. It was "
            "probably cut short by an interrupted copy or write; copy or export it again."
        )
    if dtype.kind == "c":
        raise ValueError(
            f"MRC file {path} holds complex data (mode {int(header.mode)}); subtomograms must "
            "be real-valued. Convert it to a real map (e.g. mode 2, float32) first."
        )
    if len(shape) < 3:
        raise ValueError(
            f"MRC file {path} holds a 2D image of shape {shape}, not a volume. Pass 3D "
            "subtomograms (one volume per file, or a volume stack)."
        )
    return MrcInfo(path=path, shape=shape, voxel_size=voxel_size if voxel_size > 0 else None)


def read_volumes(
    path: str | os.PathLike, indices: np.ndarray, volume_shape: tuple[int, ...]
) -> np.ndarray:
    """Read volumes from an MRC file through a memory map and return float32 copies.

    The file is closed again before returning, so reading from many files never keeps more
    than one open.

    Parameters
    ----------
    path : str or path-like
        An MRC file holding one volume or a volume stack.
    indices : ndarray of int
        Volumes to read from a stack; for a single-volume file its length is how many copies
        of the volume to return (the values are ignored).
    volume_shape : tuple of int
        The shape ``(D, H, W)`` the volumes had when the file was first checked.

    Returns
    -------
    ndarray of shape (len(indices), D, H, W), dtype float32
    """
    path = Path(path)
    try:
        mrc = mrcfile.mmap(path, mode="r", permissive=False)
    except ValueError as exc:
        raise _invalid_file_error(path, exc) from exc
    with mrc:
        data = mrc.data
        if data is None or data.ndim not in (3, 4) or data.shape[-3:] != tuple(volume_shape):
            found = None if data is None else data.shape
            raise ValueError(
                f"MRC file {path} now holds data of shape {found}, but its volumes had shape "
                f"{tuple(volume_shape)} when it was first opened. It changed on disk; open "
                "the data set again."
            )
        if data.ndim == 3:
            volumes = np.broadcast_to(data, (len(indices), *data.shape))
        else:
            indices = np.asarray(indices, dtype=np.intp)
            consecutive = len(indices) > 0 and np.array_equal(
                indices, np.arange(indices[0], indices[0] + len(indices))
            )
            # A slice of the memory map is a view: the float32 conversion is the only copy.
            volumes = data[indices[0] : indices[0] + len(indices)] if consecutive else data[indices]
        with np.errstate(over="ignore"):
            return np.array(volumes, dtype=np.float32)


def write_new_volume(path: str | os.PathLike, volume: np.ndarray, *, voxel_size: float) -> None:
    """Write one float32 volume (mode 2) with its voxel size in Å to a new MRC file.

    This is the step :func:`~skdistill.io.write_subtomograms` runs on a temporary file before
    moving it into place; it refuses to replace an existing file.
    """
    with mrcfile.new(path, data=np.asarray(volume, dtype=np.float32)) as mrc:
        mrc.voxel_size = voxel_size


def _invalid_file_error(path: Path, exc: Exception) -> ValueError:
    return ValueError(
        f"{path} is not a valid MRC file ({exc}). It may be corrupt, truncated or not an MRC "
        "file at all; check it with mrcfile.validate() and export or copy it again."
    )
