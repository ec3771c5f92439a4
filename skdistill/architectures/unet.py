"""A U-Net with four size knobs (Matuszewski & Sintorn 2019), in 2D or 3D.

Matuszewski and Sintorn shrink the U-Net of Ronneberger et al. (2015) with four knobs:
``base_filters`` (feature maps of the first level), ``filter_multiplier`` (factor per level
down), ``levels`` (resolution levels of the encoder and of the decoder) and ``last_filters``
(feature maps of the decoder's last two convolutions). Level ``l`` (0 at full resolution) has
``round(base_filters * filter_multiplier**l)`` feature maps. Every level is a :class:`DoubleConv`
(two 3x3(x3) "same" convolutions, each with optional batch-norm and ReLU); the encoder goes down
by 2x max-pooling (:class:`Down`), the decoder up by a 2x transposed convolution to the width of
the level it joins, concatenated with that level's encoder output (:class:`Up`). A 1x1(x1)
convolution gives the class logits. ``base_filters=64, filter_multiplier=2, levels=5,
last_filters=64`` in 2D is the original U-Net (with "same" padding): 31.03 M parameters for one
input channel and two classes (31.04 M with batch-norm).

Parameters of the 3D network for one input channel and two classes, with batch-norm (whose
convolutions have no bias) and without:

============  ==========  ======  ============  ==========  =============
base_filters  multiplier  levels  last_filters  batch-norm  no batch-norm
============  ==========  ======  ============  ==========  =============
64            2           5       64            90,298,626  90,292,738
32            2           4       32            5,601,154   5,599,746
16            2           3       16            339,586     339,266
8             2           3       8             85,186      85,026
8             1.5         3       4             39,570      39,462
============  ==========  ======  ============  ==========  =============

>>> import torch
>>> from skdistill.architectures.unet import UNet
>>> net = UNet(spatial_dims=3, in_channels=1, n_classes=2, base_filters=8, levels=3)
>>> net.filters
(8, 16, 32)
>>> net(torch.zeros(1, 1, 8, 8, 8)).shape
torch.Size([1, 2, 8, 8, 8])
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral, Real

import torch
from torch import nn

from .dsrf3d import glorot_uniform_zero_bias

__all__ = ["DoubleConv", "Down", "UNet", "Up"]

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_CONV_TRANSPOSE = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_BATCH_NORM = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_MAX_POOL = {2: nn.MaxPool2d, 3: nn.MaxPool3d}


class DoubleConv(nn.Sequential):
    """Two 3x3(x3) "same" convolutions, each followed by batch-norm (optional) and ReLU.

    Parameters
    ----------
    spatial_dims : {2, 3}
        Number of spatial dimensions.
    in_channels : int
        Channels of the input.
    out_channels : int
        Channels of both convolutions' outputs.
    batch_norm : bool, default=True
        Add batch-norm after each convolution (which then has no bias).
    """

    def __init__(
        self, spatial_dims: int, in_channels: int, out_channels: int, batch_norm: bool = True
    ) -> None:
        layers: list[nn.Module] = []
        for channels in (in_channels, out_channels):
            layers.append(
                _CONV[spatial_dims](channels, out_channels, 3, padding=1, bias=not batch_norm)
            )
            if batch_norm:
                layers.append(_BATCH_NORM[spatial_dims](out_channels))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class Down(nn.Sequential):
    """Max-pool 2 then :class:`DoubleConv`: one encoder level below the first.

    Parameters
    ----------
    spatial_dims : {2, 3}
        Number of spatial dimensions.
    in_channels : int
        Channels of the input.
    out_channels : int
        Channels of the output.
    batch_norm : bool, default=True
        Use batch-norm in the :class:`DoubleConv`.
    """

    def __init__(
        self, spatial_dims: int, in_channels: int, out_channels: int, batch_norm: bool = True
    ) -> None:
        super().__init__(
            _MAX_POOL[spatial_dims](2),
            DoubleConv(spatial_dims, in_channels, out_channels, batch_norm),
        )


class Up(nn.Module):
    """2x transposed convolution, concatenation with the skip, then :class:`DoubleConv`.

    The transposed convolution (kernel 2, stride 2) maps ``in_channels`` to ``skip_channels``,
    which halves the channels when the levels double them, like the original "up-conv 2x2".

    Parameters
    ----------
    spatial_dims : {2, 3}
        Number of spatial dimensions.
    in_channels : int
        Channels of the coarser input.
    skip_channels : int
        Channels of the encoder output joined at this level.
    out_channels : int
        Channels of the output.
    batch_norm : bool, default=True
        Use batch-norm in the :class:`DoubleConv`.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        self.up = _CONV_TRANSPOSE[spatial_dims](in_channels, skip_channels, 2, stride=2)
        self.conv = DoubleConv(spatial_dims, 2 * skip_channels, out_channels, batch_norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Join ``x`` ``(N, in_channels, S)`` with ``skip`` ``(N, skip_channels, 2S)``."""
        x = self.up(x)  # (N, skip_channels, 2S)
        return self.conv(torch.cat([skip, x], dim=1))  # (N, out_channels, 2S)


class UNet(nn.Module):
    """U-Net with the size knobs of Matuszewski & Sintorn (2019).

    Parameters
    ----------
    spatial_dims : {2, 3}, default=3
        Number of spatial dimensions: images ``(N, C, H, W)`` or volumes ``(N, C, D, H, W)``.
    in_channels : int, default=1
        Channels of the input.
    n_classes : int, default=2
        Number of output channels (pixel- or voxel-wise logits, no softmax).
    base_filters : int, default=8
        Feature maps of the first (full-resolution) level.
    filter_multiplier : float, default=2.0
        Factor on the feature maps per level down; level ``l`` has
        ``round(base_filters * filter_multiplier**l)``.
    levels : int, default=3
        Resolution levels of the encoder (and of the decoder); ``levels - 1`` max-pools, so the
        spatial sizes must be multiples of ``2**(levels - 1)``.
    last_filters : int, default=8
        Feature maps of the decoder's last two convolutions.
    batch_norm : bool, default=True
        Batch-norm after every 3x3(x3) convolution.

    Attributes
    ----------
    spatial_dims : int
        Number of spatial dimensions.
    levels : int
        Resolution levels.
    filters : tuple of int
        Feature maps of each level, from full resolution down.
    required_multiple : int
        ``2**(levels - 1)``: every spatial size must be a multiple of it.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        n_classes: int = 2,
        base_filters: int = 8,
        filter_multiplier: float = 2.0,
        levels: int = 3,
        last_filters: int = 8,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        _check_knobs(spatial_dims, base_filters, filter_multiplier, levels, last_filters)
        levels, last_filters, multiplier = int(levels), int(last_filters), float(filter_multiplier)
        self.spatial_dims = spatial_dims
        self.levels = levels
        self.required_multiple = 2 ** (levels - 1)
        self.filters = tuple(round(int(base_filters) * multiplier**i) for i in range(levels))
        if min(self.filters) < 1:
            raise ValueError(
                f"base_filters={base_filters} and filter_multiplier={filter_multiplier} give "
                f"levels without feature maps: {self.filters}."
            )
        f = self.filters
        self.encoder = nn.ModuleList([DoubleConv(spatial_dims, in_channels, f[0], batch_norm)])
        self.encoder.extend(
            Down(spatial_dims, f[i - 1], f[i], batch_norm) for i in range(1, levels)
        )
        # Decoder, from the coarsest join up: level i joins the output of level i + 1.
        self.decoder = nn.ModuleList(
            Up(spatial_dims, f[i + 1], f[i], f[i] if i else last_filters, batch_norm)
            for i in reversed(range(levels - 1))
        )
        self.head = _CONV[spatial_dims](last_filters, n_classes, 1)
        self.apply(_glorot_uniform_zero_bias)

    @staticmethod
    def check_input_shape(input_shape: Sequence[int], levels: int, spatial_dims: int = 3) -> None:
        """Raise ``ValueError`` unless every spatial size is a positive multiple of
        ``2**(levels - 1)``.

        Parameters
        ----------
        input_shape : sequence of int
            Spatial shape of one image or volume.
        levels : int
            Resolution levels of the U-Net.
        spatial_dims : {2, 3}, default=3
            Expected length of ``input_shape``.
        """
        if isinstance(levels, bool) or not isinstance(levels, Integral) or levels < 2:
            raise ValueError(f"levels must be an integer >= 2; got {levels!r}.")
        shape = tuple(int(s) for s in input_shape)
        multiple = 2 ** (int(levels) - 1)
        if len(shape) != spatial_dims or any(s <= 0 or s % multiple for s in shape):
            raise ValueError(
                f"Inputs of shape {shape} do not fit a {spatial_dims}D U-Net with {levels} "
                f"levels: its {levels - 1} max-pools of size 2 need {spatial_dims} sizes that "
                f"are all multiples of {multiple}. Crop or pad the inputs, or use fewer levels."
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(N, C, *S)`` inputs to logits ``(N, n_classes, *S)``."""
        self.check_input_shape(x.shape[2:], self.levels, self.spatial_dims)
        skips = []
        for level in self.encoder:
            x = level(x)  # (N, filters[i], S / 2**i) at level i
            skips.append(x)
        for up, skip in zip(self.decoder, reversed(skips[:-1]), strict=True):
            x = up(x, skip)  # (N, filters[i], S / 2**i); last_filters at i = 0
        return self.head(x)  # (N, n_classes, S)


def _check_knobs(
    spatial_dims: int, base_filters: int, filter_multiplier: float, levels: int, last_filters: int
) -> None:
    if spatial_dims not in _CONV:
        raise ValueError(f"spatial_dims must be 2 or 3; got {spatial_dims!r}.")
    for name, value, minimum in [
        ("base_filters", base_filters, 1),
        ("last_filters", last_filters, 1),
        ("levels", levels, 2),  # at least one max-pool
    ]:
        if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}.")
    multiplier = filter_multiplier
    if isinstance(multiplier, bool) or not isinstance(multiplier, Real) or not multiplier > 0:
        raise ValueError(f"filter_multiplier must be a positive number; got {multiplier!r}.")


def _glorot_uniform_zero_bias(module: nn.Module) -> None:
    # Keras' default, as for the other networks; the shared helper has no 2D transposed conv.
    if isinstance(module, nn.ConvTranspose2d):
        nn.init.xavier_uniform_(module.weight)
        nn.init.zeros_(module.bias)
    else:
        glorot_uniform_zero_bias(module)
