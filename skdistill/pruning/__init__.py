"""Structured pruning of trained networks with retraining (Roels et al. 2017)."""

from ._criteria import (
    CRITERIA,
    L1Importance,
    RandomImportance,
    TaylorImportance,
    WeightTaylorImportance,
)
from ._engine import FeatureMapPruner, removal_schedule
from ._estimators import PrunedClassifier, PrunedSegmenter

__all__ = [
    "CRITERIA",
    "FeatureMapPruner",
    "L1Importance",
    "PrunedClassifier",
    "PrunedSegmenter",
    "RandomImportance",
    "TaylorImportance",
    "WeightTaylorImportance",
    "removal_schedule",
]
