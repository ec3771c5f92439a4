"""DSRF3D-v2 teacher and its compressed students s1, s2, s3 (Guo et al. 2018).

Architectures are data: :data:`CONFIGS` holds one row per network, in the spirit of
torchvision's VGG ``cfgs``, and :class:`VolumeCNN` builds any row. A row lists the
convolution blocks (filters per 3x3x3 "same" convolution, each followed by ReLU), the
max-pool size after each block (1: no pooling), the hidden fully connected widths
(each followed by ReLU and dropout) and the dropout rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["CONFIGS", "VolumeCNN", "VolumeCNNConfig", "minimum_input_size"]


@dataclass(frozen=True)
class VolumeCNNConfig:
    """Layer configuration of a plain 3D CNN classifier.

    Parameters
    ----------
    blocks : tuple of tuple of int
        Filters of each 3x3x3 convolution, grouped by block.
    pool : int
        Max-pool size and stride after each block (floor mode); 1 means no pooling.
    hidden : tuple of int
        Widths of the hidden fully connected layers.
    dropout : float
        Dropout rate after each hidden fully connected layer.
    """

    blocks: tuple[tuple[int, ...], ...]
    pool: int
    hidden: tuple[int, ...]
    dropout: float = 0.0


CONFIGS: dict[str, VolumeCNNConfig] = {
    # Teacher: 40 -> 20 -> 10 -> 5, 128 * 5**3 = 16,000 features, two FC-1024 with dropout 0.7.
    "dsrf3d_v2": VolumeCNNConfig(((32, 32), (64, 64), (128, 128)), 2, (1024, 1024), 0.7),
    # Students: pools of 3 (40 -> 13 -> 4 -> 1), one FC-1024, no dropout.
    "s1": VolumeCNNConfig(((32, 32), (64, 64), (128, 128)), 3, (1024,)),
    "s2": VolumeCNNConfig(((32, 32), (64, 64), (64, 64)), 3, (1024,)),
    "s3": VolumeCNNConfig(((16, 16), (32, 32), (32, 32)), 3, (1024,)),
    # A few thousand weights for tests and scikit-learn's generic checks; works on (F, 1, 1).
    "tiny": VolumeCNNConfig(((4,),), 1, (16,)),
}


def minimum_input_size(config: VolumeCNNConfig) -> int:
    """Smallest edge length a volume needs so that every pooling keeps at least one voxel."""
    return config.pool ** len(config.blocks) if config.pool > 1 else 1


def _pooled_size(size: int, config: VolumeCNNConfig) -> int:
    for _ in config.blocks:
        if config.pool > 1:
            size //= config.pool
    return size


class VolumeCNN(nn.Module):
    """A stack of 3D convolution blocks followed by fully connected layers.

    Weights use Glorot-uniform initialisation and zero biases, as Keras did for the paper:
    PyTorch's default initialisation leaves these nets (no batch-norm) at chance level for
    many epochs at the paper's SGD learning rate.

    Parameters
    ----------
    config : VolumeCNNConfig
        Layer configuration (see :data:`CONFIGS`).
    n_classes : int
        Number of output logits.
    input_shape : tuple of int
        Spatial shape ``(D, H, W)`` of one volume.
    in_channels : int, default=1
        Number of input channels.
    """

    def __init__(
        self,
        config: VolumeCNNConfig,
        n_classes: int,
        input_shape: tuple[int, int, int],
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for block in config.blocks:
            for filters in block:
                layers += [nn.Conv3d(channels, filters, 3, padding=1), nn.ReLU(inplace=True)]
                channels = filters
            if config.pool > 1:
                layers.append(nn.MaxPool3d(config.pool))
        self.features = nn.Sequential(*layers)

        n_features = channels * math.prod(_pooled_size(s, config) for s in input_shape)
        head: list[nn.Module] = [nn.Flatten()]
        for width in config.hidden:
            head += [nn.Linear(n_features, width), nn.ReLU(inplace=True)]
            if config.dropout > 0:
                head.append(nn.Dropout(config.dropout))
            n_features = width
        head.append(nn.Linear(n_features, n_classes))
        self.classifier = nn.Sequential(*head)
        self.apply(glorot_uniform_zero_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map volumes ``(N, C, D, H, W)`` to logits ``(N, n_classes)``."""
        return self.classifier(self.features(x))


def glorot_uniform_zero_bias(module: nn.Module) -> None:
    """Keras' default initialisation: Glorot-uniform weights, zero biases."""
    if isinstance(module, nn.Conv3d | nn.Conv2d | nn.Linear | nn.ConvTranspose3d):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
