"""The estimators inside scikit-learn's tools: clone, params, search, pipelines, CV."""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline

from skdistill import Cnn3DClassifier, DistilledClassifier
from skdistill.preprocessing import VolumeNormalizer

from .conftest import FAST


def _student(**params):
    teacher = Cnn3DClassifier(arch="tiny", random_state=0, **FAST)
    return DistilledClassifier(teacher, student_arch="tiny", random_state=0, **{**FAST, **params})


def test_clone_keeps_parameters_and_drops_fitted_state(volumes):
    X, y = volumes
    fitted = _student(max_epochs=2).fit(X, y)
    copy = clone(fitted)
    assert copy.get_params()["teacher__max_epochs"] == FAST["max_epochs"]
    assert not hasattr(copy, "net_")


def test_nested_teacher_parameters():
    student = _student()
    assert student.get_params()["teacher__arch"] == "tiny"
    student.set_params(teacher__max_epochs=3, temperature=2.0)
    assert student.teacher.max_epochs == 3
    assert student.temperature == 2.0


def test_grid_search_over_temperature_and_student(volumes):
    X, y = volumes
    search = GridSearchCV(
        _student(max_epochs=3),
        {"temperature": [2.0, 5.0], "student_arch": ["tiny", "dsrf3d_v2"]},
        cv=2,
    ).fit(X, y)
    assert set(search.cv_results_["param_student_arch"]) == {"tiny", "dsrf3d_v2"}
    assert search.best_estimator_.predict(X).shape == y.shape


def test_pipeline_with_volume_normalizer(volumes):
    X, y = volumes
    shifted = X * 5.0 + 3.0  # per-volume normalisation undoes this
    pipe = make_pipeline(VolumeNormalizer(), Cnn3DClassifier(arch="tiny", random_state=0, **FAST))
    pipe.fit(shifted, y)
    assert pipe.score(shifted, y) > 0.9


def test_cross_val_score(volumes):
    X, y = volumes
    scores = cross_val_score(Cnn3DClassifier(arch="tiny", random_state=0, **FAST), X, y, cv=3)
    assert scores.shape == (3,)
    assert scores.mean() > 0.45  # chance is 1/3


@pytest.mark.parametrize("estimator", [Cnn3DClassifier(arch="tiny"), _student()])
def test_repr_and_get_params_round_trip(estimator):
    assert type(estimator).__name__ in repr(estimator)
    assert clone(estimator).get_params(deep=False).keys() == estimator.get_params(deep=False).keys()


def test_two_dimensional_input_is_accepted(volumes):
    X, y = volumes
    flat = X.reshape(len(X), -1)[:, :20]
    clf = Cnn3DClassifier(arch="tiny", random_state=0, **FAST).fit(flat, y)
    assert clf.input_shape_ == (20, 1, 1)
    assert clf.n_features_in_ == 20
    assert clf.predict(flat).shape == y.shape
    np.testing.assert_allclose(clf.predict_proba(flat).sum(1), 1.0, rtol=1e-6)  # float32
