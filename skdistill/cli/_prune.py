"""``skdistill prune``: prune a trained classifier's feature maps, fine-tune, save it."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from sklearn.frozen import FrozenEstimator

from ..estimators import Cnn3DClassifier, DistilledClassifier
from ..model_files import check_model_path, load_model, save_model
from ..pruning import CRITERIA, PrunedClassifier
from ._arguments import (
    HelpFormatter,
    add_device_and_seed,
    add_model_file,
    at_least,
    positive_float,
)
from ._fit import labels_from_column
from ._particles import add_particle_arguments, check_input_file, check_output_file, open_particles

__all__ = ["add_parser", "run"]

_DESCRIPTION = """\
Prune a classifier trained by 'skdistill fit': remove --amount of its convolution feature
maps in --steps rounds, in the order that increases the training loss least (first-order
Taylor criterion; Roels et al. 2017, Molchanov et al. 2017), fine-tuning after each round
on the particles of --star with their classes from --label-column, and save the smaller,
faster model as a safe model file.

The particles are read as 'skdistill fit' reads them; with --tomograms they are extracted
at the model's box and voxel size. A distilled student fine-tunes on its teacher's soft
labels when --teacher gives the teacher's model file, otherwise on the hard labels.
"""

_EPILOG = """\
examples:
  skdistill prune --model s1.safetensors --star train.star --tomograms tomograms.star \\
      --amount 0.5 --out s1-pruned.safetensors
  skdistill prune --model s1.safetensors --teacher teacher.safetensors --star train.star \\
      --tomograms tomograms.star --criterion taylor --steps 5 --out s1-pruned.safetensors
  skdistill predict --model s1-pruned.safetensors --star particles.star \\
      --tomograms tomograms.star --out classified.star
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``prune`` subcommand to ``subparsers``."""
    parser = subparsers.add_parser(
        "prune",
        help="prune a trained classifier's feature maps with fine-tuning, save a model file",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=HelpFormatter,
    )
    add_model_file(parser, "--model", "classifier model file written by 'skdistill fit'")
    add_particle_arguments(parser)
    parser.add_argument(
        "--label-column",
        default="rlnClassNumber",
        metavar="LABEL",
        help="STAR column with each particle's class (default: %(default)s)",
    )
    parser.add_argument(
        "--teacher",
        type=Path,
        metavar="MODEL",
        help="the teacher's model file of a distilled --model: fine-tune on its soft labels",
    )
    parser.add_argument(
        "--amount",
        type=_fraction,
        default=0.5,
        help="fraction of the feature maps removed in all (default: %(default)s)",
    )
    parser.add_argument(
        "--criterion",
        choices=CRITERIA,
        default="taylor",
        help="order of removal (default: %(default)s)",
    )
    parser.add_argument(
        "--steps", type=at_least(1), default=5, help="pruning rounds (default: %(default)s)"
    )
    parser.add_argument(
        "--finetune-epochs",
        type=at_least(0),
        default=2,
        metavar="N",
        help="fine-tuning epochs after each round (default: %(default)s)",
    )
    parser.add_argument(
        "--calibration-size",
        type=at_least(1),
        default=256,
        metavar="N",
        help="particles the Taylor criteria average over (default: %(default)s)",
    )
    parser.add_argument(
        "--lr", type=positive_float, metavar="RATE", help="fine-tuning rate (default: the model's)"
    )
    add_device_and_seed(parser)
    add_model_file(parser, "--out", "pruned model file to write, e.g. s1-pruned.safetensors")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--quiet", "-q", action="store_true", help="no per-epoch table")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Prune the model, fine-tune it and write the pruned model file."""
    check_input_file(args.model, "model file")
    if args.teacher is not None:
        check_input_file(args.teacher, "teacher model file")
    check_output_file(args.out, overwrite=args.overwrite, what="pruned model file")
    check_model_path(args.out, overwrite=args.overwrite)
    model = load_model(args.model, device=args.device)
    labels = _finetune_labels(model, args)
    settings = {"verbose": int(not args.quiet)}
    if args.lr is not None:
        settings["lr"] = args.lr
    model.set_params(**settings)
    stack = open_particles(args, box_size=model.input_shape_[0], voxel_size=model.voxel_size_)
    y = labels_from_column(stack, args.label_column)
    pruner = PrunedClassifier(
        FrozenEstimator(model),
        amount=args.amount,
        criterion=args.criterion,
        steps=args.steps,
        finetune_epochs=args.finetune_epochs,
        finetune_labels=labels,
        calibration_size=args.calibration_size,
        random_state=args.seed,
    )
    print(
        f"Pruning {args.amount:.0%} of the feature maps of {args.model} ({args.criterion}, "
        f"{args.steps} rounds of {args.finetune_epochs} fine-tuning epochs on {labels} labels) "
        f"on {len(stack)} particles from {args.label_column}.",
        flush=True,
    )
    start = time.perf_counter()
    pruner.fit(stack, y)
    minutes = (time.perf_counter() - start) / 60
    save_model(pruner, args.out, overwrite=args.overwrite)
    print(format_history(pruner))
    print(
        f"Pruned in {minutes:.1f} min: {pruner.n_parameters_before_:,} -> "
        f"{pruner.n_parameters_:,} parameters, {pruner.flops_before_ / 1e6:,.1f} -> "
        f"{pruner.flops_ / 1e6:,.1f} MFLOPs per volume. Model written to {args.out}."
    )
    return 0


def _finetune_labels(model, args: argparse.Namespace) -> str:
    """``"soft"`` for a distilled model given its teacher, else ``"hard"``; checks the model."""
    if not isinstance(model, Cnn3DClassifier | DistilledClassifier):
        raise ValueError(
            f"{args.model} holds a {type(model).__name__}; skdistill prune prunes classifiers "
            "written by 'skdistill fit'. Prune segmenters in Python with "
            "skdistill.PrunedSegmenter."
        )
    if args.teacher is None:
        return "hard"
    if not isinstance(model, DistilledClassifier):
        raise ValueError(
            f"--teacher gives soft labels to a distilled student, but {args.model} holds a "
            f"{type(model).__name__} trained on hard labels. Leave out --teacher."
        )
    model.set_params(teacher=FrozenEstimator(load_model(args.teacher, device=args.device)))
    return "soft"


def format_history(pruner: PrunedClassifier) -> str:
    """One line per pruning round: feature maps, parameters, FLOPs, validation accuracy."""
    lines = [
        f"{'round':>5}  {'removed':>7}  {'parameters':>10}  {'MFLOPs':>9}  "
        f"{'val. acc. pruned':>16}  {'fine-tuned':>10}"
    ]
    for number, step in enumerate(pruner.pruning_history_, start=1):
        lines.append(
            f"{number:>5}  {step['amount']:>7.1%}  {step['n_parameters']:>10,}  "
            f"{step['flops'] / 1e6:>9,.1f}  "
            f"{step['validation_score_before_finetuning']:>16.3f}  "
            f"{step['validation_score_after_finetuning']:>10.3f}"
        )
    return "\n".join(lines)


def _fraction(text: str) -> float:
    """An ``--amount``: a number in (0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(
            f"{text} is not a fraction in (0, 1): e.g. 0.5 removes half the feature maps"
        )
    return value
