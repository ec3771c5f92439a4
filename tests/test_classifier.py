"""Cnn3DClassifier: fitting, prediction, history, seeding, parameters."""

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError

from skdistill import Cnn3DClassifier, DistilledClassifier
from skdistill.exceptions import TrainingDivergedError

from .conftest import FAST


@pytest.fixture(scope="module")
def fitted(volumes):
    X, y = volumes
    return Cnn3DClassifier(arch="tiny", random_state=0, **{**FAST, "validation_fraction": 0.2}).fit(
        X, y
    )


def test_predict_proba_rows_sum_to_one(fitted, volumes):
    X, _ = volumes
    proba = fitted.predict_proba(X)
    assert proba.shape == (len(X), 3)
    assert proba.dtype == np.float32  # like the logits: float64 would add only memory
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(fitted.classes_[proba.argmax(1)], fitted.predict(X))
    np.testing.assert_allclose(np.exp(fitted.predict_log_proba(X)), proba, rtol=1e-6)


def test_net_predict_proba_gives_probabilities(fitted, volumes):
    """The public skorch net used to return logits (predict_nonlinearity=None)."""
    X, _ = volumes
    net_proba = fitted.net_.predict_proba(X[:, np.newaxis])
    np.testing.assert_allclose(net_proba.sum(axis=1), 1.0, rtol=1e-5)
    fitted.set_params(inference_precision="fp32")
    try:
        np.testing.assert_allclose(net_proba, fitted.predict_proba(X), rtol=1e-4, atol=1e-6)
    finally:
        fitted.set_params(inference_precision="auto")


def test_net_predict_proba_takes_volumes_without_a_channel_axis(fitted, volumes):
    X, _ = volumes
    np.testing.assert_allclose(
        fitted.net_.predict_proba(X), fitted.net_.predict_proba(X[:, np.newaxis]), rtol=1e-6
    )


def test_module_is_the_trained_network(fitted, volumes):
    X, _ = volumes
    assert fitted.module_ is fitted.net_.module_
    fitted.module_.eval()
    with torch.no_grad():
        logits = fitted.module_(torch.from_numpy(X[:4, np.newaxis]))
    np.testing.assert_allclose(
        torch.softmax(logits.double(), dim=1).numpy(), fitted.predict_proba(X[:4]), atol=1e-4
    )


@pytest.mark.parametrize("estimator", [Cnn3DClassifier, DistilledClassifier])
@pytest.mark.parametrize("method", ["predict", "predict_proba", "predict_log_proba", "score"])
def test_unfitted_classifier_raises_not_fitted_error(estimator, method, volumes):
    X, y = volumes
    args = (X, y) if method == "score" else (X,)
    with pytest.raises(NotFittedError):
        getattr(estimator(), method)(*args)
    assert not hasattr(estimator(), "module_")


def test_learns_toy_volumes(fitted, volumes):
    X, y = volumes
    assert fitted.score(X, y) > 0.9


def test_fitted_attributes(fitted):
    assert fitted.input_shape_ == (8, 8, 8)
    assert fitted.n_features_in_ == 8**3
    assert fitted.n_channels_ == 1
    assert fitted.device_ == ("cuda" if torch.cuda.is_available() else "cpu")
    assert fitted.device == "auto"  # the parameter is never overwritten
    assert fitted.n_iter_ == len(fitted.history_) <= FAST["max_epochs"]
    assert 1 <= fitted.best_epoch_ <= fitted.n_iter_
    assert fitted.n_parameters_ == sum(p.numel() for p in fitted.net_.module_.parameters())


def test_history_has_losses_and_accuracies(fitted):
    for key in ("train_loss", "valid_loss", "train_acc", "valid_acc"):
        values = fitted.history_[:, key]
        assert len(values) == fitted.n_iter_
        assert np.all(np.isfinite(values))
    assert "batches" not in fitted.history_[0]
    best = fitted.history_[fitted.best_epoch_ - 1]
    assert fitted.validation_score_ == best["valid_acc"]


def test_early_stopping_restores_best_weights(volumes):
    X, y = volumes
    clf = Cnn3DClassifier(
        arch="tiny",
        random_state=0,
        early_stopping=1,
        **{**FAST, "lr": 0.5, "max_epochs": 15, "validation_fraction": 0.3},
    )
    clf.fit(X, y)
    losses = clf.history_[:, "valid_loss"]
    assert clf.best_epoch_ == int(np.argmin(losses)) + 1
    assert clf.n_iter_ <= clf.best_epoch_ + 1


def test_string_labels(volumes):
    X, y = volumes
    names = np.array(["ribosome", "proteasome", "tric"])[y]
    clf = Cnn3DClassifier(arch="tiny", random_state=0, **FAST).fit(X, names)
    assert set(clf.classes_) == set(names)
    assert clf.predict(X[:5]).dtype == names.dtype


def test_five_dimensional_input_is_equivalent(fitted, volumes):
    X, _ = volumes
    np.testing.assert_array_equal(fitted.predict_proba(X[:, None]), fitted.predict_proba(X))


def test_same_random_state_gives_identical_predictions(volumes, seed):
    X, y = volumes
    first, second = (
        Cnn3DClassifier(arch="tiny", random_state=seed, **FAST).fit(X, y).predict_proba(X)
        for _ in range(2)
    )
    np.testing.assert_array_equal(first, second)


def test_fit_leaves_global_random_state_alone(volumes, seed):
    X, y = volumes
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    np_state = np.random.get_state()[1].copy()  # noqa: NPY002 - the global state is the point
    Cnn3DClassifier(arch="tiny", random_state=seed, **FAST).fit(X, y)
    np.testing.assert_array_equal(torch.rand(3), expected)
    np.testing.assert_array_equal(np.random.get_state()[1], np_state)  # noqa: NPY002


def test_callable_architecture(volumes):
    X, y = volumes

    def linear(n_classes, input_shape, in_channels):
        return torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(in_channels * int(np.prod(input_shape)), n_classes)
        )

    clf = Cnn3DClassifier(arch=linear, random_state=0, **FAST).fit(X, y)
    assert clf.n_parameters_ == 8**3 * 3 + 3


def test_lr_decay_follows_keras_formula(volumes):
    X, y = volumes
    clf = Cnn3DClassifier(
        arch="tiny", lr_decay=0.01, random_state=0, **{**FAST, "lr": 0.1, "max_epochs": 2}
    ).fit(X, y)
    iterations = 2 * int(np.ceil(len(X) / FAST["batch_size"]))
    lr_now = clf.net_.optimizer_.param_groups[0]["lr"]
    assert lr_now == pytest.approx(0.1 / (1 + 0.01 * iterations))


def test_nesterov_without_momentum_is_explained(volumes):
    X, y = volumes
    with pytest.raises(ValueError, match="nesterov=True requires momentum > 0"):
        Cnn3DClassifier(arch="tiny", momentum=0.0, **FAST).fit(X, y)


def test_diverging_training_stops_with_a_clear_error(volumes):
    X, y = volumes
    clf = Cnn3DClassifier(arch="tiny", random_state=0, **{**FAST, "lr": 1e12})
    with pytest.raises(TrainingDivergedError, match=r"Training diverged.*Lower lr"):
        clf.fit(X * 1e6, y)


def test_split_falls_back_when_stratification_is_impossible():
    X = np.random.default_rng(0).normal(size=(10, 4, 4, 4)).astype(np.float32)
    y = np.repeat(np.arange(5), 2)
    clf = Cnn3DClassifier(
        arch="tiny", random_state=0, **{**FAST, "max_epochs": 1, "validation_fraction": 0.6}
    ).fit(X, y)
    assert clf.n_iter_ == 1
