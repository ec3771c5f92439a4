"""Pickling: identical predictions in a fresh process, small deployed students."""

import pickle
import subprocess
import sys

import joblib
import numpy as np
import pytest
import torch
from sklearn.frozen import FrozenEstimator

import skdistill
from skdistill import Cnn3DClassifier, DistilledClassifier
from skdistill.estimators import _base as base_module
from skdistill.estimators._base import VERSIONS_KEY
from skdistill.exceptions import (
    DeviceFallbackWarning,
    IncompatibleModelError,
    InconsistentVersionWarning,
)

from .conftest import FAST

LOAD_AND_PREDICT = """
import sys, joblib, numpy as np
model = joblib.load(sys.argv[1])
np.save(sys.argv[3], model.predict_proba(np.load(sys.argv[2])))
"""


@pytest.fixture(scope="module")
def student_teacher(student_volumes):
    X, y = student_volumes
    return Cnn3DClassifier(arch="tiny", random_state=0, **{**FAST, "max_epochs": 2}).fit(X, y)


@pytest.fixture(scope="module")
def fitted_student(volumes):
    X, y = volumes
    teacher = Cnn3DClassifier(arch="tiny", random_state=0, **FAST)
    return DistilledClassifier(teacher, student_arch="tiny", random_state=0, **FAST).fit(X, y)


def test_joblib_round_trip_in_fresh_process(fitted_student, volumes, tmp_path):
    X, _ = volumes
    model, data, out = tmp_path / "model.joblib", tmp_path / "X.npy", tmp_path / "proba.npy"
    joblib.dump(fitted_student, model)
    np.save(data, X)
    subprocess.run([sys.executable, "-c", LOAD_AND_PREDICT, model, data, out], check=True)
    np.testing.assert_array_equal(np.load(out), fitted_student.predict_proba(X))


def test_pickling_keeps_the_live_estimator_intact(fitted_student, volumes):
    X, _ = volumes
    before = fitted_student.predict_proba(X)
    pickle.dumps(fitted_student)
    np.testing.assert_array_equal(fitted_student.predict_proba(X), before)


@pytest.mark.parametrize("student_arch", ["s3", "s1"])
def test_deployed_student_pickle_is_small(student_arch, student_teacher, student_volumes):
    X, y = student_volumes
    student = DistilledClassifier(
        FrozenEstimator(student_teacher),
        student_arch=student_arch,
        random_state=0,
        **{**FAST, "max_epochs": 1},
    ).fit(X, y)
    weight_bytes = 4 * student.n_parameters_
    size = len(pickle.dumps(student))
    assert size <= 1.5 * weight_bytes, (size, weight_bytes)
    # The teacher (bigger than the student here) is not in the pickle.
    assert student_teacher.n_parameters_ * 4 > weight_bytes
    loaded = pickle.loads(pickle.dumps(student))
    assert not hasattr(loaded.teacher, "net_")
    np.testing.assert_array_equal(loaded.predict_proba(X), student.predict_proba(X))


def test_no_optimizer_state_in_pickle(fitted_student):
    state = fitted_student.__getstate__()
    assert "net_" not in state
    assert set(state["_module_weights"]) == set(fitted_student.net_.module_.state_dict())


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the CPU-only fallback")
def test_cuda_trained_model_loads_on_cpu_with_one_warning(fitted_student, volumes):
    X, _ = volumes
    state = pickle.dumps(fitted_student)
    fitted_student.device_, original = "cuda", fitted_student.device_
    try:
        cuda_state = pickle.dumps(fitted_student)
    finally:
        fitted_student.device_ = original
    with pytest.warns(DeviceFallbackWarning, match="not available here") as record:
        loaded = pickle.loads(cuda_state)
    assert len(record) == 1
    assert loaded.device_ == "cpu"
    np.testing.assert_array_equal(loaded.predict_proba(X), pickle.loads(state).predict_proba(X))


@pytest.mark.gpu
def test_cuda_model_predicts_like_its_cpu_copy(volumes):
    X, y = volumes
    clf = Cnn3DClassifier(arch="tiny", device="cuda", random_state=0, **FAST).fit(X, y)
    cpu_copy = pickle.loads(pickle.dumps(clf))
    cpu_copy.net_.module_.to("cpu")
    cpu_copy.device_ = "cpu"
    np.testing.assert_allclose(cpu_copy.predict_proba(X), clf.predict_proba(X), atol=1e-5)


# -- versions stored in the pickle ---------------------------------------------------------
OTHER_VERSIONS = {"skdistill": "0.0.1", "torch": "1.13.0"}


def _saved_by(model, versions, monkeypatch) -> bytes:
    """``model`` pickled as if by the library ``versions``."""
    with monkeypatch.context() as patch:
        patch.setattr(base_module, "current_versions", lambda: dict(versions))
        return pickle.dumps(model)


def _load_state(model, state):
    loaded = object.__new__(type(model))
    loaded.__setstate__(state)
    return loaded


def test_pickle_stores_the_library_versions(fitted_student):
    state = fitted_student.__getstate__()
    assert state[VERSIONS_KEY] == {"skdistill": skdistill.__version__, "torch": torch.__version__}
    assert VERSIONS_KEY not in vars(pickle.loads(pickle.dumps(fitted_student)))


def test_model_from_another_version_loads_with_a_warning(fitted_student, volumes, monkeypatch):
    X, _ = volumes
    payload = _saved_by(fitted_student, OTHER_VERSIONS, monkeypatch)
    with pytest.warns(InconsistentVersionWarning, match="from skdistill version 0.0.1") as record:
        loaded = pickle.loads(payload)
    # One per estimator in the pickle, as scikit-learn's: the student and its (unfitted)
    # teacher parameter.
    names = [warning.message.estimator_name for warning in record]
    assert sorted(names) == ["Cnn3DClassifier", "DistilledClassifier"]
    warning = record[names.index("DistilledClassifier")].message
    assert warning.original_version == "0.0.1"
    assert warning.current_version == skdistill.__version__
    assert "pip install skdistill==0.0.1" in str(warning)
    np.testing.assert_array_equal(loaded.predict_proba(X), fitted_student.predict_proba(X))


def test_unfitted_model_from_another_version_warns_too(monkeypatch):
    payload = _saved_by(Cnn3DClassifier(arch="tiny"), OTHER_VERSIONS, monkeypatch)
    with pytest.warns(InconsistentVersionWarning, match="Cnn3DClassifier"):
        pickle.loads(payload)


def test_pickle_without_stored_versions_warns_as_unknown(fitted_student):
    state = fitted_student.__getstate__()
    del state[VERSIONS_KEY]
    with pytest.warns(InconsistentVersionWarning, match="unknown skdistill version") as record:
        _load_state(fitted_student, state)
    assert record[0].message.original_version == "unknown"


def test_weights_that_do_not_fit_name_both_versions(fitted_student):
    state = fitted_student.__getstate__()
    state[VERSIONS_KEY] = dict(OTHER_VERSIONS)
    name = next(iter(state["_module_weights"]))
    state["_module_weights"][name] = torch.zeros(3)
    with (
        pytest.warns(InconsistentVersionWarning),
        pytest.raises(IncompatibleModelError, match="DistilledClassifier") as excinfo,
    ):
        _load_state(fitted_student, state)
    message = str(excinfo.value)
    for version in (skdistill.__version__, torch.__version__, "0.0.1", "1.13.0", name):
        assert version in message
    assert "Refit the model" in message and "pip install skdistill==0.0.1" in message
    assert isinstance(excinfo.value.__cause__, RuntimeError)  # torch's own message, chained


def test_missing_weights_of_the_same_version_raise_without_a_warning(fitted_student):
    state = fitted_student.__getstate__()
    state["_module_weights"].popitem()
    with pytest.raises(IncompatibleModelError, match="Missing key"):
        _load_state(fitted_student, state)


LOAD_WITH_WARNINGS_AS_ERRORS = """
import sys, warnings
import joblib
import skdistill
warnings.simplefilter("error")
joblib.load(sys.argv[1])
"""


def test_joblib_load_in_a_fresh_process_gives_no_warning(fitted_student, tmp_path):
    path = tmp_path / "model.joblib"
    joblib.dump(fitted_student, path)
    result = subprocess.run(
        [sys.executable, "-c", LOAD_WITH_WARNINGS_AS_ERRORS, path], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
