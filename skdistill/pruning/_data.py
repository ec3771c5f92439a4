"""The training data a pruned estimator fine-tunes on, in its base estimator's own terms."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..estimators._segmenter import check_masks
from ..estimators._teacher import distillation_targets, teacher_log_proba
from ..utils.validation import check_labels, unlabeled_mask, validate_volumes

__all__ = ["FinetuneData", "finetune_data"]


@dataclass
class FinetuneData:
    """Everything fine-tuning and scoring need.

    ``volumes`` are scaled as the base scales them; ``targets`` are what its training loss
    takes (class indices, label volumes, or soft labels packed with the hard ones);
    ``hard`` the hard labels (``-1``: unlabeled), used by the Taylor criterion's loss.
    """

    volumes: np.ndarray
    targets: np.ndarray
    hard: np.ndarray
    stratify: np.ndarray
    y: np.ndarray
    distillation: tuple[float, float] | None
    class_weight: np.ndarray | None
    soft_labels: bool


def finetune_data(estimator, X, y, labels: str = "auto") -> FinetuneData:
    """The fine-tuning data of the fitted base ``estimator`` on ``(X, y)``.

    With ``labels="auto"`` a distilled base (one with a ``teacher``) fine-tunes on its
    teacher's soft labels, as it was trained: the teacher is used as is when frozen, read
    from the base's ``memory`` cache when it has one, and refitted otherwise. ``"hard"``
    fine-tunes any base on the hard labels only (a distilled base's unlabeled rows are then
    left out); ``"soft"`` requires a distilled base.
    """
    distilled = hasattr(estimator, "teacher")
    if labels == "soft" and not distilled:
        raise ValueError(
            f"finetune_labels='soft' needs a teacher's soft labels, but the base "
            f"{type(estimator).__name__} was not distilled. Use finetune_labels='auto' or "
            "'hard', or prune a DistilledClassifier."
        )
    segments = getattr(estimator, "_segments_volumes", False)
    volumes = validate_volumes(estimator, X, reset=False)
    if labels == "hard" and distilled and not segments:
        volumes, y = _labeled_rows(volumes, y)
    scaled = estimator._scaled(volumes)
    if segments:
        y, _ = check_masks(y, len(volumes), estimator.input_shape_)
        hard = y
        stratify = np.zeros(len(volumes))
        labeled = np.arange(len(volumes))
    else:
        y = check_labels(y, len(volumes), allow_unlabeled=hasattr(estimator, "teacher"))
        unlabeled = unlabeled_mask(y) if hasattr(estimator, "teacher") else np.zeros(len(y), bool)
        hard = np.full(len(y), -1, dtype=np.int64)
        hard[~unlabeled] = _encode(estimator.classes_, y[~unlabeled])
        stratify = hard
        labeled = np.flatnonzero(~unlabeled)
    class_weight = getattr(estimator, "class_weight_", None)
    if not distilled or labels == "hard":
        return FinetuneData(scaled, hard, hard, stratify, y, None, class_weight, False)
    teacher = estimator._fitted_teacher(scaled, y, labeled)
    targets = distillation_targets(teacher_log_proba(teacher, scaled), hard, estimator.temperature)
    distillation = (float(estimator.temperature), float(estimator.alpha))
    del teacher
    return FinetuneData(scaled, targets, hard, stratify, y, distillation, class_weight, True)


def _labeled_rows(volumes: np.ndarray, y) -> tuple[np.ndarray, np.ndarray]:
    """The rows of ``volumes`` and ``y`` that have a label (a distilled base's may not)."""
    y = check_labels(y, len(volumes), allow_unlabeled=True)
    labeled = ~unlabeled_mask(y)
    if not labeled.any():
        raise ValueError(
            "finetune_labels='hard' fine-tunes on labeled volumes, but every label in y is "
            "missing. Use finetune_labels='soft' to fine-tune on the teacher's soft labels."
        )
    return volumes[labeled], y[labeled]


def _encode(classes: np.ndarray, y: np.ndarray) -> np.ndarray:
    indices = np.searchsorted(classes, y)
    indices = np.clip(indices, 0, len(classes) - 1)
    unknown = classes[indices] != y
    if unknown.any():
        raise ValueError(
            f"y holds labels {np.unique(y[unknown]).tolist()[:5]} that the base estimator "
            f"was not fitted on (its classes: {classes.tolist()}); fit the base on the same "
            "classes."
        )
    return indices.astype(np.int64)
