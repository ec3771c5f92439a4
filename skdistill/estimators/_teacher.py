"""Teacher handling shared by the distilled estimators: fit or reuse, soft targets, pickling."""

from __future__ import annotations

from numbers import Integral

import numpy as np
from scipy.special import softmax
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator
from sklearn.utils.validation import check_is_fitted, check_memory

__all__ = ["TeacherMixin", "distillation_targets", "teacher_log_proba"]


def _fit_teacher(teacher, X, y):
    """Fit a clone of ``teacher``; module-level so that ``joblib.Memory`` can cache it."""
    return clone(teacher).fit(X, y)


def teacher_log_proba(teacher, X) -> np.ndarray:
    """Teacher log-probabilities: logits up to a per-row constant, which softmax ignores."""
    if hasattr(teacher, "predict_log_proba"):
        return np.asarray(teacher.predict_log_proba(X), dtype=np.float64)
    proba = np.asarray(teacher.predict_proba(X), dtype=np.float64)
    return np.log(np.clip(proba, np.finfo(np.float64).tiny, None))


def distillation_targets(log_proba: np.ndarray, hard: np.ndarray, temperature: float):
    """Soft labels at ``temperature`` packed with the hard labels along axis 1.

    Parameters
    ----------
    log_proba : ndarray of shape (n, n_classes) or (n, n_classes, D, H, W)
        Teacher log-probabilities.
    hard : ndarray of shape (n,) or (n, D, H, W)
        Class indices; ``-1`` where unlabeled.
    temperature : float
        Softmax temperature ``T``.

    Returns
    -------
    ndarray of shape (n, n_classes + 1, ...), dtype float32
        ``softmax(log_proba / T)`` in the first ``n_classes`` channels, ``hard`` in the last.
    """
    soft = softmax(log_proba / temperature, axis=1)
    return np.concatenate([soft, hard[:, np.newaxis]], axis=1).astype(np.float32)


class TeacherMixin:
    """Fit (or reuse a frozen) teacher, record its size and score, drop it from pickles.

    The estimator defines ``teacher``, ``memory``, ``random_state``, ``device``,
    ``precision``, ``inference_precision``, ``verbose``, the hook
    ``_default_teacher(**params)`` and, optionally, ``_check_frozen_teacher(teacher)``.
    """

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
                random_state=seed,
                verbose=self.verbose,
            )
        if isinstance(teacher, FrozenEstimator):
            check_is_fitted(teacher.estimator)
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
