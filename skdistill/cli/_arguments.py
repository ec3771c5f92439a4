"""Argument types shared by the subcommands: each turns a string into a checked value.

A type that rejects its string raises :class:`argparse.ArgumentTypeError`, which argparse
reports as a usage error (exit status 2) naming the option.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

__all__ = [
    "HelpFormatter",
    "TiltRange",
    "add_device_and_seed",
    "add_model_file",
    "at_least",
    "finite_float",
    "n_jobs",
    "positive_float",
    "snr",
]


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the line breaks of descriptions and epilogs (the examples)."""


def add_model_file(parser: argparse.ArgumentParser, option: str, help: str) -> None:
    """Add a required model-file option (``--model`` or ``--out``) to ``parser``."""
    parser.add_argument(
        option, required=True, type=Path, metavar="MODEL", help=f"{help} (required)"
    )


def add_device_and_seed(parser: argparse.ArgumentParser, *, seed: bool = True) -> None:
    """Add ``--device`` (and ``--seed``) to ``parser``."""
    parser.add_argument(
        "--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)"
    )
    if seed:
        parser.add_argument(
            "--seed", type=at_least(0), default=0, help="seed (default: %(default)s)"
        )


def at_least(minimum: int):
    """An argument type for integers ``>= minimum``."""

    def integer(text: str) -> int:
        value = _parse(int, text, "an integer")
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
        return value

    integer.__name__ = f"integer >= {minimum}"
    return integer


def finite_float(text: str) -> float:
    """A finite number."""
    value = _parse(float, text, "a number")
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number ``> 0``."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def snr(text: str) -> float | None:
    """A positive signal-to-noise ratio, or ``none`` (any case) for noise-free volumes."""
    if text.strip().lower() == "none":
        return None
    try:
        return positive_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"must be a positive number or 'none' (noise-free), got {text!r}"
        ) from None


def n_jobs(text: str) -> int:
    """A joblib ``n_jobs``: a positive number of processes, or -1 for all cores."""
    value = _parse(int, text, "an integer")
    if value == 0 or value < -1:
        raise argparse.ArgumentTypeError(
            f"must be a positive number of processes or -1 (all cores), got {text!r}"
        )
    return value


class TiltRange(argparse.Action):
    """Stores ``LOW HIGH`` as a tuple after checking ``-90 <= LOW < HIGH <= 90``."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        low, high = values
        if not -90 <= low < high <= 90:
            raise argparse.ArgumentError(
                self, f"must satisfy -90 <= LOW < HIGH <= 90, got {low:g} {high:g}"
            )
        setattr(namespace, self.dest, (low, high))


def _parse(kind, text: str, description: str):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {description}, got {text!r}") from None
