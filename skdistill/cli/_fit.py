"""``skdistill fit``: train a classifier on the particles of a STAR file, save a model file."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from sklearn.frozen import FrozenEstimator

from ..architectures import list_architectures
from ..estimators import Cnn3DClassifier, DistilledClassifier
from ..model_files import check_model_path, load_model, save_model
from ._arguments import (
    HelpFormatter,
    add_device_and_seed,
    add_model_file,
    at_least,
    positive_float,
)
from ._particles import (
    add_particle_arguments,
    check_input_file,
    check_output_file,
    open_particles,
)

__all__ = ["add_parser", "labels_from_column", "run"]

_DESCRIPTION = """\
Train a classifier on the particles of a STAR file, with their classes from a STAR column
(rlnClassNumber by default), and save it as a safe model file (skdistill.save_model:
safetensors weights and a JSON description; loading it runs no code).

The subtomograms are the files named in rlnImageName, or, with --tomograms, boxes of --box
voxels extracted around each particle's coordinates from the tomograms (RELION 5
tomograms.star, or a folder of tomograms named like the particles' rlnTomoName or
rlnMicrographName), resampled to --voxel-size when given.

With --teacher (a model file) or --teacher-arch the classifier is a student of --arch
trained on the teacher's soft labels at --temperature (knowledge distillation, Guo et al.
2018); a --teacher-arch teacher is trained first on the same particles.

The inputs, the output place and the memory the particles need are checked before any
training; the model file is written only when training has finished.
"""

_EPILOG = """\
examples:
  skdistill fit --star train.star --tomograms tomograms.star --box 40 --voxel-size 9.2 \\
      --arch s1 --teacher-arch dsrf3d_v2 --temperature 5 --model s1.safetensors
  skdistill fit --star Extract/job012/particles.star --arch s3 --epochs 10 \\
      --model s3.safetensors
  skdistill predict --model s1.safetensors --star particles.star \\
      --tomograms tomograms.star --out classified.star
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``fit`` subcommand to ``subparsers``."""
    parser = subparsers.add_parser(
        "fit",
        help="train a (distilled) classifier on a STAR file's particles, save a model file",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=HelpFormatter,
    )
    add_particle_arguments(parser)
    parser.add_argument(
        "--box", type=at_least(1), metavar="N", help="box size in voxels (with --tomograms)"
    )
    parser.add_argument(
        "--voxel-size",
        type=positive_float,
        metavar="ANGSTROM",
        help="voxel size in Å the model is trained at (with --tomograms the particles are "
        "resampled to it; default: the data's own)",
    )
    architectures = list_architectures()
    parser.add_argument(
        "--arch",
        default="s1",
        choices=architectures,
        help="network to train; the student with a teacher (default: %(default)s)",
    )
    teacher = parser.add_mutually_exclusive_group()
    teacher.add_argument(
        "--teacher",
        type=Path,
        metavar="MODEL",
        help="a trained classifier's model file to distill from (used as is)",
    )
    teacher.add_argument(
        "--teacher-arch",
        choices=architectures,
        help="train a teacher of this architecture first, then distill from it",
    )
    parser.add_argument(
        "--temperature",
        type=positive_float,
        default=5.0,
        help="distillation temperature T (default: %(default)s)",
    )
    parser.add_argument(
        "--label-column",
        default="rlnClassNumber",
        metavar="LABEL",
        help="STAR column with each particle's class (default: %(default)s)",
    )
    parser.add_argument("--epochs", type=at_least(1), metavar="N", help="training epochs")
    parser.add_argument(
        "--optimizer",
        choices=("sgd", "adam"),
        help="optimizer of the network(s) (default: the estimators' sgd, the paper's)",
    )
    parser.add_argument(
        "--lr", type=positive_float, metavar="RATE", help="learning rate of the network(s)"
    )
    parser.add_argument(
        "--teacher-lr",
        type=positive_float,
        metavar="RATE",
        help="learning rate of a --teacher-arch teacher (default: --lr)",
    )
    parser.add_argument(
        "--no-standardize",
        dest="standardize",
        action="store_false",
        help="feed the volumes as they are; by default each volume is scaled to zero mean "
        "and unit variance (in fit and, by the saved model, in predict), as tomograms come "
        "at any scale",
    )
    parser.add_argument("--batch-size", type=at_least(1), metavar="N", help="training batch size")
    add_device_and_seed(parser)
    add_model_file(parser, "--model", "model file to write, e.g. s1.safetensors")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --model")
    parser.add_argument("--quiet", "-q", action="store_true", help="no per-epoch table")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Train the classifier and write the model file."""
    if args.teacher is not None:
        check_input_file(args.teacher, "teacher model file")
    if args.teacher is None and args.teacher_arch is None and args.temperature != 5.0:
        raise ValueError("--temperature needs a teacher: pass --teacher or --teacher-arch.")
    if args.teacher_lr is not None and args.teacher_arch is None:
        raise ValueError("--teacher-lr sets the rate of a --teacher-arch teacher; pass one.")
    check_output_file(args.model, overwrite=args.overwrite, what="model file")  # makes folders
    check_model_path(args.model, overwrite=args.overwrite)
    teacher = None if args.teacher is None else load_model(args.teacher)
    stack = open_particles(args, box_size=args.box, voxel_size=args.voxel_size)
    fit_params = _voxel_size_parameter(stack, args)
    y = labels_from_column(stack, args.label_column)
    estimator = _estimator(args, teacher)
    classes = np.unique(y)
    print(
        f"Training {type(estimator).__name__} ({_description(args)}) on {len(stack)} particles "
        f"of {stack.shape[1]}^3 voxels at {_angstrom(stack.voxel_size)}, {len(classes)} "
        f"classes from {args.label_column}.",
        flush=True,
    )
    start = time.perf_counter()
    estimator.fit(stack, y, **fit_params)
    minutes = (time.perf_counter() - start) / 60
    save_model(estimator, args.model, overwrite=args.overwrite)
    score = getattr(estimator, "validation_score_", float("nan"))
    print(
        f"Trained in {minutes:.1f} min ({estimator.n_iter_} epochs, best validation accuracy "
        f"{score:.3f}). Model written to {args.model}."
    )
    return 0


def labels_from_column(stack, column: str) -> np.ndarray:
    """Each particle's class from the STAR column ``column``.

    The column's values are the classes, so the model's ``classes_`` are, for
    ``rlnClassNumber``, RELION's class numbers, and ``skdistill predict`` writes each class
    back under the same number. Integer-valued floats become integers.

    Raises
    ------
    ValueError
        If the column is missing or holds empty values.
    """
    particles = stack.particles
    if particles is None or column not in particles:
        available = [] if particles is None else [c for c in particles if "Class" in c]
        hint = f" Columns with classes: {', '.join(available)}." if available else ""
        raise ValueError(
            f"The particles have no column {column} to take their classes from.{hint} Pass "
            "--label-column with the column that holds each particle's class."
        )
    values = particles[column]
    missing = np.flatnonzero(values.isna().to_numpy())
    if missing.size:
        raise ValueError(
            f"{missing.size} particles have no value in {column}, the first in row "
            f"{missing[0] + 1}. Give every training particle a class."
        )
    values = values.to_numpy()
    if values.dtype.kind == "f" and np.all(values == np.round(values)):
        values = values.astype(np.int64)
    return values


def _voxel_size_parameter(stack, args: argparse.Namespace) -> dict:
    """The ``voxel_size`` fit parameter for data whose voxel size the stack does not know."""
    if args.voxel_size is None or args.tomograms is not None:
        return {}
    if stack.voxel_size is None:
        return {"voxel_size": args.voxel_size}
    if abs(stack.voxel_size - args.voxel_size) > 0.01 * args.voxel_size:
        raise ValueError(
            f"The subtomograms in {args.star} have voxels of {stack.voxel_size:g} Å, not the "
            f"--voxel-size {args.voxel_size:g} Å. Extracted subtomograms are not resampled: "
            "pass --tomograms (and --box) to extract them at that voxel size, or leave out "
            "--voxel-size."
        )
    return {}


def _estimator(args: argparse.Namespace, teacher):
    settings = {
        "device": args.device,
        "random_state": args.seed,
        "verbose": int(not args.quiet),
        "standardize": args.standardize,
    }
    for option, parameter in (
        ("epochs", "max_epochs"),
        ("batch_size", "batch_size"),
        ("optimizer", "optimizer"),
        ("lr", "lr"),
    ):
        if getattr(args, option) is not None:
            settings[parameter] = getattr(args, option)
    if teacher is not None:
        if not isinstance(teacher, Cnn3DClassifier):
            raise ValueError(
                f"The teacher {args.teacher} is a {type(teacher).__name__}; a classifier's "
                "teacher must be a Cnn3DClassifier model file (skdistill fit without a teacher)."
            )
        teacher = FrozenEstimator(teacher)
    elif args.teacher_arch is not None:
        teacher_settings = dict(settings)
        if args.teacher_lr is not None:
            teacher_settings["lr"] = args.teacher_lr
        teacher = Cnn3DClassifier(arch=args.teacher_arch, **teacher_settings)
    else:
        return Cnn3DClassifier(arch=args.arch, **settings)
    return DistilledClassifier(
        teacher=teacher, student_arch=args.arch, temperature=args.temperature, **settings
    )


def _description(args: argparse.Namespace) -> str:
    if args.teacher is not None:
        return f"student {args.arch}, teacher {args.teacher}, T = {args.temperature:g}"
    if args.teacher_arch is not None:
        return f"student {args.arch}, teacher {args.teacher_arch}, T = {args.temperature:g}"
    return args.arch


def _angstrom(voxel_size: float | None) -> str:
    return "an unknown voxel size" if voxel_size is None else f"{voxel_size:g} Å"
