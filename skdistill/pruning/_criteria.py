"""Importance criteria of feature maps: small objects ``criterion(group) -> scores``.

Like the importances of Torch-Pruning (``torch_pruning/pruner/importance.py``), a criterion
takes a group of coupled layers and returns one score per channel of the group's root; the
lowest scores are removed first. Each layer's scores are normalised by their L2 norm over the
layer, as Molchanov et al. (2017) do, so that scores compare across layers; coupled layers
(joined by an addition) add their normalised scores.
"""

from __future__ import annotations

import torch
import torch_pruning as tp
from torch import nn

__all__ = [
    "CRITERIA",
    "FeatureMapImportance",
    "L1Importance",
    "RandomImportance",
    "TaylorImportance",
]

_OUT_CHANNELS = (tp.prune_conv_out_channels,)
_BATCH_NORM = (tp.prune_batchnorm_out_channels,)


class FeatureMapImportance:
    """Base class: scores of a group from per-layer channel scores.

    Subclasses define ``layer_scores(layer) -> Tensor`` (one score per output channel of
    ``layer``, or None when the layer does not score the group).
    """

    def layer_scores(self, layer: nn.Module) -> torch.Tensor | None:
        raise NotImplementedError

    def __call__(self, group: tp.Group) -> torch.Tensor:
        """One score per channel of the group's root layer."""
        n_channels = len(group[0].idxs)
        scores = torch.zeros(n_channels, dtype=torch.float64)
        items = _feature_map_items(group)
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
    return batch_norms or [item for item in group if item.dep.handler in _OUT_CHANNELS]


def _normalised(scores: torch.Tensor) -> torch.Tensor:
    norm = torch.linalg.vector_norm(scores)
    return scores / norm if norm > 0 else scores


class L1Importance(FeatureMapImportance):
    """Filter weight magnitude: the L1 norm of each output channel's weights (Li et al. 2017)."""

    def layer_scores(self, layer: nn.Module) -> torch.Tensor | None:
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            return None
        weight = layer.weight.detach()
        if getattr(layer, "transposed", False):
            weight = weight.transpose(0, 1)
        return weight.abs().flatten(1).sum(dim=1)

    def __call__(self, group: tp.Group) -> torch.Tensor:
        convolutions = [item for item in group if item.dep.handler in _OUT_CHANNELS]
        n_channels = len(group[0].idxs)
        scores = torch.zeros(n_channels, dtype=torch.float64)
        for item in convolutions:
            idxs = [int(i) for i in item.idxs]
            root = torch.as_tensor([int(i) for i in item.root_idxs])
            layer_scores = _normalised(self.layer_scores(item.dep.target.module).double())
            scores.index_add_(0, root, layer_scores[idxs])
        return scores


class RandomImportance(FeatureMapImportance):
    """Random scores from a seeded generator: the baseline every criterion must beat.

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


class TaylorImportance(FeatureMapImportance):
    """First-order Taylor estimate of the loss increase when a feature map is removed.

    ``|mean over the calibration volumes and voxels of a · ∂L/∂a|`` per channel, where
    ``a`` is the feature map (a batch-norm's output when the convolution has one, else the
    convolution's output) and ``L`` the training loss (Molchanov et al. 2017), normalised
    per layer. This is the activation criterion, which estimates the change of the loss
    when the feature map is set to zero; not the weight-times-weight-gradient product that some
    libraries call "Taylor".

    Call :meth:`calibrate` before scoring groups.
    """

    def __init__(self) -> None:
        self.scores_: dict[nn.Module, torch.Tensor] = {}

    def layer_scores(self, layer: nn.Module) -> torch.Tensor | None:
        return self.scores_.get(layer)

    def calibrate(self, module: nn.Module, batches, loss) -> TaylorImportance:
        """Accumulate ``a · ∂L/∂a`` over ``batches`` of ``(volumes, targets)``.

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
        layers = [
            m
            for m in module.modules()
            if isinstance(m, (nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm))
        ]
        sums = {m: None for m in layers}
        counts = dict.fromkeys(layers, 0)

        def record(layer):
            def forward_hook(_, __, output):
                if not output.requires_grad:
                    return

                def gradient_hook(gradient):
                    product = (output.detach() * gradient).transpose(0, 1).flatten(1)
                    total = product.sum(dim=1).double()
                    sums[layer] = total if sums[layer] is None else sums[layer] + total
                    counts[layer] += product.shape[1]

                output.register_hook(gradient_hook)

            return forward_hook

        was_training = module.training
        inplace = _disable_inplace(module)
        hooks = [m.register_forward_hook(record(m)) for m in layers]
        try:
            module.eval()
            for volumes, targets in batches:
                module.zero_grad(set_to_none=True)
                loss(module(volumes), targets).backward()
        finally:
            for hook in hooks:
                hook.remove()
            for m in inplace:
                m.inplace = True
            module.zero_grad(set_to_none=True)
            module.train(was_training)
        self.scores_ = {
            m: (sums[m] / counts[m]).abs() for m in layers if sums[m] is not None and counts[m]
        }
        return self


def _disable_inplace(module: nn.Module) -> list[nn.Module]:
    """Turn off in-place activations (they would overwrite the recorded feature maps)."""
    changed = [m for m in module.modules() if getattr(m, "inplace", False) is True]
    for m in changed:
        m.inplace = False
    return changed


#: Criterion names accepted by the pruned estimators.
CRITERIA = ("taylor", "l1", "random")


def make_criterion(name: str, seed: int) -> FeatureMapImportance:
    """The criterion called ``name`` (one of :data:`CRITERIA`)."""
    if name == "taylor":
        return TaylorImportance()
    if name == "l1":
        return L1Importance()
    return RandomImportance(seed)
