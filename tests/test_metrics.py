"""Mean IoU against hand-computed cases, and its scorer."""

import numpy as np
import pytest
from sklearn.base import BaseEstimator

from skdistill.metrics import mean_iou, mean_iou_scorer


def test_mean_iou_hand_computed():
    y_true = np.zeros((1, 2, 2, 2), dtype=int)
    y_true[0, 0] = 1  # 4 voxels of class 1
    y_pred = np.zeros_like(y_true)
    y_pred[0, 0, 0] = 1  # 2 of them found, no false positives
    # class 1: |2| / |4| = 0.5; class 0: 4 / 6 (4 true-0 voxels, 2 missed ones predicted 0)
    assert mean_iou(y_true, y_pred) == pytest.approx((0.5 + 4 / 6) / 2)


def test_perfect_and_disjoint_predictions():
    y = np.array([[0, 1, 2, 2]])
    assert mean_iou(y, y) == 1.0
    assert mean_iou(y, (y + 1) % 3) == 0.0


def test_classes_absent_from_both_are_not_counted_unless_listed():
    y = np.array([[0, 0, 1, 1]])
    assert mean_iou(y, y) == 1.0
    assert mean_iou(y, y, labels=[0, 1, 2]) == pytest.approx(2 / 3)


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(1, 4\).*\(1, 3\)"):
        mean_iou(np.zeros((1, 4)), np.zeros((1, 3)))


def test_scorer_object():
    class Constant(BaseEstimator):
        def fit(self, X, y):
            return self

        def predict(self, X):
            return np.zeros_like(X, dtype=int)

    X = np.zeros((2, 2, 2, 2))
    y = np.zeros((2, 2, 2, 2), dtype=int)
    y[0, 0, 0, 0] = 1
    expected = mean_iou(y, np.zeros_like(y))
    assert mean_iou_scorer(Constant(), X, y) == pytest.approx(expected)
