"""Structured pruning with retraining: the engine, the criteria, the pruned estimators."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import GridSearchCV
from torch import nn

from skdistill import Cnn3DClassifier, Cnn3DSegmenter, PrunedClassifier, PrunedSegmenter
from skdistill.architectures import build_network, build_segmentation_network
from skdistill.exceptions import PruningError
from skdistill.pruning import (
    FeatureMapPruner,
    L1Importance,
    RandomImportance,
    TaylorImportance,
    WeightTaylorImportance,
    removal_schedule,
)
from skdistill.pruning._graph import build_graph, prunable_groups

TINY = {"arch": "tiny", "max_epochs": 3, "batch_size": 16, "lr": 0.05, "random_state": 0}
PRUNE = {"amount": 0.5, "steps": 2, "finetune_epochs": 1, "random_state": 0}


def conv_widths(module: nn.Module) -> list[int]:
    return [m.out_channels for m in module.modules() if isinstance(m, nn.modules.conv._ConvNd)]


@pytest.fixture(scope="module")
def toy():
    from skdistill.datasets import make_toy_volumes

    return make_toy_volumes(48, n_classes=2, size=8, noise=0.3, random_state=0)


@pytest.fixture(scope="module")
def base(toy):
    X, y = toy
    return Cnn3DClassifier(**TINY).fit(X, y)


@pytest.fixture(scope="module")
def pruned(toy, base):
    X, y = toy
    return PrunedClassifier(FrozenEstimator(base), **PRUNE).fit(X, y)


@pytest.fixture(scope="module")
def segmentation():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 8, 8, 8)).astype(np.float32)
    return X, (X > 0.5).astype(np.int64)


@pytest.fixture(scope="module")
def pruned_unet(segmentation):
    X, y = segmentation
    segmenter = Cnn3DSegmenter(
        "unet", base_filters=2, levels=2, max_epochs=1, batch_size=6, random_state=0
    )
    return PrunedSegmenter(segmenter, **PRUNE).fit(X, y)


def test_removal_schedule_is_linear_not_compounded():
    assert removal_schedule(100, 0.5, 5) == [10, 10, 10, 10, 10]
    assert sum(removal_schedule(30, 0.75, 4)) == round(0.75 * 30)


def test_pruning_resizes_the_layers_and_keeps_the_output_shape():
    net = build_network("dsrf3d_v2", 2, (8, 8, 8))
    x = torch.randn(2, 1, 8, 8, 8)
    widths, linear_in = conv_widths(net), net.classifier[1].in_features
    pruner = FeatureMapPruner(net, x)
    assert pruner.n_feature_maps == sum(widths)
    assert pruner.prune(pruner.n_feature_maps // 2, L1Importance()) == sum(widths) // 2
    assert sum(conv_widths(net)) == sum(widths) - sum(widths) // 2
    assert net.classifier[1].in_features < linear_in  # Flatten -> Linear resized
    assert net(x).shape == (2, 2)


def test_a_layer_keeps_its_last_feature_map():
    net = build_network("tiny", 2, (8, 8, 8))
    pruner = FeatureMapPruner(net, torch.randn(2, 1, 8, 8, 8))
    assert pruner.prune(10, L1Importance()) == 3
    assert conv_widths(net) == [1]
    assert pruner.prune(1, L1Importance()) == 0


@pytest.mark.parametrize(
    ("arch", "size"),
    [
        ("dsrf3d_v2", 16),
        ("s1", 27),
        ("s2", 27),
        ("s3", 27),
        ("ssn3d", 16),
        ("ssn3d_fcn8", 16),
        ("ssn3d_fcn1", 16),
        ("ssn3d_aspp", 16),
    ],
)
def test_every_architecture_family_prunes(arch, size):
    shape = (size,) * 3
    if arch.startswith("ssn3d"):
        net = build_segmentation_network(arch, 3, shape)
    else:
        net = build_network(arch, 3, shape)
    x = torch.randn(1, 1, *shape)
    expected = net(x).shape
    pruner = FeatureMapPruner(net, x)
    pruner.prune(pruner.n_feature_maps // 4, RandomImportance(0))
    assert net(x).shape == expected
    # the class-score layers keep one output per class
    assert all(m.out_channels == 3 for m in pruner.kept_layers if hasattr(m, "out_channels"))


def _group_scores(net, x, criterion):
    graph = build_graph(net, x)
    return torch.cat([criterion(group) for _, group in prunable_groups(graph, [])])


def test_taylor_scores_activations_not_weights():
    net = build_network("s3", 2, (27, 27, 27))
    x, y = torch.randn(8, 1, 27, 27, 27), torch.randint(0, 2, (8,))
    taylor = TaylorImportance().calibrate(net, [(x, y)], nn.CrossEntropyLoss())
    taylor_scores = _group_scores(net, x, taylor)
    l1_scores = _group_scores(net, x, L1Importance())
    weight = WeightTaylorImportance().calibrate(net, [(x, y)], nn.CrossEntropyLoss())
    weight_scores = _group_scores(net, x, weight)
    assert torch.isfinite(taylor_scores).all() and (taylor_scores >= 0).all()
    assert not torch.equal(taylor_scores.argsort(), l1_scores.argsort())
    # s3's feature maps are batch-norm outputs: not linear in the filters' weights.
    assert not torch.equal(taylor_scores.argsort(), weight_scores.argsort())
    assert all(m.inplace for m in net.modules() if hasattr(m, "inplace"))  # restored


class TwoConvolutions(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv3d(1, 3, 3, padding=1)
        self.b = nn.Conv3d(3, 2, 1)

    def forward(self, x):
        return self.b(torch.relu(self.a(x))).mean(dim=(2, 3, 4))


def test_both_taylor_criteria_match_their_formulas():
    """Activation Taylor: mean over volumes of |mean over voxels(a * dL/da)|;
    weight Taylor: |sum(w * dL/dw)| per filter, gradients summed over the batches."""
    torch.manual_seed(0)
    net = TwoConvolutions()
    batches = [(torch.randn(4, 1, 5, 5, 5), torch.randint(0, 2, (4,))) for _ in range(2)]
    loss = nn.CrossEntropyLoss()
    activation = TaylorImportance().calibrate(net, batches, loss).scores_[net.a]
    weight = WeightTaylorImportance().calibrate(net, batches, loss).scores_[net.a]

    products, gradient = [], torch.zeros_like(net.a.weight)
    bias_gradient = torch.zeros_like(net.a.bias)
    for x, y in batches:
        a = net.a(x)
        a.retain_grad()
        loss(net.b(torch.relu(a)).mean(dim=(2, 3, 4)), y).backward()
        products.append((a * a.grad).flatten(2).mean(dim=2).abs())
        gradient += net.a.weight.grad
        bias_gradient += net.a.bias.grad
        net.zero_grad()
    expected_activation = torch.cat(products).mean(dim=0)
    expected_weight = (net.a.weight * gradient).flatten(1).sum(1) + net.a.bias * bias_gradient
    torch.testing.assert_close(activation.float(), expected_activation.detach())
    torch.testing.assert_close(weight.float(), expected_weight.abs().detach())
    assert not torch.allclose(activation / activation.sum(), weight / weight.sum())
    # On one volume without a batch-norm the feature map is linear in the filter's weights
    # and bias, so the two agree (Euler): sum(a * dL/da) = sum(w * dL/dw) + b * dL/db.
    one = [(batches[0][0][:1], batches[0][1][:1])]
    activation = TaylorImportance().calibrate(net, one, loss).scores_[net.a]
    weight = WeightTaylorImportance().calibrate(net, one, loss).scores_[net.a]
    torch.testing.assert_close(activation * 5**3, weight)
    assert all(p.grad is None for p in net.parameters())  # calibration leaves no gradients


def test_layer_scope_removes_the_same_fraction_of_every_layer():
    net = build_network("s1", 3, (27, 27, 27))
    x = torch.randn(2, 1, 27, 27, 27)
    pruner = FeatureMapPruner(net, x, scope="layer")
    for n_remove in removal_schedule(pruner.n_feature_maps, 0.5, 3):
        pruner.prune(n_remove, L1Importance())
    assert conv_widths(net) == [16, 16, 32, 32, 64, 64]  # from 32, 32, 64, 64, 128, 128
    assert pruner.n_removed == pruner.n_feature_maps // 2
    assert net(x).shape == (2, 3)


def test_layer_scope_cuts_more_flops_than_global_ranking(toy):
    X, y = toy
    settings = {"amount": 0.5, "steps": 1, "finetune_epochs": 0, "random_state": 0}
    base = Cnn3DClassifier(arch="s3", max_epochs=1, batch_size=16, random_state=0)
    X27 = np.repeat(np.repeat(np.repeat(X, 4, 1), 4, 2), 4, 3)[:, :27, :27, :27]
    frozen = FrozenEstimator(base.fit(X27, y))
    layer = PrunedClassifier(frozen, scope="layer", criterion="l1", **settings).fit(X27, y)
    whole = PrunedClassifier(frozen, criterion="l1", **settings).fit(X27, y)
    assert layer.flops_ < whole.flops_
    assert conv_widths(layer.module_) == [8, 8, 16, 16, 16, 16]


def test_taylor_calibration_keeps_no_feature_map_alive():
    """Gradient hooks holding their feature maps leaked ~65 MiB per pruning of a U-Net."""
    import gc
    import weakref

    net = build_network("s3", 2, (27, 27, 27))
    batches = [(torch.randn(4, 1, 27, 27, 27), torch.randint(0, 2, (4,))) for _ in range(2)]
    outputs = []
    hooks = [
        m.register_forward_hook(lambda _, __, out: outputs.append(weakref.ref(out)))
        for m in net.modules()
        if isinstance(m, nn.Conv3d)
    ]
    TaylorImportance().calibrate(net, batches, nn.CrossEntropyLoss())
    for hook in hooks:
        hook.remove()
    gc.collect()
    assert outputs and all(ref() is None for ref in outputs)


def test_random_criterion_is_seeded():
    net = build_network("s3", 2, (27, 27, 27))
    x = torch.randn(1, 1, 27, 27, 27)
    first = _group_scores(net, x, RandomImportance(0))
    assert torch.equal(first, _group_scores(net, x, RandomImportance(0)))
    assert not torch.equal(first, _group_scores(net, x, RandomImportance(1)))


class ChannelShuffle(nn.Module):
    """Mixes channels by a reshape the dependency graph cannot follow."""

    def __init__(self, n_classes, input_shape, in_channels):
        super().__init__()
        self.a = nn.Conv3d(in_channels, 4, 3, padding=1)
        self.b = nn.Conv3d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, n_classes)

    def forward(self, x):
        x = self.a(x)
        n, c, *space = x.shape
        x = x.reshape(n, 2, c // 2, *space).transpose(1, 2).reshape(n, c, *space)
        return self.fc(self.b(x).mean(dim=(2, 3, 4)))


def test_a_network_the_graph_cannot_follow_gives_a_clear_error(toy):
    X, y = toy
    base = Cnn3DClassifier(arch=ChannelShuffle, max_epochs=1, random_state=0)
    with pytest.raises(PruningError, match="dependency graph did not follow"):
        PrunedClassifier(base, amount=0.5, steps=1, criterion="l1").fit(X, y)


def test_pruned_classifier_is_smaller_and_predicts(toy, base, pruned):
    X, y = toy
    assert pruned.n_parameters_ < pruned.n_parameters_before_ == base.n_parameters_
    assert pruned.flops_ < pruned.flops_before_
    assert conv_widths(pruned.module_) == [2]  # 4 feature maps, half removed
    assert [step["amount"] for step in pruned.pruning_history_] == [0.25, 0.5]
    assert pruned.pruning_history_[-1]["n_parameters"] == pruned.n_parameters_
    assert set(pruned.pruning_history_[0]) >= {
        "validation_score_before_finetuning",
        "validation_score_after_finetuning",
        "flops",
    }
    assert pruned.predict_proba(X[:5]).shape == (5, 2)
    assert set(pruned.predict(X)) <= set(pruned.classes_)
    assert 0 <= pruned.score(X, y) <= 1
    assert not pruned.finetuned_on_soft_labels_


def test_frozen_base_is_neither_refitted_nor_changed(base, pruned):
    assert conv_widths(base.module_) == [4]
    assert pruned.estimator_ is not base
    state = pickle.loads(pickle.dumps(pruned))
    assert not hasattr(state.estimator, "net_")  # the frozen base pickles as an unfitted clone
    assert state.estimator.get_params() == base.get_params()


class OwnNetwork(nn.Module):
    """A user's network factory ``(n_classes, input_shape, in_channels)``: plain layers."""

    def __init__(self, n_classes, input_shape, in_channels):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv3d(in_channels, 6, 3, padding=1), nn.BatchNorm3d(6), nn.ReLU(),
            nn.Conv3d(6, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(2), nn.Flatten(),
        )  # fmt: skip
        self.head = nn.Linear(6 * 8, n_classes)

    def forward(self, x):
        return self.head(self.features(x))


def test_a_users_own_network_prunes(toy):
    X, y = toy
    base = Cnn3DClassifier(arch=OwnNetwork, max_epochs=1, batch_size=16, random_state=0)
    pruned = PrunedClassifier(base, amount=0.5, steps=1, finetune_epochs=1, random_state=0)
    pruned.fit(X, y)
    widths = conv_widths(pruned.module_)
    assert sum(widths) == 6 and min(widths) >= 1  # 12 feature maps, 6 removed
    assert pruned.module_.features[1].num_features == widths[0]  # batch-norm resized
    assert pruned.module_.head.in_features == widths[1] * 8  # Flatten -> Linear resized
    assert pruned.predict(X).shape == y.shape


def test_grid_search_fits_a_cached_base_once_per_fold(toy, tmp_path, monkeypatch):
    X, y = toy
    fits, original = [], Cnn3DClassifier.fit

    def counting_fit(self, X, y, **kwargs):
        fits.append(len(X))
        return original(self, X, y, **kwargs)

    monkeypatch.setattr(Cnn3DClassifier, "fit", counting_fit)
    base = Cnn3DClassifier(**TINY)
    search = GridSearchCV(
        PrunedClassifier(base, steps=1, finetune_epochs=0, memory=str(tmp_path)),
        {"amount": [0.25, 0.5], "criterion": ["l1", "random"]},
        cv=2,
    ).fit(X, y)
    # 2 folds + the refit on all rows; not once per candidate (4 x 2 + 1)
    assert len(fits) == 3
    assert search.best_estimator_.n_parameters_ < search.best_estimator_.n_parameters_before_


def test_grid_search_over_amount(toy, base):
    X, y = toy
    search = GridSearchCV(
        PrunedClassifier(
            FrozenEstimator(base), criterion="l1", steps=1, finetune_epochs=1, random_state=0
        ),
        {"amount": [0.25, 0.75]},
        cv=2,
    ).fit(X, y)
    assert search.best_params_["amount"] in (0.25, 0.75)


def test_pickle_is_small_and_loads_in_a_fresh_process(toy, pruned, tmp_path):
    X, _ = toy
    path = tmp_path / "pruned.pkl"
    path.write_bytes(pickle.dumps(pruned))
    expected = pruned.predict_proba(X[:4])
    np.save(tmp_path / "X.npy", X[:4])
    script = (
        "import pickle, sys, numpy as np; "
        f"m = pickle.load(open({str(path)!r}, 'rb')); "
        f"X = np.load({str(tmp_path / 'X.npy')!r}); "
        f"np.save({str(tmp_path / 'p.npy')!r}, m.predict_proba(X)); "
        "print([m.out_channels for m in m.module_.modules() if hasattr(m, 'out_channels')])"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[2]"
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), expected, atol=1e-6)
    weights = sum(p.numel() * 4 for p in pruned.module_.parameters())
    assert path.stat().st_size < weights + 20_000  # no optimizer, no unpruned copy


def test_pruned_unet_keeps_class_scores_and_pickles(segmentation, pruned_unet):
    X, y = segmentation
    assert pruned_unet.module_.head.out_channels == 2
    assert any(isinstance(m, nn.ConvTranspose3d) for m in pruned_unet.module_.modules())
    assert pruned_unet.n_parameters_ < pruned_unet.n_parameters_before_
    assert pruned_unet.predict(X[:2]).shape == (2, *X.shape[1:])
    assert 0 <= pruned_unet.score(X, y) <= 1
    loaded = pickle.loads(pickle.dumps(pruned_unet))
    np.testing.assert_allclose(loaded.predict_proba(X[:2]), pruned_unet.predict_proba(X[:2]))


def test_a_segmenter_base_needs_pruned_segmenter(toy, base):
    X, y = toy
    with pytest.raises(TypeError, match="PrunedClassifier"):
        PrunedSegmenter(FrozenEstimator(base)).fit(X, y)


def test_pruned_models_save_and_load_as_safe_model_files(
    toy, pruned, segmentation, pruned_unet, tmp_path
):
    from skdistill import load_model, save_model

    for model, X in ((pruned, toy[0]), (pruned_unet, segmentation[0])):
        path = save_model(model, tmp_path / f"{type(model).__name__}.safetensors")
        loaded = load_model(path)
        assert type(loaded) is type(model)
        assert loaded.amount == model.amount and loaded.criterion == model.criterion
        assert loaded.n_parameters_ == model.n_parameters_ and loaded.flops_ == model.flops_
        # NaN (no validation split) compares equal as JSON text.
        assert json.dumps(loaded.pruning_history_) == json.dumps(model.pruning_history_)
        np.testing.assert_array_equal(loaded.predict_proba(X[:4]), model.predict_proba(X[:4]))
        assert [m.out_channels for m in loaded.module_.modules() if isinstance(m, nn.Conv3d)] == [
            m.out_channels for m in model.module_.modules() if isinstance(m, nn.Conv3d)
        ]


@pytest.fixture(scope="module")
def student(toy, base):
    from skdistill import DistilledClassifier

    X, y = toy
    settings = {k: v for k, v in TINY.items() if k != "arch"}
    return DistilledClassifier(FrozenEstimator(base), student_arch="tiny", **settings).fit(X, y)


def test_a_distilled_student_is_pruned_and_fine_tuned_on_soft_labels(toy, student):
    """Distil, then prune: the frozen teacher's soft labels drive the fine-tuning."""
    X, y = toy
    pruned = PrunedClassifier(FrozenEstimator(student), **PRUNE).fit(X, y)
    assert pruned.finetuned_on_soft_labels_ is True
    assert pruned.n_parameters_ < pruned.n_parameters_before_
    assert pruned.predict(X).shape == y.shape
    assert set(pruned.classes_) == set(student.classes_)


def test_a_distilled_student_can_fine_tune_on_hard_labels(toy, student):
    X, y = toy
    y_partly = y.copy()
    y_partly[:8] = -1  # unlabeled rows are left out of hard-label fine-tuning
    pruned = PrunedClassifier(
        FrozenEstimator(student), finetune_labels="hard", criterion="taylor_weight", **PRUNE
    ).fit(X, y_partly)
    assert pruned.finetuned_on_soft_labels_ is False
    assert pruned.n_parameters_ < pruned.n_parameters_before_
    assert set(pruned.predict(X)) <= set(student.classes_)


def test_soft_labels_need_a_distilled_base(toy, base):
    with pytest.raises(ValueError, match=r"finetune_labels=.soft.*not distilled"):
        PrunedClassifier(FrozenEstimator(base), finetune_labels="soft", **PRUNE).fit(*toy)
