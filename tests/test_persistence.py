"""Pickling: identical predictions in a fresh process, small deployed students."""

import pickle
import subprocess
import sys

import joblib
import numpy as np
import pytest
import torch
from sklearn.frozen import FrozenEstimator

from skdistill import Cnn3DClassifier, DistilledClassifier
from skdistill.exceptions import DeviceFallbackWarning

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
