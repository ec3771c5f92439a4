"""Training memory: no copies of the volumes for the validation split, float32 soft targets."""

import tracemalloc

import numpy as np
import pytest
from sklearn.frozen import FrozenEstimator

from skdistill import Cnn3DClassifier, Cnn3DSegmenter, DistilledSegmenter

SMALL_UNET = {"base_filters": 4, "levels": 2, "last_filters": 4}


def _traced_peak(fit, *args) -> int:
    tracemalloc.start()
    try:
        fit(*args)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(0)


def test_validation_split_does_not_copy_the_volumes(rng):
    X = rng.normal(size=(128, 24, 24, 24)).astype(np.float32)
    y = np.arange(len(X)) % 2
    clf = Cnn3DClassifier(
        arch="tiny", max_epochs=1, batch_size=32, validation_fraction=0.25,
        early_stopping=None, random_state=0,
    )  # fmt: skip
    clf.fit(X[:8], y[:8])  # warm-up: the first fit imports modules lazily
    peak = _traced_peak(clf.fit, X, y)
    # Index views of X for the training and validation rows: copying them would take 1x.
    assert peak < 0.25 * X.nbytes, f"peak {peak / X.nbytes:.2f}x X"
    assert np.isfinite(clf.history_[:, "valid_loss"]).all()


def test_distilled_segmenter_fit_memory(rng):
    X = rng.normal(size=(64, 16, 16, 16)).astype(np.float32)
    masks = (X > 0.5).astype(np.int8)
    fast = {"max_epochs": 1, "batch_size": 16, "random_state": 0}
    teacher = Cnn3DSegmenter("unet", **SMALL_UNET, **fast, validation_fraction=None)
    student = DistilledSegmenter(FrozenEstimator(teacher.fit(X, masks)), **SMALL_UNET, **fast)
    peak = _traced_peak(student.fit, X, masks)
    # int64 masks (2x X), float32 teacher log-probabilities (2 classes: 2x) and packed
    # targets (3x); float64 probabilities and their softmax temporaries took 23x.
    assert peak < 10 * X.nbytes, f"peak {peak / X.nbytes:.2f}x X"
    assert student.predict_proba(X[:2]).dtype == np.float32
