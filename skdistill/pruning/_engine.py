"""Remove the least important feature maps of a network, across all its layers at once."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..exceptions import PruningError
from ._graph import build_graph, check_output_shape, class_score_layers, prunable_groups

__all__ = ["FeatureMapPruner", "removal_schedule"]


def removal_schedule(total: int, amount: float, steps: int) -> list[int]:
    """Feature maps to remove in each of ``steps`` rounds, ``amount`` of ``total`` in all.

    Round ``k`` brings the removed total to ``round(amount * total * k / steps)``: the
    fraction grows linearly to ``amount`` of the original feature maps (not compounded).
    """
    reached = [round(amount * total * k / steps) for k in range(steps + 1)]
    return [reached[k + 1] - reached[k] for k in range(steps)]


class FeatureMapPruner:
    """Structured pruning of a network's convolution output channels.

    The class-score layers (the classifier's last layer, a segmenter's class-score
    convolutions) are never pruned, and every layer keeps at least one feature map. With
    ``scope="global"`` the channels are ranked across all layers by the criterion's
    per-layer normalised scores (Molchanov et al. 2017; Roels et al. 2017 remove the feature
    maps whose removal increases the training loss least, wherever they are); with
    ``scope="layer"`` every layer loses the same fraction of its original feature maps, the
    lowest-scoring of that layer.

    Parameters
    ----------
    module : torch.nn.Module
        The network, pruned in place.
    example : torch.Tensor
        A batch of input volumes ``(n, C, D, H, W)`` to trace the network.
    scope : {"global", "layer"}, default="global"
        Rank the feature maps across the whole network, or within each layer.
    """

    def __init__(self, module: nn.Module, example: torch.Tensor, scope: str = "global") -> None:
        self.module = module
        self.example = example
        self.scope = scope
        was_training = module.training
        module.eval()
        try:
            self.kept_layers = class_score_layers(module, example)
            with torch.no_grad():
                self.output_shape = module(example).shape
            groups = prunable_groups(build_graph(module, example), self.kept_layers)
        finally:
            module.train(was_training)
        self.original_widths = {root: _n_channels(root) for root, _ in groups}
        self.n_feature_maps = sum(self.original_widths.values())
        self.n_removed = 0
        if self.n_feature_maps == 0:
            raise PruningError(
                f"{type(module).__name__} has no convolution feature maps that can be "
                "removed (only class-score layers, or layers the dependency graph could "
                "not group)."
            )

    def prune(self, n_remove: int, criterion: Callable) -> int:
        """Remove the ``n_remove`` lowest-scoring feature maps; return how many were removed.

        Fewer are removed only when every layer is down to one feature map; with
        ``scope="layer"`` the count is rounded per layer, so it may differ by a few.
        """
        if n_remove <= 0:
            return 0
        was_training = self.module.training
        self.module.eval()
        try:
            graph = build_graph(self.module, self.example)
            groups = prunable_groups(graph, self.kept_layers)
            candidates = []
            for index, (_, group) in enumerate(groups):
                scores = criterion(group)
                candidates += [(float(s), index, c) for c, s in enumerate(scores.tolist())]
            candidates.sort()
            quotas = self._layer_quotas(groups, n_remove) if self.scope == "layer" else None
            chosen: dict[int, list[int]] = {}
            for _, index, channel in candidates:
                if quotas is None and sum(map(len, chosen.values())) == n_remove:
                    break
                root = groups[index][0]
                room = _n_channels(root) - 1 if quotas is None else quotas[index]
                if len(chosen.get(index, [])) < room:
                    chosen.setdefault(index, []).append(channel)
            for index, channels in chosen.items():
                root, _ = groups[index]
                group = graph.get_pruning_group(root, _out_channel_handler(graph, root), channels)
                group.prune()
            check_output_shape(self.module, self.example, self.output_shape)
        finally:
            self.module.train(was_training)
        removed = sum(map(len, chosen.values()))
        self.n_removed += removed
        return removed

    def _layer_quotas(self, groups: list, n_remove: int) -> list[int]:
        """Feature maps each group loses this round so that every layer reaches the same
        removed fraction of its original width (at least one map kept)."""
        fraction = (self.n_removed + n_remove) / self.n_feature_maps
        quotas = []
        for root, _ in groups:
            width = _n_channels(root)
            original = self.original_widths.get(root, width)
            target = min(round(fraction * original), original - 1)
            quotas.append(max(0, min(target - (original - width), width - 1)))
        return quotas


def _n_channels(layer: nn.Module) -> int:
    return int(layer.out_channels)


def _out_channel_handler(graph, layer: nn.Module):
    return graph.get_pruner_of_module(layer).prune_out_channels
