"""Particle picking from a segmentation: positions, classes and scores, written for RELION.

:func:`pick_particles` turns the labels or class probabilities of
:func:`skdistill.segment_tomogram` into a table of particles (connected components);
:func:`write_particles` writes them as a RELION 5 ``particles.star`` that
:meth:`skdistill.io.SubtomogramStack.from_tomograms` and RELION read; :func:`score_picks`
measures precision, recall and F1 against known positions.
"""

from ._components import PICK_COLUMNS, pick_particles
from ._evaluation import score_picks
from ._star import write_particles

__all__ = ["PICK_COLUMNS", "pick_particles", "score_picks", "write_particles"]
