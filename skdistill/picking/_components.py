"""Particles from a segmentation: connected components of each class, filtered by size."""

from __future__ import annotations

import os
from collections.abc import Iterable
from numbers import Integral, Real
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
from scipy import ndimage

from ..io.conventions import CENTERED_LABELS, centered_angstrom

__all__ = ["PICK_COLUMNS", "pick_particles"]

#: Columns of :func:`pick_particles`'s table, before the RELION coordinates.
PICK_COLUMNS = ["z", "y", "x", "class", "size", "score"]
#: Smallest particle kept by default, in voxels (smaller components are noise).
DEFAULT_MIN_SIZE = 8
#: 26-connectivity: voxels touching by a face, an edge or a corner are one particle.
_STRUCTURE = np.ones((3, 3, 3), dtype=bool)


def pick_particles(
    labels_or_probabilities,
    *,
    classes: Iterable[int] | None = None,
    min_size: int = DEFAULT_MIN_SIZE,
    max_size: int | None = None,
    threshold: float = 0.5,
    voxel_size: float | None = None,
) -> pd.DataFrame:
    """Particle positions from a label map or class probabilities of a tomogram.

    Each class's voxels (label ``c``, or probability of ``c`` at least ``threshold``) are
    split into connected components (26-connectivity, :func:`scipy.ndimage.label`); each
    component of ``min_size`` to ``max_size`` voxels is one particle at its centre of mass
    (weighted by the class probability when probabilities are given). Connected components
    rather than DeepFinder's mean-shift clustering: one pass over the volume, no bandwidth
    to tune, and exact sizes to filter on; touching particles of one class merge into one
    component, which ``max_size`` then leaves out rather than mis-centre.

    Parameters
    ----------
    labels_or_probabilities : array-like or str or path-like
        Labels ``(D, H, W)`` (integers, 0 the background), class probabilities
        ``(n_classes, D, H, W)`` (class 0 the background), one foreground probability
        map ``(D, H, W)`` of floats (class 1), or an MRC file of either as
        :func:`skdistill.segment_tomogram` writes them (its voxel size is used when
        ``voxel_size`` is None).
    classes : iterable of int, default=None
        Classes to pick; None: every class but 0.
    min_size, max_size : int, default=8 and None
        Sizes in voxels of the components kept (inclusive); None: no upper limit.
    threshold : float, default=0.5
        Probability from which a voxel belongs to a class (probabilities only).
    voxel_size : float, default=None
        Voxel size in Å; when known, the RELION 5 columns
        ``rlnCenteredCoordinate{X,Y,Z}Angst`` (Å from the tomogram's centre) are added.

    Returns
    -------
    pandas.DataFrame
        One row per particle, sorted by class then position: ``z, y, x`` (voxels, float;
        voxel ``k`` centred at ``k``), ``class`` (int), ``size`` (voxels), ``score`` (mean
        probability of the class over the component; 1 for a label map, which carries none)
        and, with a voxel size, the centred coordinates. ``attrs`` holds ``shape`` and
        ``voxel_size`` for :func:`~skdistill.picking.write_particles`.

    Examples
    --------
    >>> labels = np.zeros((20, 20, 20), dtype=np.int8)
    >>> labels[2:6, 2:6, 2:6] = 1
    >>> pick_particles(labels)[["z", "y", "x", "class", "size"]]
         z    y    x  class  size
    0  3.5  3.5  3.5      1    64
    """
    volume, file_voxel_size = _read(labels_or_probabilities)
    voxel_size = file_voxel_size if voxel_size is None else voxel_size
    _check_options(min_size, max_size, threshold, voxel_size)
    probabilities = _as_probabilities(volume)
    shape = volume.shape[-3:]
    present = _classes(volume, probabilities, classes)
    rows = []
    for value in present:
        if probabilities is None:
            mask, weights = volume == value, None
        else:
            weights = probabilities[value]
            mask = weights >= threshold
        rows += _components(mask, weights, value, min_size, max_size)
    picks = pd.DataFrame(rows, columns=PICK_COLUMNS)
    picks = picks.astype({"class": int, "size": int}).sort_values(["class", "z", "y", "x"])
    picks = picks.reset_index(drop=True)
    if voxel_size is not None:
        centred = centered_angstrom(picks[["z", "y", "x"]].to_numpy(), shape, voxel_size)
        for column, values in zip(CENTERED_LABELS, centred.T, strict=True):
            picks[column] = values
    picks.attrs.update(shape=tuple(int(n) for n in shape), voxel_size=voxel_size)
    return picks


def _components(mask, weights, value, min_size, max_size) -> list[tuple]:
    """(z, y, x, class, size, score) of each kept component of ``mask``."""
    components, count = ndimage.label(mask, structure=_STRUCTURE)
    if count == 0:
        return []
    index = np.arange(1, count + 1)
    sizes = ndimage.sum_labels(np.ones(mask.shape, np.float32), components, index).astype(int)
    keep = (sizes >= min_size) & (sizes <= (max_size if max_size is not None else sizes.max()))
    index, sizes = index[keep], sizes[keep]
    if len(index) == 0:
        return []
    if weights is None:
        centres = ndimage.center_of_mass(mask, components, index)
        scores = np.ones(len(index))
    else:
        centres = ndimage.center_of_mass(weights, components, index)
        scores = ndimage.mean(weights, components, index)
    return [
        (*(float(c) for c in centre), int(value), int(size), float(score))
        for centre, size, score in zip(centres, sizes, scores, strict=True)
    ]


def _read(source) -> tuple[np.ndarray, float | None]:
    """The array of ``source`` and the voxel size of its MRC header (None for arrays)."""
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"Segmentation {path} does not exist.")
        with mrcfile.mmap(path, mode="r", permissive=False) as mrc:
            size = float(mrc.voxel_size.x)
            return np.array(mrc.data), (size if size > 0 else None)
    return np.asarray(source), None


def _as_probabilities(volume: np.ndarray) -> np.ndarray | None:
    """``volume`` as class probabilities ``(C, D, H, W)``, or None for a label map."""
    if volume.ndim == 3 and volume.dtype.kind in "iub":
        return None
    if volume.ndim == 3 and volume.dtype.kind == "f":
        foreground = volume.astype(np.float32, copy=False)
        return np.stack([1 - foreground, foreground])
    if volume.ndim == 4 and volume.dtype.kind == "f" and volume.shape[0] >= 2:
        return volume
    raise ValueError(
        f"Expected labels (D, H, W) of integers, a foreground probability map (D, H, W) or "
        f"class probabilities (n_classes, D, H, W) of floats; got an array of shape "
        f"{volume.shape} and dtype {volume.dtype}."
    )


def _classes(volume, probabilities, classes) -> list[int]:
    """The classes to pick, checked against what ``volume`` can hold."""
    if probabilities is not None:
        available = list(range(1, probabilities.shape[0]))
    else:
        available = [int(v) for v in np.unique(volume) if v != 0]
    if classes is None:
        return available
    chosen = [int(c) for c in classes]
    if probabilities is not None:
        wrong = [c for c in chosen if not 0 <= c < probabilities.shape[0]]
        if wrong:
            raise ValueError(
                f"classes {wrong} are not among the {probabilities.shape[0]} classes of the "
                "probabilities (0 .. n_classes - 1)."
            )
    return chosen


def _check_options(min_size, max_size, threshold, voxel_size) -> None:
    if not isinstance(min_size, Integral) or min_size < 1:
        raise ValueError(f"min_size must be a positive number of voxels, not {min_size!r}.")
    if max_size is not None and (not isinstance(max_size, Integral) or max_size < min_size):
        raise ValueError(
            f"max_size must be None or a number of voxels >= min_size ({min_size}), "
            f"not {max_size!r}."
        )
    if not isinstance(threshold, Real) or not 0 < threshold <= 1:
        raise ValueError(f"threshold must be a probability in (0, 1], not {threshold!r}.")
    if voxel_size is not None and (not isinstance(voxel_size, Real) or not voxel_size > 0):
        raise ValueError(f"voxel_size must be a positive number of Å or None, not {voxel_size!r}.")
