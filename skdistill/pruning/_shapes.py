"""Rebuild a pruned network's shapes from its weights, without any unsafe loading.

The shapes of the pruned weights are the recipe: a network built at full width is resized
layer by layer (convolutions, transposed convolutions, batch-norms, linear layers) to the
shapes of the saved tensors, then the weights are loaded into it.
"""

from __future__ import annotations

import torch
from torch import nn

from ..exceptions import IncompatibleModelError

__all__ = ["resize_to_weights"]


def resize_to_weights(module: nn.Module, weights: dict[str, torch.Tensor]) -> nn.Module:
    """Resize the layers of ``module`` in place to the shapes of ``weights`` (a state dict).

    Raises
    ------
    IncompatibleModelError
        If a tensor differs in something else than the channel counts pruning changes.
    """
    for name, layer in module.named_modules():
        prefix = f"{name}." if name else ""
        tensors = {**dict(layer.named_parameters(recurse=False)), **layer._buffers}
        changed = {
            key: weights[prefix + key].shape
            for key, tensor in tensors.items()
            if tensor is not None
            and prefix + key in weights
            and weights[prefix + key].shape != tensor.shape
        }
        if changed:
            _resize_layer(name, layer, changed)
    return module


def _resize_layer(name: str, layer: nn.Module, shapes: dict[str, torch.Size]) -> None:
    for key, shape in shapes.items():
        old = getattr(layer, key)
        if len(shape) != old.ndim or (old.ndim > 2 and shape[2:] != old.shape[2:]):
            raise IncompatibleModelError(
                f"The saved weight {name}.{key} has shape {tuple(shape)}, which pruning cannot "
                f"give to a layer of shape {tuple(old.shape)}; the model was saved by another "
                "network definition."
            )
        new = torch.empty(shape, dtype=old.dtype, device=old.device)
        if isinstance(old, nn.Parameter):
            setattr(layer, key, nn.Parameter(new, requires_grad=old.requires_grad))
        else:
            layer._buffers[key] = new
    if isinstance(layer, nn.modules.conv._ConvNd):
        out_axis, in_axis = (1, 0) if layer.transposed else (0, 1)
        factor = layer.groups
        layer.out_channels = layer.weight.shape[out_axis] * (factor if layer.transposed else 1)
        layer.in_channels = layer.weight.shape[in_axis] * (1 if layer.transposed else factor)
    elif isinstance(layer, nn.modules.batchnorm._BatchNorm):
        layer.num_features = int(shapes.get("running_mean", layer.running_mean.shape)[0])
    elif isinstance(layer, nn.Linear):
        layer.out_features, layer.in_features = layer.weight.shape
    else:
        raise IncompatibleModelError(
            f"The saved weights of layer {name!r} ({type(layer).__name__}) have other shapes "
            "than this network's, and pruning only resizes convolution, batch-norm and "
            "linear layers; the model was saved by another network definition."
        )
