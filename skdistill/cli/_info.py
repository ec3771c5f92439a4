"""``skdistill info``: describe subtomograms on disk without loading them all into memory."""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..io import SubtomogramStack
from ..io.mrc import header_problems, read_header
from ..io.star import PARTICLES_STAR
from ._arguments import HelpFormatter

__all__ = ["ValueStatistics", "add_parser", "run", "value_statistics"]

#: Voxels read per batch for the statistics: 2**22 float32 voxels are 16 MiB.
_BATCH_VOXELS = 2**22

_DESCRIPTION = """\
Describe subtomograms on disk: the kind of source, the number of volumes, their shape and
voxel size, value statistics (computed batch by batch, never loading all volumes at once),
the number of subtomograms per class when there are labels, and problems: pixel sizes that
disagree between the STAR file and the MRC headers or between optics groups (the STAR
value is used, as in RELION), and MRC headers that mrcfile.validate finds non-standard.
Files that cannot be read correctly (a wrong size for the header's mode, trailing data, a
truncated copy, 2D image stacks) are an error.

PATH is a particles.star file, a directory (its particles.star, else its *.mrc files), one
MRC file holding a volume, or an MRC stack of volumes.
"""

_EPILOG = """\
examples:
  skdistill info data/snr005
  skdistill info data/snr005/particles.star
  skdistill info stack.mrc
"""


@dataclass(frozen=True)
class ValueStatistics:
    """Summary of all voxel values of a data set.

    Attributes
    ----------
    count : int
        Number of voxels.
    minimum, maximum, mean, std : float
        Their extremes, mean and (population) standard deviation; NaN when any value is NaN.
    """

    count: int
    minimum: float
    maximum: float
    mean: float
    std: float


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``info`` subcommand to ``subparsers``."""
    parser = subparsers.add_parser(
        "info",
        help="describe subtomograms: count, shape, voxel size, values, classes",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "path", type=Path, metavar="PATH", help="STAR file, directory, MRC volume or MRC stack"
    )
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Print a description of the subtomograms at ``args.path``."""
    path: Path = args.path
    # Warnings (e.g. pixel sizes that disagree) are listed as problems, not sent to stderr.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stack = SubtomogramStack(path)
    problems = []
    for item in caught:
        if issubclass(item.category, UserWarning):
            problems.append(" ".join(str(item.message).split()))
        else:
            warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)
    problems += _header_problems(stack.paths)
    n, *volume_shape = stack.shape
    batch_size = max(1, _BATCH_VOXELS // math.prod(volume_shape))
    # A progress bar only on a terminal (disable=None), erased when done.
    with tqdm(
        total=n, desc="reading", unit="vol", file=sys.stderr, disable=None, leave=False
    ) as progress:
        stats = value_statistics(_counted(stack.iter_batches(batch_size), progress))

    voxel_size = "unknown" if stack.voxel_size is None else f"{stack.voxel_size:g} Å"
    poses = [name for name in ("rotations", "shifts") if getattr(stack, name) is not None]
    rows = [
        ("source", f"{_source_kind(path)}: {path}"),
        ("volumes", str(n)),
        ("volume shape", " x ".join(str(size) for size in volume_shape) + " voxels (z, y, x)"),
        ("voxel size", voxel_size),
        (
            "values",
            f"min {stats.minimum:.6g}, max {stats.maximum:.6g}, mean {stats.mean:.6g}, "
            f"std {stats.std:.6g}",
        ),
        ("poses", ", ".join(poses) if poses else "none"),
        *([("problem", problem) for problem in problems] or [("problems", "none")]),
        ("classes", _class_summary(stack)),
    ]
    width = max(len(key) for key, _ in rows)
    lines = [f"{key:<{width}}  {value}" for key, value in rows]
    print("\n".join([*lines, *_class_table(stack)]))
    return 0


def value_statistics(batches: Iterable[np.ndarray]) -> ValueStatistics:
    """Minimum, maximum, mean and standard deviation of all values in ``batches``, streaming.

    Each batch is summarised in float64 and merged into the running totals with the pairwise
    update of Chan, Golub and LeVeque, which stays accurate over many batches; only one batch
    is held in memory at a time.

    Parameters
    ----------
    batches : iterable of ndarray
        Arrays of any shape; all their values count.

    Returns
    -------
    ValueStatistics

    Examples
    --------
    >>> import numpy as np
    >>> stats = value_statistics([np.array([1.0, 2.0]), np.array([[3.0], [6.0]])])
    >>> stats.count, stats.minimum, stats.maximum, stats.mean, round(stats.std, 6)
    (4, 1.0, 6.0, 3.0, 1.870829)
    """
    count, mean, m2 = 0, 0.0, 0.0
    minimum, maximum = math.inf, -math.inf
    with np.errstate(invalid="ignore", over="ignore"):
        for batch in batches:
            values = np.asarray(batch, dtype=np.float64).ravel()
            if values.size == 0:
                continue
            batch_mean = float(values.mean())
            batch_m2 = float(np.square(values - batch_mean).sum())
            total = count + values.size
            delta = batch_mean - mean
            mean += delta * values.size / total
            m2 += batch_m2 + delta**2 * count * values.size / total
            count = total
            minimum = float(np.minimum(minimum, values.min()))
            maximum = float(np.maximum(maximum, values.max()))
    if count == 0:
        return ValueStatistics(0, math.nan, math.nan, math.nan, math.nan)
    return ValueStatistics(count, minimum, maximum, mean, math.sqrt(m2 / count))


def _header_problems(paths: list[Path]) -> list[str]:
    """mrcfile.validate's findings over the distinct files, one line per kind of finding."""
    files: dict[str, list[Path]] = {}
    unique = list(dict.fromkeys(paths))
    for path in unique:
        for message in header_problems(path):
            files.setdefault(message, []).append(path)
    return [
        f"mrcfile.validate: {message} (in {len(found)} of {len(unique)} files, e.g. {found[0]})"
        for message, found in files.items()
    ]


def _counted(batches: Iterable[np.ndarray], progress: tqdm) -> Iterator[np.ndarray]:
    for batch in batches:
        yield batch
        progress.update(len(batch))


def _source_kind(path: Path) -> str:
    if path.is_dir():
        if (path / PARTICLES_STAR).is_file():
            return f"directory with {PARTICLES_STAR}"
        return "directory of MRC files"
    if path.suffix.lower() == ".star":
        return "STAR file"
    return "MRC stack" if read_header(path).is_stack else "MRC volume"


def _class_summary(stack: SubtomogramStack) -> str:
    if stack.labels is None:
        return "no labels"
    n_classes = _n_classes(stack)
    named = "named" if stack.class_names is not None else "unnamed"
    return f"{n_classes} ({named}); subtomograms per class:"


def _class_table(stack: SubtomogramStack) -> list[str]:
    if stack.labels is None:
        return []
    counts = np.bincount(stack.labels, minlength=_n_classes(stack))
    names = stack.class_names or ["-"] * len(counts)
    width = max(len("count"), len(str(counts.max())))
    label_width = max(len("label"), len(str(len(counts) - 1)))
    header = f"  {'label':>{label_width}}  {'count':>{width}}  name"
    return [header] + [
        f"  {label:>{label_width}}  {count:>{width}}  {name}"
        for label, (count, name) in enumerate(zip(counts, names, strict=True))
    ]


def _n_classes(stack: SubtomogramStack) -> int:
    if stack.class_names is not None:
        return len(stack.class_names)
    return int(stack.labels.max()) + 1
