"""``skdistill segment``: segment a whole tomogram with a segmenter model file."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..model_files import load_model
from ..tiling import BLENDS, write_segmentation
from ._arguments import HelpFormatter, add_device_and_seed, add_model_file, at_least
from ._particles import check_input_file, check_output_file

__all__ = ["add_parser", "run"]

_DESCRIPTION = """\
Segment a whole tomogram (an MRC file of any size at least the model's box) with a segmenter
model file (skdistill.save_model of a Cnn3DSegmenter, DistilledSegmenter or PrunedSegmenter).

The tomogram is memory-mapped and covered by overlapping tiles whose class probabilities
are blended (Gaussian weights by default, as MONAI's sliding_window_inference), so there
are no seams; memory does not grow with the tomogram. --out receives the labels (int8, one
per voxel), --probabilities the class probabilities (float32, a volume stack with one
volume per class), both with the tomogram's voxel size and origin. Both files come from one
pass and are moved into place only when the whole tomogram is done; an existing file is
replaced only with --overwrite.
"""

_EPILOG = """\
examples:
  skdistill segment --model unet.safetensors --tomogram TS_01.mrc --out TS_01_labels.mrc
  skdistill segment --model unet.safetensors --tomogram TS_01.mrc --out labels.mrc \\
      --probabilities probabilities.mrc --tile-size 64 --overlap 0.5
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``segment`` subcommand to ``subparsers``."""
    parser = subparsers.add_parser(
        "segment",
        help="segment a whole tomogram (MRC) with a segmenter model file, in tiles",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=HelpFormatter,
    )
    add_model_file(parser, "--model", "segmenter model file")
    parser.add_argument(
        "--tomogram", required=True, type=Path, metavar="MRC", help="tomogram (required)"
    )
    parser.add_argument(
        "--out", required=True, type=Path, metavar="MRC", help="labels to write (required)"
    )
    parser.add_argument(
        "--probabilities", type=Path, metavar="MRC", help="also write the class probabilities"
    )
    parser.add_argument(
        "--tile-size",
        type=at_least(1),
        metavar="N",
        help="tile edge in voxels, a size the network accepts (default: the largest multiple "
        "of the model's box up to 64 that fits the tomogram)",
    )
    parser.add_argument(
        "--overlap",
        type=_fraction,
        default=0.25,
        help="fraction of a tile shared with its neighbours (default: %(default)s)",
    )
    parser.add_argument(
        "--blend", choices=BLENDS, default="gaussian", help="tile weights (default: %(default)s)"
    )
    parser.add_argument(
        "--batch-size", type=at_least(1), metavar="N", help="tiles per forward pass"
    )
    add_device_and_seed(parser, seed=False)
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Segment the tomogram and write the labels (and probabilities)."""
    check_input_file(args.model, "model file")
    check_input_file(args.tomogram, "tomogram")
    outputs = [args.out] + ([args.probabilities] if args.probabilities else [])
    for path, what in zip(outputs, ("labels file", "probabilities file"), strict=False):
        check_output_file(path, overwrite=args.overwrite, what=what)
    model = load_model(args.model, device=args.device)
    start = time.perf_counter()
    written = write_segmentation(
        model,
        args.tomogram,
        labels=args.out,
        probabilities=args.probabilities,
        tile_size=args.tile_size,
        overlap=args.overlap,
        blend=args.blend,
        batch_size=args.batch_size,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    seconds = time.perf_counter() - start
    print(f"Segmented {args.tomogram} in {seconds:.1f} s; written: {', '.join(map(str, written))}.")
    sys.stdout.flush()
    return 0


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), got {text!r}")
    return value
