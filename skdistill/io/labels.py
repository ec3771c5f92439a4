"""Label volumes (segmentation masks) stored beside subtomograms: checks, writing, reading.

:func:`~skdistill.io.write_subtomograms` with ``masks=`` writes each subtomogram's label
volume as ``subtomo_000001_mask.mrc`` next to ``subtomo_000001.mrc``: int8 (MRC mode 0) when
every label fits in int8, else int16 (mode 1), with the voxel size in the header. The
``particles.star`` file lists them in the column ``rlnMaskName`` (skdistill's use of a label
RELION defines for other tables and ignores in particle tables; see :mod:`skdistill.io.star`).

:class:`MaskStack` reads them lazily and :func:`read_segmentation_subtomograms` reads images
and labels into memory. Labels are returned as int16 whatever the file's mode: integer modes
(0, 1, 6) and float modes holding whole numbers in the int16 range are accepted, anything
else raises a ``ValueError`` naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import mrcfile
import numpy as np

from ..utils.validation import check_label_volumes
from ._lazy import LazyVolumes
from .mrc import MrcInfo, read_header
from .stack import SubtomogramStack, check_volume_number
from .star import MASK_NAME_LABEL, PARTICLES_STAR, ParticleTable, read_particles_star

__all__ = [
    "MaskStack",
    "check_masks",
    "mask_file_name",
    "read_segmentation_subtomograms",
    "write_new_label_volume",
]

#: dtype of the label volumes :class:`MaskStack` returns.
LABEL_DTYPE = np.dtype(np.int16)
_INT8, _INT16 = np.iinfo(np.int8), np.iinfo(np.int16)


def mask_file_name(image_name: str) -> str:
    """The label-volume file written beside an image: ``a.mrc`` → ``a_mask.mrc``.

    >>> mask_file_name("subtomo_000001.mrc")
    'subtomo_000001_mask.mrc'
    """
    path = Path(image_name)
    return f"{path.stem}_mask{path.suffix}"


def check_masks(masks, shape: tuple[int, ...]) -> np.ndarray:
    """Validate label volumes for writing and return them as int8, or int16 if needed.

    Parameters
    ----------
    masks : array-like of shape (n, D, H, W) or (n, 1, D, H, W)
        Integer labels (booleans, or floats holding whole numbers, are accepted too).
    shape : tuple of int
        ``(n, D, H, W)`` of the subtomograms they label.

    Returns
    -------
    ndarray of shape (n, D, H, W), dtype int8 if every value lies in -128..127, else int16

    Raises
    ------
    ValueError
        If the shape differs from ``shape``, a value is not a whole number, or a value falls
        outside the int16 range.
    """
    masks = check_label_volumes(masks, shape, name="masks")
    if masks.dtype.kind == "b":
        return masks.astype(np.int8)
    low, high = masks.min(), masks.max()
    if low < _INT16.min or high > _INT16.max:
        raise ValueError(
            f"masks holds labels from {low} to {high}; label volumes are stored as int16, so "
            f"labels must lie in {_INT16.min}..{_INT16.max}."
        )
    fits_int8 = _INT8.min <= low and high <= _INT8.max
    return masks.astype(np.int8 if fits_int8 else np.int16)


def write_new_label_volume(
    path: str | os.PathLike, volume: np.ndarray, *, voxel_size: float
) -> None:
    """Write one integer label volume (int8: mode 0, int16: mode 1) to a new MRC file."""
    with mrcfile.new(path, data=np.asarray(volume)) as mrc:
        mrc.voxel_size = voxel_size


class MaskStack(LazyVolumes):
    """Label volumes listed in a particles STAR file, indexed like an int16 array (n, D, H, W).

    The companion of :class:`~skdistill.io.SubtomogramStack` for segmentation data: volume
    ``i`` labels subtomogram ``i`` of ``SubtomogramStack(source)``. Construction reads the STAR
    file and the MRC headers of the label volumes and their images, and checks that each label
    volume has its image's shape; values are read, checked and converted on access.

    Parameters
    ----------
    source : str or path-like
        A particles STAR file with an ``rlnMaskName`` column, or a directory holding one as
        ``particles.star`` (as written by ``write_subtomograms(..., masks=...)``).

    Attributes
    ----------
    star_path : Path
        The STAR file.
    paths : list of Path
        The label-volume file of each particle.
    image_paths : list of Path
        The image file of each particle.
    voxel_size : float or None
        Voxel size in Å from the STAR optics block, else the label volumes' headers.
    shape : tuple of int
        ``(n, D, H, W)``.
    ndim : int
        4.
    dtype : numpy.dtype
        int16, whatever the files' MRC modes.

    Raises
    ------
    FileNotFoundError
        If the STAR file, an image or a label volume is missing (named with the STAR file).
    ValueError
        If the STAR file lists no label volumes, a file is not a valid MRC file, or a label
        volume's shape differs from its image's (both files and shapes are named). On access:
        if a label volume holds values that are not whole numbers in the int16 range.

    See Also
    --------
    read_segmentation_subtomograms : Read images and label volumes into memory.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from skdistill.io import write_subtomograms
    >>> from skdistill.io.labels import MaskStack
    >>> X = np.zeros((2, 4, 4, 4), dtype=np.float32)
    >>> masks = np.zeros((2, 4, 4, 4), dtype=np.int8)
    >>> masks[1, 1:3, 1:3, 1:3] = 1
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     star = write_subtomograms(tmp, X, voxel_size=10.0, masks=masks)
    ...     stack = MaskStack(star)
    ...     print(stack.shape, stack.dtype, int(stack[1].sum()))
    (2, 4, 4, 4) int16 8
    """

    def __init__(self, source: str | os.PathLike) -> None:
        star = _star_file(source)
        table = read_particles_star(star)
        if table.mask_paths is None or table.mask_stack_indices is None:
            raise ValueError(
                f"STAR file {star} lists no label volumes (it has no {MASK_NAME_LABEL} column). "
                "Write images with their labels by write_subtomograms(..., masks=...)."
            )
        missing = [path for path in table.mask_paths if not path.is_file()]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} of {len(table.mask_paths)} label volumes ({MASK_NAME_LABEL}) "
                f"listed in STAR file {star} are missing, the first being {missing[0]}. Names "
                f"are read relative to the STAR file's directory ({star.parent}); restore the "
                f"files or fix {MASK_NAME_LABEL}."
            )
        self._volume_shape, self._stack_indices = _check_against_images(star, table)
        self._paths = tuple(table.mask_paths)
        self.star_path = star
        self.image_paths = list(table.paths)
        self.voxel_size = table.voxel_size
        if self.voxel_size is None:
            self.voxel_size = read_header(self._paths[0]).voxel_size

    @property
    def dtype(self) -> np.dtype:
        """int16."""
        return LABEL_DTYPE

    def __repr__(self) -> str:
        return (
            f"MaskStack(n={len(self)}, volume_shape={self._volume_shape}, "
            f"voxel_size={self.voxel_size}, source={str(self.star_path)!r})"
        )

    def _read_file(self, path: Path, run: np.ndarray) -> np.ndarray:
        """Read the label volumes ``run`` from ``path`` and check them (see ``_as_labels``)."""
        return _as_labels(path, super()._read_file(path, run))


def read_segmentation_subtomograms(
    source: str | os.PathLike,
) -> tuple[np.ndarray, np.ndarray]:
    """Read subtomograms and their label volumes into memory.

    Parameters
    ----------
    source : str or path-like
        A particles STAR file with an ``rlnMaskName`` column, or its directory, as written
        by ``write_subtomograms(..., masks=...)``.

    Returns
    -------
    X : ndarray of shape (n, D, H, W), dtype float32
        The volumes.
    masks : ndarray of shape (n, D, H, W), dtype int16
        Their label volumes.

    Raises
    ------
    FileNotFoundError, ValueError
        As for :class:`MaskStack` and :class:`~skdistill.io.SubtomogramStack`; a label
        volume holding values that are not whole numbers raises ``ValueError`` naming it.

    See Also
    --------
    MaskStack : The label volumes, read lazily.
    skdistill.io.read_subtomograms : Images and class labels.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from skdistill.io import write_subtomograms
    >>> from skdistill.io.labels import read_segmentation_subtomograms
    >>> X = np.ones((3, 4, 4, 4), dtype=np.float32)
    >>> masks = np.arange(3 * 64).reshape(3, 4, 4, 4) % 300
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     X_read, masks_read = read_segmentation_subtomograms(
    ...         write_subtomograms(tmp, X, voxel_size=10.0, masks=masks)
    ...     )
    >>> X_read.shape, masks_read.dtype, bool((masks_read == masks).all())
    ((3, 4, 4, 4), dtype('int16'), True)
    """
    masks = MaskStack(source)
    return np.asarray(SubtomogramStack(masks.star_path)), np.asarray(masks)


def _star_file(source) -> Path:
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            f"Label volumes are read from a particles STAR file or its directory, got "
            f"{type(source).__name__}."
        )
    path = Path(source)
    if path.is_dir():
        path = path / PARTICLES_STAR
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist. Label volumes are listed in a particles STAR file "
            f"({MASK_NAME_LABEL}); pass that file or its directory."
        )
    if path.suffix.lower() != ".star":
        raise ValueError(
            f"{path} is not a STAR file. Label volumes are listed in a particles STAR file "
            f"({MASK_NAME_LABEL}); pass that file or its directory."
        )
    return path


def _check_against_images(star: Path, table: ParticleTable) -> tuple[tuple[int, ...], np.ndarray]:
    """Common volume shape and in-file index (-1: single volume) of each label volume.

    Raises a ``ValueError`` naming both files and both shapes for a label volume whose
    shape differs from its image's.
    """
    masks = {path: read_header(path) for path in dict.fromkeys(table.mask_paths)}
    images = {path: read_header(path) for path in dict.fromkeys(table.paths)}
    first: MrcInfo | None = None
    indices = []
    for image, mask, index in zip(
        table.paths, table.mask_paths, table.mask_stack_indices, strict=True
    ):
        info = masks[mask]
        if info.volume_shape != images[image].volume_shape:
            raise ValueError(
                f"Label volume {mask} has shape {info.volume_shape} but its image {image} has "
                f"shape {images[image].volume_shape} (STAR file {star}). A label volume must "
                "match its subtomogram voxel for voxel; write them again together."
            )
        check_volume_number(
            star, mask, index, info.n_volumes, column=MASK_NAME_LABEL, what="label volume"
        )
        if first is None:
            first = info
        elif info.volume_shape != first.volume_shape:
            raise ValueError(
                f"Label volumes have different shapes: {first.path} holds {first.volume_shape} "
                f"but {mask} holds {info.volume_shape}. All subtomograms must share one box size."
            )
        indices.append((index or 0) if info.is_stack else -1)
    return first.volume_shape, np.asarray(indices, dtype=np.intp)


def _as_labels(path: Path, values: np.ndarray) -> np.ndarray:
    """int16 labels of float32 values read from ``path``, which must be whole numbers."""
    whole = np.isfinite(values) & (values == np.round(values))
    if not whole.all():
        example = values[~whole][0]
        raise ValueError(
            f"Label volume {path} holds values that are not integer labels (e.g. {example}). "
            "Label volumes must hold whole numbers; threshold or round it and write it again "
            "as an integer MRC file (mode 0 or 1)."
        )
    if values.min() < _INT16.min or values.max() > _INT16.max:
        raise ValueError(
            f"Label volume {path} holds labels from {values.min():.0f} to {values.max():.0f}, "
            f"outside {_INT16.min}..{_INT16.max} (int16)."
        )
    return values.astype(LABEL_DTYPE)
