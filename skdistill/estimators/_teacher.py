"""Teacher handling shared by the distilled estimators: fit or reuse, soft targets, pickling."""

from __future__ import annotations

from numbers import Integral

import numpy as np
from sklearn.base import clone, is_classifier
from sklearn.frozen import FrozenEstimator
from sklearn.utils.validation import check_is_fitted, check_memory

from ..exceptions import NonFiniteOutputError

__all__ = ["TeacherMixin", "distillation_targets", "teacher_log_proba"]


def _fit_teacher(teacher, X, y):
    """Fit a clone of ``teacher``; module-level so that ``joblib.Memory`` can cache it."""
    return clone(teacher).fit(X, y)


def teacher_log_proba(teacher, X) -> np.ndarray:
    """Teacher log-probabilities in float32: logits up to a per-row constant.

    ``predict_log_proba`` is used when the teacher has it (skdistill's estimators compute it
    stably from the logits); otherwise the log of ``predict_proba``, with zeros clipped to
    float32's smallest normal number. float32 like the networks' own logits: a float64 copy
    would double the memory of per-voxel probabilities and add no information.
    """
    if hasattr(teacher, "predict_log_proba"):
        return np.asarray(teacher.predict_log_proba(X), dtype=np.float32)
    proba = np.asarray(teacher.predict_proba(X), dtype=np.float32)
    log_proba = np.clip(proba, np.finfo(np.float32).tiny, None)
    return np.log(log_proba, out=log_proba)


#: Values of the soft targets computed at a time (temporaries stay a few MB).
_TARGET_CHUNK_VALUES = 2**22


def distillation_targets(log_proba: np.ndarray, hard: np.ndarray, temperature: float):
    """Soft labels at ``temperature`` packed with the hard labels along axis 1.

    Computed in float32, a chunk of rows at a time, straight into the result: no float64
    or full-size temporary copies beside it.

    Parameters
    ----------
    log_proba : ndarray of shape (n, n_classes) or (n, n_classes, D, H, W)
        Teacher log-probabilities (``-inf`` for probability 0 is allowed).
    hard : ndarray of shape (n,) or (n, D, H, W)
        Class indices; ``-1`` where unlabeled.
    temperature : float
        Softmax temperature ``T``.

    Returns
    -------
    ndarray of shape (n, n_classes + 1, ...), dtype float32
        ``softmax(log_proba / T)`` in the first ``n_classes`` channels, ``hard`` in the last.

    Raises
    ------
    NonFiniteOutputError
        If a row's soft labels are not finite: its log-probabilities hold NaN or ``+inf``,
        or are all ``-inf``.
    """
    log_proba = np.asarray(log_proba)
    n_samples, n_classes = log_proba.shape[:2]
    targets = np.empty((n_samples, n_classes + 1, *log_proba.shape[2:]), dtype=np.float32)
    step = max(1, _TARGET_CHUNK_VALUES // max(1, log_proba[:1].size))
    for start in range(0, n_samples, step):
        stop = min(start + step, n_samples)
        soft = targets[start:stop, :n_classes]  # a view: computed in place
        with np.errstate(invalid="ignore", over="ignore"):  # non-finite rows raise below
            np.divide(log_proba[start:stop], temperature, out=soft, casting="same_kind")
            soft -= soft.max(axis=1, keepdims=True)
            np.exp(soft, out=soft)
            soft /= soft.sum(axis=1, keepdims=True)
        _check_finite_targets(soft, start)
        targets[start:stop, n_classes] = hard[start:stop]
    return targets


def _check_finite_targets(soft: np.ndarray, start: int) -> None:
    finite = np.isfinite(soft).reshape(len(soft), -1).all(axis=1)
    if finite.all():
        return
    bad = start + np.flatnonzero(~finite)
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    raise NonFiniteOutputError(
        f"The teacher's probabilities give no valid soft labels for sample(s) "
        f"{bad[:5].tolist()}{more}: its log-probabilities there hold NaN or +inf, or are "
        "-inf for every class. Check the teacher's predict_proba on these samples and the "
        "input scale (e.g. normalise the volumes with "
        "skdistill.preprocessing.VolumeNormalizer)."
    )


class TeacherMixin:
    """Fit (or reuse a frozen) teacher, record its size and score, drop it from pickles.

    The estimator defines ``teacher``, ``memory``, ``random_state``, ``device``,
    ``precision``, ``inference_precision``, ``verbose``, the hook
    ``_default_teacher(**params)`` and, optionally, ``_check_frozen_teacher(teacher)`` and
    ``_teacher_segments = True`` (a segmenter teaches; a classifier by default).
    """

    #: Whether the teacher must be a segmenter (per-voxel probabilities) or a classifier.
    _teacher_segments: bool = False

    def _check_teacher_kind(self, teacher) -> None:
        """Raise if a classifier teaches a segmenter, or a segmenter a classifier."""
        inner = teacher.estimator if isinstance(teacher, FrozenEstimator) else teacher
        segments = getattr(inner, "_segments_volumes", False)
        if self._teacher_segments and is_classifier(inner):
            raise ValueError(
                f"{type(self).__name__} needs a segmenter teacher, which predicts per-voxel "
                f"probabilities (n, n_classes, D, H, W), such as Cnn3DSegmenter; got the "
                f"classifier {type(inner).__name__}, which predicts one class per volume. "
                "Use DistilledClassifier to distill a classifier."
            )
        if not self._teacher_segments and segments:
            raise ValueError(
                f"{type(self).__name__} needs a classifier teacher, which predicts one class "
                f"per volume, such as Cnn3DClassifier; got the segmenter "
                f"{type(inner).__name__}. Use DistilledSegmenter to distill a segmenter."
            )

    def _check_frozen_input_shape(self, fitted) -> None:
        """Raise if a frozen teacher was fitted on volumes of another shape than ``X``."""
        shape = getattr(fitted, "input_shape_", None)
        channels = getattr(fitted, "n_channels_", self.n_channels_)
        if shape is None or (tuple(shape), channels) == (self.input_shape_, self.n_channels_):
            return
        raise ValueError(
            f"The frozen teacher was fitted on volumes of shape {tuple(shape)} with {channels} "
            f"channel(s), but X holds volumes of shape {self.input_shape_} with "
            f"{self.n_channels_} channel(s). Fit the teacher on volumes of this size, or "
            "pass an unfitted teacher."
        )

    def _check_frozen_teacher(self, teacher) -> None:
        """Raise if a frozen (already fitted) teacher does not fit this data; no check here."""

    def _fitted_teacher(self, X, y, rows: np.ndarray):
        """The fitted teacher: a frozen one as is, otherwise a clone fitted on ``rows``."""
        teacher = self.teacher
        if teacher is None:
            # An int seed or None (not a RandomState) keeps memory= cache keys stable.
            seed = self.random_state if isinstance(self.random_state, Integral) else None
            teacher = self._default_teacher(
                device=self.device,
                precision=self.precision,
                inference_precision=self.inference_precision,
                standardize=self.standardize,
                random_state=seed,
                verbose=self.verbose,
            )
        self._check_teacher_kind(teacher)
        if isinstance(teacher, FrozenEstimator):
            check_is_fitted(teacher.estimator)
            self._check_frozen_input_shape(teacher.estimator)
            self._check_frozen_teacher(teacher)
            return teacher
        fit = check_memory(self.memory).cache(_fit_teacher)
        return fit(teacher, X[rows], y[rows])

    def _record_teacher(self, teacher) -> None:
        inner = teacher.estimator if isinstance(teacher, FrozenEstimator) else teacher
        self.teacher_score_ = float(getattr(inner, "validation_score_", np.nan))
        self.teacher_n_parameters_ = getattr(inner, "n_parameters_", None)
        self.compression_rate_ = (
            None
            if self.teacher_n_parameters_ is None
            else self.teacher_n_parameters_ / self.n_parameters_
        )

    def __getstate__(self):
        state = super().__getstate__()  # already a copy
        if "_module_weights" in state and state["teacher"] is not None:
            # Prediction needs no teacher: keep only its (unfitted) parameters.
            teacher = state["teacher"]
            if isinstance(teacher, FrozenEstimator):
                teacher = teacher.estimator
            state["teacher"] = clone(teacher)
        return state
