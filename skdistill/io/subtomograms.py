"""Write and read a data set of subtomograms: one MRC file each, plus ``particles.star``."""

from __future__ import annotations

import numbers
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .atomic import publish_directory
from .labels import check_masks, mask_file_name, write_new_label_volume
from .mrc import write_new_volume
from .stack import SubtomogramStack
from .star import PARTICLES_STAR, check_class_name, write_particles_star

__all__ = ["is_subtomogram_output", "read_subtomograms", "write_subtomograms"]

#: Names in a folder written by :func:`write_subtomograms` (and the per-file temporaries
#: of earlier versions, ``.NAME.<12 hex digits>.tmp``, which a killed writer left behind).
_OUTPUT_NAME = re.compile(r"subtomo_\d{6,}(_mask)?\.mrc|particles\.star|\..+\.[0-9a-f]{12}\.tmp")


def write_subtomograms(
    directory: str | os.PathLike,
    X,
    y=None,
    *,
    voxel_size: float,
    class_names: Sequence[str] | None = None,
    overwrite: bool = False,
    rotations=None,
    shifts=None,
    masks=None,
) -> Path:
    """Write subtomograms as MRC files and list them in a RELION ``particles.star`` file.

    Each volume goes to ``directory/subtomo_000001.mrc``, ``subtomo_000002.mrc``, ... (at
    least six digits, counting from 1) as float32 (MRC mode 2) with ``voxel_size`` in the
    header. ``particles.star`` follows RELION 3.1+ (see :mod:`skdistill.io.star` for the
    labels): a ``data_optics`` block, a ``data_particles`` block with ``rlnImageName``
    relative to the STAR file, and, when ``class_names`` is given, a
    ``data_skdistill_classes`` block with ``rlnClassNumber`` and ``skdistillClassName``. With
    ``masks``, each subtomogram's label volume goes to ``subtomo_000001_mask.mrc`` etc.,
    listed in the column ``rlnMaskName`` (skdistill's own use of it; RELION does not read it
    in particle tables).

    The files are written into a hidden folder beside ``directory``, which replaces
    ``directory`` in one rename once all of them are written (see
    :func:`skdistill.io.atomic.publish_directory`). A reader thus sees the complete old set
    or the complete new set, never a mix; a call that fails or is interrupted (exception,
    Ctrl-C, SIGTERM) leaves ``directory`` as it was; and a second process writing the same
    ``directory`` at the same time fails with :class:`~skdistill.io.atomic.OutputLockedError`.

    Parameters
    ----------
    directory : str or path-like
        Output directory, created (with its parents) if missing. An existing one must be
        empty, unless ``overwrite``.
    X : array-like of shape (n, D, H, W) or (n, 1, D, H, W)
        Cubic volumes (``D == H == W``) of finite real values.
    y : array-like of int, shape (n,), default=None
        Class labels 0..K-1, written as ``rlnClassNumber = y + 1``.
    voxel_size : float
        Voxel size in Å.
    class_names : sequence of str, default=None
        Names of classes 0..K-1 (at least ``max(y) + 1`` of them).
    overwrite : bool, default=False
        Whether to replace an existing non-empty ``directory`` as a whole: no file of the
        earlier set remains. Only a folder holding nothing but such outputs
        (``subtomo_*.mrc``, ``subtomo_*_mask.mrc``, ``particles.star``) is replaced; other
        files in it raise ``FileExistsError``. Without ``overwrite``, a non-empty
        ``directory`` raises ``FileExistsError`` before anything is written.
    rotations : array-like of shape (n, 3), default=None
        ZYZ Euler angles ``(rot, tilt, psi)`` in degrees (``rlnAngleRot/Tilt/Psi``).
    shifts : array-like of shape (n, 3), default=None
        Particle offsets from the box centre in voxels, ordered ``(z, y, x)`` like the
        array axes. Written as RELION origins, the translation that re-centres the particle:
        ``rlnOriginXAngst = -shift_x * voxel_size`` and likewise for y and z.
    masks : array-like of int, shape (n, D, H, W) or (n, 1, D, H, W), default=None
        Label volumes (segmentation masks) of the subtomograms, voxel for voxel. Written as
        int8 MRC files (mode 0) when every label lies in -128..127, else as int16 (mode 1);
        labels outside the int16 range, or non-integer values, raise ``ValueError``. Read
        them back with :func:`~skdistill.io.labels.read_segmentation_subtomograms` or
        :class:`~skdistill.io.labels.MaskStack`.

    Returns
    -------
    Path
        The ``particles.star`` file.

    Raises
    ------
    FileExistsError
        If ``directory`` is not empty and ``overwrite`` is false, or holds other files.
    OutputLockedError
        If another process is writing ``directory``.
    ValueError
        If an input is malformed; the message says what to change.

    See Also
    --------
    read_subtomograms, SubtomogramStack

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from skdistill.io import read_subtomograms, write_subtomograms
    >>> X = np.zeros((2, 4, 4, 4), dtype=np.float32)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     star = write_subtomograms(tmp, X, [0, 1], voxel_size=10.0)
    ...     X_read, y_read = read_subtomograms(star)
    >>> star.name, X_read.shape, y_read.tolist()
    ('particles.star', (2, 4, 4, 4), [0, 1])
    """
    X = _check_volumes(X)
    n = len(X)
    voxel_size = _check_voxel_size(voxel_size)
    y = None if y is None else _check_labels(y, n)
    class_names = None if class_names is None else _check_class_names(class_names, y)
    rotations = None if rotations is None else _check_per_particle(rotations, n, "rotations")
    shifts = None if shifts is None else _check_per_particle(shifts, n, "shifts")
    masks = None if masks is None else check_masks(masks, X.shape)

    names = mrc_names(n)
    mask_names = None if masks is None else [mask_file_name(name) for name in names]
    with publish_directory(
        directory, overwrite=overwrite, replaceable=is_subtomogram_output
    ) as staging:
        for name, volume in zip(names, X, strict=True):
            write_new_volume(staging / name, volume, voxel_size=voxel_size)
        if masks is not None:
            for name, mask in zip(mask_names, masks, strict=True):
                write_new_label_volume(staging / name, mask, voxel_size=voxel_size)
        write_particles_star(
            staging / PARTICLES_STAR,
            names,
            voxel_size=voxel_size,
            box_size=X.shape[-1],
            labels=y,
            class_names=class_names,
            rotations=rotations,
            shifts=shifts,
            mask_names=mask_names,
        )
    return Path(directory) / PARTICLES_STAR


def read_subtomograms(
    star_or_paths: str | os.PathLike | Sequence[str | os.PathLike],
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read subtomograms and their labels into memory.

    Parameters
    ----------
    star_or_paths : str, path-like or sequence of them
        A STAR file, a directory (its ``particles.star``, else its ``*.mrc`` files sorted by
        name), one MRC file (a volume or a volume stack) or a list of MRC files; see
        :class:`SubtomogramStack`.

    Returns
    -------
    X : ndarray of shape (n, D, H, W), dtype float32
        The volumes.
    y : ndarray of shape (n,), dtype int64, or None
        0-based labels (``rlnClassNumber - 1``), or None when the source has no labels.

    See Also
    --------
    SubtomogramStack : The same data, read lazily.
    write_subtomograms
    """
    stack = SubtomogramStack(star_or_paths)
    labels = None if stack.labels is None else stack.labels.copy()
    return np.asarray(stack), labels


def _check_volumes(X) -> np.ndarray:
    X = np.asarray(X)
    if X.dtype.kind not in "biuf":
        raise ValueError(
            f"X must hold real numbers, got dtype {X.dtype}. Pass volumes as a float array."
        )
    if X.ndim == 5 and X.shape[1] == 1:
        X = X[:, 0]
    if X.ndim != 4:
        raise ValueError(
            f"X has shape {X.shape}; pass subtomograms as (n, D, H, W) or (n, 1, D, H, W) "
            "(one channel). Add a leading axis for a single volume: X[np.newaxis]."
        )
    if len(X) == 0:
        raise ValueError("X holds no subtomograms; pass at least one volume.")
    if not X.shape[1] == X.shape[2] == X.shape[3]:
        raise ValueError(
            f"X holds volumes of shape {X.shape[1:]}, which are not cubic. Crop or pad them "
            "to D == H == W before writing."
        )
    with np.errstate(over="ignore"):
        X = np.asarray(X, dtype=np.float32)
    finite = np.isfinite(X).reshape(len(X), -1).all(axis=1)
    if not finite.all():
        raise ValueError(
            f"X[{int(np.flatnonzero(~finite)[0])}] holds NaN or infinite values (in float32; "
            f"{int((~finite).sum())} subtomograms are affected). Remove or repair them first."
        )
    return X


def _check_voxel_size(voxel_size) -> float:
    if (
        isinstance(voxel_size, bool)
        or not isinstance(voxel_size, numbers.Real)
        or not np.isfinite(voxel_size)
        or voxel_size <= 0
    ):
        raise ValueError(
            f"voxel_size must be a positive number of Å per voxel, got {voxel_size!r}. Take "
            "it from the tomogram, e.g. mrcfile.open(path).voxel_size.x."
        )
    return float(voxel_size)


def _check_labels(y, n: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise ValueError(
            f"y has shape {y.shape} but X holds {n} subtomograms; pass one label per "
            f"subtomogram, shape ({n},)."
        )
    if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        y = y.astype(np.int64)
    if y.dtype.kind not in "iu":
        raise ValueError(
            f"y must hold integer class labels 0..K-1, got dtype {y.dtype}. Encode other "
            "labels with sklearn.preprocessing.LabelEncoder and pass "
            "class_names=list(encoder.classes_)."
        )
    if np.any(y < 0):
        first = int(np.flatnonzero(y < 0)[0])
        raise ValueError(
            f"y[{first}] is {int(y[first])}, but labels must be 0..K-1 (RELION class numbers "
            "start at 1). Drop unlabelled subtomograms or write them without y."
        )
    return y.astype(np.int64)


def _check_class_names(class_names, y: np.ndarray | None) -> list[str]:
    if isinstance(class_names, str):
        raise ValueError("class_names must be a sequence of names, not one string.")
    names = list(class_names)
    for name in names:
        check_class_name(name)
    names = [str(name) for name in names]
    if len(set(names)) != len(names):
        raise ValueError(f"class_names holds duplicates: {names}; give each class its own name.")
    if y is not None and len(names) <= y.max():
        raise ValueError(
            f"class_names has {len(names)} names but y uses label {int(y.max())}; pass at "
            f"least {int(y.max()) + 1} names, one per label 0..{int(y.max())}."
        )
    return names


def _check_per_particle(values, n: int, name: str) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype.kind not in "iuf" or values.shape != (n, 3):
        raise ValueError(
            f"{name} has shape {values.shape} and dtype {values.dtype}; pass real numbers of "
            f"shape ({n}, 3), one row per subtomogram."
        )
    values = values.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} holds NaN or infinite values; pass finite numbers.")
    return values


def is_subtomogram_output(name: str) -> bool:
    """Whether a folder written by :func:`write_subtomograms` may hold an entry ``name``.

    >>> is_subtomogram_output("subtomo_000001_mask.mrc"), is_subtomogram_output("notes.txt")
    (True, False)
    """
    return _OUTPUT_NAME.fullmatch(name) is not None


def mrc_names(n: int) -> list[str]:
    """File names of ``n`` subtomograms: ``subtomo_000001.mrc``, ... (at least 6 digits)."""
    width = max(6, len(str(n)))
    return [f"subtomo_{i:0{width}d}.mrc" for i in range(1, n + 1)]
