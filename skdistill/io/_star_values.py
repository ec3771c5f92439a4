"""Values of RELION STAR tables read strictly: numbers, dimensionality, box and pixel sizes.

Helpers of :func:`~skdistill.io.star.read_particles_star`. Each raises a ``ValueError`` that
names the STAR file, and the column where one is at fault.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "PixelSizeWarning",
    "check_3d",
    "image_size",
    "numeric",
    "optics_per_particle",
    "three_columns",
    "voxel_size_of",
]

#: Optics groups whose pixel sizes differ by less than this fraction are read together.
_PIXEL_SIZE_TOLERANCE = 0.01
_NEEDS_3D = (
    "skdistill needs 3D subtomograms. In RELION 5, run Extract subtomos again with 'Write "
    "output as 2D stacks?' set to No (RELION 4's pseudo-subtomograms and Warp's exported "
    "subtomograms are 3D already)."
)


class PixelSizeWarning(UserWarning):
    """Pixel sizes disagree a little: between optics groups, or between STAR and MRC header.

    The message names the values and the one skdistill uses.
    """


def optics_per_particle(star: Path, optics, particles: pd.DataFrame) -> pd.DataFrame | None:
    """The ``data_optics`` row of each particle (rows in particle order), or None."""
    if not isinstance(optics, pd.DataFrame) or len(optics) == 0:
        return None
    if "rlnOpticsGroup" not in optics.columns or "rlnOpticsGroup" not in particles.columns:
        # Without group numbers every optics row may apply; each is checked against the others.
        return optics.reset_index(drop=True)
    groups = numeric(star, particles, "rlnOpticsGroup", "data_particles")
    table = optics.set_axis(numeric(star, optics, "rlnOpticsGroup", "data_optics"))
    unknown = sorted(set(groups) - set(table.index))
    if unknown:
        raise ValueError(
            f"STAR file {star} assigns particles to optics groups {unknown} that its "
            "data_optics block does not define; add them to data_optics."
        )
    return table.loc[groups].reset_index(drop=True)


def check_3d(star: Path, general, optics: pd.DataFrame | None, particles: pd.DataFrame) -> None:
    """Refuse STAR files that list 2D images (tilt-image stacks, 2D particles)."""
    if isinstance(general, dict) and "rlnTomoSubTomosAre2DStacks" in general:
        if str(general["rlnTomoSubTomosAre2DStacks"]).strip() not in ("0", "0.0", "False"):
            raise ValueError(
                f"STAR file {star} lists RELION 5 particles stored as 2D stacks of tilt "
                "images (rlnTomoSubTomosAre2DStacks = 1 in data_general), not 3D "
                f"subtomograms. {_NEEDS_3D}"
            )
    for frame, block in ((optics, "data_optics"), (particles, "data_particles")):
        if frame is not None and "rlnImageDimensionality" in frame.columns:
            dimensions = numeric(star, frame, "rlnImageDimensionality", block)
            if np.any(dimensions != 3):
                raise ValueError(
                    f"STAR file {star} lists {int(dimensions[dimensions != 3].iloc[0])}D "
                    f"images (rlnImageDimensionality in {block}), not 3D subtomograms. "
                    f"{_NEEDS_3D}"
                )


def image_size(star: Path, optics: pd.DataFrame | None, particles: pd.DataFrame) -> int | None:
    """The one box size ``rlnImageSize`` of the particles, or None."""
    for frame, block in ((optics, "data_optics"), (particles, "data_particles")):
        if frame is not None and "rlnImageSize" in frame.columns:
            sizes = np.unique(numeric(star, frame, "rlnImageSize", block))
            return int(sizes[0]) if len(sizes) == 1 else None
    return None


def _pixel_sizes(
    star: Path, optics: pd.DataFrame | None, particles: pd.DataFrame
) -> tuple[np.ndarray | None, str | None]:
    """Pixel size in Å of each particle (or optics row), and the labels it was read from."""
    for frame, block in ((optics, "data_optics"), (particles, "data_particles")):
        if frame is None:
            continue
        columns = set(frame.columns)
        if "rlnImagePixelSize" in columns:
            sizes = numeric(star, frame, "rlnImagePixelSize", block)
            return np.asarray(sizes, dtype=np.float64), "rlnImagePixelSize"
        if "rlnTomoTiltSeriesPixelSize" in columns:
            sizes = numeric(star, frame, "rlnTomoTiltSeriesPixelSize", block)
            label = "rlnTomoTiltSeriesPixelSize"
            if "rlnTomoSubtomogramBinning" in columns:
                sizes = sizes * numeric(star, frame, "rlnTomoSubtomogramBinning", block)
                label += " x rlnTomoSubtomogramBinning"
            return np.asarray(sizes, dtype=np.float64), label
        if {"rlnDetectorPixelSize", "rlnMagnification"} <= columns:
            # RELION 3.0 and Warp: detector pixel in µm, magnification; 1 µm = 10^4 Å.
            detector = numeric(star, frame, "rlnDetectorPixelSize", block)
            magnification = numeric(star, frame, "rlnMagnification", block)
            sizes = np.asarray(detector * 1e4 / magnification, dtype=np.float64)
            return sizes, "rlnDetectorPixelSize x 10^4 / rlnMagnification"
    return None, None


def voxel_size_of(
    star: Path, optics: pd.DataFrame | None, particles: pd.DataFrame
) -> tuple[float | None, str | None]:
    """The particles' pixel size in Å and the labels it was read from, or ``(None, None)``.

    Sizes within 1 % of each other give a :class:`PixelSizeWarning` and the size of most
    particles; larger differences raise ``ValueError``.
    """
    sizes, label = _pixel_sizes(star, optics, particles)
    if sizes is None or not np.any(sizes > 0):
        return None, None
    if not np.all(np.isfinite(sizes) & (sizes > 0)):
        raise ValueError(
            f"STAR file {star} has pixel sizes {np.unique(sizes).tolist()} Å ({label}); pixel "
            "sizes must be positive. Fix the STAR file."
        )
    values, counts = np.unique(sizes, return_counts=True)
    chosen = float(values[np.argmax(counts)])
    spread = (values.max() - values.min()) / values.min()
    if spread <= 1e-6:
        return chosen, label
    listed = ", ".join(f"{value:g}" for value in values)
    if spread >= _PIXEL_SIZE_TOLERANCE:
        raise ValueError(
            f"STAR file {star} mixes pixel sizes {listed} Å ({label}), which differ by "
            f"{spread:.1%}; subtomograms of one data set must share a voxel size. Rescale "
            "them to one pixel size (e.g. relion_image_handler --i in.mrc --o out.mrc "
            "--angpix OLD --rescale_angpix NEW) and list them with that pixel size."
        )
    warnings.warn(
        f"STAR file {star} mixes pixel sizes {listed} Å ({label}), which differ by "
        f"{spread:.2%} (under 1%, as in merged data sets); using {chosen:g} Å, the pixel "
        f"size of most particles ({counts.max()} of {len(sizes)}). Rescale the subtomograms "
        "to one pixel size if the difference matters.",
        PixelSizeWarning,
        stacklevel=2,
    )
    return chosen, label


def numeric(star: Path, frame: pd.DataFrame, label: str, block: str) -> pd.Series:
    """Column ``label`` as numbers; a ``ValueError`` names the file, block, column and value."""
    column = frame[label]
    values = pd.to_numeric(column, errors="coerce")
    bad = values.isna()
    if bad.any():
        row = int(np.flatnonzero(np.asarray(bad))[0])
        raise ValueError(
            f"STAR file {star} has the non-numeric value {column.iloc[row]!r} in column "
            f"{label} of {block} (row {row + 1}); {label} must hold numbers. Fix that row."
        )
    return values


def three_columns(
    star: Path, particles: pd.DataFrame, labels: tuple[str, str, str]
) -> np.ndarray | None:
    """Columns ``labels`` as an ``(n, 3)`` array, missing ones as 0 (RELION's default).

    None when the table has none of them.
    """
    if not any(label in particles.columns for label in labels):
        return None
    return np.stack(
        [
            np.asarray(numeric(star, particles, label, "data_particles"), dtype=np.float64)
            if label in particles.columns
            else np.zeros(len(particles))
            for label in labels
        ],
        axis=1,
    )
