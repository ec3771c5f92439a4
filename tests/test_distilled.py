"""DistilledClassifier: teacher handling, soft labels, unlabeled rows, caching."""

import numpy as np
import pytest
import torch
from joblib import Memory
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import GridSearchCV

from skdistill import Cnn3DClassifier, DistilledClassifier
from skdistill.losses import distillation_loss

from .conftest import FAST


def _teacher(**params):
    return Cnn3DClassifier(arch="tiny", random_state=0, **{**FAST, **params})


@pytest.fixture(scope="module")
def fitted_teacher(volumes):
    X, y = volumes
    return _teacher(validation_fraction=0.2).fit(X, y)


@pytest.fixture
def count_teacher_fits(monkeypatch):
    """Count calls of Cnn3DClassifier.fit made while the test runs."""
    calls = []
    original = Cnn3DClassifier.fit

    def counting_fit(self, X, y):
        calls.append(len(X))
        return original(self, X, y)

    monkeypatch.setattr(Cnn3DClassifier, "fit", counting_fit)
    return calls


def test_distilled_student_learns(volumes, fitted_teacher):
    X, y = volumes
    student = DistilledClassifier(
        FrozenEstimator(fitted_teacher),
        student_arch="tiny",
        temperature=2.0,
        random_state=0,
        **FAST,
    ).fit(X, y)
    assert student.score(X, y) > 0.8
    assert student.teacher_score_ == fitted_teacher.validation_score_
    assert student.teacher_n_parameters_ == fitted_teacher.n_parameters_
    assert student.compression_rate_ == pytest.approx(
        fitted_teacher.n_parameters_ / student.n_parameters_
    )


def test_frozen_teacher_is_not_refitted(volumes, fitted_teacher, count_teacher_fits):
    X, y = volumes
    DistilledClassifier(FrozenEstimator(fitted_teacher), student_arch="tiny", **FAST).fit(X, y)
    assert count_teacher_fits == []


def test_a_segmenter_cannot_teach_a_classifier(volumes):
    from skdistill import Cnn3DSegmenter

    X, y = volumes
    with pytest.raises(ValueError, match=r"needs a classifier teacher.*Cnn3DSegmenter"):
        DistilledClassifier(Cnn3DSegmenter("unet"), student_arch="tiny", **FAST).fit(X, y)


def test_frozen_teacher_fitted_on_another_size_is_rejected(volumes, fitted_teacher):
    X, y = volumes
    with pytest.raises(ValueError, match=r"fitted on volumes of shape \(8, 8, 8\).*\(6, 6, 6\)"):
        DistilledClassifier(FrozenEstimator(fitted_teacher), student_arch="tiny", **FAST).fit(
            X[:, :6, :6, :6], y
        )


def test_unfitted_teacher_is_cloned_and_fitted_on_labeled_rows(volumes, count_teacher_fits):
    X, y = volumes
    y = y.copy()
    y[::3] = -1
    teacher = _teacher()
    student = DistilledClassifier(teacher, student_arch="tiny", alpha=0.5, **FAST).fit(X, y)
    assert count_teacher_fits == [int((y != -1).sum())]
    assert not hasattr(teacher, "net_")  # the parameter itself is never fitted
    assert student.n_labeled_ == int((y != -1).sum())
    np.testing.assert_array_equal(student.classes_, [0, 1, 2])


def test_default_teacher_is_dsrf3d_v2(count_teacher_fits):
    X = np.random.default_rng(0).normal(size=(8, 8, 8, 8)).astype(np.float32)
    y = np.arange(8) % 2
    student = DistilledClassifier(
        student_arch="tiny", random_state=0, **{**FAST, "max_epochs": 1}
    ).fit(X, y)
    assert student.teacher_n_parameters_ > 1e6  # built the DSRF3D-v2 teacher
    assert len(count_teacher_fits) == 1


def test_memory_fits_teacher_once_per_fold(volumes, tmp_path, count_teacher_fits):
    X, y = volumes
    student = DistilledClassifier(
        _teacher(max_epochs=2), student_arch="tiny", memory=Memory(tmp_path, verbose=0), **FAST
    )
    search = GridSearchCV(student, {"temperature": [2.0, 5.0], "alpha": [0.0, 0.5]}, cv=3)
    search.fit(X, y)
    # 4 candidates x 3 folds + 1 refit = 13 student fits, but one teacher fit per fold
    # plus one on all rows for the refit.
    assert len(count_teacher_fits) == 4


def test_without_memory_teacher_is_fitted_every_time(volumes, count_teacher_fits):
    X, y = volumes
    student = DistilledClassifier(
        _teacher(max_epochs=1), student_arch="tiny", **{**FAST, "max_epochs": 1}
    )
    GridSearchCV(student, {"temperature": [2.0, 5.0]}, cv=2).fit(X, y)
    assert len(count_teacher_fits) == 5


def test_distillation_loss_matches_definition():
    torch.manual_seed(0)
    student, teacher_logits = torch.randn(6, 4), torch.randn(6, 4)
    T = 3.0
    p = torch.softmax(teacher_logits / T, dim=1)
    q = torch.softmax(student / T, dim=1)
    kl = (p * (p.log() - q.log())).sum(dim=1).mean()
    labels = torch.tensor([0, 1, -1, 3, -1, 2])
    ce = torch.nn.functional.cross_entropy(student[labels >= 0], labels[labels >= 0])
    loss = distillation_loss(student, p, labels, temperature=T, alpha=0.3)
    assert loss.item() == pytest.approx((T**2 * kl + 0.3 * ce).item(), rel=1e-5)


def test_distillation_loss_is_zero_when_student_matches():
    logits = torch.randn(5, 3)
    loss = distillation_loss(logits, torch.softmax(logits / 5.0, dim=1), temperature=5.0)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_any_sklearn_classifier_can_teach_on_feature_rows(volumes):
    from sklearn.linear_model import LogisticRegression

    X, y = volumes
    rows = X.reshape(len(X), -1)
    student = DistilledClassifier(
        LogisticRegression(max_iter=500), student_arch="tiny", random_state=0, **FAST
    ).fit(rows, y)
    assert student.predict(rows).shape == y.shape
    assert np.isnan(student.teacher_score_)


def test_memory_caches_the_default_teacher(tmp_path, count_teacher_fits):
    X = np.random.default_rng(0).normal(size=(8, 8, 8, 8)).astype(np.float32)
    y = np.arange(8) % 2
    student = DistilledClassifier(
        student_arch="tiny", memory=str(tmp_path), **{**FAST, "max_epochs": 1}
    )
    student.fit(X, y)
    student.set_params(temperature=2.0).fit(X, y)
    assert len(count_teacher_fits) == 1


def test_string_labels_with_integer_minus_one_as_unlabeled(volumes, fitted_teacher):
    X, y = volumes
    names = np.array(["ribosome", "proteasome", "tric"], dtype=object)[y]
    names[:10] = -1
    student = DistilledClassifier(_teacher(), student_arch="tiny", random_state=0, **FAST)
    student.fit(X, names)
    assert sorted(student.classes_) == ["proteasome", "ribosome", "tric"]
    assert student.n_labeled_ == len(y) - 10
    assert set(student.predict(X)) <= set(student.classes_)


def test_the_string_minus_one_is_refused_with_a_fix(volumes):
    X, y = volumes
    names = np.array(["a", "b", "-1"])[y]
    with pytest.raises(ValueError, match=r"string '-1'.*astype\(object\)"):
        DistilledClassifier(_teacher(), student_arch="tiny", **FAST).fit(X, names)
