"""Toy volumes of simple 3D shapes, for tests, doctests and the quickstart.

These are not subtomograms: no CTF, no missing wedge, fixed orientations. They exist so that
small examples train in seconds and show whether a network learns at all.
"""

from __future__ import annotations

import numpy as np
from sklearn.utils import check_random_state

__all__ = ["TOY_SHAPES", "make_toy_volumes"]

TOY_SHAPES = ("sphere", "cube", "rod_x", "rod_z", "shell", "dumbbell", "disc", "cross")


def _shape_mask(name: str, z, y, x, r: float) -> np.ndarray:
    if name == "sphere":
        return z**2 + y**2 + x**2 <= r**2
    if name == "cube":
        return np.maximum(np.maximum(abs(z), abs(y)), abs(x)) <= 0.8 * r
    if name == "rod_x":
        return (z**2 + y**2 <= (0.35 * r) ** 2) & (abs(x) <= 1.6 * r)
    if name == "rod_z":
        return (x**2 + y**2 <= (0.35 * r) ** 2) & (abs(z) <= 1.6 * r)
    if name == "shell":
        d2 = z**2 + y**2 + x**2
        return (d2 <= r**2) & (d2 >= (0.6 * r) ** 2)
    if name == "dumbbell":
        return ((z**2 + y**2 + (x - r) ** 2) <= (0.6 * r) ** 2) | (
            (z**2 + y**2 + (x + r) ** 2) <= (0.6 * r) ** 2
        )
    if name == "disc":
        return (abs(z) <= 0.3 * r) & (y**2 + x**2 <= (1.2 * r) ** 2)
    if name == "cross":
        thin = 0.3 * r
        return ((abs(y) <= thin) & (abs(z) <= thin) & (abs(x) <= 1.4 * r)) | (
            (abs(x) <= thin) & (abs(z) <= thin) & (abs(y) <= 1.4 * r)
        )
    raise ValueError(f"Unknown toy shape {name!r}; choose from {TOY_SHAPES}.")


def make_toy_volumes(
    n_samples: int = 100,
    *,
    n_classes: int = 4,
    size: int = 16,
    noise: float = 0.5,
    random_state=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Make noisy volumes of simple shapes, one shape per class.

    Each volume holds one shape (sphere, cube, rods, shell, dumbbell, disc, cross) with
    density 1, randomly shifted by up to ``size / 8`` voxels and scaled by 0.8-1.2, plus
    Gaussian noise of standard deviation ``noise``.

    Parameters
    ----------
    n_samples : int, default=100
        Number of volumes.
    n_classes : int, default=4
        Number of classes, at most ``len(TOY_SHAPES)`` (8).
    size : int, default=16
        Edge length of the cubic volumes, at least 4.
    noise : float, default=0.5
        Standard deviation of the additive Gaussian noise.
    random_state : int, RandomState instance or None, default=None
        Seed for shapes' poses and the noise.

    Returns
    -------
    X : ndarray of shape (n_samples, size, size, size), dtype float32
        Volumes.
    y : ndarray of shape (n_samples,), dtype int64
        Class of each volume, balanced across classes.
    """
    if not 2 <= n_classes <= len(TOY_SHAPES):
        raise ValueError(f"n_classes must be in [2, {len(TOY_SHAPES)}], got {n_classes}.")
    if size < 4:
        raise ValueError(f"size must be at least 4, got {size}.")
    if n_samples < 1:
        raise ValueError(f"n_samples must be at least 1, got {n_samples}.")
    rng = check_random_state(random_state)
    y = np.arange(n_samples) % n_classes
    rng.shuffle(y)
    grid = np.arange(size) - (size - 1) / 2
    X = np.empty((n_samples, size, size, size), dtype=np.float32)
    for i, label in enumerate(y):
        shift = rng.uniform(-size / 8, size / 8, size=3)
        radius = size / 5 * rng.uniform(0.8, 1.2)
        z, yy, x = np.meshgrid(*(grid - s for s in shift), indexing="ij")
        X[i] = _shape_mask(TOY_SHAPES[label], z, yy, x, radius)
    X += rng.normal(0.0, noise, size=X.shape).astype(np.float32)
    return X, y.astype(np.int64)
