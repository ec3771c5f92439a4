"""Segmentation networks by name: the registry, the builder and the input-size check.

Every network maps volumes ``(N, in_channels, D, H, W)`` to voxel-wise logits
``(N, n_classes, D, H, W)``, without softmax (the loss applies it).

- ``"ssn3d"`` (the default): SSN3D ``FCN_ed``, :class:`~.ssn3d.FCNEncoderDecoder`;
- ``"ssn3d_aspp"``: SSN3D ``FCN_aspp``, :class:`~.ssn3d.FCNASPP` (sizes multiples of 4);
- ``"ssn3d_fcn1"``: SSN3D ``FCN1``, :class:`~.ssn3d.FCN1`;
- ``"ssn3d_fcn8"``: SSN3D ``FCN8``, :class:`~.ssn3d.FCN8`;
- ``"unet"``: the light U-Net, :class:`~.unet.UNet` in 3D, its knobs passed as ``options``
  (sizes multiples of ``2**(levels - 1)``).

The SSN3D nets pool three times: spatial sizes must be multiples of 8 unless noted.

>>> from skdistill.architectures.segmentation import (
...     build_segmentation_network, list_segmentation_architectures)
>>> list_segmentation_architectures()
['ssn3d', 'ssn3d_aspp', 'ssn3d_fcn1', 'ssn3d_fcn8', 'unet']
>>> net = build_segmentation_network("ssn3d", n_classes=2, input_shape=(40, 40, 40))
>>> sum(p.numel() for p in net.parameters())
895746
>>> unet = build_segmentation_network("unet", 3, (16, 16, 16), base_filters=4, levels=4)
>>> unet.filters
(4, 8, 16, 32)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from .ssn3d import FCN1, FCN8, FCNASPP, FCNEncoderDecoder, SSN3DNetwork
from .unet import UNet

__all__ = [
    "SEGMENTATION_ARCHITECTURES",
    "UNET_DEFAULTS",
    "SegmentationArchitectureSpec",
    "SegmentationFactory",
    "build_segmentation_network",
    "build_unet",
    "check_segmentation_input_size",
    "list_segmentation_architectures",
]

#: A network factory ``(n_classes, input_shape, in_channels, **options) -> nn.Module``.
SegmentationFactory = Callable[..., nn.Module]
SegmentationArchitectureSpec = str | SegmentationFactory

#: The U-Net knobs and their defaults, the estimators' light U-Net: 8, 16 and 32 feature maps on
#: three levels (two max-pools), 8 in the last two convolutions, batch-norm; 3D parameters for
#: one channel and two classes: 85,186.
UNET_DEFAULTS: dict[str, Any] = {
    "base_filters": 8,
    "filter_multiplier": 2.0,
    "levels": 3,
    "last_filters": 8,
    "batch_norm": True,
}

_SSN3D: dict[str, type[SSN3DNetwork]] = {
    "ssn3d": FCNEncoderDecoder,
    "ssn3d_aspp": FCNASPP,
    "ssn3d_fcn1": FCN1,
    "ssn3d_fcn8": FCN8,
}


def build_unet(
    n_classes: int,
    input_shape: Sequence[int],
    in_channels: int = 1,
    *,
    spatial_dims: int = 3,
    **options: Any,
) -> UNet:
    """Build the light U-Net (the builder registered as ``"unet"``).

    Parameters
    ----------
    n_classes : int
        Number of output channels (logits).
    input_shape : sequence of int
        Spatial shape of one input, of length ``spatial_dims``.
    in_channels : int, default=1
        Number of input channels.
    spatial_dims : {3, 2}, default=3
        3D volumes, or 2D images (only through this function:
        :func:`build_segmentation_network` builds 3D networks).
    **options
        U-Net knobs ``base_filters``, ``filter_multiplier``, ``levels``, ``last_filters``,
        ``batch_norm``; missing ones take their value in :data:`UNET_DEFAULTS`.

    Returns
    -------
    UNet
        The untrained network.

    Raises
    ------
    ValueError
        If an option is unknown, a knob is invalid, or a spatial size of ``input_shape`` is not
        a multiple of ``2**(levels - 1)``.
    """
    knobs = _unet_knobs(options)
    UNet.check_input_shape(input_shape, knobs["levels"], spatial_dims)
    return UNet(spatial_dims, in_channels, n_classes, **knobs)


def _ssn3d_builder(name: str, network: type[SSN3DNetwork]) -> SegmentationFactory:
    def build(
        n_classes: int, input_shape: Sequence[int], in_channels: int = 1, **options: Any
    ) -> SSN3DNetwork:
        check_segmentation_input_size(name, input_shape, **options)
        return network(in_channels=in_channels, n_classes=n_classes)

    build.__name__ = build.__qualname__ = f"build_{name}"
    build.__doc__ = f"Build SSN3D {network.keras_name} ({network.__name__}); takes no options."
    return build


#: Builders by name; each is a :data:`SegmentationFactory`.
SEGMENTATION_ARCHITECTURES: dict[str, SegmentationFactory] = {
    **{name: _ssn3d_builder(name, network) for name, network in _SSN3D.items()},
    "unet": build_unet,
}


def list_segmentation_architectures() -> list[str]:
    """Names accepted by :func:`build_segmentation_network`, sorted."""
    return sorted(SEGMENTATION_ARCHITECTURES)


def check_segmentation_input_size(
    arch: SegmentationArchitectureSpec, input_shape: Sequence[int], **options: Any
) -> None:
    """Raise ``ValueError`` if volumes of ``input_shape`` do not fit ``arch``.

    Lets an estimator check its data before building the network. Callable architectures are
    not checked (their factory is responsible).

    Parameters
    ----------
    arch : str or callable
        A name from :func:`list_segmentation_architectures`, or a factory.
    input_shape : sequence of int
        Spatial shape ``(D, H, W)`` of one volume.
    **options
        The U-Net knobs (``"unet"`` only; ``levels`` sets the required multiple).

    Raises
    ------
    ValueError
        If ``arch`` is unknown, ``options`` do not apply to it, or a spatial size is not a
        multiple of the network's ``2**(number of max-pools)`` (the message names the shape
        and the multiple).
    """
    if callable(arch):
        return
    if arch == "unet":
        UNet.check_input_shape(input_shape, _unet_knobs(options)["levels"])
        return
    network = _SSN3D.get(arch) if isinstance(arch, str) else None
    if network is None:
        raise ValueError(
            f"Unknown segmentation architecture {arch!r}. Available architectures: "
            f"{', '.join(list_segmentation_architectures())}; or pass a callable "
            "(n_classes, input_shape, in_channels, **options) -> torch.nn.Module."
        )
    if options:
        raise ValueError(
            f"Architecture {arch!r} (SSN3D {network.keras_name}) has a fixed layout and takes "
            f"no options; got {', '.join(sorted(options))}. The U-Net knobs "
            f"({', '.join(UNET_DEFAULTS)}) apply to 'unet' only."
        )
    network.check_input_shape(input_shape)


def build_segmentation_network(
    arch: SegmentationArchitectureSpec,
    n_classes: int,
    input_shape: Sequence[int],
    in_channels: int = 1,
    **options: Any,
) -> nn.Module:
    """Build a 3D segmentation network for volumes of a given shape.

    Parameters
    ----------
    arch : str or callable
        A name from :func:`list_segmentation_architectures`, or a factory
        ``(n_classes, input_shape, in_channels, **options) -> torch.nn.Module`` returning a
        module that maps ``(N, in_channels, D, H, W)`` tensors to ``(N, n_classes, D, H, W)``
        logits.
    n_classes : int
        Number of classes (output channels).
    input_shape : sequence of int
        Spatial shape ``(D, H, W)`` of one volume.
    in_channels : int, default=1
        Number of input channels.
    **options
        For ``"unet"``: ``base_filters`` (default 8), ``filter_multiplier`` (2.0), ``levels``
        (3), ``last_filters`` (8), ``batch_norm`` (True), see :data:`UNET_DEFAULTS` and
        :class:`~skdistill.architectures.unet.UNet`. The SSN3D nets take none. A callable
        ``arch`` receives them all.

    Returns
    -------
    torch.nn.Module
        The untrained network.

    Raises
    ------
    ValueError
        If ``arch`` is unknown (the message lists the available names), ``options`` do not
        apply to it, or the spatial sizes are not multiples of what its pooling needs.
    TypeError
        If a factory does not return a ``torch.nn.Module``.
    """
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (D, H, W); got {input_shape}.")
    if callable(arch):
        module = arch(n_classes, input_shape, in_channels, **options)
        if not isinstance(module, nn.Module):
            raise TypeError(
                f"The architecture factory {arch!r} returned {type(module).__name__}, "
                "not a torch.nn.Module."
            )
        return module
    check_segmentation_input_size(arch, input_shape, **options)
    return SEGMENTATION_ARCHITECTURES[arch](n_classes, input_shape, in_channels, **options)


def _unet_knobs(options: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - set(UNET_DEFAULTS))
    if unknown:
        hint = ""
        if "spatial_dims" in unknown:
            hint = " For a 2D U-Net call build_unet(..., spatial_dims=2)."
        raise ValueError(
            f"Unknown option(s) {', '.join(unknown)} for architecture 'unet'; its options are "
            f"{', '.join(UNET_DEFAULTS)}.{hint}"
        )
    return {**UNET_DEFAULTS, **options}
