"""Fitting on a lazy stack reads it into memory: check first that it fits."""

from __future__ import annotations

import math

from ..utils.memory import check_memory, format_bytes

__all__ = ["check_fit_memory"]

#: Bytes of one float32 voxel, the type fit reads volumes into.
_FLOAT32 = 4


def check_fit_memory(estimator, X) -> None:
    """Raise ``MemoryError`` before a lazy ``X`` is read if fit would not fit in memory.

    Arrays are already in memory and are not checked, nor are sources without a ``shape``.
    For a lazy stack (anything with ``iter_batches``), fit needs the float32 volumes,
    ``n * C * D * H * W * 4`` bytes, times ``estimator._fit_volume_copies``: the number of
    volume-sized arrays the estimator's fit holds at its peak (the volumes, the teacher's
    copy of them, label volumes, soft targets). The network's own activations, a few
    batches, are not counted.

    Parameters
    ----------
    estimator : BaseVolumeEstimator
        The estimator about to be fitted.
    X : stack
        The training volumes, with ``shape`` ``(n, D, H, W)`` or ``(n, C, D, H, W)``.

    Raises
    ------
    MemoryError
        Naming the memory needed and available and how to need less.
    """
    shape = getattr(X, "shape", None)
    if not hasattr(X, "iter_batches") or shape is None:
        return
    shape = tuple(int(s) for s in shape)
    volume_bytes = _FLOAT32 * math.prod(shape)
    required = estimator._fit_volume_copies * volume_bytes
    box = "x".join(str(s) for s in shape[-3:])
    check_memory(
        required,
        what=(
            f"Fitting {type(estimator).__name__} on {shape[0]} volumes of {box} voxels "
            f"(read into memory: {estimator._fit_volume_copies:g} times the "
            f"{format_bytes(volume_bytes)} of float32 volumes)"
        ),
        hint=(
            "Fit on fewer particles (a particle table with fewer rows) or a smaller box "
            "(a smaller box_size, or a larger voxel_size, when building the stack), or on a "
            "machine with more memory."
        ),
    )
