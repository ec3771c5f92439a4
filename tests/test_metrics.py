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


def test_import_leaves_scikit_learn_untouched():
    """Importing skdistill registers no scoring name and edits no sklearn table."""
    import subprocess
    import sys

    code = "\n".join(
        [
            "import gc",
            "import sklearn.model_selection, sklearn.metrics",
            "from sklearn.metrics import get_scorer_names",
            "from sklearn.utils._param_validation import StrOptions",
            "def snapshot():",
            "    sets = sorted(",
            "        sorted(o.options) for o in gc.get_objects()",
            "        if type(o) is StrOptions and {'accuracy', 'r2'} <= set(o.options)",
            "    )",
            "    return sorted(get_scorer_names()), sets",
            "before = snapshot()",
            "import skdistill, skdistill.metrics",
            "after = snapshot()",
            "print(before == after, 'mean_iou' in after[0])",
        ]
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "False"]


def test_scorer_object_works_in_cross_val_score():
    from sklearn.base import BaseEstimator
    from sklearn.model_selection import cross_val_score

    class Constant(BaseEstimator):
        def fit(self, X, y):
            return self

        def predict(self, X):
            return np.zeros((len(X), 2, 2, 2), dtype=int)

    X = np.zeros((4, 8))
    y = np.zeros((4, 2, 2, 2), dtype=int)
    y[:2] = 1
    scores = cross_val_score(Constant(), X, y, cv=2, scoring=mean_iou_scorer)
    assert scores.tolist() == [0.0, 1.0]  # fold 1: all wrong; fold 2: all right


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("labels", [None, [0, 1, 2], [1, 3], [0, 1, 2, 3, 4]])
def test_mask_path_equals_sklearn_jaccard(seed, labels):
    from sklearn.metrics import jaccard_score

    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 3 + seed % 2, size=(3, 5, 5, 5))
    y_pred = rng.integers(0, 3, size=(3, 5, 5, 5)).astype(np.int8)
    expected = jaccard_score(
        y_true.ravel(), y_pred.ravel(), labels=labels, average="macro", zero_division=0.0
    )
    assert mean_iou(y_true, y_pred, labels=labels) == pytest.approx(expected, abs=1e-12)


def test_non_mask_labels_fall_back_to_sklearn():
    y_true = np.array(["a", "a", "b", "b"])
    y_pred = np.array(["a", "b", "b", "b"])
    assert mean_iou(y_true, y_pred) == pytest.approx((0.5 + 2 / 3) / 2)
    assert mean_iou(np.array([-1, 1]), np.array([-1, -1])) == pytest.approx(0.25)


def test_mask_path_counts_in_bounded_steps(monkeypatch):
    import tracemalloc

    from sklearn.metrics import jaccard_score

    from skdistill import metrics

    monkeypatch.setattr(metrics, "_VOXELS_PER_STEP", 1000)  # many steps, a ragged last one
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 3, size=(7, 11, 13, 17)).astype(np.int8)
    y_pred = rng.integers(0, 3, size=y_true.shape).astype(np.int8)
    tracemalloc.start()
    try:
        value = mean_iou(y_true, y_pred)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    expected = jaccard_score(y_true.ravel(), y_pred.ravel(), average="macro")
    assert value == pytest.approx(expected, abs=1e-12)
    # int64 codes for every voxel would take 8 bytes each; steps keep a few kB.
    assert peak < y_true.size * 8 / 4, f"peak {peak} bytes"
