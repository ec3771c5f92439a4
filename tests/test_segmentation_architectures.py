"""Segmentation networks: SSN3D (Liu, Zeng et al. 2018), the light U-Net, their registry."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from skdistill.architectures.segmentation import (
    SEGMENTATION_ARCHITECTURES,
    build_segmentation_network,
    build_unet,
    check_segmentation_input_size,
    list_segmentation_architectures,
)
from skdistill.architectures.unet import UNet

SSN3D = ["ssn3d", "ssn3d_aspp", "ssn3d_fcn1", "ssn3d_fcn8"]

# (arch, parameters for 40^3 one-channel input and 2 classes) of the authors' Keras models.
SSN3D_PARAMETER_COUNTS = [
    ("ssn3d", 895_746),  # FCN_ed
    ("ssn3d_fcn8", 2_042_342),
    ("ssn3d_fcn1", 2_042_164),
    ("ssn3d_aspp", 1_318_434),
]

# [arch, options, in_channels, n_classes, input_shape]
SHAPE_CASES = [
    ["ssn3d", {}, 1, 2, (8, 8, 8)],
    ["ssn3d", {}, 2, 3, (16, 8, 24)],
    ["ssn3d_fcn8", {}, 1, 3, (8, 16, 8)],
    ["ssn3d_fcn1", {}, 1, 2, (16, 8, 8)],
    ["ssn3d_aspp", {}, 1, 3, (4, 8, 12)],
    ["unet", {}, 1, 2, (4, 8, 12)],
    ["unet", {"levels": 2, "base_filters": 4, "last_filters": 2}, 2, 3, (2, 4, 6)],
    ["unet", {"filter_multiplier": 1.5, "last_filters": 4}, 1, 3, (8, 8, 8)],
    ["unet", {"levels": 4, "batch_norm": False}, 1, 2, (8, 16, 8)],
]

# [arch, options, bad input_shape, required multiple]
DIVISIBILITY_CASES = [
    ["ssn3d", {}, (40, 40, 36), 8],
    ["ssn3d_fcn8", {}, (12, 12, 12), 8],
    ["ssn3d_fcn1", {}, (4, 4, 4), 8],
    ["ssn3d_aspp", {}, (42, 40, 40), 4],
    ["unet", {}, (6, 8, 8), 4],
    ["unet", {"levels": 4}, (12, 12, 12), 8],
]

# Rectified convolutions: Keras activation='relu' (the others are linear).
SSN3D_RELUS = [
    ("ssn3d", 6 + 3),
    ("ssn3d_fcn8", 6 + 2),
    ("ssn3d_fcn1", 6 + 2),
    ("ssn3d_aspp", 4 + 4),
]


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _shape_pattern(shape: tuple[int, ...]) -> str:
    return r"\(" + ", ".join(map(str, shape)) + r"\)"


def test_list_segmentation_architectures():
    assert list_segmentation_architectures() == [
        "ssn3d",
        "ssn3d_aspp",
        "ssn3d_fcn1",
        "ssn3d_fcn8",
        "unet",
    ]
    assert set(SEGMENTATION_ARCHITECTURES) == set(list_segmentation_architectures())


@pytest.mark.parametrize(("arch", "expected"), SSN3D_PARAMETER_COUNTS)
def test_ssn3d_parameter_counts_match_the_keras_models(arch, expected):
    net = build_segmentation_network(arch, n_classes=2, input_shape=(40, 40, 40))
    assert _count(net) == expected


@pytest.mark.parametrize("batch_norm", [False, True])
def test_2d_unet_with_original_knobs_is_the_original_unet(batch_norm):
    net = build_unet(
        2,
        (64, 64),
        1,
        spatial_dims=2,
        base_filters=64,
        filter_multiplier=2,
        levels=5,
        last_filters=64,
        batch_norm=batch_norm,
    )
    assert net.filters == (64, 128, 256, 512, 1024)
    assert abs(_count(net) - 31.0e6) <= 0.01 * 31.0e6


@pytest.mark.parametrize(("arch", "options", "in_channels", "n_classes", "shape"), SHAPE_CASES)
def test_output_shape(arch, options, in_channels, n_classes, shape):
    net = build_segmentation_network(arch, n_classes, shape, in_channels, **options).eval()
    with torch.no_grad():
        out = net(torch.randn(2, in_channels, *shape))
    assert out.shape == (2, n_classes, *shape)


def test_2d_unet_output_shape():
    net = build_unet(3, (8, 12), 2, spatial_dims=2, base_filters=4, levels=3, last_filters=4)
    with torch.no_grad():
        out = net.eval()(torch.randn(2, 2, 8, 12))
    assert out.shape == (2, 3, 8, 12)


def test_networks_return_logits_not_probabilities():
    net = build_segmentation_network("ssn3d", 2, (8, 8, 8)).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 1, 8, 8, 8))
    assert not torch.allclose(out.sum(dim=1), torch.ones(1))
    assert not any(isinstance(m, nn.Softmax | nn.LogSoftmax) for m in net.modules())


@pytest.mark.parametrize(("arch", "options", "shape", "multiple"), DIVISIBILITY_CASES)
def test_divisibility_error_names_shape_and_multiple(arch, options, shape, multiple):
    message = rf"{_shape_pattern(shape)}.*multiples of {multiple}\b"
    with pytest.raises(ValueError, match=message):
        check_segmentation_input_size(arch, shape, **options)
    with pytest.raises(ValueError, match=message):
        build_segmentation_network(arch, 2, shape, **options)


@pytest.mark.parametrize("arch", [*SSN3D, "unet"])
def test_forward_checks_the_shape(arch):
    net = build_segmentation_network(arch, 2, (8, 8, 8))
    with pytest.raises(ValueError, match=r"\(8, 8, 6\)"):
        net(torch.zeros(1, 1, 8, 8, 6))


def test_unknown_architecture_lists_available():
    message = (
        r"Unknown segmentation architecture 'fcn'.*ssn3d, ssn3d_aspp, ssn3d_fcn1, ssn3d_fcn8, unet"
    )
    with pytest.raises(ValueError, match=message):
        build_segmentation_network("fcn", 2, (8, 8, 8))
    with pytest.raises(ValueError, match=message):
        check_segmentation_input_size("fcn", (8, 8, 8))


@pytest.mark.parametrize("arch", SSN3D)
def test_unet_knobs_on_ssn3d_raise(arch):
    with pytest.raises(ValueError, match=rf"'{arch}'.*takes no options; got base_filters, levels"):
        build_segmentation_network(arch, 2, (8, 8, 8), levels=3, base_filters=4)


def test_unknown_unet_option_raises():
    with pytest.raises(ValueError, match=r"Unknown option\(s\) depth for architecture 'unet'"):
        build_segmentation_network("unet", 2, (8, 8, 8), depth=3)
    with pytest.raises(ValueError, match=r"spatial_dims.*build_unet"):
        build_segmentation_network("unet", 2, (8, 8, 8), spatial_dims=2)


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        ({"levels": 1}, "levels must be an integer >= 2"),
        ({"base_filters": 0}, "base_filters must be an integer >= 1"),
        ({"last_filters": 2.5}, "last_filters must be an integer >= 1"),
        ({"filter_multiplier": 0}, "filter_multiplier must be a positive number"),
        ({"filter_multiplier": 0.1, "base_filters": 2}, "levels without feature maps"),
    ],
)
def test_invalid_unet_knobs(knobs, message):
    with pytest.raises(ValueError, match=message):
        UNet(**knobs)


def test_unet_filters_and_numpy_knobs():
    net = build_segmentation_network(
        "unet", 2, (8, 8, 8), filter_multiplier=np.float64(1.5), levels=np.int64(3)
    )
    assert net.filters == (8, 12, 18)
    assert net.required_multiple == 4


def test_callable_factory_gets_options():
    def factory(n_classes, input_shape, in_channels, width=4):
        return nn.Sequential(
            nn.Conv3d(in_channels, width, 3, padding=1), nn.Conv3d(width, n_classes, 1)
        )

    net = build_segmentation_network(factory, 3, (5, 6, 7), 2, width=6)
    assert net(torch.zeros(1, 2, 5, 6, 7)).shape == (1, 3, 5, 6, 7)
    assert net[0].out_channels == 6
    check_segmentation_input_size(factory, (5, 6, 7))
    with pytest.raises(TypeError, match=r"not a torch\.nn\.Module"):
        build_segmentation_network(lambda *args: "net", 3, (5, 6, 7))


@pytest.mark.parametrize("arch", [*SSN3D, "unet"])
def test_keras_initialisation(arch):
    net = build_segmentation_network(arch, 2, (8, 8, 8))
    convs = [m for m in net.modules() if isinstance(m, nn.Conv3d | nn.ConvTranspose3d)]
    assert convs
    for conv in convs:
        assert conv.bias is None or torch.count_nonzero(conv.bias) == 0
        out_channels, in_channels, *kernel = conv.weight.shape  # (in, out) if transposed
        fans = (in_channels + out_channels) * math.prod(kernel)
        assert conv.weight.abs().max() <= math.sqrt(6 / fans)


def test_2d_unet_initialisation():
    net = build_unet(2, (8, 8), spatial_dims=2, batch_norm=False)
    biases = [m.bias for m in net.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    # levels=3: 2 * 3 encoder + 2 * 2 decoder convolutions, 2 up-convolutions, 1 head
    assert len(biases) == 13 and all(torch.count_nonzero(b) == 0 for b in biases)


@pytest.mark.parametrize(("arch", "expected"), SSN3D_RELUS)
def test_ssn3d_layers(arch, expected):
    net = build_segmentation_network(arch, 2, (8, 8, 8))
    modules = list(net.modules())
    assert sum(isinstance(m, nn.ReLU) for m in modules) == expected
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in modules)
    assert {m.kernel_size for m in modules if isinstance(m, nn.MaxPool3d)} == {2}
    assert {m.mode for m in modules if isinstance(m, nn.Upsample)} == {"nearest"}
    dropouts = [m.p for m in modules if isinstance(m, nn.Dropout)]
    assert dropouts == ([0.7, 0.7] if arch in ("ssn3d_fcn8", "ssn3d_fcn1") else [])


def test_aspp_dilations():
    net = build_segmentation_network("ssn3d_aspp", 2, (8, 8, 8))
    dilations = [
        (m.dilation[0], m.kernel_size[0]) for m in net.modules() if isinstance(m, nn.Conv3d)
    ]
    # 4 encoder convs, conv3_1, fcp1, fcp2, fcp3, upscore4
    assert dilations == [(1, 3)] * 4 + [(2, 3), (1, 1), (2, 3), (4, 3), (1, 1)]
