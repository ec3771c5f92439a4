"""``skdistill predict``: classify the particles of a STAR file and write the classes back."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..io import write_predictions
from ..model_files import load_model
from ._arguments import HelpFormatter, add_device_and_seed, add_model_file, at_least
from ._particles import add_particle_arguments, check_input_file, check_output_file, open_particles

__all__ = ["add_parser", "format_histogram", "predict_in_batches", "run"]

#: Particles read and classified per step when --batch-size is not given.
DEFAULT_BATCH_SIZE = 256

_DESCRIPTION = """\
Classify the particles of a STAR file with a model file written by 'skdistill fit' (or
skdistill.save_model) and write a copy of the STAR file with each particle's class
(rlnClassNumber, 1-based in the model's class order) and its probability
(rlnMaxValueProbDistribution); every other block, column and row is kept, and a
data_skdistill_classes block names the classes. A class histogram is printed at the end.

The box size and voxel size come from the model: with --tomograms, each particle is
extracted from its tomogram at the model's box size and resampled to the voxel size the
model was trained at. Particles are read and classified --batch-size at a time, so memory
does not grow with their number.

The inputs and the output place are checked before any work; --out is written in one step
when all particles are classified, and never replaces a file without --overwrite.
"""

_EPILOG = """\
examples:
  skdistill predict --model s1.safetensors --star particles.star \\
      --tomograms tomograms.star --out classified.star
  skdistill predict --model s3.safetensors --star Extract/job012/particles.star \\
      --out Class/classified.star --batch-size 512
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``predict`` subcommand to ``subparsers``."""
    parser = subparsers.add_parser(
        "predict",
        help="classify a STAR file's particles with a model file, write the classes back",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=HelpFormatter,
    )
    add_model_file(parser, "--model", "model file written by 'skdistill fit'")
    add_particle_arguments(parser)
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="STAR",
        help="STAR file to write, a copy of --star with the classes (required)",
    )
    parser.add_argument(
        "--batch-size",
        type=at_least(1),
        default=DEFAULT_BATCH_SIZE,
        metavar="N",
        help="particles read and classified at a time (default: %(default)s)",
    )
    add_device_and_seed(parser, seed=False)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Classify the particles and write them back."""
    check_input_file(args.model, "model file")
    check_output_file(args.out, overwrite=args.overwrite, what="output STAR file")
    model = load_model(args.model, device=args.device)
    box_size = model.input_shape_[0]
    stack = open_particles(args, box_size=box_size, voxel_size=model.voxel_size_)
    skipped = len(getattr(stack, "skipped", ()))
    start = time.perf_counter()
    proba = predict_in_batches(model, stack, args.batch_size, progress=not args.quiet)
    seconds = time.perf_counter() - start
    labels = model.classes_[np.argmax(proba, axis=1)]
    write_predictions(
        stack, args.out, labels, proba, classes=model.classes_, overwrite=args.overwrite
    )
    print(
        f"Classified {len(stack)} particles in {seconds:.1f} s "
        f"({len(stack) / max(seconds, 1e-9):.0f} per second); written to {args.out}."
    )
    if skipped:
        print(f"{skipped} particles outside their tomograms were left out (--on-outside skip).")
    print(format_histogram(labels, model.classes_))
    sys.stdout.flush()
    return 0


def predict_in_batches(model, stack, batch_size: int, *, progress: bool) -> np.ndarray:
    """``model.predict_proba`` over ``stack``, ``batch_size`` volumes at a time.

    Parameters
    ----------
    model : fitted classifier
        With ``predict_proba`` and ``classes_``.
    stack : SubtomogramStack
        The particles, read batch by batch with ``iter_batches``.
    batch_size : int
        Volumes read and classified per step.
    progress : bool
        Show a progress bar (tqdm, on stderr).

    Returns
    -------
    ndarray of shape (n_particles, n_classes), dtype float32
    """
    proba = np.empty((len(stack), len(model.classes_)), dtype=np.float32)
    start = 0
    with tqdm(total=len(stack), unit="particle", disable=not progress) as bar:
        for batch in stack.iter_batches(batch_size):
            proba[start : start + len(batch)] = model.predict_proba(batch)
            start += len(batch)
            bar.update(len(batch))
    return proba


def format_histogram(labels: np.ndarray, classes: np.ndarray) -> str:
    """A table of how many particles each class got, in the model's class order."""
    counts = [int(np.sum(labels == value)) for value in classes]
    names = [str(value) for value in classes]
    width = max(len("name"), *map(len, names))
    lines = [f"{'class':>5}  {'name':<{width}}  {'particles':>9}  {'fraction':>8}"]
    total = max(len(labels), 1)
    for number, (name, count) in enumerate(zip(names, counts, strict=True), start=1):
        lines.append(f"{number:>5}  {name:<{width}}  {count:>9}  {count / total:>8.1%}")
    return "\n".join(lines)
