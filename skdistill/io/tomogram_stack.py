"""Subtomograms cut on demand from memory-mapped tomograms at picked coordinates.

The implementation of :meth:`skdistill.io.SubtomogramStack.from_tomograms`. Conventions
(columns, pixel sizes, centring, origins, names) are in :mod:`skdistill.io.conventions`; the
array work in :mod:`skdistill.io.extraction`.
"""

from __future__ import annotations

import numbers
import os
import warnings
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import starfile

from . import conventions
from ._star_values import PixelSizeWarning, optics_per_particle, three_columns
from .extraction import crop_cube, resample_cube, resampled_support
from .mrc import _open, _strictly
from .stack import SubtomogramStack
from .star import (
    _ANGLE_LABELS,
    _class_names,
    _labels,
    _particles_block,
    class_names_block,
)
from .tomograms import Tomogram, TomogramEntry, find_tomograms, read_tomogram, resolve

__all__ = ["EdgePaddingWarning", "TomogramSubtomogramStack", "from_tomograms"]

#: Relative difference between voxel sizes treated as equal (no resampling, no warning).
_SAME_SIZE = 5e-3
#: Edge of the strided grid that estimates a tomogram's mean when its header has none.
_MEAN_SAMPLES = 32
_ON_OUTSIDE = ("error", "skip")


class EdgePaddingWarning(UserWarning):
    """Some subtomograms reach beyond their tomogram's edge and were padded with its mean."""


class TomogramSubtomogramStack(SubtomogramStack):
    """A :class:`SubtomogramStack` whose volumes are cut from tomograms when read.

    Made by :meth:`SubtomogramStack.from_tomograms`, which documents its attributes; on top of
    :class:`SubtomogramStack`'s it has ``n_padded`` (particles padded at a tomogram edge),
    ``skipped`` (rows dropped by ``on_outside="skip"``) and ``tomograms`` (the tomogram file of
    each volume, also ``paths``).
    """

    def __init__(self, plan: dict) -> None:
        self._particles = plan["particles"]
        self._optics = plan["optics"]
        self._groups = plan["groups"]
        self._tomograms: list[Tomogram] = plan["tomograms"]
        self._tomogram_index = plan["tomogram_index"]
        self._positions = plan["positions"]
        self._steps = plan["steps"]
        self._paths = tuple(self._tomograms[i].path for i in self._tomogram_index)
        self._stack_indices = np.full(len(self._paths), -1, dtype=np.intp)
        self._volume_shape = (plan["box_size"],) * 3
        self._description = plan["description"]
        self._means: dict[int, float] = {}
        self.voxel_size = plan["voxel_size"]
        self.labels = plan["labels"]
        self.class_names = plan["class_names"]
        self.rotations = plan["rotations"]
        self.shifts = plan["shifts"]
        self.star_path = plan["star_path"]
        self.n_padded = plan["n_padded"]
        self.skipped = plan["skipped"]

    @property
    def particles(self) -> pd.DataFrame:
        """The particle table: all columns, original order; only the kept rows.

        Its index is each row's 0-based position in the input table, so kept and
        :attr:`skipped` rows can be told apart.
        """
        return self._particles

    @property
    def optics(self) -> pd.DataFrame | None:
        """The STAR file's optics table, or None."""
        return self._optics

    @property
    def groups(self) -> np.ndarray:
        """The tomogram name of each volume, for ``GroupKFold`` (see :class:`SubtomogramStack`)."""
        return self._groups

    def _read(self, indices: np.ndarray) -> np.ndarray:
        """Cut the volumes at ``indices``, opening each tomogram once for all its particles."""
        indices = np.asarray(indices, dtype=np.intp)
        volumes = np.empty((len(indices), *self._volume_shape), dtype=np.float32)
        owners = self._tomogram_index[indices]
        for tomogram in np.unique(owners):
            where = np.flatnonzero(owners == tomogram)
            with self._open(tomogram) as data:
                for slot in where:
                    volumes[slot] = self._cut(data, tomogram, indices[slot])
        return volumes

    def _open(self, tomogram: int):
        info = self._tomograms[tomogram]
        with _strictly(info.path):
            mrc = _open(mrcfile.mmap, info.path, mode="r")
        if mrc.data is None or mrc.data.shape != info.shape:
            found = None if mrc.data is None else mrc.data.shape
            mrc.close()
            raise ValueError(
                f"Tomogram {info.path} now holds data of shape {found}, not the {info.shape} "
                "it had when the stack was made; it changed on disk. Make the stack again."
            )
        return _DataOf(mrc)

    def _cut(self, data: np.ndarray, tomogram: int, index: int) -> np.ndarray:
        position, step, size = self._positions[index], self._steps[tomogram], self._volume_shape[0]
        fill = self._mean(tomogram, data)
        if step is None:
            return crop_cube(data, position, size, fill)[0]
        return resample_cube(data, position, size, step, fill)[0]

    def _mean(self, tomogram: int, data: np.ndarray) -> float:
        """The tomogram's mean: the header's when valid, else that of a strided sample."""
        if tomogram not in self._means:
            mean = self._tomograms[tomogram].header_mean
            if mean is None:
                steps = tuple(max(1, n // _MEAN_SAMPLES) for n in data.shape)
                mean = float(np.mean(data[:: steps[0], :: steps[1], :: steps[2]], dtype=np.float64))
            self._means[tomogram] = mean
        return self._means[tomogram]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(n={len(self)}, box_size={self._volume_shape[0]}, "
            f"voxel_size={self.voxel_size:g}, tomograms={len(self._tomograms)}, "
            f"n_padded={self.n_padded}, skipped={len(self.skipped)}, "
            f"source={self._description!r})"
        )


class _DataOf:
    """Context manager giving an open memory-mapped MRC file's data, closing it on exit."""

    def __init__(self, mrc) -> None:
        self._mrc = mrc

    def __enter__(self) -> np.ndarray:
        return self._mrc.data

    def __exit__(self, *exc) -> None:
        self._mrc.close()


def from_tomograms(
    particles,
    tomograms=None,
    *,
    box_size: int,
    voxel_size: float | None = None,
    coordinate_pixel_size: float | None = None,
    on_outside: str = "error",
) -> TomogramSubtomogramStack:
    """See :meth:`skdistill.io.SubtomogramStack.from_tomograms`."""
    _check_arguments(box_size, voxel_size, coordinate_pixel_size, on_outside)
    star, table, optics, classes, description = _read_particles(particles)
    name_label = conventions.tomogram_name_label(table)
    labels = _coordinate_labels(star, table)
    if name_label is None:
        raise ValueError(
            f"Particle table {description} has no tomogram name column "
            f"({' or '.join(conventions.TOMOGRAM_NAME_LABELS)}); every particle needs the "
            "name of its tomogram."
        )
    names = table[name_label].astype(str).to_numpy()
    keys = np.array([conventions.tomogram_key(name) for name in names])
    catalogue = _catalogue(tomograms, star, names, keys, labels, description)
    missing = sorted(set(keys.tolist()) - set(catalogue))
    if missing:
        raise ValueError(
            f"{len(missing)} tomograms named in {description} ({name_label}) have no tomogram "
            f"in tomograms={_describe(tomograms)}: {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}; available: {sorted(catalogue)[:10]}"
            f"{' ...' if len(catalogue) > 10 else ''}. Names are matched without folders and "
            "extensions (.tomostar, .mrc, .st, :mrc); add the missing tomograms."
        )
    used = list(dict.fromkeys(keys))
    tomograms_read = [_checked_tomogram(key, catalogue[key]) for key in used]
    tomogram_index = np.array([used.index(key) for key in keys], dtype=np.intp)
    sizes = np.array([voxel for _, voxel, _ in tomograms_read])
    output_size = _output_voxel_size(voxel_size, sizes, tomograms_read)

    optics_rows = optics_per_particle(star, optics, table) if star is not None else None
    positions = _positions(
        star or description,
        table,
        optics_rows,
        labels,
        coordinate_pixel_size,
        catalogue,
        keys,
        tomograms_read,
        tomogram_index,
    )
    infos = [info for info, _, _ in tomograms_read]
    shapes = np.array([info.shape for info in infos])[tomogram_index]
    rounded = np.floor(positions + 0.5)
    outside = np.any((rounded < 0) | (rounded >= shapes), axis=1)
    if np.any(outside) and (on_outside == "error" or np.all(outside)):
        message = _outside_message(table, outside, names, shapes, description)
        if on_outside == "skip":
            message = f"No particle is left: {message} Most likely the pixel size is wrong."
        raise ValueError(message)
    kept = ~outside

    steps = [
        None if abs(voxel - output_size) <= 1e-6 * output_size else output_size / voxel
        for voxel in sizes
    ]
    kept_positions = positions[kept]
    kept_index = tomogram_index[kept]
    padded = _padded(kept_positions, kept_index, steps, shapes[kept], box_size)
    n_padded = int(np.sum(padded))
    if n_padded:
        warnings.warn(
            f"{n_padded} of {int(np.sum(kept))} subtomograms reach beyond the edge of their "
            "tomogram; the missing voxels are filled with the tomogram's mean "
            "(stack.n_padded counts them). Use a smaller box_size, or drop particles close "
            "to the edges, if that matters.",
            EdgePaddingWarning,
            stacklevel=3,
        )
    kept_table = table[kept]
    class_names = None if star is None else _class_names(star, classes)
    kept_labels = _labels(star or Path(description), kept_table)
    if (
        kept_labels is not None
        and class_names is not None
        and kept_labels.max() >= len(class_names)
    ):
        raise ValueError(
            f"STAR file {star} uses rlnClassNumber {kept_labels.max() + 1} but its "
            f"data_skdistill_classes block names only {len(class_names)} classes; add the "
            "missing names."
        )
    residual = np.where(
        np.array([steps[i] is None for i in kept_index])[:, None],
        kept_positions - np.floor(kept_positions + 0.5),
        0.0,
    )
    return TomogramSubtomogramStack(
        {
            "particles": kept_table,
            "optics": optics,
            "groups": names[kept],
            "tomograms": infos,
            "tomogram_index": kept_index,
            "positions": kept_positions,
            "steps": steps,
            "box_size": int(box_size),
            "description": description,
            "voxel_size": float(output_size),
            "labels": kept_labels,
            "class_names": class_names,
            "rotations": three_columns(star or Path(description), kept_table, _ANGLE_LABELS),
            "shifts": residual * (sizes[kept_index] / output_size)[:, None] + 0.0,
            "star_path": star,
            "n_padded": n_padded,
            "skipped": table[outside],
        }
    )


def _check_arguments(box_size, voxel_size, coordinate_pixel_size, on_outside) -> None:
    if isinstance(box_size, bool) or not isinstance(box_size, numbers.Integral) or box_size < 1:
        raise ValueError(f"box_size must be a positive integer (voxels), got {box_size!r}.")
    for name, value in (
        ("voxel_size", voxel_size),
        ("coordinate_pixel_size", coordinate_pixel_size),
    ):
        if value is None:
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Real)
            or not np.isfinite(value)
            or value <= 0
        ):
            raise ValueError(f"{name} must be a positive number of Å or None, got {value!r}.")
    if on_outside not in _ON_OUTSIDE:
        raise ValueError(f"on_outside must be 'error' or 'skip', got {on_outside!r}.")


def _read_particles(particles):
    """``(star path or None, particles, optics or None, classes block or None, description)``."""
    if isinstance(particles, pd.DataFrame):
        if len(particles) == 0:
            raise ValueError("The particle table is empty; pass a table with particles.")
        return None, particles.reset_index(drop=True), None, None, "the particle DataFrame"
    if not isinstance(particles, (str, os.PathLike)):
        raise TypeError(
            "particles must be a particles STAR file or a pandas DataFrame, not "
            f"{type(particles).__name__}."
        )
    star = Path(particles)
    if not star.is_file():
        raise FileNotFoundError(f"Particles STAR file {star} does not exist.")
    text_labels = ["rlnTomoName", "rlnMicrographName", "rlnTomoParticleName", "rlnImageName"]
    try:
        blocks = starfile.read(star, always_dict=True, parse_as_string=text_labels)
    except ValueError as exc:
        raise ValueError(f"Cannot parse STAR file {star} ({exc}).") from exc
    table = _particles_block(star, blocks)
    if len(table) == 0:
        raise ValueError(f"STAR file {star} lists no particles; add particles to it.")
    optics = blocks.get("optics")
    optics = optics if isinstance(optics, pd.DataFrame) else None
    return star, table.reset_index(drop=True), optics, class_names_block(blocks), str(star)


def _coordinate_labels(star, table: pd.DataFrame) -> tuple[str, str, str]:
    for labels in (conventions.CENTERED_LABELS, conventions.PIXEL_LABELS):
        if all(label in table.columns for label in labels):
            return labels
    raise ValueError(
        f"Particle table {star or 'DataFrame'} has no particle coordinates: it needs RELION 5's "
        f"{'/'.join(conventions.CENTERED_LABELS)} (Å from the tomogram centre) or RELION 3/4 "
        f"and Warp's {'/'.join(conventions.PIXEL_LABELS)} (pixels). Its columns are "
        f"{list(table.columns)}."
    )


def _catalogue(tomograms, star, names, keys, labels, description):
    if tomograms is not None:
        return find_tomograms(tomograms)
    if labels == conventions.CENTERED_LABELS:
        raise ValueError(
            f"{description} gives RELION 5 centred coordinates, which need the tomograms' "
            "sizes and pixel sizes: pass tomograms= as RELION's tomograms.star (from "
            "Reconstruct tomograms)."
        )
    catalogue = {}
    for key, name in dict(zip(keys, names, strict=True)).items():
        try:
            path = resolve(name, star, "Tomogram")
        except FileNotFoundError as exc:
            raise FileNotFoundError(
                f"{exc} Without tomograms=, the tomogram names of {description} are read as "
                "tomogram files; pass tomograms= (a tomograms STAR file, a folder or a mapping)."
            ) from None
        catalogue[key] = TomogramEntry(str(path))
    return catalogue


def _checked_tomogram(key: str, entry) -> tuple[Tomogram, float, tuple]:
    """The tomogram's header, its voxel size (STAR over header) and its centring extent."""
    info = read_tomogram(entry.locate(key))
    voxel = entry.voxel_size
    if voxel is None:
        voxel = info.voxel_size
    elif info.voxel_size is not None and abs(info.voxel_size - voxel) > _SAME_SIZE * voxel:
        warnings.warn(
            f"Tomograms STAR file {entry.star} gives tomogram {key!r} the voxel size {voxel:g} Å "
            f"(rlnTomoTiltSeriesPixelSize x rlnTomoTomogramBinning) but the header of "
            f"{info.path} says {info.voxel_size:g} Å. Using the STAR file's, as RELION does.",
            PixelSizeWarning,
            stacklevel=4,
        )
    if voxel is None:
        raise ValueError(
            f"Tomogram {info.path} has no voxel size in its header and none is listed for it; "
            "set the header's voxel size (mrcfile: mrc.voxel_size = ...) or list it in a "
            "tomograms STAR file."
        )
    extent = tuple(float(n) for n in info.shape) if entry.size is None else entry.size
    if entry.size is not None and np.any(np.abs(np.subtract(entry.size, info.shape)) > 1.0):
        raise ValueError(
            f"Tomogram {info.path} holds {info.shape[::-1]} voxels (x, y, z), but {entry.star} "
            f"gives {key!r} the size {tuple(round(n, 2) for n in entry.size[::-1])} in "
            "tomogram voxels (rlnTomoSize / rlnTomoTomogramBinning): the file is not the "
            "tomogram that STAR file describes. Fix rlnTomoReconstructedTomogram."
        )
    return info, float(voxel), extent


def _output_voxel_size(voxel_size, sizes: np.ndarray, tomograms_read) -> float:
    if voxel_size is not None:
        return float(voxel_size)
    if np.ptp(sizes) > _SAME_SIZE * sizes.min():
        listed = ", ".join(f"{info.path.name}: {size:g} Å" for (info, size, _) in tomograms_read)
        raise ValueError(
            f"The tomograms have different voxel sizes ({listed}); pass voxel_size= (Å) to "
            "extract every subtomogram at one voxel size."
        )
    return float(sizes[0])


def _positions(
    star,
    table,
    optics_rows,
    labels,
    coordinate_pixel_size,
    catalogue,
    keys,
    tomograms_read,
    tomogram_index,
) -> np.ndarray:
    """Each particle's centre ``(z, y, x)`` in voxels of its tomogram."""
    voxel = np.array([size for _, size, _ in tomograms_read])[tomogram_index]
    extent = np.array([ext for _, _, ext in tomograms_read])[tomogram_index]  # (z, y, x)
    values = conventions.coordinates(star, table, labels)  # (x, y, z)
    if labels == conventions.CENTERED_LABELS:
        origins = conventions.origins_angst(star, table, voxel)
        angst = values - origins
        return angst[:, ::-1] / voxel[:, None] + extent / 2.0
    if coordinate_pixel_size is not None:
        pixel = np.full(len(table), float(coordinate_pixel_size))
    else:
        ts_sizes = {
            key: entry.tilt_series_pixel_size
            for key, entry in catalogue.items()
            if entry.tilt_series_pixel_size is not None
        }
        pixel, _ = conventions.coordinate_pixel_sizes(star, table, optics_rows, ts_sizes, keys)
        pixel = voxel if pixel is None else pixel
    if not np.all(np.isfinite(pixel) & (pixel > 0)):
        raise ValueError(
            f"Particle table {star} gives non-positive coordinate pixel sizes; pass "
            "coordinate_pixel_size= (Å per pixel of rlnCoordinateX/Y/Z)."
        )
    origins = conventions.origins_angst(star, table, pixel)
    pixels = values - origins / pixel[:, None]
    return (pixels * (pixel / voxel)[:, None])[:, ::-1]


def _padded(positions, index, steps, shapes, box_size) -> np.ndarray:
    padded = np.zeros(len(positions), dtype=bool)
    for row, (position, tomogram, shape) in enumerate(zip(positions, index, shapes, strict=True)):
        step = steps[tomogram]
        if step is None:
            start = np.floor(position + 0.5) - box_size // 2
            padded[row] = np.any(start < 0) or np.any(start + box_size > shape)
        else:
            first, last = resampled_support(position, box_size, step)
            padded[row] = np.any(first < -0.5) or np.any(last > shape - 0.5)
    return padded


def _outside_message(table, outside, names, shapes, description) -> str:
    rows = np.flatnonzero(outside)
    listed = []
    for row in rows[:10]:
        label = f"row {row + 1}"
        if "rlnTomoParticleName" in table.columns:
            label += f" ({table['rlnTomoParticleName'].iloc[row]})"
        depth, height, width = shapes[row]
        listed.append(f"{label} in {names[row]} of {width} x {height} x {depth} voxels (x, y, z)")
    more = f" and {len(rows) - 10} more" if len(rows) > 10 else ""
    return (
        f"{len(rows)} particles of {description} have their centre outside their tomogram: "
        f"{'; '.join(listed)}{more}. Check the coordinates and pixel sizes, or pass "
        "on_outside='skip' to leave them out (stack.skipped lists them)."
    )


def _describe(tomograms) -> str:
    if tomograms is None:
        return "None (tomogram names read as files)"
    if isinstance(tomograms, (str, os.PathLike)):
        return repr(str(tomograms))
    return f"a mapping of {len(tomograms)} tomograms"
