"""What ``skdistill fit`` and ``skdistill predict`` share: checked inputs, outputs, particles."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..io import SubtomogramStack

__all__ = [
    "add_particle_arguments",
    "check_input_file",
    "check_output_file",
    "open_particles",
]


def add_particle_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--star``, ``--tomograms`` and ``--on-outside`` to ``parser``."""
    parser.add_argument(
        "--star",
        required=True,
        type=Path,
        metavar="STAR",
        help="particles STAR file (RELION 3.0-5, Warp; required)",
    )
    parser.add_argument(
        "--tomograms",
        type=Path,
        metavar="TOMOGRAMS",
        help="extract the particles from tomograms: RELION 5 tomograms.star, or a folder of "
        "tomograms named like the STAR file's rlnTomoName / rlnMicrographName; without it "
        "the subtomograms named in rlnImageName are read",
    )
    parser.add_argument(
        "--on-outside",
        choices=("error", "skip"),
        default="error",
        help="particles whose centre lies outside their tomogram: stop with an error naming "
        "them, or leave them out (default: %(default)s)",
    )


def check_input_file(path: Path, what: str) -> None:
    """Raise ``FileNotFoundError`` unless ``path`` is an existing file."""
    if not path.exists():
        raise FileNotFoundError(f"The {what} {path} does not exist; check the path.")
    if path.is_dir():
        raise IsADirectoryError(f"The {what} {path} is a folder; pass a file.")


def check_output_file(path: Path, *, overwrite: bool, what: str) -> None:
    """Raise before any work if ``path`` cannot be written.

    The file may not exist (unless ``overwrite``), may not be a folder, and its folder
    must exist (or be creatable) and be writable. Missing folders are created here.
    """
    if path.is_dir():
        raise IsADirectoryError(f"The {what} {path} is a folder; give a file name.")
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"The {what} {path} exists. Pass --overwrite to replace it, or choose another name."
        )
    folder = path.parent
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(
            f"Cannot write the {what} {path}: {existing} is a file, not a folder."
        )
    folder.mkdir(parents=True, exist_ok=True)
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"Cannot write the {what} {path}: {folder} is not writable.")


def open_particles(
    args: argparse.Namespace, *, box_size: int | None, voxel_size: float | None
) -> SubtomogramStack:
    """The particles of ``--star``: extracted from ``--tomograms``, or read from their files.

    Parameters
    ----------
    args : argparse.Namespace
        With ``star``, ``tomograms`` and ``on_outside``.
    box_size : int or None
        Box of the extracted subtomograms in voxels; needed with ``--tomograms``.
    voxel_size : float or None
        Voxel size in Å of the extracted subtomograms; None keeps the tomograms' own.
    """
    check_input_file(args.star, "particles STAR file")
    if args.tomograms is None:
        return SubtomogramStack(args.star)
    if not args.tomograms.exists():
        raise FileNotFoundError(
            f"--tomograms {args.tomograms} does not exist; pass RELION 5's tomograms.star or "
            "the folder holding the tomograms."
        )
    if box_size is None:
        raise ValueError("--box is needed with --tomograms: the box size in voxels, e.g. --box 40.")
    return SubtomogramStack.from_tomograms(
        args.star,
        args.tomograms,
        box_size=box_size,
        voxel_size=voxel_size,
        on_outside=args.on_outside,
    )
