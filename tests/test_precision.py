"""Fast inference (channels-last, bf16 autocast) agrees with fp32; precision falls back."""

import tracemalloc

import numpy as np
import pytest
import torch
from sklearn.utils._param_validation import InvalidParameterError

from skdistill import Cnn3DClassifier
from skdistill.datasets import make_subtomograms
from skdistill.estimators import _teacher as teacher_module
from skdistill.estimators._teacher import distillation_targets, teacher_log_proba
from skdistill.utils import precision as precision_module
from skdistill.utils.precision import autocast, bf16_supported, resolve_precision

from .conftest import FAST


@pytest.fixture(scope="module")
def data():
    X, y = make_subtomograms(240, n_classes=4, size=28, snr=1.0, random_state=0)
    return X[:160], y[:160], X[160:], y[160:]


@pytest.fixture(scope="module")
def fitted(data):
    X, y, _, _ = data
    clf = Cnn3DClassifier(
        arch="s3", max_epochs=3, batch_size=8, lr=0.01, validation_fraction=None, random_state=0
    )
    return clf.fit(X, y)


def test_bf16_path_agrees_with_fp32(fitted, data):
    _, _, X_test, _ = data
    fitted.set_params(inference_precision="fp32")
    exact = fitted.predict_proba(X_test)
    fitted.set_params(inference_precision="bf16")
    fast = fitted.predict_proba(X_test)
    fitted.set_params(inference_precision="auto")
    assert np.mean(exact.argmax(1) == fast.argmax(1)) >= 0.99
    assert np.abs(exact - fast).max() <= 2e-2
    assert not np.array_equal(exact, fast)  # bf16 really ran


def test_auto_falls_back_to_fp32_without_native_bf16(fitted, data, monkeypatch):
    _, _, X_test, _ = data
    monkeypatch.setattr(precision_module, "bf16_supported", lambda device: False)
    assert resolve_precision("auto", "cpu") == "fp32"
    fitted.set_params(inference_precision="auto")
    auto = fitted.predict_proba(X_test)
    fitted.set_params(inference_precision="fp32")
    np.testing.assert_array_equal(auto, fitted.predict_proba(X_test))
    fitted.set_params(inference_precision="auto")


def test_auto_uses_bf16_where_native(monkeypatch):
    monkeypatch.setattr(precision_module, "bf16_supported", lambda device: True)
    assert resolve_precision("auto", "cpu") == "bf16"
    assert resolve_precision("fp32", "cpu") == "fp32"


def test_cpu_detection_matches_torch():
    expected = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert bf16_supported("cpu") == expected


def test_autocast_context_only_for_bf16():
    with autocast("cpu", "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with autocast("cpu", "fp32"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_bf16_training_learns_and_records_precision(data, seed):
    X, y, _, _ = data
    clf = Cnn3DClassifier(
        arch="s3", max_epochs=3, batch_size=8, lr=0.01, validation_fraction=None,
        precision="bf16", random_state=seed,
    ).fit(X, y)  # fmt: skip
    assert clf.precision_ == "bf16"
    assert np.isfinite(clf.history_[:, "train_loss"]).all()
    assert clf.history_[-1, "train_loss"] < clf.history_[0, "train_loss"]


@pytest.mark.parametrize("name", ["precision", "inference_precision"])
def test_unknown_precision_is_rejected(name, volumes):
    X, y = volumes
    with pytest.raises(InvalidParameterError, match=name):
        Cnn3DClassifier(arch="tiny", **{name: "fp16"}).fit(X, y)


def test_feature_rows_stay_in_fp32_where_bf16_convolution_fails():
    """oneDNN's bf16 conv3d gives NaN on (F, 1, 1) volumes; 2D rows must stay finite."""
    rng = np.random.RandomState(0)
    X = 3 * rng.uniform(size=(10, 1))
    clf = Cnn3DClassifier(
        arch="tiny", max_epochs=2, validation_fraction=None, random_state=1,
        precision="bf16", inference_precision="bf16",
    ).fit(X, X[:, 0].astype(int))  # fmt: skip
    assert clf.precision_ == "fp32"
    assert np.isfinite(clf.predict_proba(X[:2])).all()


# -- float32 probabilities and soft targets --------------------------------------------------
def test_probabilities_are_float32(volumes):
    X, y = volumes
    clf = Cnn3DClassifier(arch="tiny", random_state=0, **{**FAST, "max_epochs": 1}).fit(X, y)
    assert clf.predict_proba(X).dtype == np.float32
    assert clf.predict_log_proba(X).dtype == np.float32
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(X)), clf.predict_proba(X), rtol=1e-6)


class _ProbaOnly:
    """A teacher with ``predict_proba`` only, returning float64 with exact zeros."""

    def predict_proba(self, X):
        return np.array([[1.0, 0.0], [0.25, 0.75]])


def test_teacher_log_proba_is_float32_and_finite():
    log_proba = teacher_log_proba(_ProbaOnly(), None)
    assert log_proba.dtype == np.float32
    assert np.isfinite(log_proba).all()
    np.testing.assert_allclose(np.exp(log_proba), [[1, 0], [0.25, 0.75]], rtol=1e-6, atol=1e-30)


def test_soft_targets_need_no_float64_or_full_size_temporaries(monkeypatch):
    monkeypatch.setattr(teacher_module, "_TARGET_CHUNK_VALUES", 2**16)
    rng = np.random.default_rng(0)
    n, n_classes, size = 64, 3, 16
    logits = rng.normal(size=(n, n_classes, size, size, size)).astype(np.float32)
    log_proba = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    hard = rng.integers(0, n_classes, size=(n, size, size, size))
    result_bytes = n * (n_classes + 1) * size**3 * 4
    tracemalloc.start()
    try:
        targets = distillation_targets(log_proba, hard, temperature=5.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert targets.dtype == np.float32
    # The result plus a chunk's temporaries; float64 softmax copies would be 1.5x each.
    assert peak < 1.2 * result_bytes, f"peak {peak / result_bytes:.2f}x the result"
