"""Non-finite network outputs raise instead of giving NaN probabilities or arbitrary labels."""

import re

import numpy as np
import pytest
import torch
from scipy.special import softmax
from sklearn.frozen import FrozenEstimator
from torch import nn

from skdistill import Cnn3DClassifier, Cnn3DSegmenter, DistilledSegmenter
from skdistill.estimators import _teacher
from skdistill.estimators._teacher import distillation_targets
from skdistill.exceptions import NonFiniteOutputError

from .conftest import FAST

SIZE = 8
SMALL_UNET = {"base_filters": 4, "levels": 2, "last_filters": 4}
HUGE = 3e38  # finite in float32 (max 3.4e38)


@pytest.fixture(scope="module")
def segmentation_data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(16, SIZE, SIZE, SIZE)).astype(np.float32)
    return X, (X > 0.5).astype(np.int64)


@pytest.fixture(scope="module")
def segmenter(segmentation_data):
    X, y = segmentation_data
    params = {**FAST, "max_epochs": 2, "batch_size": 4}
    return Cnn3DSegmenter("unet", **SMALL_UNET, **params, random_state=0).fit(X, y)


def _linear(n_classes, input_shape, in_channels):
    return nn.Sequential(
        nn.Flatten(), nn.Linear(in_channels * int(np.prod(input_shape)), n_classes)
    )


@pytest.fixture(scope="module")
def overflowing_classifier(volumes):
    """A linear classifier with positive weights: a volume of 3e38 gives +inf logits."""
    X, y = volumes
    clf = Cnn3DClassifier(arch=_linear, random_state=0, **{**FAST, "max_epochs": 1}).fit(X, y)
    with torch.no_grad():
        clf.net_.module_[1].weight.abs_()
    return clf


def _with_huge_volume(X, index=5):
    X = X[:10].copy()
    X[index] = HUGE
    return X


@pytest.mark.parametrize("method", ["predict", "predict_proba", "predict_log_proba"])
def test_huge_finite_input_raises_instead_of_predicting(segmenter, segmentation_data, method):
    X, _ = segmentation_data
    assert np.isfinite(_with_huge_volume(X)).all()
    with pytest.raises(NonFiniteOutputError, match=r"volume\(s\) \[5\].*VolumeNormalizer"):
        getattr(segmenter, method)(_with_huge_volume(X))


def test_score_raises_on_non_finite_outputs(segmenter, segmentation_data):
    X, y = segmentation_data
    with pytest.raises(NonFiniteOutputError, match=re.escape("largest |value| in it 3e+38")):
        segmenter.score(_with_huge_volume(X), y[:10])


@pytest.mark.parametrize("method", ["predict", "predict_proba", "predict_log_proba", "score"])
def test_classifier_never_labels_infinite_logits(overflowing_classifier, volumes, method):
    X, y = volumes
    args = (y[:10],) if method == "score" else ()
    with pytest.raises(NonFiniteOutputError, match=r"volume\(s\) \[5\]"):
        getattr(overflowing_classifier, method)(_with_huge_volume(X), *args)


def test_error_names_the_position_in_later_batches(overflowing_classifier, volumes, monkeypatch):
    X, _ = volumes
    monkeypatch.setattr(type(overflowing_classifier), "_inference_batch_size", lambda self: 4)
    X = X.copy()
    X[[9, 11]] = HUGE
    with pytest.raises(NonFiniteOutputError, match=r"\[9, 11\] \(batch of volumes 8..11"):
        overflowing_classifier.predict(X)


def test_normal_inputs_are_unaffected(
    segmenter, overflowing_classifier, segmentation_data, volumes
):
    X, _ = segmentation_data
    proba = segmenter.predict_proba(X)
    assert np.isfinite(proba).all()
    np.testing.assert_array_equal(segmenter.predict(X), proba.argmax(axis=1))
    X, _ = volumes
    assert np.isfinite(overflowing_classifier.predict_proba(X)).all()


def test_non_finite_input_is_rejected_at_prediction(segmenter, segmentation_data):
    X = segmentation_data[0][:2].copy()
    X[1, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        segmenter.predict(X)


def test_error_is_a_value_error_and_a_floating_point_error():
    assert issubclass(NonFiniteOutputError, ValueError)
    assert issubclass(NonFiniteOutputError, FloatingPointError)


def test_distillation_stops_on_non_finite_teacher_outputs(segmenter, segmentation_data):
    X, y = segmentation_data
    student = DistilledSegmenter(
        FrozenEstimator(segmenter), **SMALL_UNET, **FAST, random_state=0
    )  # fmt: skip
    with pytest.raises(NonFiniteOutputError, match=r"volume\(s\) \[5\]"):
        student.fit(_with_huge_volume(X), y[:10])


def test_soft_targets_match_the_softmax_in_float32(monkeypatch):
    rng = np.random.default_rng(0)
    log_proba = np.log(rng.dirichlet(np.ones(3), size=(10, 4, 4)).transpose(0, 3, 1, 2))
    hard = rng.integers(-1, 3, size=(10, 4, 4))
    monkeypatch.setattr(_teacher, "_TARGET_CHUNK_VALUES", 100)  # chunks of 2 rows
    targets = distillation_targets(log_proba, hard, temperature=2.0)
    assert targets.dtype == np.float32
    assert targets.shape == (10, 4, 4, 4)
    np.testing.assert_allclose(targets[:, :3], softmax(log_proba / 2.0, axis=1), rtol=1e-6)
    np.testing.assert_array_equal(targets[:, 3], hard)


def test_soft_targets_allow_zero_probabilities():
    log_proba = np.array([[0.0, -np.inf], [np.log(0.5), np.log(0.5)]])
    targets = distillation_targets(log_proba, np.array([0, -1]), temperature=5.0)
    np.testing.assert_allclose(targets, [[1, 0, 0], [0.5, 0.5, -1]], rtol=1e-6)


@pytest.mark.parametrize("bad_row", [[np.nan, 0.0], [np.inf, 0.0], [-np.inf, -np.inf]])
def test_non_finite_soft_targets_raise(bad_row):
    log_proba = np.zeros((4, 2))
    log_proba[2] = bad_row
    with pytest.raises(NonFiniteOutputError, match=r"sample\(s\) \[2\]"):
        distillation_targets(log_proba, np.zeros(4), temperature=5.0)
