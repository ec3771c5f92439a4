"""The tiling loop: predict tiles, blend them, hand finished blocks to the outputs.

Memory is bounded by a budget, not by the tomogram: the tomogram is cut along its second
axis (y) into bands of whole tile rows, each band is streamed along the first axis (z) one
row of tiles at a time, and the blend buffers span one band's rows for one tile depth.
A band finishes the rows that only its tiles cover; the tiles that straddle two bands are
predicted for both (a few per cent more work), so every voxel is blended from all the tiles
that cover it, exactly as without bands.
"""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from ..estimators._base import softmax_over_classes

__all__ = ["BAND_BYTES", "FINISH_SLICES", "run_tiles"]

#: Bytes of blend buffers and tomogram slab a band may use (its rows are chosen to fit).
BAND_BYTES = 128 * 2**20
#: Slices blended and written at a time when slices are finished.
FINISH_SLICES = 4


def run_tiles(model, source, plan, sinks: dict, *, progress: bool) -> None:
    """Predict every tile of ``plan``, blend, and give each finished block to ``sinks``.

    ``sinks`` maps ``"labels"`` and/or ``"probabilities"`` to an object with ``dtype`` and
    ``write(z, y, block)`` (``block``: slices from ``z``, rows from ``y``, all columns).
    """
    _, height, width = source.shape
    bands = _bands(plan, width, model.n_classes_, height)
    n_tiles = len(plan.starts[0]) * len(plan.starts[2]) * sum(len(b[0]) for b in bands)
    with tqdm(total=n_tiles, unit="tile", disable=not progress) as bar:
        for y_starts, first_row, stop_row in bands:
            _run_band(model, source, plan, sinks, y_starts, (first_row, stop_row), bar)


def _bands(plan, width: int, n_classes: int, height: int) -> list[tuple[list[int], int, int]]:
    """(tile starts along y, first row, stop row) of each band.

    Rows ``first..stop-1`` are finished by the band: every tile covering them starts in
    ``(first - tile, stop)``, and the band predicts exactly those.
    """
    starts, tile = plan.starts[1], plan.tile[1]
    row_bytes = (n_classes + 2) * plan.tile[0] * width * 4
    rows = max(tile, BAND_BYTES // row_bytes)
    groups, current = [], [starts[0]]
    for start in starts[1:]:
        if start + tile - current[0] <= rows:
            current.append(start)
        else:
            groups.append(current)
            current = [start]
    groups.append(current)
    cuts = [0, *(group[0] for group in groups[1:]), height]
    return [
        ([s for s in starts if cuts[k] - tile < s < cuts[k + 1]], cuts[k], cuts[k + 1])
        for k in range(len(groups))
    ]


def _run_band(model, source, plan, sinks, y_starts, rows, bar) -> None:
    """Stream one band along z: predict its tiles row by row, finish what is complete."""
    depth, tile_y, _ = plan.tile
    top, bottom = y_starts[0], y_starts[-1] + tile_y  # the buffers' rows
    kept = slice(rows[0] - top, rows[1] - top)  # the rows this band finishes, in the buffers
    width = source.shape[2]
    weighted = np.zeros((model.n_classes_, depth, bottom - top, width), dtype=np.float32)
    weights = np.zeros((depth, bottom - top, width), dtype=np.float32)
    first = 0  # the tomogram slice of the buffers' slice 0
    corners = [(y - top, x) for y in y_starts for x in plan.starts[2]]
    for z in plan.starts[0]:
        shift = z - first
        if shift:  # slices first..z-1 are covered by no later tile: finish them
            _finish(weighted[:, :shift, kept], weights[:shift, kept], (first, rows[0]), sinks)
            _shift(weighted, weights, shift)
            first = z
        slab = source.slab(z, z + depth, top, bottom)
        for batch_corners, outputs in _row_predictions(model, slab, corners, plan):
            for (y, x), probability in zip(batch_corners, outputs, strict=True):
                window = (slice(None), slice(y, y + tile_y), slice(x, x + plan.tile[2]))
                weighted[(slice(None), *window)] += probability * plan.weights
                weights[window] += plan.weights
            bar.update(len(batch_corners))
    rest = source.shape[0] - first
    _finish(weighted[:, :rest, kept], weights[:rest, kept], (first, rows[0]), sinks)


def _row_predictions(model, slab: np.ndarray, corners, plan):
    """(corners, class probabilities) of the tiles of one slab, batch by batch."""
    groups = [corners[i : i + plan.batch_size] for i in range(0, len(corners), plan.batch_size)]

    def batches():
        for group in groups:
            tiles = np.stack(
                [slab[:, y : y + plan.tile[1], x : x + plan.tile[2]] for y, x in group]
            )[:, None]
            yield model._scaled(tiles)

    outputs = model._forward_batches(batches(), reduce=softmax_over_classes)
    return zip(groups, outputs, strict=True)


def _finish(weighted: np.ndarray, weights: np.ndarray, corner, sinks: dict) -> None:
    """Blend finished slices into probabilities and labels; give them to the sinks.

    A few slices at a time, so the temporary arrays stay small beside the buffers.
    """
    z, y = corner
    for first in range(0, weights.shape[0], FINISH_SLICES):
        chunk = slice(first, first + FINISH_SLICES)
        probabilities = weighted[:, chunk] / weights[chunk]
        if "labels" in sinks:
            labels = np.argmax(probabilities, axis=0).astype(sinks["labels"].dtype)
            sinks["labels"].write(z + first, y, labels)
        if "probabilities" in sinks:
            sinks["probabilities"].write(z + first, y, probabilities)


def _shift(weighted: np.ndarray, weights: np.ndarray, shift: int) -> None:
    """Move the buffers ``shift`` slices towards slice 0 and clear the freed end."""
    weighted[:, :-shift] = weighted[:, shift:].copy()
    weighted[:, -shift:] = 0
    weights[:-shift] = weights[shift:].copy()
    weights[-shift:] = 0
