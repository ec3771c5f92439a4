"""Data sets: simulated subtomograms (``make_subtomograms``), tomograms (``make_tomogram``), a
simulated RELION 5 project (``write_relion_project``) and toy volumes for tests.

The image-formation steps live in :mod:`skdistill.datasets.physics`, the synthetic
macromolecule templates in :mod:`skdistill.datasets.templates`, the accepted ranges of the
simulation parameters in :mod:`skdistill.datasets.parameters`, and the building blocks that
stream a simulation chunk by chunk (``SimulationPlan``, ``simulate_chunks``) in
:mod:`skdistill.datasets.simulation`.
"""

from ._segmentation import make_segmentation_subtomograms
from ._toy import TOY_SHAPES, make_toy_volumes
from .relion_project import RelionProject, write_relion_project
from .simulation import make_subtomograms
from .templates import make_templates
from .tomogram import SimulatedTomogram, make_tomogram

__all__ = [
    "TOY_SHAPES",
    "RelionProject",
    "SimulatedTomogram",
    "make_segmentation_subtomograms",
    "make_subtomograms",
    "make_templates",
    "make_tomogram",
    "make_toy_volumes",
    "write_relion_project",
]
