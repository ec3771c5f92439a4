"""``skdistill simulate``: simulate subtomograms and stream them to MRC files on disk."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from joblib import effective_n_jobs
from tqdm import tqdm

from ..datasets.simulation import SimulationPlan, chunk_indices, seed_entropy, simulate_chunks
from ..io.atomic import publish_directory
from ..io.mrc import write_new_volume
from ..io.star import PARTICLES_STAR, write_particles_star
from ..io.subtomograms import is_subtomogram_output, mrc_names
from ..utils.memory import check_memory
from ._arguments import (
    HelpFormatter,
    TiltRange,
    at_least,
    finite_float,
    n_jobs,
    positive_float,
    snr,
)

__all__ = ["StreamWriter", "add_parser", "run", "simulation_memory"]

_DESCRIPTION = """\
Simulate cryo-ET subtomograms (skdistill.datasets.make_subtomograms) and write them to
DIR as one float32 MRC file each (subtomo_000001.mrc, ...) plus a RELION particles.star
with their classes, class names, orientations and shifts.

Volumes are written chunk by chunk as they are simulated, so the data set never has to fit
in memory. With the same --seed the files hold exactly the volumes
make_subtomograms(N, random_state=SEED, ...) returns, whatever --jobs.

DIR must be new or empty, unless --overwrite, which replaces it as a whole (only a folder
of subtomograms and particles.star, never one holding other files). The files are written
into a hidden folder beside DIR and renamed into place when all are written: DIR holds the
complete old set or the complete new set, whatever happens to the run (error, Ctrl-C,
SIGTERM, SIGKILL), and a second run writing DIR at the same time fails at once.
"""

_EPILOG = """\
example:
  skdistill simulate --n 2000 --snr 0.05 --size 40 --seed 0 --jobs 4 --out data/snr005
  skdistill info data/snr005
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``simulate`` subcommand to ``subparsers``."""
    parser = subparsers.add_parser(
        "simulate",
        help="simulate subtomograms and write them as MRC files with a particles.star",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="DIR",
        help="output directory, created if missing (required)",
    )
    parser.add_argument(
        "--n",
        type=at_least(1),
        default=1000,
        metavar="N",
        help="number of subtomograms (default: %(default)s)",
    )
    parser.add_argument(
        "--snr",
        type=snr,
        default=0.05,
        metavar="SNR",
        help="signal-to-noise ratio (variance ratio) per volume, or 'none' for noise-free "
        "volumes (default: %(default)s)",
    )
    parser.add_argument(
        "--size", type=at_least(4), default=40, help="box edge in voxels (default: %(default)s)"
    )
    parser.add_argument(
        "--classes",
        type=at_least(1),
        default=23,
        metavar="K",
        help="number of classes (synthetic templates) (default: %(default)s)",
    )
    parser.add_argument(
        "--voxel-size",
        type=positive_float,
        default=9.2,
        metavar="ANGSTROM",
        help="voxel size in Å (default: %(default)s)",
    )
    parser.add_argument(
        "--tilt-range",
        type=finite_float,
        nargs=2,
        action=TiltRange,
        default=(-60.0, 60.0),
        metavar=("LOW", "HIGH"),
        help="tilt angles in degrees; the rest is the missing wedge (default: -60 60)",
    )
    parser.add_argument(
        "--defocus",
        type=finite_float,
        default=-5.0,
        metavar="MICRONS",
        help="defocus in µm, negative for underfocus (default: %(default)s)",
    )
    parser.add_argument(
        "--voltage",
        type=positive_float,
        default=300.0,
        metavar="KV",
        help="acceleration voltage in kV (default: %(default)s)",
    )
    parser.add_argument(
        "--cs",
        type=finite_float,
        default=2.0,
        metavar="MM",
        help="spherical aberration in mm (default: %(default)s)",
    )
    parser.add_argument(
        "--max-shift",
        type=_max_shift,
        default=0.05,
        metavar="F",
        help="largest shift per axis as a fraction of the box, in [0, 0.5) (default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=at_least(0),
        default=None,
        help="random seed (default: one drawn at random, printed in the summary)",
    )
    parser.add_argument(
        "--jobs",
        type=n_jobs,
        default=1,
        metavar="J",
        help="parallel processes, -1 for all cores (default: %(default)s)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace DIR and all the subtomograms in it (default: refuse a non-empty DIR)",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Simulate ``args.n`` subtomograms into ``args.out`` and print a summary line."""
    start = time.perf_counter()
    out: Path = args.out
    names = mrc_names(args.n)
    check_memory(
        simulation_memory(args.n, args.size, args.classes, args.jobs),
        what=f"Simulating {args.size}^3 volumes with --jobs {args.jobs}",
        hint="Pass fewer --jobs or a smaller --size.",
    )
    entropy = seed_entropy(args.seed)
    plan = SimulationPlan(
        n_classes=args.classes,
        size=args.size,
        voxel_size=args.voxel_size,
        snr=args.snr,
        tilt_range=args.tilt_range,
        defocus=args.defocus,
        voltage=args.voltage,
        cs=args.cs,
        max_shift=args.max_shift,
        templates=None,
        entropy=entropy,
    )
    # Entering checks the output folder and takes its lock, before any simulation.
    with (
        publish_directory(
            out, overwrite=args.overwrite, replaceable=is_subtomogram_output
        ) as staging,
        tqdm(
            total=args.n, desc="simulate", unit="vol", file=sys.stderr, disable=args.quiet
        ) as progress,
    ):
        writer = StreamWriter(
            _simulate(plan, args.n, args.jobs), voxel_size=args.voxel_size, progress=progress
        )
        for i, name in enumerate(names):
            writer.write_volume(staging / name, index=i)
        writer.write_star(
            staging / PARTICLES_STAR,
            image_names=names,
            box_size=args.size,
            class_names=plan.class_names,
        )

    seconds = time.perf_counter() - start
    seed = f"seed {entropy}" if args.seed is not None else f"seed {entropy} (drawn)"
    noise = "noise-free" if args.snr is None else f"SNR {args.snr:g}"
    print(
        f"Wrote {args.n} subtomograms ({args.size}^3 voxels, {args.voxel_size:g} Å, {noise}, "
        f"{args.classes} classes, {seed}) to {out} ({args.n} MRC files and {PARTICLES_STAR}) in "
        f"{seconds:.1f} s ({args.n / seconds:.1f} volumes/s)."
    )
    return 0


class StreamWriter:
    """Writes simulated volumes to files one by one, pulling chunks from the simulation.

    ``run`` calls ``write_volume`` for each volume in turn, then ``write_star``, on files in
    the private folder of :func:`~skdistill.io.atomic.publish_directory`. The data set thus
    streams to disk chunk by chunk, never held in memory, with the guarantees of
    :func:`~skdistill.io.write_subtomograms`: the output folder holds the complete old set or
    the complete new set, whatever happens to the run.

    Parameters
    ----------
    chunks : iterator of (ndarray, tuple)
        Consecutive index chunks with their ``(X, y, rotations, shifts)``, in order.
    voxel_size : float
        Voxel size in Å.
    progress : tqdm
        Advanced by one for each volume written.
    """

    def __init__(self, chunks: Iterator, *, voxel_size: float, progress: tqdm) -> None:
        self._chunks = chunks
        self._voxel_size = voxel_size
        self._progress = progress
        self._start, self._volumes = 0, np.empty((0, 0, 0, 0), dtype=np.float32)
        self._labels: list[np.ndarray] = []
        self._rotations: list[np.ndarray] = []
        self._shifts: list[np.ndarray] = []

    def write_volume(self, path: Path, *, index: int) -> None:
        """Write volume ``index`` (the next one, or one of the current chunk) to ``path``."""
        while index >= self._start + len(self._volumes):
            indices, (X, y, rotations, shifts) = next(self._chunks)
            self._start, self._volumes = int(indices[0]), X
            self._labels.append(y)
            self._rotations.append(rotations)
            self._shifts.append(shifts)
        if index < self._start:
            raise RuntimeError(f"Volume {index} was requested after volume {self._start}.")
        write_new_volume(path, self._volumes[index - self._start], voxel_size=self._voxel_size)
        self._progress.update(1)

    def write_star(
        self, path: Path, *, image_names: list[str], box_size: int, class_names: list[str]
    ) -> None:
        """Write ``particles.star`` for the volumes written, once all of them are."""
        write_particles_star(
            path,
            image_names,
            voxel_size=self._voxel_size,
            box_size=box_size,
            labels=np.concatenate(self._labels),
            class_names=class_names,
            rotations=np.concatenate(self._rotations),
            shifts=np.concatenate(self._shifts),
        )


def simulation_memory(n: int, size: int, n_classes: int, jobs: int) -> int:
    """Rough peak memory, in bytes, of simulating ``n`` volumes of ``size``^3 with ``jobs``.

    One chunk of volumes peaks at about 16 bytes per voxel while it is
    simulated (float32 volume, its Fourier transform and the noisy copy; measured with
    tracemalloc); joblib keeps up to two chunks per worker in flight, and every process
    holds the class templates.
    """
    chunk_size = len(next(chunk_indices(n)))
    workers = min(effective_n_jobs(jobs), -(-n // chunk_size))
    chunk = chunk_size * size**3
    in_flight = 16 * chunk * workers + 4 * chunk * (2 * workers + 1)
    return in_flight + 4 * n_classes * size**3 * (workers + 1)


def _simulate(
    plan: SimulationPlan, n: int, jobs: int
) -> Iterator[tuple[np.ndarray, tuple[np.ndarray, ...]]]:
    """Each chunk of indices with its simulated ``(X, y, rotations, shifts)``, in order."""
    return zip(chunk_indices(n), simulate_chunks(plan, n, jobs), strict=True)


def _max_shift(text: str) -> float:
    value = finite_float(text)
    if not 0 <= value < 0.5:
        raise argparse.ArgumentTypeError(f"must be in [0, 0.5), got {text!r}")
    return value
