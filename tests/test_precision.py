"""Fast inference (channels-last, bf16 autocast) agrees with fp32; precision falls back."""

import numpy as np
import pytest
import torch
from sklearn.utils._param_validation import InvalidParameterError

from skdistill import Cnn3DClassifier
from skdistill.datasets import make_subtomograms
from skdistill.utils import precision as precision_module
from skdistill.utils.precision import autocast, bf16_supported, resolve_precision


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
