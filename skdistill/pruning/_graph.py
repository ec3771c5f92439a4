"""The dependency graph of a network: which feature maps can be removed, and which cannot.

Torch-Pruning traces the network once on an example batch and groups the layers whose
channels must be removed together (a convolution, its batch-norm, the next layer's inputs,
the other inputs of an addition or the slice of a concatenation, the ``Flatten → Linear``
inputs). A group is rooted at the convolution whose output channels it removes.
"""

from __future__ import annotations

import torch
import torch_pruning as tp
from torch import nn

from ..exceptions import PruningError

__all__ = ["FEATURE_MAP_LAYERS", "build_graph", "class_score_layers", "prunable_groups"]

#: Layers whose output channels are feature maps that pruning may remove.
FEATURE_MAP_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def build_graph(module: nn.Module, example: torch.Tensor) -> tp.DependencyGraph:
    """Trace ``module`` on ``example`` and return its dependency graph.

    Raises
    ------
    PruningError
        If the network cannot be traced.
    """
    try:
        return tp.DependencyGraph().build_dependency(module, example_inputs=example)
    except Exception as error:  # torch_pruning raises many types; name the cause
        raise PruningError(
            f"The dependency graph of {type(module).__name__} cannot be traced for pruning "
            f"({type(error).__name__}: {error}). Structured pruning needs a network of "
            "standard torch layers whose forward pass can be traced on a batch of volumes."
        ) from error


def class_score_layers(module: nn.Module, example: torch.Tensor) -> list[nn.Module]:
    """The layers whose outputs are class scores, never pruned.

    The last convolution or linear layer run in the forward pass, and the pointwise
    convolutions with one output per class that run after the last hidden layer (the
    score layers of the SSN3D FCN heads).
    """
    order: list[nn.Module] = []
    layers = [m for m in module.modules() if isinstance(m, (*FEATURE_MAP_LAYERS, nn.Linear))]
    hooks = [m.register_forward_hook(lambda m, i, o: order.append(m)) for m in layers]
    try:
        with torch.no_grad():
            output = module(example)
    finally:
        for hook in hooks:
            hook.remove()
    if not order:
        raise PruningError(
            f"{type(module).__name__} has no convolution or linear layer: nothing to prune."
        )
    n_scores = output.shape[1]
    scores = [order[-1]]
    for layer in reversed(order[:-1]):
        pointwise = getattr(layer, "kernel_size", None) in (None, (1,) * (layer.weight.ndim - 2))
        if _out_channels(layer) != n_scores or not pointwise:
            break
        scores.append(layer)
    return scores


def prunable_groups(
    graph: tp.DependencyGraph, ignored: list[nn.Module]
) -> list[tuple[nn.Module, tp.Group]]:
    """``(root layer, group)`` for every group of feature maps that may be pruned."""
    groups = graph.get_all_groups(
        ignored_layers=list(ignored), root_module_types=FEATURE_MAP_LAYERS
    )
    return [(group[0].dep.target.module, group) for group in groups]


def check_output_shape(module: nn.Module, example: torch.Tensor, expected: torch.Size) -> None:
    """Raise :class:`PruningError` if the pruned network fails or changes its output shape."""
    try:
        with torch.no_grad():
            shape = module(example).shape
    except RuntimeError as error:
        raise PruningError(
            f"After removing feature maps, {type(module).__name__} no longer runs: the "
            "dependency graph did not follow how its layers use their channels "
            f"({error}). Prune a network built of standard layers (Conv3d, "
            "ConvTranspose3d, BatchNorm3d, concatenation, addition, Flatten → Linear), "
            "or fit it without pruning."
        ) from error
    if shape != expected:
        raise PruningError(
            f"Removing feature maps changed the output of {type(module).__name__} from "
            f"shape {tuple(expected)} to {tuple(shape)}: the dependency graph did not follow "
            "how its layers use their channels. Prune a network built of standard layers, "
            "or fit it without pruning."
        )


def _out_channels(layer: nn.Module) -> int:
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
