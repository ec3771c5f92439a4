"""Image-formation steps of the simulator, each tested alone."""

import numpy as np
import pytest

from skdistill.datasets.physics import (
    add_noise,
    apply_fourier_filter,
    ctf,
    electron_wavelength,
    missing_wedge_mask,
    random_euler_angles,
)


def test_wavelength_at_300_kv():
    assert electron_wavelength(300.0) == pytest.approx(0.0197, abs=1e-4)


def test_ctf_phase_contrast_profile():
    size, voxel = 64, 9.2
    values = ctf(size, voxel)
    assert values.shape == (size, size, size // 2 + 1)
    assert values[0, 0, 0] == 0.0  # no contrast at the origin
    assert np.abs(values).max() <= 1.0
    # Along k_x: the first zero of an underfocused CTF (dz = -5 um) lies where
    # Cs l^3 k^4 + 2 |dz| l k^2 = 2, i.e. near k = 0.0319 / A.
    profile = values[0, 0, :]
    k = np.fft.rfftfreq(size, d=voxel)
    first_sign_change = k[np.flatnonzero(np.diff(np.sign(profile[1:])))[0] + 1]
    assert 0.025 < first_sign_change < 0.04


def test_missing_wedge_matches_its_geometry():
    size = 32
    mask = missing_wedge_mask(size, (-60, 60))
    kz, _, kx = np.meshgrid(*(np.fft.fftfreq(size),) * 2, np.fft.rfftfreq(size), indexing="ij")
    expected = np.abs(kz) <= np.tan(np.radians(60)) * np.abs(kx) + 1e-12
    expected |= (kz == 0) & (kx == 0)
    np.testing.assert_array_equal(mask, expected)


def test_wedge_filtered_volume_has_no_power_in_the_wedge(seed):
    size = 40
    volume = np.random.default_rng(seed).normal(size=(size,) * 3)
    filtered = apply_fourier_filter(volume, missing_wedge_mask(size, (-60, 60)))
    power = np.abs(np.fft.fftn(filtered)) ** 2
    kz, _, kx = np.meshgrid(*(np.fft.fftfreq(size),) * 3, indexing="ij")
    in_wedge = np.abs(kz) > np.tan(np.radians(60)) * np.abs(kx) + 1e-9
    assert power[in_wedge].sum() < 0.01 * power[~in_wedge].sum()


@pytest.mark.parametrize("snr", [0.05, 0.5, 5.0])
def test_noise_gives_requested_snr(snr, seed):
    rng = np.random.default_rng(seed)
    signal = apply_fourier_filter(rng.normal(size=(4, 24, 24, 24)), ctf(24, 9.2))
    noisy = add_noise(signal, snr, np.random.default_rng(seed + 1))
    measured = signal.var() / (noisy - signal).var()
    assert measured == pytest.approx(snr, rel=0.1)


def test_noise_rejects_non_positive_snr():
    with pytest.raises(ValueError, match="snr must be > 0"):
        add_noise(np.zeros((1, 4, 4, 4)), 0.0, np.random.default_rng(0))


def test_random_euler_angles_are_uniform_and_seeded():
    angles = random_euler_angles(20000, np.random.default_rng(0))
    assert angles.shape == (20000, 3)
    # Uniform rotations send the z axis uniformly over the sphere: cos(tilt) ~ U(-1, 1).
    cos_tilt = np.cos(np.radians(angles[:, 1]))
    assert abs(cos_tilt.mean()) < 0.02
    assert cos_tilt.var() == pytest.approx(1 / 3, rel=0.05)
    np.testing.assert_array_equal(angles[:5], random_euler_angles(5, np.random.default_rng(0)))
