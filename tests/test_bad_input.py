"""Bad input gets a clear error that says what is wrong."""

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator

from skdistill import Cnn3DClassifier, DistilledClassifier

from .conftest import FAST


def _tiny(**params):
    return Cnn3DClassifier(**{"arch": "tiny", "random_state": 0, **FAST, "max_epochs": 1, **params})


def _student(**params):
    return DistilledClassifier(
        _tiny(), **{"student_arch": "tiny", "random_state": 0, **FAST, "max_epochs": 1, **params}
    )


@pytest.fixture(scope="module")
def fitted(volumes):
    return _tiny().fit(*volumes)


@pytest.mark.parametrize("make", [_tiny, _student])
@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_non_finite_volumes(make, bad_value, volumes):
    X, y = volumes
    X = X.copy()
    X[3, 1, 2, 3] = bad_value
    with pytest.raises(ValueError, match=r"Input X contains (NaN|infinity)"):
        make().fit(X, y)


@pytest.mark.parametrize("shape", [(10,), (10, 4, 4), (10, 1, 1, 4, 4, 4)])
def test_wrong_ndim(shape):
    X = np.zeros(shape, dtype=np.float32)
    with pytest.raises(ValueError, match=r"dimension|Expected 2D|expected 4 or 5"):
        _tiny().fit(X, np.arange(10) % 2)


def test_non_cubic_volumes():
    X = np.zeros((10, 8, 8, 6), dtype=np.float32)
    with pytest.raises(ValueError, match=r"must be cubic, got shape \(8, 8, 6\)"):
        _tiny().fit(X, np.arange(10) % 2)


def test_volume_shape_at_predict_differs_from_fit(fitted):
    with pytest.raises(
        ValueError,
        match=r"shape \(10, 10, 10\).*fitted on volumes of shape "
        r"\(8, 8, 8\)",
    ):
        fitted.predict(np.zeros((2, 10, 10, 10), dtype=np.float32))


def test_2d_input_at_predict_on_a_volume_model(fitted):
    with pytest.raises(ValueError, match=r"shape \(512, 1, 1\).*\(8, 8, 8\)"):
        fitted.predict(np.zeros((2, 512), dtype=np.float32))


def test_empty_X():
    with pytest.raises(ValueError, match="0 sample"):
        _tiny().fit(np.zeros((0, 8, 8, 8), dtype=np.float32), np.array([], dtype=int))


def test_length_mismatch(volumes):
    X, y = volumes
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        _tiny().fit(X, y[:-1])


@pytest.mark.parametrize("make", [_tiny, _student])
def test_single_class(make, volumes):
    X, _ = volumes
    with pytest.raises(ValueError, match=r"at least 2 classes.*only one class"):
        make().fit(X, np.zeros(len(X), dtype=int))


def test_all_rows_unlabeled(volumes):
    X, _ = volumes
    with pytest.raises(ValueError, match="All rows of y are unlabeled"):
        _student().fit(X, np.full(len(X), -1))


def test_frozen_teacher_with_other_classes(volumes, fitted):
    X, y = volumes
    student = DistilledClassifier(FrozenEstimator(fitted), student_arch="tiny", **FAST)
    with pytest.raises(ValueError, match=r"classes \[0, 1, 2\].*classes \[0, 1, 7\]"):
        student.fit(X, np.where(y == 2, 7, y))


@pytest.mark.parametrize("est", [_tiny(arch="resnet"), _student(student_arch="resnet")])
def test_unknown_arch_lists_available(est, volumes):
    with pytest.raises(ValueError, match="'resnet'") as excinfo:
        est.fit(*volumes)
    for name in ("dsrf3d_v2", "s1", "s2", "s3", "tiny"):
        assert f"'{name}'" in str(excinfo.value)


def test_volumes_too_small_for_student_fail_before_teacher_fit(volumes, monkeypatch):
    monkeypatch.setattr(Cnn3DClassifier, "fit", lambda *a: pytest.fail("teacher was fitted"))
    with pytest.raises(ValueError, match=r"too small for architecture 's1'.*at least 27"):
        _student(student_arch="s1").fit(*volumes)


def test_volumes_too_small_for_classifier(volumes):
    with pytest.raises(ValueError, match=r"too small.*'s1'.*at least 27 voxels"):
        Cnn3DClassifier(arch="s1", max_epochs=1).fit(*volumes)


@pytest.mark.parametrize(
    ("params", "pattern"),
    [
        ({"temperature": 0.0}, "'temperature' parameter.*range"),
        ({"temperature": -1.0}, "'temperature' parameter.*range"),
        ({"alpha": 1.5}, "'alpha' parameter.*range"),
        ({"alpha": -0.1}, "'alpha' parameter.*range"),
    ],
)
def test_invalid_distillation_parameters(params, pattern, volumes):
    with pytest.raises(ValueError, match=pattern):
        _student(**params).fit(*volumes)


@pytest.mark.parametrize("make", [_tiny, _student])
@pytest.mark.parametrize("method", ["predict", "predict_proba", "predict_log_proba"])
def test_predict_before_fit(make, method, volumes):
    with pytest.raises(NotFittedError):
        getattr(make(), method)(volumes[0])


def test_unavailable_device_is_explained(volumes):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError, match="CUDA is not available"):
        _tiny(device="cuda").fit(*volumes)
