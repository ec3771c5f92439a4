"""Segmentation metrics: mean intersection over union, as a function and a scorer.

Pass the scorer object to scikit-learn's searches:
``GridSearchCV(..., scoring=mean_iou_scorer)`` or ``cross_val_score(..., scoring=mean_iou_scorer)``.
The segmenters' ``score`` is already the mean IoU, so ``scoring=None`` ranks the same way.
Importing skdistill changes nothing in scikit-learn: no scoring *name* is registered,
because scikit-learn has no public registry and a library must not patch another
library's private tables.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import jaccard_score, make_scorer

__all__ = ["mean_iou", "mean_iou_scorer"]


def mean_iou(y_true, y_pred, *, labels=None) -> float:
    """Mean intersection over union (Jaccard index) of label volumes, averaged over classes.

    For each class ``c``, ``IoU_c = |true == c AND pred == c| / |true == c OR pred == c|``
    over all voxels of all volumes; the result is the unweighted mean over ``labels``. By
    default ``labels`` are the classes present in ``y_true`` or ``y_pred``, so a class absent
    from both is not counted (it would be 0 / 0). The value is that of
    :func:`sklearn.metrics.jaccard_score` (``average="macro"``, ``zero_division=0``) on the
    flattened voxels; for non-negative integer labels (masks) it is computed from one
    ``numpy.bincount`` confusion matrix instead (scikit-learn's label encoding sorts every
    voxel, which dominates the time of a search's scoring on large volumes).

    Parameters
    ----------
    y_true : array-like of int, shape (n, D, H, W) or any shape
        True label volumes.
    y_pred : array-like of int, same shape as ``y_true``
        Predicted label volumes.
    labels : array-like, default=None
        Classes to average over; a listed class absent from both counts as IoU 0.

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> y_true = np.array([[0, 0, 1, 1]])
    >>> y_pred = np.array([[0, 1, 1, 1]])
    >>> round(mean_iou(y_true, y_pred), 4)  # class 0: 1/2, class 1: 2/3
    0.5833
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"y_true has shape {y_true.shape} but y_pred has shape {y_pred.shape}; mean IoU "
            "compares label volumes voxel by voxel, so the shapes must be equal."
        )
    n_labels = _mask_label_count(y_true, y_pred, labels)
    if n_labels is not None:
        return _mean_iou_of_masks(y_true.ravel(), y_pred.ravel(), labels, n_labels)
    return float(
        jaccard_score(
            y_true.ravel(), y_pred.ravel(), labels=labels, average="macro", zero_division=0.0
        )
    )


#: Largest label handled by the confusion-matrix path (its matrix has that many squared cells).
_MAX_MASK_LABEL = 1023


def _mask_label_count(y_true: np.ndarray, y_pred: np.ndarray, labels) -> int | None:
    """Largest label + 1 if all labels are integers in ``0.._MAX_MASK_LABEL``, else None."""
    arrays = [y_true, y_pred] + ([] if labels is None else [np.asarray(labels)])
    highest = 0
    for a in arrays:
        if not (a.dtype == bool or np.issubdtype(a.dtype, np.integer)):
            return None
        if a.size:
            low, high = int(a.min()), int(a.max())
            if low < 0 or high > _MAX_MASK_LABEL:
                return None
            highest = max(highest, high)
    return highest + 1 if y_true.size else None


#: Voxels per step of the confusion-matrix count: bounds its temporary memory (32 MB).
_VOXELS_PER_STEP = 1 << 22


def _mean_iou_of_masks(y_true: np.ndarray, y_pred: np.ndarray, labels, n_labels: int) -> float:
    counts = np.zeros(n_labels**2, dtype=np.int64)
    for start in range(0, y_true.size, _VOXELS_PER_STEP):
        codes = y_true[start : start + _VOXELS_PER_STEP].astype(np.int64)
        codes *= n_labels
        codes += y_pred[start : start + _VOXELS_PER_STEP]
        counts += np.bincount(codes, minlength=n_labels**2)
    confusion = counts.reshape(n_labels, n_labels)
    intersection = np.diag(confusion)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - intersection
    chosen = np.flatnonzero(union) if labels is None else np.asarray(labels, dtype=np.int64)
    if chosen.size == 0:
        raise ValueError("labels is empty; list at least one class to average over.")
    iou = np.divide(
        intersection[chosen],
        union[chosen],
        out=np.zeros(chosen.size),
        where=union[chosen] > 0,
    )
    return float(iou.mean())


#: Scorer for searches: ``GridSearchCV(..., scoring=mean_iou_scorer)``. The segmenters'
#: ``score`` is already the mean IoU, so ``scoring=None`` ranks candidates the same way.
mean_iou_scorer = make_scorer(mean_iou)
