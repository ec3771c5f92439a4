"""How well picks find known particles: precision, recall and F1 within a distance."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

__all__ = ["score_picks"]


def score_picks(picks: pd.DataFrame, truth: pd.DataFrame, *, tolerance: float) -> pd.DataFrame:
    """Precision, recall and F1 of picks against known particle positions, per class.

    Within each class, picks and true particles are paired one to one so that the number of
    pairs closer than ``tolerance`` is largest (the assignment of
    :func:`scipy.optimize.linear_sum_assignment` on the distances); a pick in such a pair is
    a true positive, every other pick a false positive, every unpaired particle a miss.
    DeepFinder and the SHREC cryo-ET challenges score picks this way, with the tolerance
    half a particle's diameter.

    Parameters
    ----------
    picks, truth : pandas.DataFrame
        Columns ``z, y, x`` (voxels) and ``class``; e.g. :func:`pick_particles`'s table and
        a simulated tomogram's ``particles`` with its classes mapped to the labels picked.
    tolerance : float
        Largest distance in voxels between a pick and the particle it finds.

    Returns
    -------
    pandas.DataFrame
        One row per class and a last row ``"all"`` (counts summed over classes): ``n_true``,
        ``n_picked``, ``true_positives``, ``precision``, ``recall``, ``f1`` (NaN where
        undefined: no picks or no particles).
    """
    if not np.isfinite(tolerance) or tolerance <= 0:
        raise ValueError(f"tolerance must be a positive distance in voxels, not {tolerance!r}.")
    for name, table in (("picks", picks), ("truth", truth)):
        missing = [c for c in ("z", "y", "x", "class") if c not in table]
        if missing:
            raise ValueError(f"{name} lacks the columns {missing}.")
    rows = []
    for value in sorted(set(picks["class"]) | set(truth["class"])):
        found = picks.loc[picks["class"] == value, ["z", "y", "x"]].to_numpy(float)
        known = truth.loc[truth["class"] == value, ["z", "y", "x"]].to_numpy(float)
        rows.append((value, len(known), len(found), _matches(found, known, tolerance)))
    total = tuple(int(sum(row[k] for row in rows)) for k in (1, 2, 3))
    rows.append(("all", *total))
    counts = pd.DataFrame(rows, columns=["class", "n_true", "n_picked", "true_positives"])
    counts["class"] = counts["class"].astype(object)
    with np.errstate(divide="ignore", invalid="ignore"):
        tp = counts["true_positives"].to_numpy(float)
        precision = tp / counts["n_picked"].to_numpy(float)
        recall = tp / counts["n_true"].to_numpy(float)
        f1 = 2 * tp / (counts["n_picked"].to_numpy(float) + counts["n_true"].to_numpy(float))
    counts["precision"], counts["recall"], counts["f1"] = precision, recall, f1
    return counts.set_index("class")


def _matches(found: np.ndarray, known: np.ndarray, tolerance: float) -> int:
    """Most one-to-one pairs of ``found`` and ``known`` within ``tolerance``."""
    if len(found) == 0 or len(known) == 0:
        return 0
    close = cdist(found, known) <= tolerance
    rows, columns = linear_sum_assignment(close, maximize=True)
    return int(close[rows, columns].sum())
