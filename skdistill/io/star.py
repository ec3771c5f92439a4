"""RELION particles STAR files through :mod:`starfile`.

Written files follow RELION 3.1+: a ``data_optics`` block with one optics group
(``rlnOpticsGroup``, ``rlnOpticsGroupName``, ``rlnImagePixelSize`` in Å, ``rlnImageSize``,
``rlnImageDimensionality`` = 3) and a ``data_particles`` block with one row per subtomogram:

- ``rlnImageName``: the MRC file, relative to the STAR file's directory (a ``k@stack.mrc``
  name, 1-based ``k``, is also read);
- ``rlnOpticsGroup``: 1;
- ``rlnClassNumber``: the label plus one (RELION counts classes from 1);
- ``rlnAngleRot``, ``rlnAngleTilt``, ``rlnAnglePsi``: ZYZ Euler angles in degrees;
- ``rlnOriginXAngst``, ``rlnOriginYAngst``, ``rlnOriginZAngst``: RELION's origin, the
  translation that moves the particle back to the box centre. A particle offset from the
  centre by ``shift`` voxels (ordered ``(z, y, x)`` like the array axes) has origin
  ``-shift * voxel_size`` Å, component-wise ``(x, y, z)``. RELION 3.0's ``rlnOriginX/Y/Z``
  (pixels) are read as well.

Class names, which RELION has no label for, go to a third loop block
``data_skdistill_classes`` with ``rlnClassNumber`` and ``skdistillClassName``; RELION ignores
blocks it does not read. Files written by skdistill 0.1 development versions named that block
``data_classes``; it is still read.

Label volumes (segmentation masks), when written, are listed per particle in ``rlnMaskName``,
relative to the STAR file like ``rlnImageName``. This use is skdistill's own: RELION defines
``rlnMaskName`` for the masks of post-processing and multi-body refinement and does not use it
in particle tables (it carries such columns through unchanged), so the file stays a valid
RELION particles file.

Files written by other software are read strictly (see :func:`read_particles_star`): the
pixel size comes from the STAR file, which wins over the MRC headers as in RELION (its
``ObservationModel``, ``src/jaz/single_particle/obs_model.cpp``, takes each optics group's
pixel size from the optics table, never from image headers); 2D images (RELION 5 tilt-image
stacks) are refused; a value that is not a number is an error naming file, column and value.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import starfile

from ._star_values import (
    PixelSizeWarning,
    check_3d,
    image_size,
    numeric,
    optics_per_particle,
    three_columns,
    voxel_size_of,
)

__all__ = [
    "CLASS_NAME_LABEL",
    "MASK_NAME_LABEL",
    "PARTICLES_STAR",
    "ParticleTable",
    "PixelSizeWarning",
    "check_class_name",
    "read_particles_star",
    "write_particles_star",
]

#: File name of the STAR file :func:`~skdistill.io.write_subtomograms` writes.
PARTICLES_STAR = "particles.star"
#: STAR label of the class-name column in the ``data_skdistill_classes`` block.
CLASS_NAME_LABEL = "skdistillClassName"
#: Name of the block (``data_skdistill_classes``) mapping class numbers to class names.
CLASSES_BLOCK = "skdistill_classes"
#: The name earlier development versions gave that block (``data_classes``), still read.
_LEGACY_CLASSES_BLOCK = "classes"
#: STAR label of the per-particle label-volume (mask) file in the ``data_particles`` block.
MASK_NAME_LABEL = "rlnMaskName"

_ANGLE_LABELS = ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")
_ORIGIN_ANGST_LABELS = ("rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst")
_ORIGIN_PIXEL_LABELS = ("rlnOriginX", "rlnOriginY", "rlnOriginZ")
# starfile reads quotes, '#' comments and NA markers specially, so names holding them would
# not read back as written.
_BAD_NAME = re.compile(r"[\"'#\x00-\x1f\x7f]|^\s|\s$|^$|^(nan|NaN|<NA>)$")


@dataclass
class ParticleTable:
    """The particles listed in a STAR file (or a list of MRC files), with their metadata.

    Attributes
    ----------
    paths : list of Path
        Image file of each particle.
    star_path : Path or None
        The STAR file the table was read from, or None for a plain list of MRC files.
    stack_indices : list of int or None
        0-based volume index into a stack file per particle (from ``k@file``), or None.
    voxel_size : float or None
        Voxel size in Å from the STAR file (see :func:`read_particles_star`), or None.
    voxel_size_label : str or None
        The STAR label(s) ``voxel_size`` was taken from, for messages.
    image_size : int or None
        The box size ``rlnImageSize`` of the optics groups in use, or None.
    labels, class_names, rotations, shifts
        As in :class:`~skdistill.io.SubtomogramStack`; None when absent.
    mask_paths : list of Path or None
        Label-volume file of each particle (``rlnMaskName``), resolved like the images but
        not checked for existence; None without that column.
    mask_stack_indices : list of int or None
        0-based volume index into a mask stack file per particle (from ``k@file``), or None.
    """

    paths: list[Path]
    stack_indices: list[int | None]
    star_path: Path | None = None
    voxel_size: float | None = None
    labels: np.ndarray | None = None
    class_names: list[str] | None = None
    rotations: np.ndarray | None = None
    shifts: np.ndarray | None = None
    mask_paths: list[Path] | None = None
    mask_stack_indices: list[int | None] | None = None
    voxel_size_label: str | None = None
    image_size: int | None = None


def check_class_name(name: str) -> None:
    """Raise ``ValueError`` unless ``name`` survives a round trip through a STAR file."""
    if not isinstance(name, str):
        raise ValueError(
            f"class_names must be strings, got {name!r} of type {type(name).__name__}; "
            "convert them with [str(name) for name in class_names]."
        )
    if _BAD_NAME.search(name):
        raise ValueError(
            f"Class name {name!r} cannot be stored in a STAR file: names must be non-empty, "
            "must not start or end with whitespace, must not contain quotes, '#' or control "
            "characters, and must not be 'nan', 'NaN' or '<NA>'. Rename the class."
        )


def write_particles_star(
    path: str | os.PathLike,
    image_names: list[str],
    *,
    voxel_size: float,
    box_size: int,
    labels: np.ndarray | None = None,
    class_names: list[str] | None = None,
    rotations: np.ndarray | None = None,
    shifts: np.ndarray | None = None,
    mask_names: list[str] | None = None,
) -> None:
    """Write a RELION 3.1+ particles STAR file (see the module docstring for the labels).

    Inputs are expected to be validated already; ``labels`` are 0-based, ``rotations`` and
    ``shifts`` of shape ``(n, 3)``, ``shifts`` in voxels ordered ``(z, y, x)``, ``mask_names``
    one label-volume file per particle (``rlnMaskName``).
    """
    n = len(image_names)
    optics = pd.DataFrame(
        {
            "rlnOpticsGroup": [1],
            "rlnOpticsGroupName": ["opticsGroup1"],
            "rlnImagePixelSize": [float(voxel_size)],
            "rlnImageSize": [int(box_size)],
            "rlnImageDimensionality": [3],
        }
    )
    particles: dict[str, object] = {
        "rlnImageName": list(image_names),
        "rlnOpticsGroup": np.ones(n, dtype=np.int64),
    }
    if labels is not None:
        particles["rlnClassNumber"] = np.asarray(labels, dtype=np.int64) + 1
    if rotations is not None:
        particles.update(zip(_ANGLE_LABELS, np.asarray(rotations, dtype=np.float64).T, strict=True))
    if shifts is not None:
        # Adding 0.0 turns -0.0 into 0.0, which reads better in the file.
        origins = -np.asarray(shifts, dtype=np.float64)[:, ::-1] * voxel_size + 0.0
        particles.update(zip(_ORIGIN_ANGST_LABELS, origins.T, strict=True))
    if mask_names is not None:
        particles[MASK_NAME_LABEL] = list(mask_names)
    blocks = {"optics": optics, "particles": pd.DataFrame(particles)}
    if class_names is not None:
        blocks[CLASSES_BLOCK] = pd.DataFrame(
            {
                "rlnClassNumber": np.arange(1, len(class_names) + 1),
                CLASS_NAME_LABEL: [str(name) for name in class_names],
            }
        )
    starfile.write(blocks, path)


def read_particles_star(path: str | os.PathLike) -> ParticleTable:
    """Read a particles STAR file written by skdistill, RELION (3.0 to 5) or Warp.

    Image names are resolved relative to the STAR file's directory; a name that does not
    exist there but does relative to the current directory (RELION's project directory
    convention) is taken from there.

    The pixel size is read from, in this order, ``rlnImagePixelSize``, RELION 4/5's
    ``rlnTomoTiltSeriesPixelSize`` times ``rlnTomoSubtomogramBinning``, and RELION 3.0 /
    Warp's ``rlnDetectorPixelSize`` (µm) times 10⁴ over ``rlnMagnification``, in the
    ``data_optics`` block, else in the particle table. Optics groups whose pixel sizes differ
    by less than 1 % are read with a :class:`PixelSizeWarning`, at the pixel size of most
    particles.

    Raises
    ------
    FileNotFoundError
        If the STAR file or any image it lists does not exist.
    ValueError
        If the file cannot be parsed, lacks ``rlnImageName``, holds inconsistent or
        non-numeric values, lists 2D images (``rlnImageDimensionality`` 2, RELION 5's
        ``rlnTomoSubTomosAre2DStacks`` 1) or mixes pixel sizes by 1 % or more.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"STAR file {path} does not exist.")
    try:
        blocks = starfile.read(
            path,
            always_dict=True,
            parse_as_string=["rlnImageName", CLASS_NAME_LABEL, MASK_NAME_LABEL],
        )
    except ValueError as exc:
        raise ValueError(
            f"Cannot parse STAR file {path} ({exc}). Check that it is a valid STAR file."
        ) from exc
    particles = _particles_block(path, blocks)
    if "rlnImageName" not in particles.columns:
        picks = any(
            label in particles.columns
            for label in ("rlnCenteredCoordinateXAngst", "rlnCoordinateX")
        )
        hint = (
            " It lists picked coordinates: extract the particles from their tomograms with "
            "SubtomogramStack.from_tomograms(star, tomograms, box_size=...) (on the command "
            "line: --tomograms and --box)."
            if picks
            else " Add rlnImageName with each particle's MRC file, relative to the STAR file."
        )
        raise ValueError(
            f"STAR file {path} has no rlnImageName column (it has {list(particles.columns)})."
            + hint
        )
    if len(particles) == 0:
        raise ValueError(f"STAR file {path} lists no particles; add particles to it.")
    optics = optics_per_particle(path, blocks.get("optics"), particles)
    check_3d(path, blocks.get("general"), optics, particles)

    paths, stack_indices = _image_paths(path, particles["rlnImageName"])
    mask_paths, mask_stack_indices = None, None
    if MASK_NAME_LABEL in particles.columns:
        mask_paths, mask_stack_indices = _resolve_names(path, particles[MASK_NAME_LABEL])
    voxel_size, voxel_size_label = voxel_size_of(path, optics, particles)
    labels = _labels(path, particles)
    class_names = _class_names(path, class_names_block(blocks))
    if labels is not None and class_names is not None and labels.max() >= len(class_names):
        raise ValueError(
            f"STAR file {path} uses rlnClassNumber {labels.max() + 1} but its "
            f"data_skdistill_classes block names only {len(class_names)} classes; add the "
            "missing class names."
        )
    return ParticleTable(
        paths=paths,
        stack_indices=stack_indices,
        star_path=path,
        voxel_size=voxel_size,
        labels=labels,
        class_names=class_names,
        rotations=three_columns(path, particles, _ANGLE_LABELS),
        shifts=_shifts(path, particles, voxel_size),
        mask_paths=mask_paths,
        mask_stack_indices=mask_stack_indices,
        voxel_size_label=voxel_size_label,
        image_size=image_size(path, optics, particles),
    )


def _particles_block(path: Path, blocks: dict) -> pd.DataFrame:
    if not blocks:
        raise ValueError(
            f"STAR file {path} holds no data blocks; it is empty or not a STAR file. Pass a "
            "particles STAR file with a data_particles block."
        )
    if "particles" in blocks:
        block = blocks["particles"]
    elif len(blocks) == 1:  # RELION 3.0 style: a single, possibly unnamed, block
        block = next(iter(blocks.values()))
    else:
        raise ValueError(
            f"STAR file {path} has no data_particles block (it has "
            f"{[f'data_{name}' for name in blocks]}). Name the particle table data_particles."
        )
    if isinstance(block, dict):  # a single particle written as a simple block
        block = pd.DataFrame([block])
    return block


def _image_paths(star: Path, names: pd.Series) -> tuple[list[Path], list[int | None]]:
    paths, stack_indices = _resolve_names(star, names)
    missing = [i for i, path in enumerate(paths) if not path.is_file()]
    if missing:
        name = Path(str(names.iloc[missing[0]]).rpartition("@")[2])
        if name.is_absolute():
            where = f"{name} does not exist"
        else:
            where = (
                f"it is neither at {star.parent / name} (relative to the STAR file's "
                f"directory) nor at {Path.cwd() / name} (relative to the working directory)"
            )
        raise FileNotFoundError(
            f"{len(missing)} of {len(paths)} particle images listed in STAR file {star} are "
            f"missing, the first being {name}: {where}. RELION writes image names relative "
            "to its project folder: run skdistill from the RELION project folder (the one "
            "holding the job folders), or restore the files, or fix rlnImageName."
        )
    return paths, stack_indices


def _resolve_names(star: Path, names: pd.Series) -> tuple[list[Path], list[int | None]]:
    """Files and 0-based stack indices of ``file`` / ``k@file`` names in a STAR file."""
    resolved: dict[str, Path] = {}
    paths, stack_indices = [], []
    for name in names.astype(str):
        index, at, file_name = name.partition("@")
        if not at:
            index, file_name = "", name
        if file_name not in resolved:
            candidate = Path(file_name)
            in_star_dir = candidate if candidate.is_absolute() else star.parent / candidate
            use_cwd = not in_star_dir.exists() and candidate.exists()
            resolved[file_name] = candidate if use_cwd else in_star_dir
        paths.append(resolved[file_name])
        stack_indices.append(_stack_index(star, name, index) if index else None)
    return paths, stack_indices


def _stack_index(star: Path, name: str, index: str) -> int:
    if not index.isdigit() or int(index) < 1:
        raise ValueError(
            f"STAR file {star} has the image name {name!r}; in 'k@file' names k must be a "
            "positive (1-based) volume number."
        )
    return int(index) - 1


def _labels(star: Path, particles: pd.DataFrame) -> np.ndarray | None:
    if "rlnClassNumber" not in particles.columns:
        return None
    numbers = np.asarray(
        numeric(star, particles, "rlnClassNumber", "data_particles"), dtype=np.float64
    )
    if not (np.all(np.isfinite(numbers)) and np.all(numbers == np.round(numbers))):
        raise ValueError(
            f"STAR file {star} has non-integer rlnClassNumber values; class numbers must be "
            "integers 1..K."
        )
    if numbers.min() < 1:
        raise ValueError(
            f"STAR file {star} has rlnClassNumber {int(numbers.min())}; RELION class numbers "
            "start at 1. Renumber the classes 1..K."
        )
    return numbers.astype(np.int64) - 1


def class_names_block(blocks: dict):
    """The block naming the classes (``data_skdistill_classes``, or ``data_classes``), or None."""
    block = blocks.get(CLASSES_BLOCK)
    return blocks.get(_LEGACY_CLASSES_BLOCK) if block is None else block


def _class_names(star: Path, classes) -> list[str] | None:
    if not isinstance(classes, pd.DataFrame) or CLASS_NAME_LABEL not in classes.columns:
        return None
    table = classes.sort_values("rlnClassNumber")
    numbers = np.asarray(table["rlnClassNumber"])
    if not np.array_equal(numbers, np.arange(1, len(table) + 1)):
        raise ValueError(
            f"STAR file {star} numbers its data_skdistill_classes rows {numbers.tolist()}; they "
            "must be 1..K, one row per class."
        )
    return [str(name) for name in table[CLASS_NAME_LABEL]]


def _shifts(star: Path, particles: pd.DataFrame, voxel_size: float | None) -> np.ndarray | None:
    origins_angst = three_columns(star, particles, _ORIGIN_ANGST_LABELS)
    if origins_angst is not None:
        if voxel_size is None:
            raise ValueError(
                f"STAR file {star} gives origins in Å (rlnOriginXAngst) but no pixel size; "
                "add rlnImagePixelSize to its data_optics block."
            )
        return -origins_angst[:, ::-1] / voxel_size + 0.0
    origins_pixels = three_columns(star, particles, _ORIGIN_PIXEL_LABELS)
    return None if origins_pixels is None else -origins_pixels[:, ::-1] + 0.0
