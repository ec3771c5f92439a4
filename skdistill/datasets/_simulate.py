"""Deprecated location of :mod:`skdistill.datasets.simulation`, kept for existing imports.

Import from :mod:`skdistill.datasets.simulation` instead; this module goes once nothing in
skdistill imports it.
"""

from .simulation import (  # noqa: F401
    CHUNK_SIZE,
    SimulationPlan,
    chunk_indices,
    make_subtomograms,
    seed_entropy,
    simulate_chunks,
)
