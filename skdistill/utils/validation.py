"""Input validation for volume estimators: shapes, finiteness, labels."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    check_array,
    check_consistent_length,
    column_or_1d,
    validate_data,
)

__all__ = [
    "MAX_SEGMENTATION_CLASSES",
    "UNLABELED",
    "check_label_volumes",
    "check_labels",
    "check_n_classes",
    "check_segmentation_labels",
    "input_ndim",
    "unlabeled_mask",
    "validate_volumes",
]

#: Most classes a segmenter takes: label ids 0..255, as in 8-bit label maps. Larger ids
#: would build a network with one output channel per id up to the largest.
MAX_SEGMENTATION_CLASSES = 256

#: Label value of unlabeled rows (scikit-learn's ``SelfTrainingClassifier`` convention).
UNLABELED = -1

_SHAPES_HELP = (
    "Pass volumes as (n_samples, D, H, W) or (n_samples, 1, D, H, W) with D == H == W, "
    "or a 2D (n_samples, n_features) array, which is treated as volumes of shape "
    "(n_features, 1, 1)."
)


def validate_volumes(estimator: BaseEstimator, X, *, reset: bool) -> np.ndarray:
    """Validate ``X`` and return it as float32 volumes ``(n, C, D, H, W)``.

    On ``reset=True`` (fit) this sets ``n_features_in_`` (voxels times channels) and
    ``feature_names_in_`` when applicable, and the caller stores the volume shape. On
    ``reset=False`` (predict) the volume shape must equal ``estimator.input_shape_``.

    Parameters
    ----------
    estimator : BaseEstimator
        The estimator being fitted or used.
    X : array-like
        Volumes ``(n, D, H, W)``, ``(n, C, D, H, W)`` or 2D features ``(n, F)``.
    reset : bool
        Whether this is a fit (store the input description) or a later call (check it).

    Returns
    -------
    ndarray of shape (n, C, D, H, W), dtype float32
    """
    if input_ndim(X) >= 3:
        return _validate_nd(estimator, X, reset=reset)

    if not reset and tuple(estimator.input_shape_[1:]) != (1, 1):
        # Fitted on volumes, given feature rows: name both shapes before sklearn's check.
        shape = getattr(X, "shape", None) or np.asarray(X).shape
        if len(shape) == 2:
            _raise_shape_mismatch((shape[1], 1, 1), estimator.input_shape_)
    X = validate_data(estimator, X, reset=reset, dtype=np.float32)
    return X.reshape(X.shape[0], 1, X.shape[1], 1, 1)


def input_ndim(X) -> int:
    """Number of dimensions of an array-like, without converting array types."""
    ndim = getattr(X, "ndim", None)
    if ndim is not None:
        return int(ndim)
    try:
        return np.asarray(X).ndim
    except ValueError:  # ragged nested sequences: let check_array explain
        return -1


def _validate_nd(estimator: BaseEstimator, X, *, reset: bool) -> np.ndarray:
    X = check_array(X, allow_nd=True, dtype=np.float32, input_name="X", estimator=estimator)
    if X.ndim == 4:
        X = X[:, np.newaxis]
    elif X.ndim != 5:
        raise ValueError(
            f"X has {X.ndim} dimensions (shape {X.shape}); expected 4 or 5. {_SHAPES_HELP}"
        )
    volume_shape = X.shape[2:]
    if reset:
        # (F, 1, 1) is how 2D feature rows are represented, so it is accepted as well.
        if len(set(volume_shape)) != 1 and volume_shape[1:] != (1, 1):
            raise ValueError(
                f"Volumes must be cubic, got shape {volume_shape}. Crop or pad the "
                "subtomograms to a common cubic box (D == H == W)."
            )
    elif volume_shape != estimator.input_shape_ or X.shape[1] != estimator.n_channels_:
        _raise_shape_mismatch(
            volume_shape, estimator.input_shape_, X.shape[1], estimator.n_channels_
        )
    # Run scikit-learn's bookkeeping (n_features_in_, feature names) on a flat view.
    validate_data(estimator, X.reshape(X.shape[0], -1), reset=reset, skip_check_array=True)
    return X


def _raise_shape_mismatch(got, expected, got_channels=None, expected_channels=None):
    channels = ""
    if got_channels is not None and got_channels != expected_channels:
        channels = f" with {got_channels} channel(s) instead of {expected_channels}"
    raise ValueError(
        f"X holds volumes of shape {tuple(got)}{channels}, but this "
        f"estimator was fitted on volumes of shape {tuple(expected)}. Resample or crop "
        f"the subtomograms to {tuple(expected)}, or refit on the new size."
    )


def unlabeled_mask(y: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows whose label is ``-1`` (unlabeled)."""
    if y.dtype.kind in "iuf":
        return y == UNLABELED
    return np.fromiter((v is not None and _is_unlabeled(v) for v in y), bool, len(y))


def _is_unlabeled(value) -> bool:
    try:
        return bool(value == UNLABELED) and not isinstance(value, str)
    except (TypeError, ValueError):
        return False


def check_labels(y, n_samples: int, *, allow_unlabeled: bool = False) -> np.ndarray:
    """Check classification targets ``y`` against ``n_samples`` rows of ``X``.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Class labels of any type scikit-learn accepts.
    n_samples : int
        Number of rows of ``X``.
    allow_unlabeled : bool, default=False
        Whether ``-1`` marks unlabeled rows (scikit-learn's ``SelfTrainingClassifier``
        convention): then only the labeled rows must be classification targets, so string
        labels can be mixed with the integer ``-1`` in an object array.

    Returns
    -------
    ndarray of shape (n_samples,)
    """
    if y is None:
        raise ValueError(
            "This classifier requires y to be passed, but the target y is None. Pass the "
            "class labels (use -1 for unlabeled rows where supported)."
        )
    y = column_or_1d(check_array(y, ensure_2d=False, dtype=None, input_name="y"), warn=True)
    check_consistent_length(np.empty(n_samples), y)
    if not allow_unlabeled:
        check_classification_targets(y)
        return y
    if y.dtype.kind in "US" and np.any(y == str(UNLABELED)):
        raise ValueError(
            "y holds the string '-1'. Unlabeled rows are marked with the integer -1; with "
            "string class names use an object array, e.g. y = y.astype(object); "
            "y[y == '-1'] = -1."
        )
    check_classification_targets(y[~unlabeled_mask(y)])
    return y


def check_n_classes(classes: np.ndarray) -> None:
    """Raise ``ValueError`` unless there are at least two classes."""
    if len(classes) < 2:
        raise ValueError(
            "A classifier needs at least 2 classes in y, but y has only one class: "
            f"{classes.tolist()}. Add samples of other classes."
        )


def check_label_volumes(masks, shape: tuple[int, ...], *, name: str = "masks") -> np.ndarray:
    """Check integer label volumes against the volumes they label.

    Shared by the segmenters (``y``) and :func:`~skdistill.io.write_subtomograms`
    (``masks``); each adds its own range rules.

    Parameters
    ----------
    masks : array-like of shape (n, D, H, W) or (n, 1, D, H, W)
        Integer labels; booleans, and floats holding whole numbers, are accepted.
    shape : tuple of int
        ``(n, D, H, W)`` of the labelled volumes.
    name : str, default="masks"
        The argument's name, for error messages.

    Returns
    -------
    ndarray of shape (n, D, H, W)
        ``masks`` with the channel axis dropped, its dtype unchanged (the caller picks the
        integer type once its own range rules hold).
    """
    masks = np.asarray(masks)
    if masks.ndim == 5 and masks.shape[1] == 1:
        masks = masks[:, 0]
    shape = tuple(shape)
    if masks.shape != shape:
        raise ValueError(
            f"{name} has shape {masks.shape} but X holds subtomograms of shape {shape}; pass "
            f"one label volume per subtomogram, of shape {shape}."
        )
    if masks.dtype.kind not in "biuf":
        raise ValueError(
            f"{name} must hold integer labels, got dtype {masks.dtype}. Pass an integer array."
        )
    if masks.dtype.kind == "f":
        whole = np.isfinite(masks) & (masks == np.round(masks))
        if not whole.all():
            first = tuple(int(i) for i in np.argwhere(~whole)[0])
            raise ValueError(
                f"{name} must hold integer labels, but {name}[{first}] is {masks[first]}. "
                f"Threshold or round the label volumes first (e.g. {name}.astype(np.int8))."
            )
    return masks


def check_segmentation_labels(masks: np.ndarray, *, name: str = "y") -> int:
    """Check that label volumes hold class ids ``0..MAX_SEGMENTATION_CLASSES - 1``.

    Runs on the masks in their own dtype (before any cast to an integer type, which could
    wrap large or huge values), so nothing is allocated for a refused mask.

    Parameters
    ----------
    masks : ndarray
        Label volumes, as returned by :func:`check_label_volumes`.
    name : str, default="y"
        The argument's name, for error messages.

    Returns
    -------
    int
        The largest label.
    """
    # Whole numbers (check_label_volumes), so int() is exact, also for float masks.
    smallest, largest = int(masks.min()), int(masks.max())
    if smallest < 0:
        raise ValueError(
            f"{name} holds the negative label {smallest}; labels are class ids 0 "
            "(background) to n_classes - 1."
        )
    if largest >= MAX_SEGMENTATION_CLASSES:
        raise ValueError(
            f"{name} holds the label {largest}, but segmentation labels are class ids "
            f"0..{MAX_SEGMENTATION_CLASSES - 1} (at most {MAX_SEGMENTATION_CLASSES} classes, "
            "0 for background): the network has one output per class id up to the largest. "
            "Relabel the masks to consecutive class ids, e.g. "
            f"np.unique({name}, return_inverse=True)[1].reshape({name}.shape)."
        )
    return largest
