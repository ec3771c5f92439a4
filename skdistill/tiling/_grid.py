"""Where the tiles of a sliding window go, and how their predictions are weighted.

The semantics are those of MONAI's ``sliding_window_inference`` (``monai.inferers``, Apache
2.0; Cardoso et al. 2022), the reference tiler of medical imaging, written here in a few
lines of NumPy rather than adding MONAI for one function:

* tiles step by ``int(tile * (1 - overlap))`` voxels (at least 1) along each axis, the last
  one moved back to end at the volume's edge, so every voxel is covered and no tile is
  padded; an axis as long as the tile has one tile;
* ``"gaussian"`` weights are a separable Gaussian centred on the tile with
  ``sigma = 0.125 * tile`` per axis, scaled to a maximum of 1 and clipped below at 1e-3
  (MONAI's ``compute_importance_map``), so predictions near a tile's border, where the
  network sees zero padding, count least; ``"constant"`` weights are all 1 (MONAI's
  default); ``"linear"`` weights fall linearly from the centre to the border (a separable
  tent, as in DeepFinder-style blending).

The blended prediction of a voxel is ``sum(weight * probability) / sum(weight)`` over the
tiles that cover it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["BLENDS", "tile_starts", "tile_weights"]

#: Blending modes of overlapping tiles.
BLENDS = ("gaussian", "linear", "constant")
#: MONAI's ``sigma_scale``: the Gaussian's standard deviation as a fraction of the tile.
SIGMA_SCALE = 0.125
#: MONAI's floor of the Gaussian weights (no voxel gets weight 0).
MIN_WEIGHT = 1e-3


def tile_starts(size: int, tile: int, overlap: float) -> list[int]:
    """First voxels of the tiles along one axis of length ``size``.

    Parameters
    ----------
    size : int
        Length of the axis, at least ``tile``.
    tile : int
        Length of a tile along the axis.
    overlap : float
        Fraction of a tile shared with the next, in [0, 1).

    Returns
    -------
    list of int
        Increasing starts; the first is 0 and the last ``size - tile``.

    Examples
    --------
    >>> tile_starts(40, 16, 0.25)
    [0, 12, 24]
    >>> tile_starts(16, 16, 0.5)
    [0]
    """
    if size < tile:
        raise ValueError(f"An axis of {size} voxels is shorter than the tile ({tile}).")
    if size == tile:
        return [0]
    step = max(1, int(tile * (1 - overlap)))
    starts = list(range(0, size - tile, step))
    return [*starts, size - tile]


def tile_weights(shape: Sequence[int], blend: str) -> np.ndarray:
    """Weights of one tile's voxels in the blend, float32 of ``shape``.

    Parameters
    ----------
    shape : sequence of int
        The tile's shape ``(D, H, W)``.
    blend : {"gaussian", "linear", "constant"}
        See the module's description.

    Returns
    -------
    ndarray of float32, positive, maximum 1
    """
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {BLENDS}, not {blend!r}.")
    profiles = [_profile(n, blend) for n in shape]
    weights = profiles[0][:, None, None] * profiles[1][None, :, None] * profiles[2][None, None, :]
    if blend == "gaussian":
        weights = np.maximum(weights / weights.max(), MIN_WEIGHT)
    return weights.astype(np.float32)


def _profile(n: int, blend: str) -> np.ndarray:
    """One axis's factor of the separable weights."""
    centred = np.arange(n, dtype=np.float64) - (n - 1) / 2
    if blend == "gaussian":
        sigma = SIGMA_SCALE * n
        return np.exp(-(centred**2) / (2 * sigma**2))
    if blend == "linear":
        # 1 at the centre, falling by one step per voxel to 1 / ceil(n / 2) at the border.
        half = (n + 1) // 2
        return (half - np.floor(np.abs(centred))) / half
    return np.ones(n)
