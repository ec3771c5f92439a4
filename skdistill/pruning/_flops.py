"""Floating-point operations of a network's forward pass on one volume."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_flops"]


def count_flops(module: nn.Module, input_shape: tuple[int, ...], n_channels: int) -> int:
    """FLOPs of ``module`` on one volume ``(n_channels, *input_shape)``.

    Counted by :class:`torch.utils.flop_counter.FlopCounterMode`: convolutions, transposed
    convolutions and matrix products, two FLOPs per multiply-add.
    """
    parameter = next(module.parameters())
    volume = torch.zeros((1, n_channels, *input_shape), device=parameter.device)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(volume)
    finally:
        module.train(was_training)
    return int(counter.get_total_flops())
