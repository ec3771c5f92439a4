"""Reading and writing subtomograms: MRC files through mrcfile, RELION STAR through starfile.

- :func:`write_subtomograms` writes one float32 MRC file per subtomogram and a RELION 3.1+
  ``particles.star`` with labels, class names, orientations and shifts, atomically and
  without overwriting files unless asked to.
- :func:`read_subtomograms` reads them (or a directory, an MRC stack, a list of MRC files)
  into memory.
- :class:`SubtomogramStack` is the lazy, memory-mapped view both build on.
- :meth:`SubtomogramStack.from_tomograms` cuts subtomograms on demand from tomograms at
  picked coordinates (RELION 3 to 5, Warp; conventions in :mod:`skdistill.io.conventions`).
- :func:`write_predictions` writes predicted classes back into a copy of the particles
  STAR file they came from, every other block, column and row kept.
- Label volumes (segmentation masks) are written with ``write_subtomograms(..., masks=...)``,
  listed in the STAR column ``rlnMaskName``, and read with
  :func:`read_segmentation_subtomograms` or lazily with :class:`MaskStack`.
"""

from .labels import MaskStack, read_segmentation_subtomograms
from .predictions import write_predictions
from .stack import SubtomogramStack
from .star import PixelSizeWarning
from .subtomograms import read_subtomograms, write_subtomograms
from .tomogram_stack import EdgePaddingWarning

__all__ = [
    "EdgePaddingWarning",
    "MaskStack",
    "PixelSizeWarning",
    "SubtomogramStack",
    "read_segmentation_subtomograms",
    "read_subtomograms",
    "write_predictions",
    "write_subtomograms",
]
