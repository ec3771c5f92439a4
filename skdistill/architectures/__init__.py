"""Network architectures, described as data and built by one function.

>>> from skdistill.architectures import build_network, list_architectures
>>> list_architectures()
['dsrf3d_v2', 's1', 's2', 's3', 'tiny']
>>> net = build_network("s3", n_classes=23, input_shape=(40, 40, 40))
>>> sum(p.numel() for p in net.parameters())
161639
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from .dsrf3d import CONFIGS, VolumeCNN, VolumeCNNConfig, minimum_input_size
from .segmentation import (
    SEGMENTATION_ARCHITECTURES,
    UNET_DEFAULTS,
    build_segmentation_network,
    build_unet,
    check_segmentation_input_size,
    list_segmentation_architectures,
)
from .ssn3d import FCN1, FCN8, FCNASPP, FCNEncoderDecoder
from .unet import UNet

__all__ = [
    "CONFIGS",
    "FCN1",
    "FCN8",
    "FCNASPP",
    "SEGMENTATION_ARCHITECTURES",
    "UNET_DEFAULTS",
    "ArchitectureSpec",
    "FCNEncoderDecoder",
    "UNet",
    "VolumeCNN",
    "VolumeCNNConfig",
    "build_network",
    "build_segmentation_network",
    "build_unet",
    "check_segmentation_input_size",
    "count_parameters",
    "list_architectures",
    "list_segmentation_architectures",
    "minimum_input_size",
]

#: A user-supplied network factory: ``(n_classes, input_shape, in_channels) -> nn.Module``.
NetworkFactory = Callable[[int, tuple[int, int, int], int], nn.Module]
ArchitectureSpec = str | NetworkFactory


def list_architectures() -> list[str]:
    """Names accepted by :func:`build_network` (and by the estimators' ``arch``)."""
    return list(CONFIGS)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def check_input_size(arch: str, input_shape: Sequence[int]) -> None:
    """Raise ``ValueError`` if volumes of ``input_shape`` are too small for ``arch``.

    Parameters
    ----------
    arch : str
        Name of a built-in architecture.
    input_shape : sequence of int
        Spatial shape ``(D, H, W)`` of one volume.
    """
    config = _get_config(arch)
    minimum = minimum_input_size(config)
    if min(input_shape) < minimum:
        raise ValueError(
            f"Volumes of shape {tuple(input_shape)} are too small for architecture {arch!r}: "
            f"its {len(config.blocks)} max-pools of size {config.pool} need at least "
            f"{minimum} voxels along each axis ({minimum}^3). Use larger subtomograms "
            f"(pad or re-extract them) or an architecture with less pooling."
        )


def build_network(
    arch: ArchitectureSpec,
    n_classes: int,
    input_shape: Sequence[int],
    in_channels: int = 1,
) -> nn.Module:
    """Build a classification network for volumes of a given shape.

    Parameters
    ----------
    arch : str or callable
        A name from :func:`list_architectures`, or a factory
        ``(n_classes, input_shape, in_channels) -> torch.nn.Module`` returning a module
        that maps ``(N, in_channels, D, H, W)`` tensors to ``(N, n_classes)`` logits.
    n_classes : int
        Number of classes (output logits).
    input_shape : sequence of int
        Spatial shape ``(D, H, W)`` of one volume.
    in_channels : int, default=1
        Number of input channels.

    Returns
    -------
    torch.nn.Module
        The untrained network.

    Raises
    ------
    ValueError
        If ``arch`` is unknown (the message lists the available names) or the volumes are
        too small for the architecture's pooling (the message names the minimum size).
    """
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (D, H, W); got {input_shape}.")
    if callable(arch):
        module = arch(n_classes, input_shape, in_channels)
        if not isinstance(module, nn.Module):
            raise TypeError(
                f"The architecture factory {arch!r} returned {type(module).__name__}, "
                "not a torch.nn.Module."
            )
        return module
    check_input_size(arch, input_shape)
    return VolumeCNN(_get_config(arch), n_classes, input_shape, in_channels)


def _get_config(arch: str) -> VolumeCNNConfig:
    try:
        return CONFIGS[arch]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown architecture {arch!r}. Available architectures: "
            f"{', '.join(list_architectures())}; or pass a callable "
            "(n_classes, input_shape, in_channels) -> torch.nn.Module."
        ) from None
