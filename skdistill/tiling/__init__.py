"""Whole tomograms: segmentation with overlapping, blended tiles in bounded memory.

:func:`segment_tomogram` covers a tomogram of any size with tiles of a segmenter's
training size and blends their class probabilities (MONAI's ``sliding_window_inference``
semantics, :mod:`skdistill.tiling._grid`); :func:`write_segmentation` writes labels and
probabilities to MRC files in one pass, slab by slab.
"""

from ._grid import BLENDS, tile_starts, tile_weights
from ._segment import segment_tomogram, write_segmentation

__all__ = ["BLENDS", "segment_tomogram", "tile_starts", "tile_weights", "write_segmentation"]
