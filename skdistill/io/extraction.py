"""Cubes cut from a tomogram array around a position: cropping, padding and resampling.

Pure array functions (no files) behind :meth:`~skdistill.io.SubtomogramStack.from_tomograms`.
Positions are ``(z, y, x)`` in voxels, voxel ``i`` centred at ``i``. A box of ``size`` voxels
puts the particle at voxel ``size // 2``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["crop_cube", "resample_cube", "resampled_support"]

#: Voxels of context beyond the sampled positions that cubic interpolation reads.
_SPLINE_MARGIN = 3


def crop_cube(
    volume: np.ndarray, position: np.ndarray, size: int, fill: float
) -> tuple[np.ndarray, bool]:
    """The ``size``-voxel cube of ``volume`` centred on the voxel nearest ``position``.

    Parameters
    ----------
    volume : array-like of shape (D, H, W)
        The tomogram (a memory map is read only where the cube lies).
    position : ndarray of shape (3,)
        ``(z, y, x)`` in voxels; rounded half up to the centre voxel.
    size : int
        Edge of the cube in voxels; the centre voxel is ``size // 2``.
    fill : float
        Value of the voxels that lie outside ``volume``.

    Returns
    -------
    cube : ndarray of shape (size, size, size), float32
    padded : bool
        Whether part of the cube lay outside ``volume`` and was filled.
    """
    start = np.floor(np.asarray(position, dtype=np.float64) + 0.5).astype(np.int64) - size // 2
    return _window(volume, start, (size,) * 3, fill)


def resampled_support(
    position: np.ndarray, size: int, step: float
) -> tuple[np.ndarray, np.ndarray]:
    """First and last positions (z, y, x) sampled for a cube of ``size`` at spacing ``step``."""
    offsets = (np.array([0, size - 1]) - size // 2) * step
    position = np.asarray(position, dtype=np.float64)
    return position + offsets[0], position + offsets[1]


def resample_cube(
    volume: np.ndarray, position: np.ndarray, size: int, step: float, fill: float
) -> tuple[np.ndarray, bool]:
    """A ``size``-voxel cube sampled every ``step`` input voxels around ``position``.

    Output voxel ``j`` of each axis samples the input at ``position + (j - size // 2) * step``
    (sub-voxel exact), by cubic spline interpolation. When downsampling (``step > 1``) the
    input is first smoothed by a Gaussian of sigma ``(step - 1) / 2`` voxels against aliasing
    (the default of scikit-image's ``rescale(..., anti_aliasing=True)``).

    Parameters
    ----------
    volume : array-like of shape (D, H, W)
        The tomogram; only the region the cube needs is read.
    position : ndarray of shape (3,)
        Particle centre ``(z, y, x)`` in input voxels.
    size : int
        Edge of the output cube.
    step : float
        Output voxel size over input voxel size.
    fill : float
        Value assumed outside ``volume``.

    Returns
    -------
    cube : ndarray of shape (size, size, size), float32
    padded : bool
        Whether a sampled position lay outside ``volume``.
    """
    position = np.asarray(position, dtype=np.float64)
    first, last = resampled_support(position, size, step)
    sigma = max(0.0, (step - 1.0) / 2.0)
    margin = _SPLINE_MARGIN + int(np.ceil(4.0 * sigma))
    start = np.floor(first).astype(np.int64) - margin
    stop = np.ceil(last).astype(np.int64) + margin + 1
    region, _ = _window(volume, start, tuple(int(n) for n in stop - start), fill)
    if sigma > 0:
        region = ndimage.gaussian_filter(region, sigma, mode="nearest")
    grid = (np.arange(size) - size // 2) * step
    axes = [position[axis] - start[axis] + grid for axis in range(3)]
    points = np.meshgrid(*axes, indexing="ij")
    cube = ndimage.map_coordinates(region, points, order=3, mode="nearest")
    shape = np.asarray(volume.shape)
    padded = bool(np.any(first < -0.5) or np.any(last > shape - 0.5))
    return cube.astype(np.float32, copy=False), padded


def _window(
    volume: np.ndarray, start: np.ndarray, shape: tuple[int, int, int], fill: float
) -> tuple[np.ndarray, bool]:
    """``volume[start : start + shape]`` as float32, ``fill`` where it leaves ``volume``."""
    start = np.asarray(start, dtype=np.int64)
    stop = start + np.asarray(shape)
    low = np.maximum(start, 0)
    high = np.minimum(stop, volume.shape)
    padded = bool(np.any(start < 0) or np.any(stop > np.asarray(volume.shape)))
    if not padded:
        inner = volume[start[0] : stop[0], start[1] : stop[1], start[2] : stop[2]]
        return np.array(inner, dtype=np.float32), False
    out = np.full(shape, fill, dtype=np.float32)
    if np.all(high > low):
        target = tuple(slice(lo - s, hi - s) for lo, hi, s in zip(low, high, start, strict=True))
        out[target] = volume[low[0] : high[0], low[1] : high[1], low[2] : high[2]]
    return out, True
