"""Predicted classes written back into the particles STAR file they came from.

RELION reads a particles STAR file by its labels, not by column position or number format,
so :func:`write_predictions` keeps every block (names and order), every column and every row
of the input as they were and only sets ``rlnClassNumber`` (RELION's 1-based class of each
particle, as Class3D writes it) and ``rlnMaxValueProbDistribution`` (the probability of that
class, RELION's own label for it), and adds a ``data_skdistill_classes`` block that maps the
class numbers to the class names. RELION ignores blocks it does not know.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import starfile

from .atomic import write_atomically
from .stack import SubtomogramStack
from .star import (
    _LEGACY_CLASSES_BLOCK,
    CLASS_NAME_LABEL,
    CLASSES_BLOCK,
    _particles_block,
    check_class_name,
)

__all__ = ["CLASSES_BLOCK", "write_predictions"]


_CLASS_NUMBER = "rlnClassNumber"
_MAX_PROBABILITY = "rlnMaxValueProbDistribution"


def write_predictions(
    particles: str | os.PathLike | SubtomogramStack,
    out: str | os.PathLike,
    labels,
    proba=None,
    *,
    classes=None,
    overwrite: bool = False,
) -> Path:
    """Write a copy of a particles STAR file with each particle's predicted class.

    Parameters
    ----------
    particles : path-like or SubtomogramStack
        The particles STAR file the predictions are for (RELION 3.0-5 layouts), or a
        :class:`~skdistill.io.SubtomogramStack` read from one (its ``star_path``). A stack
        made with ``SubtomogramStack.from_tomograms(..., on_outside="skip")`` writes only
        the particles it kept: the rows in its ``skipped`` table are left out of ``out``.
    out : path-like
        The STAR file to write.
    labels : array-like of shape (n_particles,)
        Predicted class of each particle, in the order of the STAR file's rows, as
        ``predict`` returns them.
    proba : array-like of shape (n_particles, n_classes), default=None
        Class probabilities (``predict_proba``); the largest of each row is written as
        ``rlnMaxValueProbDistribution``.
    classes : array-like of shape (n_classes,), default=None
        The estimator's ``classes_``: class ``classes[k]`` is written as class number
        ``k + 1``. Pass it so that the numbering does not depend on which classes happen to
        be predicted; by default the sorted distinct ``labels``.
    overwrite : bool, default=False
        Replace ``out`` if it exists (it may be the input file itself).

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    FileExistsError
        If ``out`` exists and ``overwrite`` is false.
    ValueError
        If ``labels`` or ``proba`` do not match the particles or the classes.

    Notes
    -----
    Every other block, column and row is written back as read; numbers are written with the
    fewest digits that read back exactly (``200.0`` stays a float, ``3`` an integer). The
    file is written to a temporary file beside ``out`` and moved into place in one step.
    """
    star = _star_of(particles)
    kept = _kept_rows(particles)
    out = Path(out)
    if not overwrite and (out.exists() or out.is_symlink()):
        raise FileExistsError(
            f"{out} already exists. Pass overwrite=True to replace it, or choose another file."
        )
    blocks = starfile.read(star, always_dict=True)
    table = _particles_block(star, blocks)
    if "rlnTomoReconstructedTomogram" in table.columns:
        raise ValueError(
            f"{star} lists tomograms (rlnTomoReconstructedTomogram), not particles: it is a "
            "tomograms.star. Pass the particles STAR file the predictions are for."
        )
    if kept is not None:
        table = table.iloc[kept].reset_index(drop=True)
    name = "particles" if "particles" in blocks else next(iter(blocks))  # RELION 3.0: one block
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(table):
        kept_note = "" if kept is None else " (the particles the stack kept)"
        raise ValueError(
            f"labels has shape {labels.shape}, but {star} lists {len(table)} particles"
            f"{kept_note}: pass one predicted class per particle, in the order of the STAR "
            "file's rows."
        )
    classes = np.unique(labels) if classes is None else np.asarray(classes)
    numbers = _class_numbers(labels, classes)
    names = [str(value) for value in classes]
    for class_name in names:
        check_class_name(class_name)

    table = table.copy()  # an existing column keeps its position; a new one comes last
    table[_CLASS_NUMBER] = numbers
    if proba is not None:
        table[_MAX_PROBABILITY] = _top_probability(proba, len(table), len(classes))
    blocks[name] = table
    # The names of the input's classes (an earlier block name) no longer apply.
    blocks.pop(_LEGACY_CLASSES_BLOCK, None)
    blocks[CLASSES_BLOCK] = pd.DataFrame(
        {_CLASS_NUMBER: np.arange(1, len(classes) + 1), CLASS_NAME_LABEL: names}
    )
    texts = {key: _exact_text(block) for key, block in blocks.items()}
    write_atomically([(out, lambda path: starfile.write(texts, path))], overwrite=overwrite)
    return out


def _star_of(particles) -> Path:
    if isinstance(particles, SubtomogramStack):
        if particles.star_path is None:
            raise ValueError(
                "This SubtomogramStack was not read from a STAR file, so there is no particle "
                "table to write the predictions into. Pass the particles STAR file instead."
            )
        return particles.star_path
    if not isinstance(particles, (str, os.PathLike)):
        raise TypeError(
            f"particles must be a STAR file path or a SubtomogramStack, not "
            f"{type(particles).__name__}."
        )
    path = Path(particles)
    if not path.is_file():
        raise FileNotFoundError(f"STAR file {path} does not exist.")
    return path


def _kept_rows(particles) -> np.ndarray | None:
    """Rows of the STAR file a stack kept, or None when it kept them all.

    A stack made with ``SubtomogramStack.from_tomograms(..., on_outside="skip")`` leaves out
    particles whose centre lies outside their tomogram; its ``particles`` table is indexed by
    the 0-based rows it kept.
    """
    skipped = getattr(particles, "skipped", None)
    if not isinstance(particles, SubtomogramStack) or skipped is None or len(skipped) == 0:
        return None
    return particles.particles.index.to_numpy()


def _class_numbers(labels: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """1-based index of each label in ``classes``, refusing labels that are not there."""
    if classes.ndim != 1 or len(classes) == 0 or len(np.unique(classes)) != len(classes):
        raise ValueError(
            f"classes must be the estimator's classes_: distinct values, got {classes.tolist()}."
        )
    order = np.argsort(classes, kind="stable")
    positions = np.searchsorted(classes[order], labels)
    positions = np.minimum(positions, len(classes) - 1)
    found = classes[order][positions] == labels
    if not np.all(found):
        missing = labels[~found].tolist()[0]
        raise ValueError(
            f"Predicted label {missing!r} is not one of classes {classes.tolist()}; pass "
            "the classes_ of the estimator that predicted the labels."
        )
    return order[positions] + 1


def _top_probability(proba, n_particles: int, n_classes: int) -> np.ndarray:
    proba = np.asarray(proba, dtype=np.float64)
    if proba.shape != (n_particles, n_classes):
        raise ValueError(
            f"proba has shape {proba.shape}; expected ({n_particles}, {n_classes}): one row "
            "per particle and one column per class, as predict_proba returns them."
        )
    if not np.all(np.isfinite(proba)) or proba.min() < 0 or proba.max() > 1:
        raise ValueError("proba must hold probabilities in [0, 1], as predict_proba returns.")
    return proba.max(axis=1)


def _exact_text(block):
    """Floats as the shortest text that reads back to the same float, keeping the dot."""
    if isinstance(block, dict):
        return {key: _float_text(value) for key, value in block.items()}
    block = block.copy()
    for column in block.columns:
        if pd.api.types.is_float_dtype(block[column]):
            block[column] = [_float_text(value) for value in block[column]]
    return block


def _float_text(value):
    if isinstance(value, float | np.floating) and np.isfinite(value):
        return np.format_float_positional(value, unique=True, trim="0")
    return value
