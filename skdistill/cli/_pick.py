"""``skdistill pick``: particles from a segmentation, written as a RELION 5 particles STAR file."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..picking import pick_particles, write_particles
from ._arguments import HelpFormatter, at_least, positive_float
from ._particles import check_input_file, check_output_file

__all__ = ["add_parser", "run"]

_DESCRIPTION = """\
Pick particles from a tomogram's segmentation written by 'skdistill segment': the labels
(--out there) or the class probabilities (--probabilities there). Each class's voxels
(label c, or probability of c at least --threshold) are split into connected components;
each component of --min-size to --max-size voxels is a particle at its centre of mass. The
particles are written as a RELION 5 particles STAR file (rlnTomoName, centred coordinates
in Å, rlnClassNumber = the class, rlnAutopickFigureOfMerit = the mean probability), which
'skdistill predict --tomograms' and RELION read. A count per class is printed.
"""

_EPILOG = """\
examples:
  skdistill pick --segmentation TS_01_labels.mrc --tomo-name TS_01 --out particles.star
  skdistill pick --segmentation TS_01_probabilities.mrc --tomo-name TS_01 \\
      --threshold 0.7 --min-size 50 --max-size 5000 --classes 1 --out particles.star
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``pick`` subcommand to ``subparsers``."""
    parser = subparsers.add_parser(
        "pick",
        help="pick particles from a segmentation, write a RELION 5 particles STAR file",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--segmentation", required=True, type=Path, metavar="MRC",
                        help="labels or probabilities from 'skdistill segment'")  # fmt: skip
    parser.add_argument("--tomo-name", required=True,
                        help="the tomogram's rlnTomoName in the project (required)")  # fmt: skip
    parser.add_argument("--out", required=True, type=Path, metavar="STAR",
                        help="particles STAR file to write (required)")  # fmt: skip
    parser.add_argument("--classes", type=at_least(1), nargs="+", metavar="C",
                        help="classes to pick (default: all but the background, 0)")  # fmt: skip
    parser.add_argument("--min-size", type=at_least(1), default=8, metavar="VOXELS",
                        help="smallest particle in voxels (default: %(default)s)")  # fmt: skip
    parser.add_argument("--max-size", type=at_least(1), metavar="VOXELS",
                        help="largest particle in voxels (default: no limit)")  # fmt: skip
    parser.add_argument("--threshold", type=positive_float, default=0.5,
                        help="probability from which a voxel belongs to a class "
                        "(probabilities only; default: %(default)s)")  # fmt: skip
    parser.add_argument("--voxel-size", type=positive_float, metavar="ANGSTROM",
                        help="voxel size in Å (default: the MRC header's)")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Pick the particles and write them."""
    check_input_file(args.segmentation, "segmentation")
    check_output_file(args.out, overwrite=args.overwrite, what="output STAR file")
    picks = pick_particles(
        args.segmentation, classes=args.classes, min_size=args.min_size,
        max_size=args.max_size, threshold=args.threshold, voxel_size=args.voxel_size,
    )  # fmt: skip
    voxel_size = picks.attrs["voxel_size"]
    if voxel_size is None:
        raise ValueError(
            f"{args.segmentation} has no voxel size in its header; pass --voxel-size (Å)."
        )
    write_particles(
        picks, args.out, tomo_name=args.tomo_name, voxel_size=voxel_size,
        shape=picks.attrs["shape"], overwrite=args.overwrite,
    )  # fmt: skip
    classes, counts = np.unique(picks["class"], return_counts=True)
    per_class = ", ".join(f"class {c}: {n}" for c, n in zip(classes, counts, strict=True))
    print(f"Picked {len(picks)} particles ({per_class or 'none'}); written to {args.out}.")
    return 0
