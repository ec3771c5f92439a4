"""The subtomogram simulator: templates, poses, SNR, wedge, determinism, user maps."""

import mrcfile
import numpy as np
import pytest
from sklearn.utils._param_validation import InvalidParameterError

from skdistill.datasets import make_subtomograms, make_templates
from skdistill.datasets.physics import rotation_matrices, transform_volumes
from skdistill.datasets.simulation import SimulationPlan, chunk_indices
from skdistill.datasets.templates import (
    fitted_assemblies,
    render_assemblies,
    synthetic_assemblies,
)

SMALL = {"n_classes": 5, "size": 24}


@pytest.fixture(scope="module")
def noisy_and_clean():
    """The same 30 particles at SNR 0.5 and noise-free, with their simulation info."""
    noisy = make_subtomograms(30, snr=0.5, random_state=3, return_info=True, **SMALL)
    clean = make_subtomograms(30, snr=None, random_state=3, return_info=True, **SMALL)
    return noisy, clean


def test_shapes_labels_and_info(noisy_and_clean):
    (X, y, info), _ = noisy_and_clean
    assert X.shape == (30, 24, 24, 24) and X.dtype == np.float32
    assert y.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(y), [6] * 5)  # balanced blocks
    assert info.class_names == ["globule", "C6-ring", "actin-like-filament", "tetrahedron", "dimer"]
    assert info.templates.shape == (5, 24, 24, 24)
    assert info.rotations.shape == (30, 3) and info.shifts.shape == (30, 3)
    assert np.abs(info.shifts).max() <= 0.05 * 24
    assert np.isfinite(X).all()


def test_noise_free_volumes_share_the_poses(noisy_and_clean):
    (_, y, info), (_, y_clean, info_clean) = noisy_and_clean
    np.testing.assert_array_equal(y, y_clean)
    np.testing.assert_array_equal(info.rotations, info_clean.rotations)
    np.testing.assert_array_equal(info.shifts, info_clean.shifts)


@pytest.mark.parametrize("snr", [0.05, 0.5, 5.0])
def test_measured_snr_matches_the_request(snr, seed):
    kwargs = {"n_classes": 4, "size": 32, "random_state": seed}
    noisy, _ = make_subtomograms(12, snr=snr, **kwargs)
    clean, _ = make_subtomograms(12, snr=None, **kwargs)
    measured = clean.var(axis=(1, 2, 3)) / (noisy - clean).var(axis=(1, 2, 3))
    np.testing.assert_allclose(measured, snr, rtol=0.1)


def test_noise_free_volume_has_no_power_in_the_missing_wedge(noisy_and_clean):
    _, (clean, _, _) = noisy_and_clean
    size = clean.shape[-1]
    power = np.abs(np.fft.fftn(clean, axes=(1, 2, 3))) ** 2
    kz, _, kx = np.meshgrid(*(np.fft.fftfreq(size),) * 3, indexing="ij")
    in_wedge = np.abs(kz) > np.tan(np.radians(60)) * np.abs(kx) + 1e-9
    assert power[:, in_wedge].sum() < 0.01 * power[:, ~in_wedge].sum()
    # Without the wedge the same region holds a large share of the power.
    full, _ = make_subtomograms(10, snr=None, tilt_range=(-90, 90), random_state=3, **SMALL)
    full_power = np.abs(np.fft.fftn(full, axes=(1, 2, 3))) ** 2
    assert full_power[:, in_wedge].sum() > 0.2 * full_power[:, ~in_wedge].sum()


@pytest.mark.parametrize("size", [32, 40])
def test_same_seed_same_data_at_once_in_chunks_and_in_parallel(size):
    kwargs = {"n_classes": 23, "size": size, "snr": 0.05, "random_state": 7}
    X, y = make_subtomograms(70, **kwargs)
    X_parallel, y_parallel = make_subtomograms(70, n_jobs=2, **kwargs)
    np.testing.assert_array_equal(X, X_parallel)
    np.testing.assert_array_equal(y, y_parallel)
    # A prefix of a larger simulation is the smaller simulation.
    X_prefix, y_prefix = make_subtomograms(20, **kwargs)
    np.testing.assert_array_equal(X[:20], X_prefix)
    np.testing.assert_array_equal(y[:20], y_prefix)
    # Any chunking of the indices (here uneven, out of order) gives the same samples.
    plan = SimulationPlan(
        n_classes=23, size=size, voxel_size=9.2, snr=0.05, tilt_range=(-60, 60),
        defocus=-5.0, voltage=300.0, cs=2.0, max_shift=0.05, templates=None, entropy=7,
    )  # fmt: skip
    for indices in ([69, 3, 41], np.arange(5, 12)):
        X_chunk, y_chunk, _, _ = plan.simulate(np.asarray(indices))
        np.testing.assert_array_equal(X_chunk, X[indices])
        np.testing.assert_array_equal(y_chunk, y[indices])


def test_different_seeds_differ():
    X0, _ = make_subtomograms(4, random_state=0, **SMALL)
    X1, _ = make_subtomograms(4, random_state=1, **SMALL)
    assert not np.allclose(X0, X1)


def test_chunk_indices_cover_the_range():
    chunks = list(chunk_indices(70, 32))
    assert [len(c) for c in chunks] == [32, 32, 6]
    np.testing.assert_array_equal(np.concatenate(chunks), np.arange(70))


# -- templates ---------------------------------------------------------------------------
def test_23_distinct_synthetic_templates_of_5_to_30_nm():
    assemblies = synthetic_assemblies(23)
    assert len({a.name for a in assemblies}) == 23
    diameters_nm = [2 * a.radius / 10 for a in assemblies]
    assert min(diameters_nm) >= 5 and max(diameters_nm) <= 30
    _, templates = make_templates(23, size=40, voxel_size=9.2)
    flat = templates.reshape(23, -1)
    flat = (flat - flat.mean(1, keepdims=True)) / flat.std(1, keepdims=True)
    correlation = flat @ flat.T / flat.shape[1]
    assert correlation[~np.eye(23, dtype=bool)].max() < 0.99


def test_templates_are_deterministic_cached_copies():
    names, first = make_templates(4, size=16)
    first[:] = 0  # a caller's change must not reach the cache
    names_again, second = make_templates(4, size=16)
    assert names == names_again
    assert second.max() > 0
    assert "synthetic" in make_subtomograms.__doc__


def test_more_than_23_classes_and_small_boxes_fit():
    assert len(synthetic_assemblies(30)) == 30
    size, voxel = 24, 9.2
    largest = max(a.radius for a in fitted_assemblies(23, size, voxel))
    assert largest <= 0.4 * size * voxel + 1e-9


def test_rendering_at_identity_pose_is_the_template():
    assemblies = fitted_assemblies(3, 16, 9.2)
    rendered = render_assemblies(
        assemblies, np.broadcast_to(np.eye(3), (3, 3, 3)), np.zeros((3, 3)), 16, 9.2
    )
    np.testing.assert_array_equal(rendered, make_templates(3, size=16)[1])


def test_pose_conventions_of_rotation_and_shift():
    """A dimer along z, tilted by 90 degrees about y, lies along x; a shift moves its centre."""
    (dimer,) = [a for a in fitted_assemblies(23, 32, 9.2) if a.name == "dimer"]
    tilted = render_assemblies(
        [dimer], rotation_matrices([[0, 90, 0]]), np.array([[0.0, 2.0, -3.0]]), 32, 9.2
    )[0]
    z, y, x = np.indices(tilted.shape)
    mass = tilted.sum()
    center = [(axis * tilted).sum() / mass for axis in (z, y, x)]
    np.testing.assert_allclose(center, [16, 18, 13], atol=0.05)
    spread = [
        ((axis - c) ** 2 * tilted).sum() / mass for axis, c in zip((z, y, x), center, strict=False)
    ]
    assert spread[2] > 2 * spread[0] and spread[2] > 2 * spread[1]


def test_resampling_a_map_agrees_with_rendering_at_the_same_pose(seed):
    """The trilinear path for user maps follows the same pose convention as the renderer."""
    assemblies = fitted_assemblies(4, 32, 9.2)
    _, templates = make_templates(4, size=32)
    angles = np.random.default_rng(seed).uniform(-180, 180, size=(4, 3))
    shifts = np.random.default_rng(seed + 1).uniform(-1.5, 1.5, size=(4, 3))
    rendered = render_assemblies(assemblies, rotation_matrices(angles), shifts, 32, 9.2)
    resampled = transform_volumes(templates, rotation_matrices(angles), shifts)
    for a, b in zip(rendered, resampled, strict=False):
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.98


def test_user_templates_as_arrays_and_mrc_files(tmp_path, seed):
    _, maps = make_templates(2, size=16, voxel_size=9.2)
    path = tmp_path / "complex.mrc"
    # The same map at half the voxel size (twice the box) must come back close to the original.
    coarse_to_fine = np.repeat(np.repeat(np.repeat(maps[1], 2, 0), 2, 1), 2, 2)
    with mrcfile.new(path) as mrc:
        mrc.set_data(coarse_to_fine)
        mrc.voxel_size = 4.6
    X, _y, info = make_subtomograms(
        6, n_classes=2, size=16, templates=[maps[0], path], random_state=seed, return_info=True
    )
    assert X.shape == (6, 16, 16, 16)
    assert info.class_names == ["template-0", "complex"]
    assert np.corrcoef(info.templates[1].ravel(), maps[1].ravel())[0, 1] > 0.95


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"snr": 0}, ValueError, "snr=0 is outside"),
        ({"n_samples": 0}, InvalidParameterError, "n_samples"),
        ({"max_shift": 0.6}, ValueError, "max_shift"),
        ({"tilt_range": (60, -60)}, ValueError, "tilt_range"),
        ({"templates": [np.ones((4, 4))], "n_classes": 1}, ValueError, "must be 3D"),
        ({"templates": [np.ones((4, 4, 4))]}, ValueError, "pass n_classes=1"),
        ({"templates": ["missing.mrc"], "n_classes": 1}, FileNotFoundError, "missing.mrc"),
    ],
)
def test_bad_parameters_are_explained(kwargs, error, match):
    kwargs = {"n_samples": 2, "size": 8, "random_state": 0, **kwargs}
    with pytest.raises(error, match=match):
        make_subtomograms(**kwargs)


def test_corrupt_template_file_is_named(tmp_path):
    path = tmp_path / "broken.mrc"
    path.write_bytes(b"not an mrc file" * 20)
    with pytest.raises(ValueError, match=r"broken\.mrc"):
        make_subtomograms(2, n_classes=1, size=8, templates=[path])
