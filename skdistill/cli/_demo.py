"""``skdistill demo``: teacher versus students, hard versus soft labels, on simulated data."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from ..experiments import CPU_SETTING, PAPER_SETTING, run_distillation_experiment
from ..experiments.report import PLOT_HINT, format_table, is_report_output, save_report
from ..io.atomic import publish_directory
from ..utils.memory import check_memory
from ._arguments import HelpFormatter, at_least, positive_float

_DESCRIPTION = """\
Reproduce Tables 1-2 of the distillation paper (Guo et al. 2018) on simulated subtomograms:
fit the DSRF3D-v2 teacher, then students s1, s2 and s3 with hard labels and distilled from
the teacher at temperature T; print accuracy, size, test time, compression rate, accuracy
ratio and speedup; write the table, a JSON record, a figure (with matplotlib: pip install
"skdistill[plot]") and the best student (by validation accuracy) as model.joblib.

--out must be new or empty unless --overwrite, which replaces it as a whole. It is checked,
and locked against a second run, before anything is simulated; its files appear together,
when the run has finished.

The default setting is sized for a 2-core CPU (under 10 minutes): 8 classes at SNR 0.5,
28^3 volumes, 960/240/400 train/validation/test, batch 16, Adam; teacher lr 3e-4 for at
most 12 epochs, students lr 1e-3 for at most 6. --full runs the paper's setting (23
classes, 40^3, SNR 0.05, 14,720/3,680/4,600, SGD lr 0.005, batch 64, 20 epochs, patience
5): GPU work.
"""

_EPILOG = """\
examples:
  skdistill demo
  skdistill demo --full --out paper-scale
  skdistill demo --classes 4 --n-train 200 --epochs 3 --out quick
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``demo`` subcommand to ``subparsers``."""
    parser = subparsers.add_parser(
        "demo",
        help="teacher vs students, hard vs soft labels, on simulated data (the main job)",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("skdistill-demo"),
        metavar="DIR",
        help="output directory (default: %(default)s)",
    )
    parser.add_argument(
        "--full", action="store_true", help="the paper's full setting instead of the CPU one"
    )
    parser.add_argument(
        "--classes", type=at_least(2), metavar="K", help="override the number of classes"
    )
    parser.add_argument("--snr", type=positive_float, help="override the SNR")
    parser.add_argument("--size", type=at_least(27), help="override the box edge (>= 27)")
    parser.add_argument(
        "--n-train", type=at_least(2), metavar="N", help="override the training volumes"
    )
    parser.add_argument(
        "--n-valid", type=at_least(2), metavar="N", help="override the validation volumes"
    )
    parser.add_argument("--n-test", type=at_least(1), metavar="N", help="override the test volumes")
    parser.add_argument(
        "--epochs",
        type=at_least(1),
        metavar="N",
        help="override the students' maximum epochs (the teacher's: --teacher-epochs)",
    )
    parser.add_argument(
        "--teacher-epochs", type=at_least(1), metavar="N", help="override the teacher's epochs"
    )
    parser.add_argument("--temperature", type=positive_float, help="override T (default 5)")
    parser.add_argument("--seed", type=at_least(0), default=0, help="seed (default: %(default)s)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the output folder of an earlier run"
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    parser.set_defaults(run=run)
    return parser


_OVERRIDES = {
    "classes": "n_classes",
    "snr": "snr",
    "size": "size",
    "n_train": "n_train",
    "n_valid": "n_valid",
    "n_test": "n_test",
    "epochs": "max_epochs",
    "teacher_epochs": "teacher_max_epochs",
    "temperature": "temperature",
}


def run(args: argparse.Namespace) -> int:
    """Run the comparison, print the table and write the outputs."""
    setting = PAPER_SETTING if args.full else CPU_SETTING
    changes = {
        field: getattr(args, option)
        for option, field in _OVERRIDES.items()
        if getattr(args, option) is not None
    }
    setting = setting.replace(seed=args.seed, **changes)
    check_memory(
        setting.memory_estimate(on_gpu=torch.cuda.is_available()),
        what=f"The demo ({setting.n_train + setting.n_valid + setting.n_test} volumes of "
        f"{setting.size}^3)",
        hint="Use fewer volumes (--n-train, --n-valid, --n-test) or a smaller --size.",
    )
    # Entering checks --out and takes its lock: a bad or busy --out fails before training.
    with publish_directory(
        args.out, overwrite=args.overwrite, replaceable=is_report_output
    ) as staging:
        print(
            f"Setting: {setting.n_classes} classes, {setting.size}^3 voxels, SNR "
            f"{setting.snr:g}, {setting.n_train}/{setting.n_valid}/{setting.n_test} "
            f"train/validation/test volumes, batch {setting.batch_size}, {setting.optimizer}: "
            f"teacher lr {setting.teacher_parameters()['lr']:g}, <= "
            f"{setting.teacher_parameters()['max_epochs']} epochs; students lr "
            f"{setting.lr:g}, <= {setting.max_epochs} epochs; T = {setting.temperature:g}, "
            f"seed {setting.seed}.",
            flush=True,
        )
        start = time.perf_counter()
        result = run_distillation_experiment(
            setting, progress=not args.quiet, log=lambda line: print(line, flush=True)
        )
        written = save_report(result, staging)
    paths = {name: args.out / name for name in written}
    minutes = (time.perf_counter() - start) / 60
    best, how = result.best_student()
    print()
    print(format_table(result))
    print()
    print(
        f"Chance level is {1 / setting.n_classes:.3f}. Accuracies are on the "
        f"{setting.n_test} test volumes; test time is predict() over them on this machine."
    )
    print(f"Finished in {minutes:.1f} min. Outputs in {args.out}/:")
    for path in paths.values():
        print(f"  {path}")
    print(f"model.joblib is {best} trained with {how} labels (best validation accuracy).")
    if "figure.png" not in paths:
        print(f"figure.png was not written. {PLOT_HINT}")
    sys.stdout.flush()
    return 0
