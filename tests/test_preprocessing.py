"""VolumeNormalizer."""

import numpy as np
import pytest

from skdistill.preprocessing import VolumeNormalizer


@pytest.mark.parametrize("shape", [(4, 6, 6, 6), (4, 1, 6, 6, 6), (4, 10)])
def test_each_volume_zero_mean_unit_variance(shape, seed):
    X = np.random.default_rng(seed).normal(5.0, 3.0, size=shape)
    Xt = VolumeNormalizer().fit_transform(X)
    flat = Xt.reshape(len(X), -1)
    np.testing.assert_allclose(flat.mean(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(flat.std(axis=1), 1, rtol=1e-12)
    assert Xt.shape == X.shape


def test_stateless_and_dtype_preserving(seed):
    X = np.random.default_rng(seed).normal(size=(3, 4, 4, 4)).astype(np.float32)
    normalizer = VolumeNormalizer().fit(X * 100)
    np.testing.assert_allclose(normalizer.transform(X), VolumeNormalizer().fit_transform(X))
    assert normalizer.transform(X).dtype == np.float32


def test_constant_volume_becomes_zeros():
    Xt = VolumeNormalizer().fit_transform(np.full((2, 4, 4, 4), 7.0))
    np.testing.assert_array_equal(Xt, 0.0)
