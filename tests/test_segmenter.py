"""Cnn3DSegmenter and DistilledSegmenter: shapes, learning, search, pickling, bad input."""

import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import GridSearchCV, cross_val_score

from skdistill import Cnn3DSegmenter, DistilledSegmenter
from skdistill.datasets import make_segmentation_subtomograms
from skdistill.estimators._base import BaseVolumeEstimator
from skdistill.estimators._segmenter import label_dtype
from skdistill.losses import distillation_loss
from skdistill.metrics import mean_iou, mean_iou_scorer

SIZE = 16
SMALL_UNET = {"base_filters": 8, "levels": 3, "last_filters": 8}
FIT = {"max_epochs": 10, "batch_size": 8, "lr": 1e-2, "validation_fraction": None}


@pytest.fixture(scope="module")
def data():
    X, y = make_segmentation_subtomograms(
        64, size=SIZE, n_classes=4, snr=5.0, crowding=1, mask_threshold=0.2, random_state=0
    )
    return X[:48], y[:48], X[48:], y[48:]


@pytest.fixture(scope="module")
def fitted(data):
    X, y, _, _ = data
    return Cnn3DSegmenter("unet", **SMALL_UNET, **FIT, class_weight="balanced", random_state=0).fit(
        X, y
    )


def test_shapes_and_attributes(fitted, data):
    _, _, X_test, y_test = data
    labels = fitted.predict(X_test)
    assert labels.shape == y_test.shape and labels.dtype == np.int8
    proba = fitted.predict_proba(X_test)
    assert proba.shape == (len(X_test), 2, SIZE, SIZE, SIZE)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.exp(fitted.predict_log_proba(X_test)), proba, rtol=1e-5)
    assert fitted.n_classes_ == 2 and list(fitted.classes_) == [0, 1]
    assert fitted.n_iter_ == FIT["max_epochs"]


def test_learns_better_than_all_background(fitted, data):
    _, _, X_test, y_test = data
    score = fitted.score(X_test, y_test)
    assert score == pytest.approx(mean_iou(y_test, fitted.predict(X_test)))
    assert score > mean_iou(y_test, np.zeros_like(y_test)) + 0.1


@pytest.mark.parametrize("arch", ["ssn3d", "ssn3d_fcn8", "ssn3d_fcn1", "ssn3d_aspp"])
def test_ssn3d_variants_fit_and_predict(arch, data):
    X, y, X_test, _ = data
    seg = Cnn3DSegmenter(arch, **{**FIT, "max_epochs": 1}, random_state=0).fit(X[:8], y[:8])
    assert seg.predict(X_test[:2]).shape == (2, SIZE, SIZE, SIZE)


def test_grid_search_over_unet_knobs_with_mean_iou(data):
    X, y, _, _ = data
    search = GridSearchCV(
        Cnn3DSegmenter("unet", **{**FIT, "max_epochs": 1}, random_state=0),
        {"base_filters": [2, 4], "levels": [2]},
        cv=2,
        scoring=mean_iou_scorer,
    ).fit(X[:16], y[:16])
    assert search.best_params_["base_filters"] in (2, 4)
    assert len(search.cv_results_["mean_test_score"]) == 2
    assert search.score(X[16:24], y[16:24]) == pytest.approx(
        mean_iou_scorer(search.best_estimator_, X[16:24], y[16:24])
    )


def test_cross_val_score_uses_mean_iou(data):
    X, y, _, _ = data
    scores = cross_val_score(
        Cnn3DSegmenter("unet", **SMALL_UNET, **{**FIT, "max_epochs": 1}, random_state=0),
        X[:16], y[:16], cv=2,
    )  # fmt: skip
    assert scores.shape == (2,) and np.all((scores >= 0) & (scores <= 1))


def test_pickle_reloads_in_a_fresh_process(fitted, data, tmp_path):
    _, _, X_test, _ = data
    path = tmp_path / "segmenter.pkl"
    path.write_bytes(pickle.dumps(fitted))
    np.save(tmp_path / "X.npy", X_test)
    code = (
        "import pickle, numpy as np, sys; "
        f"m = pickle.loads(open({str(path)!r}, 'rb').read()); "
        f"np.save({str(tmp_path / 'pred.npy')!r}, m.predict(np.load({str(tmp_path / 'X.npy')!r})))"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    np.testing.assert_array_equal(np.load(tmp_path / "pred.npy"), fitted.predict(X_test))


def test_bf16_inference_agrees_with_fp32(fitted, data):
    _, _, X_test, _ = data
    fitted.set_params(inference_precision="fp32")
    exact = fitted.predict_proba(X_test)
    fitted.set_params(inference_precision="bf16")
    fast = fitted.predict_proba(X_test)
    fitted.set_params(inference_precision="auto")
    assert np.mean(exact.argmax(1) == fast.argmax(1)) >= 0.99
    assert np.abs(exact - fast).max() <= 2e-2


def test_balanced_class_weight(data):
    X, y, _, _ = data
    seg = Cnn3DSegmenter("unet", **SMALL_UNET, **{**FIT, "max_epochs": 1},
                         class_weight="balanced", random_state=0).fit(X[:8], y[:8])  # fmt: skip
    counts = np.bincount(y[:8].ravel(), minlength=2)
    np.testing.assert_allclose(seg.class_weight_, counts.sum() / (2 * counts))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda X, y: (X, y[:, :8]), r"y has shape \(8, 8, 16, 16\).*\(8, 16, 16, 16\)"),
        (lambda X, y: (X, y + 0.5), "integer"),
        (lambda X, y: (X, y - 1), "negative"),
        (lambda X, y: (X.reshape(len(X), -1), y), "not 2D feature rows"),
        (lambda X, y: (X[:, :12, :12, :12], y[:, :12, :12, :12]), "12"),
    ],
)
def test_bad_input_is_explained(data, change, match):
    X, y, _, _ = data
    X_bad, y_bad = change(X[:8], y[:8].astype(float))
    with pytest.raises(ValueError, match=match):
        Cnn3DSegmenter("ssn3d", **FIT).fit(X_bad, y_bad)


def test_labels_beyond_n_classes_are_rejected(data):
    X, y, _, _ = data
    with pytest.raises(ValueError, match="n_classes=2"):
        Cnn3DSegmenter("unet", n_classes=2, **SMALL_UNET, **FIT).fit(X[:4], y[:4] * 2)


@pytest.mark.parametrize("label", [256, 1000, 40000, 10**6])
@pytest.mark.parametrize("estimator", [Cnn3DSegmenter, DistilledSegmenter])
def test_label_ids_above_255_are_refused_before_any_network_is_built(
    estimator, label, data, monkeypatch
):
    """Label 1000 used to build a 1001-class net, 10**6 a 65 GB allocation error, and 40000
    a net whose predict wrapped around int16; now fit refuses them with a ValueError."""

    def no_network(self, seed=0):
        raise AssertionError("a network was built for out-of-range labels")

    monkeypatch.setattr(BaseVolumeEstimator, "_build_module", no_network)
    X, y, _, _ = data
    masks = y[:4].astype(np.float64 if label == 10**6 else np.int32)
    masks[0, 0, 0, 0] = label
    with pytest.raises(ValueError, match=rf"label {label}, but .* class ids 0\.\.255"):
        estimator(**SMALL_UNET, **FIT).fit(X[:4], masks)


def test_n_classes_above_256_is_refused(data):
    X, y, _, _ = data
    with pytest.raises(ValueError, match=r"n_classes.*range \[2, 256\]"):
        Cnn3DSegmenter("unet", n_classes=40001, **SMALL_UNET, **FIT).fit(X[:4], y[:4])


@pytest.mark.parametrize(
    ("n_classes", "dtype"),
    [(2, np.int8), (128, np.int8), (129, np.int16), (256, np.int16), (40001, np.int32)],
)
def test_label_dtype_holds_every_class_id(n_classes, dtype):
    assert label_dtype(n_classes) == dtype
    assert np.iinfo(label_dtype(n_classes)).max >= n_classes - 1


class _LastClassWins(torch.nn.Module):
    """Logits 0..K-1 at every voxel (plus a trainable term equal across classes)."""

    def __init__(self, n_classes, input_shape, in_channels, **knobs):
        super().__init__()
        self.n_classes = n_classes
        self.scale = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        logits = torch.arange(self.n_classes, dtype=x.dtype, device=x.device)
        return logits[None, :, None, None, None] + self.scale * x


def test_predict_holds_the_largest_allowed_label(seed):
    X = np.random.default_rng(seed).normal(size=(2, 4, 4, 4)).astype(np.float32)
    y = np.zeros((2, 4, 4, 4), dtype=np.uint8)
    y[0, 0, 0, 0] = 255
    seg = Cnn3DSegmenter(_LastClassWins, **{**FIT, "max_epochs": 1}).fit(X, y)
    labels = seg.predict(X)
    assert seg.n_classes_ == 256 and labels.dtype == np.int16
    assert labels.min() == labels.max() == 255


@pytest.mark.parametrize("estimator", [Cnn3DSegmenter, DistilledSegmenter])
@pytest.mark.parametrize("method", ["predict", "predict_proba", "predict_log_proba", "score"])
def test_unfitted_segmenter_raises_not_fitted_error(estimator, method, data):
    _, _, X_test, y_test = data
    args = (X_test, y_test) if method == "score" else (X_test,)
    with pytest.raises(NotFittedError):
        getattr(estimator(), method)(*args)
    assert not hasattr(estimator(), "module_")


def test_unet_knobs_on_ssn3d_are_rejected(data):
    X, y, _, _ = data
    with pytest.raises(ValueError, match="base_filters"):
        Cnn3DSegmenter("ssn3d", base_filters=4, **FIT).fit(X[:4], y[:4])


def test_score_checks_mask_shape_and_labels(fitted, data):
    _, _, X_test, y_test = data
    with pytest.raises(ValueError, match="y has shape"):
        fitted.score(X_test, y_test[:, :4])
    with pytest.raises(ValueError, match="fitted on 2 classes"):
        fitted.score(X_test, y_test * 3)


# -- distillation ------------------------------------------------------------------------
def test_voxel_distillation_loss_averages_over_voxels(seed):
    generator = torch.Generator().manual_seed(seed)
    student = torch.randn(2, 3, 4, 4, 4, generator=generator)
    teacher = torch.softmax(torch.randn(2, 3, 4, 4, 4, generator=generator), dim=1)
    voxels = distillation_loss(student, teacher, temperature=2.0)
    rows = distillation_loss(
        student.movedim(1, -1).reshape(-1, 3), teacher.movedim(1, -1).reshape(-1, 3),
        temperature=2.0,
    )  # fmt: skip
    torch.testing.assert_close(voxels, rows)


def test_class_weighted_distillation_loss_is_a_weighted_voxel_mean(seed):
    generator = torch.Generator().manual_seed(seed)
    student = torch.randn(2, 3, 4, 4, 4, generator=generator)
    teacher = torch.softmax(torch.randn(2, 3, 4, 4, 4, generator=generator), dim=1)
    labels = torch.randint(0, 3, (2, 4, 4, 4), generator=generator)
    labels[0, 0, 0, 0] = -1  # unlabeled voxels weigh 1
    class_weight = torch.tensor([0.5, 2.0, 4.0])
    uniform = distillation_loss(student, teacher, labels, temperature=2.0)
    assert distillation_loss(
        student, teacher, labels, temperature=2.0, class_weight=torch.ones(3)
    ) == pytest.approx(float(uniform))
    kl = torch.nn.functional.kl_div(
        torch.log_softmax(student / 2.0, dim=1), teacher, reduction="none"
    ).sum(dim=1)
    w = torch.where(labels >= 0, class_weight[labels.clamp(min=0)], 1.0)
    expected = 4.0 * (w * kl).sum() / w.sum()
    ce = torch.nn.functional.cross_entropy(student, labels, weight=class_weight, ignore_index=-1)
    weighted = distillation_loss(
        student, teacher, labels, temperature=2.0, alpha=0.5, class_weight=class_weight
    )
    torch.testing.assert_close(weighted, expected + 0.5 * ce)


def test_balanced_distilled_segmenter_weights_voxels_by_class(fitted, data):
    X, y, _, _ = data
    student = DistilledSegmenter(
        FrozenEstimator(fitted), student_arch="unet", base_filters=2, levels=2, last_filters=2,
        class_weight="balanced", **{**FIT, "max_epochs": 1}, random_state=0,
    ).fit(X[:8], y[:8])  # fmt: skip
    foreground = y[:8].mean()
    expected = [0.5 / (1 - foreground), 0.5 / foreground]
    np.testing.assert_allclose(student.class_weight_, expected, rtol=1e-6)
    weight = student.net_.criterion_.class_weight
    np.testing.assert_allclose(weight.cpu().numpy(), expected, rtol=1e-6)


def test_distilled_unet_from_a_frozen_teacher(fitted, data):
    X, y, X_test, _ = data
    weights = {k: v.clone() for k, v in fitted.net_.module_.state_dict().items()}
    student = DistilledSegmenter(
        FrozenEstimator(fitted), student_arch="unet", base_filters=2, levels=2, last_filters=2,
        **FIT, random_state=0,
    ).fit(X, y)  # fmt: skip
    assert student.predict(X_test).shape == (len(X_test), SIZE, SIZE, SIZE)
    assert student.compression_rate_ == pytest.approx(fitted.n_parameters_ / student.n_parameters_)
    for name, tensor in fitted.net_.module_.state_dict().items():  # the teacher was not refit
        torch.testing.assert_close(tensor, weights[name])
    reloaded = pickle.loads(pickle.dumps(student))
    assert not isinstance(reloaded.teacher, FrozenEstimator)  # no teacher weights pickled
    np.testing.assert_array_equal(reloaded.predict(X_test), student.predict(X_test))


def test_distilled_segmenter_caches_teacher_fits(data, tmp_path):
    X, y, _, _ = data
    teacher = Cnn3DSegmenter("unet", **SMALL_UNET, **{**FIT, "max_epochs": 1}, random_state=0)
    kwargs = {"student_arch": "unet", "base_filters": 2, "levels": 2, "last_filters": 2,
              "memory": str(tmp_path), **{**FIT, "max_epochs": 1}, "random_state": 0}  # fmt: skip
    DistilledSegmenter(teacher, temperature=2.0, **kwargs).fit(X[:8], y[:8])
    cached = list(tmp_path.rglob("output.pkl"))
    DistilledSegmenter(teacher, temperature=5.0, **kwargs).fit(X[:8], y[:8])
    assert len(cached) == 1 and list(tmp_path.rglob("output.pkl")) == cached


def test_frozen_teacher_with_other_classes_is_rejected(fitted, data):
    X, y, _, _ = data
    with pytest.raises(ValueError, match="student segments 3 classes"):
        DistilledSegmenter(FrozenEstimator(fitted), n_classes=3, **SMALL_UNET, **FIT).fit(
            X[:4], y[:4]
        )


def test_a_classifier_cannot_teach_a_segmenter(data):
    from skdistill import Cnn3DClassifier

    X, y, _, _ = data
    with pytest.raises(ValueError, match=r"needs a segmenter teacher.*Cnn3DClassifier"):
        DistilledSegmenter(Cnn3DClassifier("tiny"), **SMALL_UNET, **FIT).fit(X[:4], y[:4])


def test_frozen_teacher_fitted_on_another_size_is_rejected(fitted, data):
    X, y, _, _ = data
    small_X, small_y = X[:4, :8, :8, :8], y[:4, :8, :8, :8]
    with pytest.raises(ValueError, match=r"frozen teacher was fitted on volumes of shape \(16"):
        DistilledSegmenter(FrozenEstimator(fitted), levels=2, **FIT).fit(small_X, small_y)


def test_net_predict_proba_is_the_softmax_over_the_class_axis(fitted, data):
    """skorch's "auto" nonlinearity runs over the last axis: the public skorch net must give
    per-voxel probabilities over axis 1, equal to the estimator's own predict_proba."""
    _, _, X_test, _ = data
    net_proba = fitted.net_.predict_proba(X_test[:, np.newaxis])
    assert net_proba.shape == (len(X_test), 2, SIZE, SIZE, SIZE)
    np.testing.assert_allclose(net_proba.sum(axis=1), 1.0, rtol=1e-5)
    fitted.set_params(inference_precision="fp32")
    try:
        np.testing.assert_allclose(net_proba, fitted.predict_proba(X_test), rtol=1e-4, atol=1e-6)
    finally:
        fitted.set_params(inference_precision="auto")
    assert fitted.module_ is fitted.net_.module_


def test_inference_batches_are_counted_in_voxels(fitted, data):
    from skdistill.estimators._segmenter import SEGMENTATION_INFERENCE_VOXELS

    _, _, X_test, _ = data
    per_batch = max(1, SEGMENTATION_INFERENCE_VOXELS["cpu"] // SIZE**3)
    sizes = []
    hook = fitted.net_.module_.register_forward_pre_hook(lambda m, a: sizes.append(len(a[0])))
    try:
        X = np.concatenate([X_test] * (per_batch // len(X_test) + 1))[: per_batch + 1]
        fitted.predict(X)
    finally:
        hook.remove()
    assert sizes == [per_batch, 1]


def test_predict_proba_memory_is_the_result_plus_a_batch(fitted, data):
    import tracemalloc

    from scipy.special import softmax

    _, _, X_test, _ = data
    X = np.concatenate([X_test] * 13)  # 208 volumes
    result_bytes = len(X) * 2 * SIZE**3 * 4  # float32
    tracemalloc.start()
    try:
        proba = fitted.predict_proba(X)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Softmax per batch on the device, written into one float32 array: no full-size logits,
    # float64 copy or softmax temporaries beside it.
    assert peak < 1.25 * result_bytes, f"peak {peak / result_bytes:.2f}x the result"
    fitted.set_params(inference_precision="fp32")
    try:
        logits = fitted._predict_batches(X).astype(np.float64)
        np.testing.assert_allclose(
            fitted.predict_proba(X), softmax(logits, axis=1), rtol=1e-6, atol=1e-7
        )
    finally:
        fitted.set_params(inference_precision="auto")
    assert proba.dtype == np.float32


def test_score_keeps_integer_masks_in_their_dtype(fitted, data):
    import tracemalloc

    _, _, X_test, y_test = data
    X, y = np.concatenate([X_test] * 8), np.concatenate([y_test] * 8).astype(np.int8)
    expected = fitted.score(X, y.astype(np.int64))
    tracemalloc.start()
    try:
        score = fitted.score(X, y)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert score == expected
    # mean_iou's int64 codes take 8 bytes a voxel (one step here); an int64 copy of the masks
    # would take another 8.
    assert peak < 1.5 * y.size * 8, f"peak {peak / y.size:.1f} bytes a voxel"
