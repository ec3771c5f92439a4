"""MRC files through :mod:`mrcfile`: strict header checks, reads, float32 writes.

Every reader opens files with ``permissive=False`` and turns mrcfile's ``ValueError``, and
any warning mrcfile issues while opening a file (a file longer than its header says, an
odd machine stamp, ...), into a ``ValueError`` that names the file and says what to do.
:func:`read_header` also checks that the file is exactly as long as its header implies
(``1024 + nsymbt + nx * ny * nz * bytes per voxel of the mode``), so a header whose mode is
wrong, trailing data and truncated copies are all refused, and that the file holds 3D data
rather than a stack of 2D images.

gzip- and bzip2-compressed files (``.map.gz``, ``.mrc.bz2``; EMDB ships maps gzipped) are
read too: their size is checked on the decompressed stream, and since a compressed file
cannot be memory-mapped, each read decompresses it into memory.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np
from mrcfile.utils import data_dtype_from_header, data_shape_from_header, dtype_from_mode

__all__ = ["MrcInfo", "header_problems", "read_header", "read_volumes", "write_new_volume"]

#: Leading bytes of the compressed formats mrcfile reads.
_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bzip2"}
_DECOMPRESS = {"gzip": gzip.open, "bzip2": bz2.open}
_COMPRESSED_SUFFIXES = {".gz", ".bz2"}
#: The MRC modes mrcfile reads, to name the one a file's size fits.
_MODES = (0, 1, 2, 4, 6, 12)
#: Space group (``ispg``) of an MRC stack of 2D images.
_IMAGE_STACK = 0

_NEEDS_3D = (
    "skdistill needs 3D subtomograms (one volume per file, or an MRC volume stack). Extract "
    "them as 3D volumes: in RELION 5, run Extract subtomos with 'Write output as 2D stacks?' "
    "set to No; RELION 4's pseudo-subtomograms and Warp's exported subtomograms are 3D "
    "already."
)


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
    compression : str or None
        ``"gzip"`` or ``"bzip2"`` for a compressed file, else None.
    """

    path: Path
    shape: tuple[int, ...]
    voxel_size: float | None
    compression: str | None = None

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
        An MRC file holding one volume or a stack of volumes, possibly gzip- or
        bzip2-compressed.

    Returns
    -------
    MrcInfo

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the header is corrupt or mrcfile warns about it, the file's size differs from
        the size its header implies (a wrong mode, trailing data, a truncated copy), the
        data are complex, or the file holds 2D images rather than volumes.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MRC file {path} does not exist.")
    compression = _compression(path)
    actual = _file_size(path, compression)
    with _strictly(path):
        with _open(mrcfile.open, path, header_only=True) as mrc:
            header = mrc.header
            shape = tuple(int(size) for size in data_shape_from_header(header))
            dtype = data_dtype_from_header(header)
            voxel_size = float(mrc.voxel_size.x)
            data_offset = header.nbytes + int(header.nsymbt)
            mode, space_group = int(header.mode), int(header.ispg)

    if any(size <= 0 for size in shape):
        raise ValueError(
            f"MRC file {path} has a corrupt header: it gives the data shape {shape}. Export or "
            "copy the file again."
        )
    n_voxels = int(np.prod(shape))
    if actual != data_offset + n_voxels * dtype.itemsize:
        raise ValueError(_size_message(path, compression, shape, mode, data_offset, actual))
    if dtype.kind == "c":
        raise ValueError(
            f"MRC file {path} holds complex data (mode {mode}); subtomograms must be "
            "real-valued. Convert it to a real map (e.g. mode 2, float32) first."
        )
    if len(shape) < 3:
        raise ValueError(
            f"MRC file {path} holds a 2D image of shape {shape}, not a volume. {_NEEDS_3D}"
        )
    _check_not_image_stack(path, shape, space_group)
    return MrcInfo(
        path=path,
        shape=shape,
        voxel_size=voxel_size if voxel_size > 0 else None,
        compression=compression,
    )


def header_problems(path: str | os.PathLike) -> list[str]:
    """What :func:`mrcfile.validate` finds wrong in the header of a readable MRC file.

    These are departures from the MRC2014 standard that do not stop the file from being
    read (an old format version, unset header labels, an unknown extended-header type);
    ``skdistill info`` lists them. The data statistics, which need the whole file, are not
    checked.

    Parameters
    ----------
    path : str or path-like
        An MRC file that :func:`read_header` accepts.

    Returns
    -------
    list of str
        mrcfile's messages, empty for a valid header.
    """
    path = Path(path)
    report = io.StringIO()
    with _strictly(path):
        with _open(mrcfile.open, path, header_only=True) as mrc:
            mrc.validate(print_file=report)
    # Without the data, mrcfile compares the header statistics with zeros and skips the file
    # size, which read_header checks.
    skipped = ("Data statistics", "Data block could not be read")
    return [
        line.strip()
        for line in report.getvalue().splitlines()
        if line.strip() and not line.startswith(skipped)
    ]


def read_volumes(
    path: str | os.PathLike, indices: np.ndarray, volume_shape: tuple[int, ...]
) -> np.ndarray:
    """Read volumes from an MRC file and return float32 copies.

    Uncompressed files are read through a memory map, so only the volumes asked for are
    read; compressed files are decompressed into memory. The file is closed again before
    returning, so reading from many files never keeps more than one open.

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
    with _strictly(path):
        opener = mrcfile.mmap if _compression(path) is None else mrcfile.open
        mrc = _open(opener, path, mode="r")
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


def _open(opener, path: Path, **kwargs):
    """Open ``path`` strictly; a file whose only fault is its machine stamp is read anyway.

    Some programs write a non-standard machine stamp (cryoDRGN before 2023 writes
    ``00 00 00 00``, some IMOD and Amira exports ``44 20 20 20``; mrcfile issues #4 and #47).
    mrcfile refuses such files unless opened permissively, which then assumes little-endian
    data (what every current platform writes). The file's size is still checked by
    :func:`read_header`, so a corrupt file is not let through: the stamp alone is forgiven,
    with a warning that says how to fix the file.
    """
    try:
        return opener(path, permissive=False, **kwargs)
    except ValueError as exc:
        if _MACHINE_STAMP not in str(exc).lower():
            raise
        warnings.warn(
            f"MRC file {path} has a non-standard machine stamp ({exc}); it is read as "
            "little-endian, as mrcfile does in permissive mode. To fix the file: "
            "mrc.header.machst = mrcfile.constants.IEEE_LE_MACHST in mrcfile.open(path, "
            "'r+', permissive=True).",
            UserWarning,
            stacklevel=4,
        )
        return opener(path, permissive=True, **kwargs)


#: The words of mrcfile's message about a machine stamp it does not recognise.
_MACHINE_STAMP = "machine stamp"


@contextlib.contextmanager
def _strictly(path: Path) -> Iterator[None]:
    """Turn mrcfile's ``ValueError`` and warnings while opening ``path`` into ``ValueError``.

    mrcfile reports problems with a file as ``RuntimeWarning``; other warnings (deprecations
    of the libraries underneath) are passed on unchanged.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        except ValueError as exc:
            raise _invalid_file_error(path, exc) from exc
    problems = "; ".join(
        dict.fromkeys(
            str(item.message)
            for item in caught
            if issubclass(item.category, RuntimeWarning)
            and _MACHINE_STAMP not in str(item.message).lower()  # forgiven by _open
        )
    )
    for item in caught:
        if not issubclass(item.category, RuntimeWarning):
            warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)
    if problems:
        raise ValueError(
            f"MRC file {path} is not a valid MRC file: mrcfile reports: {problems}. skdistill "
            "reads only files that pass mrcfile's checks; check it with mrcfile.validate() "
            "and export or copy it again."
        )


def _compression(path: Path) -> str | None:
    """``"gzip"`` or ``"bzip2"`` for a compressed file, as :func:`mrcfile.open` decides.

    A file with the MRC identifier ``MAP`` at byte 208 is uncompressed whatever its first
    bytes (its ``nx`` may happen to look like a magic number).
    """
    with open(path, "rb") as file:
        start = file.read(212)
    if start[208:212] == b"MAP ":
        return None
    return next((name for magic, name in _MAGIC.items() if start.startswith(magic)), None)


def _file_size(path: Path, compression: str | None) -> int:
    """Size of the file in bytes, after decompression for a compressed file."""
    if compression is None:
        return path.stat().st_size
    size = 0
    try:
        with _DECOMPRESS[compression](path, "rb") as stream:
            while chunk := stream.read(2**20):
                size += len(chunk)
    except (OSError, EOFError) as exc:
        raise ValueError(
            f"MRC file {path} is {compression}-compressed but cannot be decompressed ({exc}). "
            "The compressed file is corrupt or incomplete (an interrupted download or copy); "
            "download or copy it again."
        ) from exc
    return size


def _size_message(
    path: Path, compression: str | None, shape: tuple[int, ...], mode: int, offset: int, actual: int
) -> str:
    """Why ``path`` has ``actual`` bytes where its header implies another size."""
    n_voxels = int(np.prod(shape))
    dtype = dtype_from_mode(mode)
    expected = offset + n_voxels * dtype.itemsize
    stream = f"decompressed {compression} stream" if compression else "file"
    start = (
        f"MRC file {path} has the wrong size: its header describes data of shape {shape} in "
        f"mode {mode} ({dtype.name}), {expected} bytes with the {offset}-byte header, but the "
        f"{stream} has {actual} bytes."
    )
    data_bytes = actual - offset
    fitting = [
        other
        for other in _MODES
        if other != mode and data_bytes == n_voxels * dtype_from_mode(other).itemsize
    ]
    if fitting:
        other = fitting[0]
        return (
            f"{start} The data fill exactly {shape} voxels in mode {other} "
            f"({dtype_from_mode(other).name}): the header's mode is probably wrong (the program "
            f"that wrote the file stored mode {mode} for {dtype_from_mode(other).name} data). "
            f"Write the file again with the right mode (with mrcfile: read the data as "
            f"{dtype_from_mode(other).name} and save them with mrcfile.new)."
        )
    if actual > expected:
        return (
            f"{start} {actual - expected} bytes follow the data the header describes: the "
            "header's dimensions or mode are wrong, or data were appended to the file. Export "
            "the file again."
        )
    cause = (
        "the decompressed data end early, so the file was compressed from an incomplete copy"
        if compression
        else "the file was probably cut short by an interrupted copy or write"
    )
    return f"{start} It is truncated: {cause}; copy or export it again."


def _check_not_image_stack(path: Path, shape: tuple[int, ...], space_group: int) -> None:
    """Refuse a 3D file that holds a stack of 2D images.

    RELION and EMAN name stacks of 2D images ``.mrcs``; the MRC2014 header marks them with
    space group 0 (some older programs also write 0 for volumes, so a cubic file with space
    group 0 is read as a volume).
    """
    if len(shape) != 3:
        return
    n_images, height, width = shape
    suffixes = [suffix.lower() for suffix in path.suffixes]
    while suffixes and suffixes[-1] in _COMPRESSED_SUFFIXES:
        suffixes.pop()
    is_mrcs = bool(suffixes) and suffixes[-1] == ".mrcs"
    if is_mrcs or (space_group == _IMAGE_STACK and not n_images == height == width):
        reason = (
            "its name ends in .mrcs, the extension of 2D image stacks"
            if is_mrcs
            else "its header marks it as a stack of 2D images (space group 0) and the stack is "
            "not cubic"
        )
        what = (
            f"a stack of {n_images} 2D images of {height} x {width} pixels"
            if is_mrcs
            else f"either a stack of {n_images} 2D images of {height} x {width} pixels or a "
            f"non-cubic volume of {n_images} x {height} x {width} voxels (some programs write "
            "space group 0 for volumes too; skdistill needs cubic volumes: crop or pad it)"
        )
        raise ValueError(f"MRC file {path} holds {what}, not a cubic volume: {reason}. {_NEEDS_3D}")


def _invalid_file_error(path: Path, exc: Exception) -> ValueError:
    return ValueError(
        f"{path} is not a valid MRC file ({exc}). It may be corrupt, truncated or not an MRC "
        "file at all; check it with mrcfile.validate() and export or copy it again."
    )
