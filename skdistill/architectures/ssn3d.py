"""SSN3D: supervised voxel-wise segmentation nets of Liu, Zeng et al. (ICIP 2018).

Faithful PyTorch ports of the Keras networks the authors published in the public GitHub
repository ``xulabs/projects``, file ``segmentation/model.py``: functions ``FCN8``, ``FCN1``,
``FCN_ed`` (the one their training script ``segmentation/FCN.py`` uses) and ``FCN_aspp``.
Attribute names follow the Keras variable names (``score_pool1``, ``fc4``, ``fcp2``, ...), so
each layer can be matched with its line in ``model.py``.

What the port keeps: 3x3x3 (1x1x1 in the heads) "same" convolutions with bias, ReLU exactly where
Keras has ``activation='relu'`` (every other convolution is linear), max-pooling of size 2 and
stride 2, nearest-neighbour up-sampling (Keras ``UpSampling3D``), additive skips, concatenation in
the ASPP head, dropout 0.7 and Keras' Glorot-uniform / zero-bias initialisation. What changes:
channels first; the two output classes of ``model.py`` become ``n_classes``; the networks return
voxel-wise logits ``(N, n_classes, D, H, W)``, without the final reshape and softmax (the loss
applies the softmax). Keras' "same" pooling rounds odd sizes up and the skip additions then fail,
so the spatial sizes must be multiples of :attr:`SSN3DNetwork.required_multiple` (8, or 4 for
FCN_aspp, which pools twice).

Parameter counts for 40^3 one-channel input and 2 classes equal those of the Keras models:
FCN8 2,042,342; FCN1 2,042,164; FCN_ed 895,746; FCN_aspp 1,318,434.

>>> import torch
>>> from skdistill.architectures.ssn3d import FCNEncoderDecoder
>>> net = FCNEncoderDecoder(in_channels=1, n_classes=2)
>>> sum(p.numel() for p in net.parameters())
895746
>>> net(torch.zeros(1, 1, 8, 8, 8)).shape
torch.Size([1, 2, 8, 8, 8])
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .dsrf3d import glorot_uniform_zero_bias

__all__ = [
    "ENCODER",
    "FCN1",
    "FCN8",
    "FCNASPP",
    "ConvBlock",
    "FCNEncoderDecoder",
    "SSN3DEncoder",
    "SSN3DNetwork",
]

#: Filters of the two 3x3x3 convolutions of each encoder block (Keras ``conv1_1`` ... ``conv3_2``),
#: each block followed by a max-pool of size 2 (``pool1`` ... ``pool3``): 40 -> 20 -> 10 -> 5.
ENCODER: tuple[tuple[int, ...], ...] = ((32, 32), (64, 64), (128, 128))


def _conv(
    in_channels: int, out_channels: int, kernel_size: int, relu: bool, dilation: int = 1
) -> nn.Module:
    """Keras ``Conv3D(out_channels, kernel_size, padding='same', dilation_rate=dilation)``."""
    padding = dilation * (kernel_size - 1) // 2
    conv = nn.Conv3d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation)
    return nn.Sequential(conv, nn.ReLU(inplace=True)) if relu else conv


class ConvBlock(nn.Sequential):
    """3x3x3 "same" convolutions, each followed by ReLU.

    Parameters
    ----------
    in_channels : int
        Channels of the block's input.
    filters : sequence of int
        Output channels of each convolution.
    """

    def __init__(self, in_channels: int, filters: Sequence[int]) -> None:
        layers = []
        for out_channels in filters:
            layers.append(_conv(in_channels, out_channels, 3, relu=True))
            in_channels = out_channels
        super().__init__(*layers)


class SSN3DEncoder(nn.Module):
    """The shared encoder: :class:`ConvBlock` then max-pool 2, once per row of ``blocks``.

    Parameters
    ----------
    in_channels : int
        Channels of the input volumes.
    blocks : sequence of sequence of int
        Filters of each block's convolutions (see :data:`ENCODER`).
    """

    def __init__(self, in_channels: int, blocks: Sequence[Sequence[int]]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList()
        for filters in blocks:
            self.blocks.append(ConvBlock(in_channels, filters))
            in_channels = filters[-1]
        self.pool = nn.MaxPool3d(2, stride=2)

    def forward(self, x: Tensor) -> list[Tensor]:
        """Return the output of every pool, ``[pool1, pool2, ...]``; ``pool_k`` is ``D / 2**k``."""
        pools = []
        for block in self.blocks:
            x = self.pool(block(x))
            pools.append(x)
        return pools


class SSN3DNetwork(nn.Module, metaclass=ABCMeta):
    """Base class: the input-size check and the encoder pass shared by the four SSN3D nets.

    A subclass builds its ``encoder`` (an :class:`SSN3DEncoder`) and its head, and maps the
    encoder's pools to logits in ``_decode(pool1, pool2, ...)``.
    """

    #: Spatial sizes must be multiples of this (2 ** number of max-pools).
    required_multiple: int = 8
    #: Name of the Keras function in ``segmentation/model.py``.
    keras_name: str = ""

    encoder: SSN3DEncoder

    @classmethod
    def check_input_shape(cls, input_shape: Sequence[int]) -> None:
        """Raise ``ValueError`` unless every spatial size is a positive multiple of
        :attr:`required_multiple`.

        Parameters
        ----------
        input_shape : sequence of int
            Spatial shape ``(D, H, W)`` of one volume.
        """
        shape = tuple(int(s) for s in input_shape)
        multiple = cls.required_multiple
        if len(shape) != 3 or any(s <= 0 or s % multiple for s in shape):
            pools = multiple.bit_length() - 1
            raise ValueError(
                f"Volumes of shape {shape} do not fit the SSN3D network {cls.keras_name}: its "
                f"{pools} max-pools of size 2 need a 3D shape whose sizes are all multiples of "
                f"{multiple}. Crop or pad the subtomograms (e.g. to 40^3)."
            )

    def forward(self, x: Tensor) -> Tensor:
        """Map ``(N, C, D, H, W)`` volumes to logits ``(N, n_classes, D, H, W)``."""
        self.check_input_shape(x.shape[2:])
        return self._decode(*self.encoder(x))

    @abstractmethod
    def _decode(self, *pools: Tensor) -> Tensor:
        """Logits ``(N, n_classes, D, H, W)`` of the encoder's pools ``pool1, pool2, ...``."""

    def _init_weights(self) -> None:
        self.apply(glorot_uniform_zero_bias)


class _FCNTrunk(SSN3DNetwork):
    """The layers :class:`FCN8` and :class:`FCN1` share: encoder, fc4, drop5, fc6, drop7, score1.

    Subclasses add their up-sampling head after these, then call ``_init_weights``.
    """

    def __init__(self, in_channels: int, n_classes: int) -> None:
        super().__init__()
        self.encoder = SSN3DEncoder(in_channels, ENCODER)
        self.fc4 = _conv(ENCODER[2][-1], 1024, 1, relu=True)
        self.drop5 = nn.Dropout(0.7)
        self.fc6 = _conv(1024, 1024, 1, relu=True)
        self.drop7 = nn.Dropout(0.7)
        self.score1 = _conv(1024, n_classes, 1, relu=False)

    def _score1(self, pool3: Tensor) -> Tensor:
        """Class scores ``score1`` ``(N, k, D/8)`` of ``pool3`` ``(N, 128, D/8)``."""
        return self.score1(self.drop7(self.fc6(self.drop5(self.fc4(pool3)))))


class FCN8(_FCNTrunk):
    """Keras ``FCN8``: encoder, two 1x1x1 conv-1024 layers, FCN-8s style additive skips.

    ``fc4`` and ``fc6`` are ReLU convolutions followed by dropout 0.7; the class scores
    ``score1``, ``score_pool1`` (of ``pool2``) and ``score_pool2`` (of ``pool1``) are linear.

    Parameters
    ----------
    in_channels : int, default=1
        Channels of the input volumes.
    n_classes : int, default=2
        Number of output channels (voxel-wise logits).
    """

    keras_name = "FCN8"

    def __init__(self, in_channels: int = 1, n_classes: int = 2) -> None:
        super().__init__(in_channels, n_classes)  # encoder, fc4, drop5, fc6, drop7, score1
        self.score_pool1 = _conv(ENCODER[1][-1], n_classes, 1, relu=False)
        self.score_pool2 = _conv(ENCODER[0][-1], n_classes, 1, relu=False)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self._init_weights()

    def _decode(self, pool1: Tensor, pool2: Tensor, pool3: Tensor) -> Tensor:
        # pool1 (N, 32, D/2), pool2 (N, 64, D/4), pool3 (N, 128, D/8)
        score2 = self.up(self._score1(pool3)) + self.score_pool1(pool2)  # (N, k, D/4)
        score3 = self.up(score2) + self.score_pool2(pool1)  # (N, k, D/2)
        return self.up(score3)  # (N, k, D)


class FCN1(_FCNTrunk):
    """Keras ``FCN1``: the trunk of :class:`FCN8` without skips.

    Three nearest-neighbour up-samplings with linear 1x1x1 class-score convolutions between
    them (``score2``, ``score3``, ``score4``). ``model.py`` also defines ``score5``, which no
    output depends on (Keras leaves it out of the model), so it is not built here.

    Parameters
    ----------
    in_channels : int, default=1
        Channels of the input volumes.
    n_classes : int, default=2
        Number of output channels (voxel-wise logits).
    """

    keras_name = "FCN1"

    def __init__(self, in_channels: int = 1, n_classes: int = 2) -> None:
        super().__init__(in_channels, n_classes)  # encoder, fc4, drop5, fc6, drop7, score1
        self.score2 = _conv(n_classes, n_classes, 1, relu=False)
        self.score3 = _conv(n_classes, n_classes, 1, relu=False)
        self.score4 = _conv(n_classes, n_classes, 1, relu=False)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self._init_weights()

    def _decode(self, pool1: Tensor, pool2: Tensor, pool3: Tensor) -> Tensor:
        # Only pool3 (N, 128, D/8) is used.
        h = self.up(self._score1(pool3))  # (N, k, D/4)
        h = self.up(self.score3(self.score2(h)))  # (N, k, D/2)
        return self.up(self.score4(h))  # (N, k, D)


class FCNEncoderDecoder(SSN3DNetwork):
    """Keras ``FCN_ed``, the net the authors train: a decoder mirroring the encoder.

    Each decoder step is a ReLU 1x1x1 convolution (``score1_1``, ``score2_1``, ``score3_1``:
    128, 64, 32 channels) and a nearest-neighbour up-sampling; the first two are added to a
    linear 1x1x1 projection of the encoder's ``pool2`` (``score_pool1``) and ``pool1``
    (``score_pool2``). A final linear 1x1x1 convolution (``upscore4``) gives the class scores.

    Parameters
    ----------
    in_channels : int, default=1
        Channels of the input volumes.
    n_classes : int, default=2
        Number of output channels (voxel-wise logits).
    """

    keras_name = "FCN_ed"

    def __init__(self, in_channels: int = 1, n_classes: int = 2) -> None:
        super().__init__()
        (f1, f2, f3) = (block[-1] for block in ENCODER)  # 32, 64, 128
        self.encoder = SSN3DEncoder(in_channels, ENCODER)
        self.score1_1 = _conv(f3, 128, 1, relu=True)
        self.score_pool1 = _conv(f2, 128, 1, relu=False)
        self.score2_1 = _conv(128, 64, 1, relu=True)
        self.score_pool2 = _conv(f1, 64, 1, relu=False)
        self.score3_1 = _conv(64, 32, 1, relu=True)
        self.upscore4 = _conv(32, n_classes, 1, relu=False)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self._init_weights()

    def _decode(self, pool1: Tensor, pool2: Tensor, pool3: Tensor) -> Tensor:
        # pool1 (N, 32, D/2), pool2 (N, 64, D/4), pool3 (N, 128, D/8)
        score1 = self.up(self.score1_1(pool3)) + self.score_pool1(pool2)  # (N, 128, D/4)
        score2 = self.up(self.score2_1(score1)) + self.score_pool2(pool1)  # (N, 64, D/2)
        # Keras upsamples before the linear 1x1x1 upscore4; nearest upsampling commutes with
        # a pointwise convolution, so scoring first gives the same output at 1/8 the cost.
        return self.up(self.upscore4(self.score3_1(score2)))  # (N, k, D)


class FCNASPP(SSN3DNetwork):
    """Keras ``FCN_aspp``: two encoder blocks and an atrous spatial pyramid pooling head.

    After ``pool2`` comes one ReLU 3x3x3 convolution of dilation 2 (``conv3_1``, 128 channels)
    and three parallel ReLU branches on it (``fcp1`` 1x1x1, ``fcp2`` 3x3x3 dilation 2, ``fcp3``
    3x3x3 dilation 4; 128 channels each), concatenated with ``conv3_1`` (512 channels),
    up-sampled x4 and scored by a linear 1x1x1 convolution (``upscore4``).

    Parameters
    ----------
    in_channels : int, default=1
        Channels of the input volumes.
    n_classes : int, default=2
        Number of output channels (voxel-wise logits).
    """

    required_multiple = 4
    keras_name = "FCN_aspp"

    def __init__(self, in_channels: int = 1, n_classes: int = 2) -> None:
        super().__init__()
        self.encoder = SSN3DEncoder(in_channels, ENCODER[:2])
        self.conv3_1 = _conv(ENCODER[1][-1], 128, 3, relu=True, dilation=2)
        self.fcp1 = _conv(128, 128, 1, relu=True)
        self.fcp2 = _conv(128, 128, 3, relu=True, dilation=2)
        self.fcp3 = _conv(128, 128, 3, relu=True, dilation=4)
        self.up = nn.Upsample(scale_factor=4, mode="nearest")
        self.upscore4 = _conv(4 * 128, n_classes, 1, relu=False)
        self._init_weights()

    def _decode(self, pool1: Tensor, pool2: Tensor) -> Tensor:
        # Only pool2 (N, 64, D/4) is used.
        h = self.conv3_1(pool2)  # (N, 128, D/4)
        h = torch.cat([self.fcp1(h), self.fcp2(h), self.fcp3(h), h], dim=1)  # (N, 512, D/4)
        # Same result as Keras' upscore4(up(h)) at 1/64 of the cost (pointwise conv first).
        return self.up(self.upscore4(h))  # (N, k, D)
