"""The voxel size a model is trained at: taken in fit, compared at prediction time."""

from __future__ import annotations

import math
import warnings
from numbers import Real

from ..exceptions import VoxelSizeWarning

__all__ = [
    "VOXEL_SIZE_TOLERANCE",
    "data_voxel_size",
    "fit_voxel_size",
    "warn_if_voxel_size_differs",
]

#: Relative difference between two voxel sizes that counts as a different voxel size.
VOXEL_SIZE_TOLERANCE = 0.01


def _positive_number(value) -> bool:
    return (
        isinstance(value, Real)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def data_voxel_size(X) -> float | None:
    """The voxel size in Å that ``X`` declares (a stack's ``voxel_size``), or None.

    Only a positive finite number counts: arrays have no ``voxel_size``, and a stack whose
    files give none (or 0, as MRC headers without a pixel size do) declares nothing.
    """
    value = getattr(X, "voxel_size", None)
    return float(value) if _positive_number(value) else None


def _differ(a: float, b: float) -> bool:
    return abs(a - b) > VOXEL_SIZE_TOLERANCE * b


def fit_voxel_size(X, voxel_size) -> float | None:
    """The voxel size a fit on ``X`` trains at: the ``voxel_size`` fit parameter or ``X``'s.

    Parameters
    ----------
    X : array-like or stack
        The training volumes; a stack's ``voxel_size`` attribute is read.
    voxel_size : float or None
        The ``voxel_size`` fit parameter, in Å.

    Returns
    -------
    float or None
        ``voxel_size`` when given, else the stack's voxel size, else None.

    Raises
    ------
    ValueError
        If ``voxel_size`` is not a positive number, or differs from the stack's own voxel
        size by more than 1 %.
    """
    declared = data_voxel_size(X)
    if voxel_size is None:
        return declared
    if not _positive_number(voxel_size):
        raise ValueError(
            f"voxel_size must be a positive number of Å (the voxel size of the training "
            f"volumes), got {voxel_size!r}."
        )
    voxel_size = float(voxel_size)
    if declared is not None and _differ(voxel_size, declared):
        raise ValueError(
            f"fit(voxel_size={voxel_size:g}) contradicts the voxel size of X, "
            f"{declared:g} Å (from its STAR file or MRC headers). Drop the voxel_size "
            f"argument, or build the stack at {voxel_size:g} Å "
            f"(SubtomogramStack.from_tomograms(..., voxel_size={voxel_size:g}))."
        )
    return voxel_size


def warn_if_voxel_size_differs(estimator, X) -> None:
    """Warn with :class:`~skdistill.exceptions.VoxelSizeWarning` if ``X`` has another voxel size.

    Nothing is said when either voxel size is unknown (arrays, models fitted without one).
    """
    trained = getattr(estimator, "voxel_size_", None)
    given = data_voxel_size(X)
    if trained is None or given is None or not _differ(given, trained):
        return
    warnings.warn(
        f"X has a voxel size of {given:g} Å, but this {type(estimator).__name__} was trained "
        f"at {trained:g} Å: at another voxel size its particles look bigger or smaller than "
        "in training and the predictions are unreliable. Build the stack at the training "
        f"voxel size: SubtomogramStack.from_tomograms(..., voxel_size={trained:g}).",
        VoxelSizeWarning,
        stacklevel=4,
    )
