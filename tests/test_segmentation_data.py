"""Crowded segmentation data: label volumes, neighbours, physics, determinism, parameters."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.utils._param_validation import InvalidParameterError

from skdistill.datasets._segmentation import (
    CONTACT_RANGE,
    SegmentationPlan,
    make_segmentation_subtomograms,
)
from skdistill.datasets.physics import apply_fourier_filter, rotation_matrices
from skdistill.datasets.templates import fitted_assemblies, render_assemblies

N, SIZE, N_CLASSES, CROWDING = 24, 32, 6, 4
COMMON = {"size": SIZE, "n_classes": N_CLASSES, "random_state": 5, "return_info": True}


def _plan(**kwargs) -> SegmentationPlan:
    arguments = {
        "n_classes": N_CLASSES, "size": SIZE, "voxel_size": 9.2, "snr": None,
        "crowding": CROWDING, "labels": "target", "tilt_range": (-60, 60), "max_shift": 0.05,
        "mask_threshold": 0.5, "entropy": 5, **kwargs,
    }  # fmt: skip
    return SegmentationPlan(**arguments)


def _render(classes, angles, shifts, size=SIZE, n_classes=N_CLASSES) -> np.ndarray:
    """Noise-free, pre-CTF densities rendered independently of the simulator's batching."""
    assemblies = fitted_assemblies(n_classes, size, 9.2)
    classes = np.asarray(classes)
    volumes = render_assemblies(
        [assemblies[c] for c in classes.ravel()],
        rotation_matrices(np.reshape(angles, (-1, 3))),
        np.reshape(shifts, (-1, 3)),
        size,
        9.2,
        n_subunits=max(len(a.sigmas) for a in assemblies),
    )
    return volumes.reshape(*classes.shape, size, size, size)


@pytest.fixture(scope="module")
def crowded():
    """The same 24 scenes noisy (SNR 0.5) and noise-free, with their info."""
    noisy = make_segmentation_subtomograms(N, snr=0.5, crowding=CROWDING, **COMMON)
    clean = make_segmentation_subtomograms(N, snr=None, crowding=CROWDING, **COMMON)
    return noisy, clean


@pytest.fixture(scope="module")
def isolated():
    """The same 24 targets without neighbours, noise-free."""
    return make_segmentation_subtomograms(N, snr=None, crowding=0, **COMMON)


def test_shapes_dtypes_and_info(crowded):
    (X, y, info), (X_clean, y_clean, _) = crowded
    assert X.shape == y.shape == (N, SIZE, SIZE, SIZE)
    assert X.dtype == np.float32 and y.dtype == np.int8
    assert np.isfinite(X).all() and set(np.unique(y)) == {0, 1}
    np.testing.assert_array_equal(y, y_clean)  # the noise changes no label
    assert info.class_names[:2] == ["globule", "C6-ring"]
    assert info.target_classes.shape == (N,)
    np.testing.assert_array_equal(np.bincount(info.target_classes), [N // N_CLASSES] * N_CLASSES)
    assert info.rotations.shape == info.shifts.shape == (N, 3)
    assert np.abs(info.shifts).max() <= 0.05 * SIZE
    assert info.neighbour_classes.shape == (N, CROWDING)
    assert info.neighbour_rotations.shape == info.neighbour_shifts.shape == (N, CROWDING, 3)
    assert not np.any(info.neighbour_classes == info.target_classes[:, None])
    assert info.labels == "target" and info.mask_threshold == 0.5 and info.snr == 0.5
    assert not np.array_equal(X, X_clean)


def test_mask_is_the_thresholded_noise_free_target_density(crowded):
    _, (_, y, info) = crowded
    target = _render(info.target_classes, info.rotations, info.shifts)
    assert np.all(target[y == 1] >= 0.5)
    np.testing.assert_array_equal(y, (target >= 0.5).astype(np.int8))
    assert np.all(y.reshape(N, -1).sum(axis=1) > 0)


def test_mask_threshold_sets_the_extent(crowded):
    _, (_, y, info) = crowded
    _, y_wide = make_segmentation_subtomograms(N, snr=None, mask_threshold=0.2, **COMMON)[:2]
    assert np.all(y_wide >= y) and y_wide.sum() > 1.2 * y.sum()
    # Threshold 0.5 of an isolated globule: the ball within 1.18 sigma of its centre.
    globule = fitted_assemblies(N_CLASSES, SIZE, 9.2)[0]
    radius = 1.1774 * globule.sigmas[0] / 9.2
    first = int(np.flatnonzero(info.target_classes == 0)[0])
    assert y[first].sum() == pytest.approx(4 / 3 * np.pi * radius**3, rel=0.1)


def test_neighbours_crowd_the_target(crowded, isolated):
    _, (X, y, info) = crowded
    X_alone, y_alone, info_alone = isolated
    # The targets are the same particles in the same poses whatever the crowding.
    np.testing.assert_array_equal(info.rotations, info_alone.rotations)
    np.testing.assert_array_equal(y, y_alone)
    assert info_alone.neighbour_classes.shape == (N, 0)
    # Without neighbours the image is the filtered target alone ...
    target = _render(info.target_classes, info.rotations, info.shifts)
    filtered = apply_fourier_filter(target, _plan().base.fourier_filter)
    np.testing.assert_allclose(X_alone, filtered, atol=1e-5)
    # ... with them much of the density lies outside the target's mask.
    neighbours = _render(info.neighbour_classes, info.neighbour_rotations, info.neighbour_shifts)
    outside = neighbours.sum(axis=1) * (y == 0)
    share = outside.sum(axis=(1, 2, 3)) / (outside + target).sum(axis=(1, 2, 3))
    assert np.median(share) > 0.3 and np.all(share > 0.02)
    energy_outside = ((X**2) * (y == 0)).sum() / ((X_alone**2) * (y == 0)).sum()
    assert energy_outside > 1.5


def _subunits(assembly, angles) -> tuple[np.ndarray, np.ndarray]:
    """Subunit centres (voxels, (z, y, x), about the assembly's centre) and widths (voxels)."""
    centers = assembly.centers @ rotation_matrices(np.reshape(angles, (1, 3)))[0].T
    return centers[:, ::-1] / 9.2, assembly.sigmas / 9.2


def test_neighbours_stop_at_contact_with_the_target(crowded):
    _, (_, y, info) = crowded
    assemblies = fitted_assemblies(N_CLASSES, SIZE, 9.2)
    approach = []
    for i in range(N):
        target, widths = _subunits(assemblies[info.target_classes[i]], info.rotations[i])
        for j in range(CROWDING):
            position, sigmas = _subunits(
                assemblies[info.neighbour_classes[i, j]], info.neighbour_rotations[i, j]
            )
            position = position + info.neighbour_shifts[i, j] - info.shifts[i]
            distances = np.linalg.norm(target[:, None] - position[None], axis=2)
            approach.append(np.min(distances / (widths[:, None] + sigmas[None])))
    approach = np.array(approach)
    low, high = CONTACT_RANGE
    assert np.all(approach >= low - 1e-9)
    assert np.mean(approach <= high + 1e-9) > 0.9  # the rest missed and touch as spheres
    assert np.any(approach < 1.4)  # some neighbours touch the target
    # Some neighbours sit near or beyond the box edge and are cut by it.
    neighbours = _render(info.neighbour_classes, info.neighbour_rotations, info.neighbour_shifts)
    faces = [neighbours[..., 0, :, :], neighbours[..., -1, :, :], neighbours[..., 0]]
    assert max(float((face >= 0.5).sum()) for face in faces) > 0
    # Neighbours lie around the target, not on it.
    assert ((neighbours >= 0.5) & (y[:, None] == 1)).sum() < 0.02 * y.sum()


def test_class_labels(crowded):
    _, (X, y_target, info) = crowded
    X_class, y, info_class = make_segmentation_subtomograms(
        N, snr=None, crowding=CROWDING, labels="class", **COMMON
    )
    np.testing.assert_array_equal(X_class, X)  # the labels do not change the scene
    np.testing.assert_array_equal(info_class.neighbour_shifts, info.neighbour_shifts)
    assert y.dtype == np.int8 and y.min() >= 0 and y.max() <= N_CLASSES
    # The class + 1 of the densest macromolecule where it reaches the threshold, else 0.
    classes = np.concatenate([info.target_classes[:, None], info.neighbour_classes], axis=1)
    density = np.concatenate(
        [
            _render(info.target_classes, info.rotations, info.shifts)[:, None],
            _render(info.neighbour_classes, info.neighbour_rotations, info.neighbour_shifts),
        ],
        axis=1,
    )
    densest = np.argmax(density, axis=1)
    expected = np.where(
        density.max(axis=1) >= 0.5, classes[np.arange(N)[:, None, None, None], densest] + 1, 0
    )
    np.testing.assert_array_equal(y, expected)
    for i, target in enumerate(info.target_classes):
        inside = y[i][y_target[i] == 1]
        assert np.bincount(inside).argmax() == target + 1
    assert any(set(np.unique(y[i])) - {0, t + 1} for i, t in enumerate(info.target_classes))


@pytest.mark.parametrize("size", [32, 40])
def test_same_seed_same_data_at_once_in_chunks_and_in_parallel(size):
    kwargs = {"size": size, "n_classes": 23, "snr": 0.05, "random_state": 7}
    X, y = make_segmentation_subtomograms(40, **kwargs)
    X_parallel, y_parallel = make_segmentation_subtomograms(40, n_jobs=2, **kwargs)
    np.testing.assert_array_equal(X, X_parallel)
    np.testing.assert_array_equal(y, y_parallel)
    X_prefix, y_prefix = make_segmentation_subtomograms(10, **kwargs)
    np.testing.assert_array_equal(X[:10], X_prefix)
    np.testing.assert_array_equal(y[:10], y_prefix)
    plan = _plan(n_classes=23, size=size, snr=0.05, entropy=7)
    for indices in ([39, 3, 21], np.arange(5, 12)):
        batch = plan.simulate(np.asarray(indices))
        np.testing.assert_array_equal(batch.X, X[indices])
        np.testing.assert_array_equal(batch.y, y[indices])


def test_different_seeds_differ():
    X0, _ = make_segmentation_subtomograms(3, size=16, n_classes=4, random_state=0)
    X1, _ = make_segmentation_subtomograms(3, size=16, n_classes=4, random_state=1)
    assert not np.allclose(X0, X1)


@pytest.mark.parametrize("snr", [0.05, 0.5, 5.0])
def test_measured_snr_matches_the_request(snr):
    kwargs = {"size": SIZE, "n_classes": N_CLASSES, "random_state": 2}
    noisy, _ = make_segmentation_subtomograms(12, snr=snr, **kwargs)
    clean, _ = make_segmentation_subtomograms(12, snr=None, **kwargs)
    measured = clean.var(axis=(1, 2, 3)) / (noisy - clean).var(axis=(1, 2, 3))
    np.testing.assert_allclose(measured, snr, rtol=0.1)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_samples": 0}, InvalidParameterError, "n_samples"),
        ({"snr": 0}, ValueError, "snr=0 is outside"),
        ({"crowding": -1}, ValueError, "crowding=-1"),
        ({"labels": "instance"}, InvalidParameterError, "labels"),
        ({"mask_threshold": 0}, ValueError, "mask_threshold=0 is outside"),
        ({"mask_threshold": 1.5}, ValueError, "mask_threshold=1.5 is outside"),
        ({"max_shift": 0.6}, ValueError, "max_shift=0.6"),
        ({"tilt_range": (60, -60)}, ValueError, "tilt_range"),
        ({"n_classes": 1}, ValueError, r"crowding=4 needs n_classes >= 2"),
        ({"n_classes": 200, "labels": "class"}, ValueError, "at most 126"),
    ],
)
def test_bad_parameters_are_explained(kwargs, error, match):
    kwargs = {"n_samples": 2, "size": 8, "random_state": 0, **kwargs}
    with pytest.raises(error, match=match):
        make_segmentation_subtomograms(**kwargs)


def test_single_class_without_neighbours():
    X, y = make_segmentation_subtomograms(2, size=16, n_classes=1, crowding=0, random_state=0)
    assert X.shape == y.shape == (2, 16, 16, 16) and y.max() == 1
