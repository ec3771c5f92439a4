"""Importance criteria of feature maps: small objects ``criterion(group) -> scores``.

Like the importances of Torch-Pruning (``torch_pruning/pruner/importance.py``), a criterion
takes a group of coupled layers and returns one score per channel of the group's root; the
lowest scores are removed first. Each layer's scores are normalised by their L2 norm over the
layer, as Molchanov et al. (2017) do, so that scores compare across layers; coupled layers
(joined by an addition) add their normalised scores.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod

import torch
import torch_pruning as tp
from torch import nn

__all__ = [
    "CRITERIA",
    "CalibratedImportance",
    "FeatureMapImportance",
    "L1Importance",
    "RandomImportance",
    "TaylorImportance",
    "WeightTaylorImportance",
]

_OUT_CHANNELS = (tp.prune_conv_out_channels,)
_BATCH_NORM = (tp.prune_batchnorm_out_channels,)


class FeatureMapImportance(ABC):
    """Base class: scores of a group from per-layer channel scores.

    Subclasses define ``layer_scores(layer) -> Tensor`` (one score per output channel of
    ``layer``, or None when the layer does not score the group). Criteria of the filters
    (``scores_filters = True``) score the group's convolutions; the others its feature
    maps (the batch-norms' outputs when the group has batch-norms).
    """

    scores_filters = False

    @abstractmethod
    def layer_scores(self, layer: nn.Module) -> torch.Tensor | None:
        """One score per output channel of ``layer``, or None."""

    def __call__(self, group: tp.Group) -> torch.Tensor:
        """One score per channel of the group's root layer."""
        n_channels = len(group[0].idxs)
        scores = torch.zeros(n_channels, dtype=torch.float64)
        items = _filter_items(group) if self.scores_filters else _feature_map_items(group)
        for item in items:
            layer_scores = self.layer_scores(item.dep.target.module)
            if layer_scores is None:
                continue
            idxs = [int(i) for i in item.idxs]
            root = torch.as_tensor([int(i) for i in item.root_idxs])
            scores.index_add_(0, root, _normalised(layer_scores.double())[idxs])
        return scores


def _feature_map_items(group: tp.Group) -> list:
    """The items of ``group`` whose outputs are its feature maps.

    The batch-norms when the group has any (their outputs are what the next layers see),
    otherwise the convolutions whose output channels the group removes.
    """
    batch_norms = [item for item in group if item.dep.handler in _BATCH_NORM]
    return batch_norms or _filter_items(group)


def _filter_items(group: tp.Group) -> list:
    """The items of ``group`` that remove output channels (filters) of convolutions."""
    return [item for item in group if item.dep.handler in _OUT_CHANNELS]


def _normalised(scores: torch.Tensor) -> torch.Tensor:
    norm = torch.linalg.vector_norm(scores)
    return scores / norm if norm > 0 else scores


class L1Importance(FeatureMapImportance):
    """Filter weight magnitude: the L1 norm of each output channel's weights (Li et al. 2017)."""

    scores_filters = True

    def layer_scores(self, layer: nn.Module) -> torch.Tensor:
        return _per_filter(layer.weight.detach(), layer).abs().sum(dim=1)


def _per_filter(weight: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """``weight`` of a convolution as one row per output channel (filter)."""
    if getattr(layer, "transposed", False):
        weight = weight.transpose(0, 1)
    return weight.flatten(1)


class RandomImportance:
    """Random scores from a seeded generator: the baseline every criterion must beat.

    Uniform over the group's channels, not normalised per layer: every feature map is
    equally likely to go.

    Parameters
    ----------
    seed : int
        Seed of the scores; the same seed gives the same pruned network.
    """

    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(int(seed))

    def __call__(self, group: tp.Group) -> torch.Tensor:
        n_channels = len(group[0].idxs)
        return torch.rand(n_channels, generator=self.generator, dtype=torch.float64)


class CalibratedImportance(FeatureMapImportance):
    """Base class of the criteria that need gradients of the training loss.

    :meth:`calibrate` runs the network over calibration batches (in evaluation mode, weights
    unchanged) and stores one score tensor per layer in ``scores_``.
    """

    def __init__(self) -> None:
        self.scores_: dict[nn.Module, torch.Tensor] = {}

    def layer_scores(self, layer: nn.Module) -> torch.Tensor | None:
        return self.scores_.get(layer)

    def calibrate(self, module: nn.Module, batches, loss) -> CalibratedImportance:
        """Score the layers of ``module`` from the gradients of ``loss`` over ``batches``.

        Parameters
        ----------
        module : torch.nn.Module
            The network, in evaluation mode during calibration (batch-norm statistics and
            dropout unchanged); its weights are not changed.
        batches : iterable of (Tensor, Tensor)
            Calibration volumes and their targets.
        loss : callable
            ``loss(logits, targets) -> scalar``, the training loss.
        """
        was_training = module.training
        try:
            module.eval()
            module.zero_grad(set_to_none=True)
            self.scores_ = self._scores(module, batches, loss)
        finally:
            module.zero_grad(set_to_none=True)
            module.train(was_training)
        return self

    @abstractmethod
    def _scores(self, module: nn.Module, batches, loss) -> dict[nn.Module, torch.Tensor]:
        """One score tensor per layer of ``module``."""


class TaylorImportance(CalibratedImportance):
    """First-order Taylor estimate of the loss increase when a feature map is removed.

    ``|mean over the voxels of a · ∂L/∂a|`` per channel, averaged over the calibration
    volumes (Molchanov et al. 2017, eq. 8: the absolute value per volume, then the mean),
    where ``a`` is the feature map (a batch-norm's output when the convolution has one,
    else the convolution's output; the product is the same before and after a ReLU) and
    ``L`` the training loss; normalised per layer. This is the activation criterion, which
    estimates the change of the loss when the feature map is set to zero; not the
    weight-times-weight-gradient product that some libraries call "Taylor"
    (:class:`WeightTaylorImportance`). On one volume and without a batch-norm the two rank
    a layer's channels alike (the feature map is linear in the filter: Euler's identity);
    the per-volume absolute value and the batch-norm make them differ.

    Call :meth:`calibrate` before scoring groups.
    """

    def _scores(self, module: nn.Module, batches, loss) -> dict[nn.Module, torch.Tensor]:
        """Mean over volumes of ``|mean over voxels(a · ∂L/∂a)|`` per channel of every layer."""
        layers = [
            m
            for m in module.modules()
            if isinstance(m, (nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm))
        ]
        sums = {m: None for m in layers}
        counts = dict.fromkeys(layers, 0)

        # The feature maps wait here for their gradients. A gradient hook that holds its
        # own tensor keeps it alive after backward, even through gc.collect(): memory grew
        # with every pruning until benchmark processes were OOM-killed.
        waiting: dict[int, torch.Tensor] = {}
        keys = itertools.count()

        def record(layer):
            def forward_hook(_, __, output):
                if not output.requires_grad:
                    return
                key = next(keys)
                waiting[key] = output.detach()

                def gradient_hook(gradient):
                    # Per volume: |mean over voxels|, then summed over the volumes.
                    product = (waiting.pop(key) * gradient).flatten(2).mean(dim=2)
                    total = product.abs().sum(dim=0).double()
                    sums[layer] = total if sums[layer] is None else sums[layer] + total
                    counts[layer] += product.shape[0]

                output.register_hook(gradient_hook)

            return forward_hook

        inplace = _disable_inplace(module)
        hooks = [m.register_forward_hook(record(m)) for m in layers]
        try:
            for volumes, targets in batches:
                module.zero_grad(set_to_none=True)
                loss(module(volumes), targets).backward()
        finally:
            for hook in hooks:
                hook.remove()
            for m in inplace:
                m.inplace = True
            waiting.clear()  # feature maps that got no gradient
        return {m: (sums[m] / counts[m]).abs() for m in layers if sums[m] is not None and counts[m]}


class WeightTaylorImportance(CalibratedImportance):
    """Weight-space Taylor estimate: ``|sum over a filter's weights of w · ∂L/∂w|``.

    The first-order change of the loss when the filter's weights (and bias) are set to
    zero, with the gradient summed over the calibration volumes (Molchanov et al. 2019).
    Torch-Pruning's ``TaylorImportance`` is of this weight kind; skdistill's
    ``"taylor"`` is the activation criterion of Molchanov et al. (2017). Call
    :meth:`calibrate` before scoring groups.
    """

    scores_filters = True

    def _scores(self, module: nn.Module, batches, loss) -> dict[nn.Module, torch.Tensor]:
        """Gradients summed over all batches, then ``|Σ w · g|`` per filter."""
        for volumes, targets in batches:
            loss(module(volumes), targets).backward()  # gradients add up over batches
        scores = {}
        for layer in module.modules():
            if not isinstance(layer, nn.modules.conv._ConvNd) or layer.weight.grad is None:
                continue
            product = _per_filter(layer.weight.detach() * layer.weight.grad, layer).sum(dim=1)
            if layer.bias is not None and layer.bias.grad is not None:
                product = product + layer.bias.detach() * layer.bias.grad
            scores[layer] = product.double().abs()
        return scores


def _disable_inplace(module: nn.Module) -> list[nn.Module]:
    """Turn off in-place activations (they would overwrite the recorded feature maps)."""
    changed = [m for m in module.modules() if getattr(m, "inplace", False) is True]
    for m in changed:
        m.inplace = False
    return changed


#: Criterion names accepted by the pruned estimators.
CRITERIA = ("taylor", "taylor_weight", "l1", "random")


def make_criterion(name: str, seed: int) -> FeatureMapImportance | RandomImportance:
    """The criterion called ``name`` (one of :data:`CRITERIA`)."""
    if name == "taylor":
        return TaylorImportance()
    if name == "taylor_weight":
        return WeightTaylorImportance()
    if name == "l1":
        return L1Importance()
    return RandomImportance(seed)
