"""Optimizer choice and progress reporting of the training loop."""

import numpy as np
import pytest
from sklearn.utils._param_validation import InvalidParameterError

from skdistill import Cnn3DClassifier, Cnn3DSegmenter, DistilledClassifier, DistilledSegmenter
from skdistill.estimators._base import split_train_valid
from skdistill.utils.device import draw_seed

from .conftest import FAST


def test_adam_trains(volumes, seed):
    X, y = volumes
    clf = Cnn3DClassifier(arch="tiny", **{**FAST, "lr": 1e-2}, optimizer="adam",
                          random_state=seed).fit(X, y)  # fmt: skip
    assert type(clf.net_.optimizer_).__name__ == "Adam"
    assert clf.history_[-1, "train_loss"] < clf.history_[0, "train_loss"]
    assert clf.score(X, y) > 0.6


def test_sgd_is_the_default_with_nesterov(volumes, seed):
    X, y = volumes
    clf = Cnn3DClassifier(arch="tiny", **FAST, random_state=seed).fit(X, y)
    optimizer = clf.net_.optimizer_
    assert type(optimizer).__name__ == "SGD"
    assert optimizer.param_groups[0]["nesterov"] and optimizer.param_groups[0]["momentum"] == 0.9


def test_unknown_optimizer_is_rejected(volumes):
    X, y = volumes
    with pytest.raises(InvalidParameterError, match="optimizer"):
        Cnn3DClassifier(arch="tiny", optimizer="rmsprop").fit(X, y)


@pytest.mark.parametrize("verbose", [1, 2])
def test_verbose_progress_bar_or_table(volumes, seed, capsys, verbose):
    X, y = volumes
    student = DistilledClassifier(
        Cnn3DClassifier(arch="tiny", **FAST, random_state=seed),
        student_arch="tiny", **{**FAST, "max_epochs": 2}, verbose=verbose, random_state=seed,
    ).fit(X, y)  # fmt: skip
    captured = capsys.readouterr()
    if verbose == 1:  # one bar per fit on stderr: the teacher's and the student's
        assert "tiny (T=5)" in captured.err and "2/2" in captured.err
        assert "train_loss" not in captured.out
    else:  # skorch's per-epoch table on stdout
        assert "train_loss" in captured.out
    assert student.n_iter_ == 2


def test_silent_by_default(volumes, seed, capsys):
    X, y = volumes
    Cnn3DClassifier(arch="tiny", **FAST, random_state=seed).fit(X, y)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_validation_accuracy_in_history_matches_predictions(volumes):
    """valid_acc is counted batch by batch during validation; it must equal the accuracy of
    the final weights on the held-out rows (early stopping off: the last epoch is kept)."""
    X, y = volumes
    clf = Cnn3DClassifier(
        arch="tiny", **{**FAST, "validation_fraction": 0.25}, early_stopping=None,
        inference_precision="fp32", random_state=0,
    ).fit(X, y)  # fmt: skip
    _, valid = split_train_valid(len(X), y, 0.25, draw_seed(0))
    assert clf.history_[-1, "valid_acc"] == pytest.approx(clf.score(X[valid], y[valid]))
    assert clf.validation_score_ == pytest.approx(clf.history_[-1, "valid_acc"])


def _four_estimators(**params):
    """One of each estimator, tiny and fast, with the same training parameters."""
    unet = {"base_filters": 2, "levels": 2, "last_filters": 2}
    teacher = Cnn3DClassifier(arch="tiny", **FAST, random_state=0)
    return [
        Cnn3DClassifier(arch="tiny", **{**FAST, **params}),
        DistilledClassifier(teacher, student_arch="tiny", **{**FAST, **params}),
        Cnn3DSegmenter("unet", **unet, **{**FAST, **params}),
        DistilledSegmenter(
            Cnn3DSegmenter("unet", **unet, **{**FAST, "max_epochs": 1}),
            student_arch="unet",
            **unet,
            **{**FAST, **params},
        ),
    ]


def _data_for(estimator, volumes):
    X, y = volumes
    if getattr(estimator, "_segments_volumes", False):
        return X[:8], (X[:8] > 0.5).astype(np.int8)
    return X, y


@pytest.mark.parametrize("estimator", _four_estimators(early_stopping=3))
def test_early_stopping_without_validation_split_is_refused(estimator, volumes):
    """early_stopping used to be silently ignored when validation_fraction=None."""
    X, y = _data_for(estimator, volumes)
    with pytest.raises(ValueError, match=r"early_stopping=3 .* validation_fraction=None.*"):
        estimator.fit(X, y)


@pytest.mark.parametrize(
    ("estimator", "patience"),
    zip(_four_estimators(max_epochs=1, validation_fraction=0.25), [5, 5, 20, 20], strict=True),
)
def test_auto_early_stopping_follows_the_validation_split(estimator, patience, volumes):
    X, y = _data_for(estimator, volumes)
    assert estimator.early_stopping == "auto"
    estimator.fit(X, y)
    assert dict(estimator.net_.callbacks_)["early_stopping"].patience == patience
    estimator.set_params(validation_fraction=None).fit(X, y)
    assert "early_stopping" not in dict(estimator.net_.callbacks_)


def test_standardize_makes_the_model_blind_to_the_data_scale(volumes, seed, tmp_path):
    """standardize=True scales every volume in fit and predict, also after save/load."""
    from skdistill import load_model, save_model
    from skdistill.preprocessing import VolumeNormalizer

    X, y = volumes
    scaled = X * 0.03 + 5.0  # tomogram-like scale and offset
    clf = Cnn3DClassifier(arch="tiny", **FAST, standardize=True, random_state=seed).fit(scaled, y)
    plain = Cnn3DClassifier(arch="tiny", **FAST, random_state=seed)
    plain.fit(VolumeNormalizer().fit_transform(scaled), y)
    np.testing.assert_allclose(
        clf.predict_proba(scaled), plain.predict_proba(VolumeNormalizer().transform(scaled)),
        rtol=1e-4, atol=1e-6,
    )  # fmt: skip
    np.testing.assert_array_equal(clf.predict(scaled), clf.predict(X * 7.0 - 2.0))
    loaded = load_model(save_model(clf, tmp_path / "m.safetensors"))
    assert loaded.standardize is True
    np.testing.assert_array_equal(loaded.predict_proba(scaled), clf.predict_proba(scaled))
    with pytest.raises(InvalidParameterError, match="standardize"):
        Cnn3DClassifier(standardize="yes").fit(X, y)
