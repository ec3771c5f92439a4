"""Layer tables and the network builder."""

import pytest
import torch
from torch import nn

from skdistill.architectures import build_network, count_parameters, list_architectures

# (arch, parameters for 40^3 input and 23 classes) as published by Guo et al. (2018).
PAPER_PARAMETER_COUNTS = [
    ("dsrf3d_v2", 18_316_599),
    ("s1", 1_014_071),
    ("s2", 506_039),
    ("s3", 161_639),
]

# (arch, smallest cubic input it accepts)
MINIMUM_SIZES = [("dsrf3d_v2", 8), ("s1", 27), ("s2", 27), ("s3", 27), ("tiny", 1)]


def test_list_architectures():
    assert list_architectures() == ["dsrf3d_v2", "s1", "s2", "s3", "tiny"]


@pytest.mark.parametrize(("arch", "expected"), PAPER_PARAMETER_COUNTS)
def test_parameter_counts_match_the_paper(arch, expected):
    net = build_network(arch, n_classes=23, input_shape=(40, 40, 40))
    assert count_parameters(net) == expected


@pytest.mark.parametrize(("arch", "size"), MINIMUM_SIZES)
def test_output_shape_at_minimum_size(arch, size):
    net = build_network(arch, n_classes=5, input_shape=(size,) * 3).eval()
    with torch.no_grad():
        out = net(torch.zeros(2, 1, size, size, size))
    assert out.shape == (2, 5)


@pytest.mark.parametrize(("arch", "size"), [m for m in MINIMUM_SIZES if m[1] > 1])
def test_too_small_volume_names_the_minimum(arch, size):
    with pytest.raises(ValueError, match=rf"at least {size} voxels"):
        build_network(arch, n_classes=3, input_shape=(size - 1,) * 3)


def test_teacher_has_dropout_07_and_students_none():
    dropouts = [
        m.p for m in build_network("dsrf3d_v2", 3, (8, 8, 8)).modules() if isinstance(m, nn.Dropout)
    ]
    assert dropouts == [0.7, 0.7]
    for arch in ("s1", "s2", "s3"):
        student = build_network(arch, 3, (27, 27, 27))
        assert not any(isinstance(m, nn.Dropout) for m in student.modules())


def test_pool_sizes():
    pools = {
        arch: {
            m.kernel_size
            for m in build_network(arch, 3, (27,) * 3).modules()
            if isinstance(m, nn.MaxPool3d)
        }
        for arch in ("dsrf3d_v2", "s1")
    }
    assert pools == {"dsrf3d_v2": {2}, "s1": {3}}


def test_keras_initialisation_zero_biases():
    net = build_network("s3", 3, (27, 27, 27))
    biases = [m.bias for m in net.modules() if isinstance(m, nn.Conv3d | nn.Linear)]
    assert all(torch.count_nonzero(b) == 0 for b in biases)


def test_unknown_architecture_lists_available():
    with pytest.raises(ValueError, match=r"Unknown architecture 'vgg'.*dsrf3d_v2, s1, s2, s3"):
        build_network("vgg", 3, (40, 40, 40))


def test_callable_architecture():
    def factory(n_classes, input_shape, in_channels):
        return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 4**3, n_classes))

    net = build_network(factory, 3, (4, 4, 4))
    assert net(torch.zeros(1, 1, 4, 4, 4)).shape == (1, 3)


def test_callable_must_return_a_module():
    with pytest.raises(TypeError, match=r"not a torch\.nn\.Module"):
        build_network(lambda *args: "not a net", 3, (4, 4, 4))
