"""The tomogram a tiler reads: an array, a memory map or an MRC file, read slab by slab."""

from __future__ import annotations

import contextlib
import mmap
import os
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np

from ..io.mrc import _open, _strictly
from ..io.tomograms import read_tomogram

__all__ = ["TomogramSource", "open_tomogram"]


@dataclass
class TomogramSource:
    """A 3D tomogram read in slabs along its first axis.

    Attributes
    ----------
    data : ndarray or memmap of shape (D, H, W)
        The voxels; a memory map is read only where a slab asks for it.
    voxel_size : float or None
        Voxel size in Å (an MRC file's header), None for arrays.
    origin : tuple of float
        The MRC header's origin ``(x, y, z)`` in Å, zeros for arrays.
    path : Path or None
        The MRC file, None for arrays.
    """

    data: np.ndarray
    voxel_size: float | None = None
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    path: Path | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(D, H, W)``."""
        return tuple(int(n) for n in self.data.shape)

    def slab(self, start: int, stop: int, top: int = 0, bottom: int | None = None) -> np.ndarray:
        """Float32 copy of ``data[start:stop, top:bottom]``; a memory map's pages are let go.

        Without the release, every page read stays resident in this process and its
        resident memory grows to the tomogram's size, although nothing refers to the pages.
        """
        with np.errstate(over="ignore"):
            block = np.array(self.data[start:stop, top:bottom], dtype=np.float32)
        _release_pages(self.data)
        if not np.isfinite(block).all():
            rows = f"{top}..{(bottom or self.shape[1]) - 1}"
            raise ValueError(
                f"The tomogram holds NaN or infinite values in slices {start}..{stop - 1} "
                f"(rows {rows}). Replace them (e.g. numpy.nan_to_num with the mean) before "
                "segmenting."
            )
        return block


@contextlib.contextmanager
def open_tomogram(tomogram):
    """A :class:`TomogramSource` of an array, memory map or MRC path, closed on exit.

    Parameters
    ----------
    tomogram : array-like of shape (D, H, W), or str or path-like
        The voxels, or an uncompressed MRC file of a 3D tomogram (memory-mapped).

    Raises
    ------
    ValueError
        If the data are not one real 3D volume with finite values in the slab read.
    FileNotFoundError
        If the MRC file does not exist.
    """
    if isinstance(tomogram, str | os.PathLike):
        path = Path(tomogram)
        checked = read_tomogram(path)  # 3D, uncompressed, complete, cubic voxels
        with _strictly(path), _open(mrcfile.mmap, path, mode="r") as mrc:
            origin = tuple(float(mrc.header.origin[axis]) for axis in ("x", "y", "z"))
            yield TomogramSource(mrc.data, checked.voxel_size, origin, path)
        return
    yield TomogramSource(_checked_array(tomogram))


def _checked_array(tomogram) -> np.ndarray:
    """``tomogram`` as a real 3D array (a leading axis of length 1 dropped), not copied."""
    data = tomogram if isinstance(tomogram, np.ndarray) else np.asarray(tomogram)
    if data.ndim == 4 and data.shape[0] == 1:
        data = data[0]
    if data.ndim != 3:
        raise ValueError(
            f"tomogram must be one 3D volume (D, H, W), not an array of shape {data.shape}. "
            "Pass a single tomogram (or its MRC path); to segment subtomograms, use the "
            "segmenter's predict."
        )
    if data.dtype.kind not in "biuf":
        raise ValueError(f"tomogram must hold real numbers, not {data.dtype}.")
    return data


def _release_pages(data: np.ndarray) -> None:
    """Drop the resident pages of the read-only memory map under ``data`` (Linux, macOS).

    Only read-only maps are released: their pages come back from the file when read again.
    A copy-on-write map (``mode="c"``) may hold changes that exist nowhere else, and a
    writable one is the caller's business; both are left alone.
    """
    base = data
    while base is not None and not isinstance(base, np.memmap):
        base = getattr(base, "base", None)
    handle = getattr(base, "_mmap", None)
    if handle is None or getattr(base, "mode", None) != "r" or not hasattr(mmap, "MADV_DONTNEED"):
        return
    with contextlib.suppress(OSError, ValueError):
        handle.madvise(mmap.MADV_DONTNEED)
