"""The ``skdistill`` command line: thin subcommands around the library.

``skdistill demo`` reproduces the distillation paper's Tables 1-2 on simulated data
(:mod:`skdistill.experiments`); ``skdistill simulate`` writes simulated subtomograms to disk
(:func:`~skdistill.datasets.make_subtomograms`, :mod:`skdistill.io`); ``skdistill info``
describes subtomograms on disk (:class:`~skdistill.io.SubtomogramStack`); ``skdistill
fit`` trains a classifier on a STAR file's particles and saves a model file
(:func:`~skdistill.save_model`); ``skdistill predict`` classifies particles with one and
writes the classes back into their STAR file (:func:`~skdistill.io.write_predictions`);
``skdistill prune`` prunes a model file (:mod:`skdistill.pruning`); ``skdistill segment``
segments a whole tomogram in tiles (:func:`~skdistill.segment_tomogram`); ``skdistill
pick`` writes the particles of a segmentation as a STAR file (:mod:`skdistill.picking`).
Run it as ``skdistill`` or ``python -m skdistill``.

Each subcommand is a module with ``add_parser(subparsers)``, which adds its parser and sets
``run(args) -> int`` as its default; adding a command means adding its module to
:data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import NoReturn

from .. import __version__
from . import _demo, _fit, _info, _pick, _predict, _prune, _segment, _simulate
from ._arguments import HelpFormatter

__all__ = ["COMMANDS", "build_parser", "main"]

#: The subcommands, in the order ``skdistill --help`` lists them.
COMMANDS = (_demo, _simulate, _info, _fit, _predict, _prune, _segment, _pick)

_PREFIX = "skdistill: error:"

_DESCRIPTION = """\
Distil 3D CNNs for cryo-ET subtomograms (demo), simulate subtomograms, inspect
subtomogram data sets (MRC files, RELION STAR), train classifiers on a RELION or Warp
project's particles (fit) and write their classes back (predict).
Run 'skdistill COMMAND --help' for the options of a command.
"""

_EPILOG = """\
examples:
  skdistill demo
  skdistill simulate --n 2000 --snr 0.05 --size 40 --seed 0 --out data/snr005
  skdistill info data/snr005
  skdistill fit --star train.star --tomograms tomograms.star --box 40 --arch s1 \\
      --teacher-arch dsrf3d_v2 --model s1.safetensors
  skdistill predict --model s1.safetensors --star particles.star \\
      --tomograms tomograms.star --out classified.star
"""


class _Parser(argparse.ArgumentParser):
    """Reports usage errors on one line, like every other error of the command line."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{_PREFIX} {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``skdistill`` and its subcommands."""
    parser = _Parser(
        prog="skdistill",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(
        title="commands", dest="command", metavar="COMMAND", required=True
    )
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(args: list[str] | None = None) -> int:
    """Run the command line with ``args`` (default: ``sys.argv[1:]``).

    Parameters
    ----------
    args : list of str, default=None
        Command-line arguments, without the program name.

    Returns
    -------
    int
        Exit status: 0 on success, 1 when the command fails (a missing or invalid file, an
        existing output, an invalid value, too little memory), 2 for a usage error, 130 when
        interrupted (Ctrl-C), 143 on SIGTERM. Errors are reported on one line on stderr,
        without a traceback; an interrupted command leaves its output folder as it was.
    """
    try:
        namespace = build_parser().parse_args(args)
    except SystemExit as exc:  # argparse exits after --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else 2
    try:
        with warnings.catch_warnings():  # restores the caller's warning display afterwards
            warnings.showwarning = _show_warning
            return namespace.run(namespace)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader of stdout went away (`skdistill info ... | head`)
        _silence_stdout()
        return 0
    # ValueError includes InvalidParameterError; MemoryError, check_memory's refusal.
    except (OSError, ValueError, RuntimeError, MemoryError) as exc:
        print(f"{_PREFIX} {_one_line(exc)}", file=sys.stderr)
        return 1


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Print a warning on one line, like errors, without the source file and line."""
    print(f"skdistill: warning: {_one_line(message)}", file=sys.stderr)


def _silence_stdout() -> None:
    """Point stdout at devnull, so that the interpreter's final flush cannot fail again."""
    try:
        fileno = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # a replaced stdout (notebooks, tests)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fileno)
    os.close(devnull)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        message = f"{exc.filename}: {exc.strerror}"
    else:
        message = str(exc) or type(exc).__name__
    return " ".join(message.split())
