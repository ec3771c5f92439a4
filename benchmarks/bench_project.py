"""Classifying a tomography project: ``skdistill predict`` vs in-memory ``predict_proba``.

A simulated RELION 5 project (:func:`skdistill.datasets.write_relion_project`: tomograms of
:func:`~skdistill.datasets.make_tomogram` with 23 synthetic classes at 10 Å, ``tomograms.star``
and ``particles.star``) gets extra picks at random positions inside its tomograms, so that its
particles STAR file lists ``--n-particles`` particles (throughput does not depend on what is
in the box). A student ``s3`` for 40³ boxes and the 23 classes is fitted for 1 epoch on a few
hundred particles extracted from the tomograms (its weights do not matter for speed) and saved
with :func:`skdistill.save_model`. Then, in one run on the same machine state:

(a) the real command line ``python -m skdistill predict --model ... --star ... --tomograms
    ... --out ...`` runs as a subprocess of a small launcher process: its peak RSS
    (``ru_maxrss`` of the launcher's ``wait4``; a process forked straight from this one would
    start from this process's own high-water mark, which Linux carries over a fork; the
    largest ``RssAnon`` and ``RssFile`` seen polling ``/proc/<pid>/status`` split it into
    private memory and memory-mapped tomogram pages), its wall time (start-up, extraction,
    classification and writing the output) and the time of its own ``Classified N particles
    in X s`` line (extraction and classification only);
(b) the same particles, from the same ``SubtomogramStack.from_tomograms`` stack, are cut
    batch by batch into an in-memory buffer of about 2,000 volumes (a multiple of the batch
    size) and only ``predict_proba`` on the buffer is timed, with the same model file loaded
    by :func:`skdistill.load_model` on the same device. The time to fill the buffers
    (extraction alone) is reported too. One warm-up call on 64 volumes comes first.

The classes the command wrote are compared with the in-memory prediction, so both passes
are known to classify the same particles. Results go to ``docs/benchmarks/project.md`` and
``project.json`` (or ``--out``); the simulated project is deleted at the end unless
``--keep``.

Run ``python3 benchmarks/bench_project.py`` on a quiet machine. The defaults: 20,000 picks in
4 tomograms of 128x1024x1024 voxels (512 MiB each, 2 GiB on disk, about 3 GiB of memory while
one is simulated; 20 s each), batch size 256. On 2 AVX-512 cores (s3 at about 200 volumes/s)
that is about 6 minutes; on AVX2 (about 50 volumes/s) pass ``--in-memory-particles 5000`` to
keep it near 12. ``--quick`` checks the script: 1,000 picks in 2 tomograms of 64x256x256,
about 2 minutes on busy cores, results to a temporary folder unless ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import starfile
from _machine import RESULTS_DIR, machine_description, markdown_machine

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from skdistill import Cnn3DClassifier, load_model, save_model  # noqa: E402
from skdistill.datasets import write_relion_project  # noqa: E402
from skdistill.io import EdgePaddingWarning, SubtomogramStack  # noqa: E402
from skdistill.utils.precision import bf16_supported  # noqa: E402

BOX = 40
N_CLASSES = 23
VOXEL_SIZE = 10.0
ARCH = "s3"
#: Peak RSS the command must stay under (issue F).
RSS_LIMIT_MIB = 2048
#: Largest acceptable throughput loss of the command against in-memory prediction.
TARGET_LOSS = 0.15
#: Volumes per materialised chunk of the in-memory pass (rounded to the batch size).
CHUNK = 2000
_CLASSIFIED = re.compile(r"Classified (\d+) particles in ([\d.]+) s")
_QUICK_OUT = Path(tempfile.gettempdir()) / "skdistill-bench-project-quick"


# -- data ------------------------------------------------------------------------------
def simulate(args, folder: Path):
    """The simulated project, with its particles STAR file grown to ``args.n_particles``."""
    start = time.perf_counter()
    project = write_relion_project(
        folder / "project",
        n_tomograms=args.n_tomograms,
        shape=tuple(args.tomogram_shape),
        n_particles=args.true_per_tomogram,
        n_classes=N_CLASSES,
        voxel_size=VOXEL_SIZE,
        random_state=0,
    )
    seconds = time.perf_counter() - start
    blocks = starfile.read(project.particles_star, always_dict=True)
    true = blocks["particles"].drop(columns="rlnClassNumber")
    picks = pd.concat(
        [
            _with_extra_picks(true[true["rlnTomoName"] == name], name, count, args)
            for name, count in zip(project.tomogram_names, _extra_counts(args), strict=True)
        ],
        ignore_index=True,
    )
    star = folder / "picks.star"
    # A picking job's output: optics and picks, no classes.
    starfile.write({"optics": blocks["optics"], "particles": picks}, star)
    return project, star, seconds


def _extra_counts(args) -> list[int]:
    extra = args.n_particles - args.n_tomograms * args.true_per_tomogram
    return [
        extra // args.n_tomograms + (i < extra % args.n_tomograms) for i in range(args.n_tomograms)
    ]


def _with_extra_picks(true: pd.DataFrame, name: str, count: int, args) -> pd.DataFrame:
    """``true`` followed by ``count`` picks whose whole box lies inside the tomogram."""
    rng = np.random.default_rng(int(name.split("_")[-1]))
    shape = np.asarray(args.tomogram_shape)
    half = BOX // 2
    positions = rng.uniform(half, shape - half, size=(count, 3))  # voxels, (z, y, x)
    centred = (positions - shape / 2) * VOXEL_SIZE
    first = len(true) + 1
    extra = pd.DataFrame(
        {
            "rlnTomoName": name,
            "rlnTomoParticleName": [f"{name}/{k}" for k in range(first, first + count)],
            "rlnCenteredCoordinateXAngst": centred[:, 2],
            "rlnCenteredCoordinateYAngst": centred[:, 1],
            "rlnCenteredCoordinateZAngst": centred[:, 0],
            "rlnAngleRot": rng.uniform(-180, 180, count),
            "rlnAngleTilt": np.degrees(np.arccos(rng.uniform(-1, 1, count))),
            "rlnAnglePsi": rng.uniform(-180, 180, count),
            "rlnOpticsGroup": true["rlnOpticsGroup"].iloc[0],
        }
    )
    return pd.concat([true, extra[true.columns]], ignore_index=True)


def _stack(star: Path, project, voxel_size: float | None = None) -> SubtomogramStack:
    """The particles of ``star`` cut from the project's tomograms at the benchmark's box."""
    with warnings.catch_warnings():
        # Simulated particles near a tomogram's edge are padded (counted in n_padded).
        warnings.simplefilter("ignore", EdgePaddingWarning)
        return SubtomogramStack.from_tomograms(
            star, project.tomograms_star, box_size=BOX, voxel_size=voxel_size
        )


def fit_model(project, n_fit: int, path: Path) -> tuple[Cnn3DClassifier, float]:
    """s3 fitted for 1 epoch on the first ``n_fit`` true particles, saved to ``path``."""
    start = time.perf_counter()
    stack = _stack(project.particles_star, project)
    X, y = stack[:n_fit], stack.labels[:n_fit]
    if len(np.unique(y)) != N_CLASSES:
        raise ValueError(f"The first {n_fit} particles miss some of the {N_CLASSES} classes.")
    model = Cnn3DClassifier(
        arch=ARCH, max_epochs=1, batch_size=16, validation_fraction=None, random_state=0
    ).fit(X, y, voxel_size=stack.voxel_size)
    save_model(model, path)
    return model, time.perf_counter() - start


# -- (a) the command line --------------------------------------------------------------
def _status_kib(pid: int) -> dict[str, int]:
    values = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "RssAnon", "RssFile"):
                values[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return values


#: Runs the command given as its arguments and prints the child's peak RSS (KiB) last. Linux
#: starts a forked child's ru_maxrss from the parent's high-water mark, so the command must
#: be forked from this small process, not from the benchmark holding gigabytes.
_LAUNCHER = (
    "import os, subprocess, sys\n"
    "child = subprocess.Popen(sys.argv[1:])\n"
    "print(f'child-pid {child.pid}', file=sys.stderr, flush=True)\n"
    "_, status, usage = os.wait4(child.pid, 0)\n"
    "print(f'child-maxrss-kib {usage.ru_maxrss}', flush=True)\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def _child_pid(launcher: int) -> int | None:
    try:
        children = Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None


def run_command(args, model_path: Path, star: Path, project, out: Path) -> dict:
    """Run ``skdistill predict`` in a fresh process; its times, output and peak memory."""
    command = [
        sys.executable, "-m", "skdistill", "predict", "--model", str(model_path),
        "--star", str(star), "--tomograms", str(project.tomograms_star), "--out", str(out),
        "--batch-size", str(args.batch_size), "--device", args.device, "--quiet",
    ]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    log = out.with_suffix(".log")
    peaks = {"VmHWM": 0, "RssAnon": 0, "RssFile": 0}
    with log.open("w") as stream:
        start = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-c", _LAUNCHER, *command],
            stdout=stream,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
        )
        child = None
        while process.poll() is None:
            child = child or _child_pid(process.pid)
            if child is not None:
                for key, value in _status_kib(child).items():
                    peaks[key] = max(peaks[key], value)
            time.sleep(0.05)
        wall = time.perf_counter() - start
    text = log.read_text()
    if process.returncode != 0:
        raise RuntimeError(f"skdistill predict failed ({process.returncode}):\n{text}")
    found = _CLASSIFIED.search(text)
    if found is None:
        raise RuntimeError(f"No 'Classified N particles in X s' line in the output:\n{text}")
    n, seconds = int(found.group(1)), float(found.group(2))
    maxrss_kib = int(re.search(r"child-maxrss-kib (\d+)", text).group(1))
    return {
        "command": " ".join(["python", *command[1:]]),
        "output_first_line": found.group(0),
        "n_particles": n,
        "wall_seconds": wall,
        "wall_per_second": n / wall,
        "classified_seconds": seconds,
        "classified_per_second": n / seconds,
        # Linux reports ru_maxrss in KiB.
        "peak_rss_mib": maxrss_kib / 1024,
        "polled_peak_rss_mib": peaks["VmHWM"] / 1024,
        "polled_max_rss_anon_mib": peaks["RssAnon"] / 1024,
        "polled_max_rss_file_mib": peaks["RssFile"] / 1024,
    }


# -- (b) in memory ---------------------------------------------------------------------
def in_memory(args, model_path: Path, star: Path, project) -> tuple[dict, np.ndarray]:
    """Throughput of ``predict_proba`` on materialised chunks, and of the materialising."""
    model = load_model(model_path, device=args.device)
    stack = _stack(star, project, voxel_size=model.voxel_size_)
    n = min(args.in_memory_particles or len(stack), len(stack))
    batch = args.batch_size
    chunk = max(1, round(CHUNK / batch)) * batch
    model.predict_proba(stack[:64])  # warm-up: one-time kernel set-up
    proba = np.empty((n, len(model.classes_)), dtype=np.float32)
    volumes = np.empty((min(chunk, n), BOX, BOX, BOX), dtype=np.float32)  # reused
    extract_seconds = predict_seconds = 0.0
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        begin = time.perf_counter()
        # Cut batch by batch, as the command does, into the chunk buffer.
        for first in range(start, stop, batch):
            last = min(first + batch, stop)
            volumes[first - start : last - start] = stack[first:last]
        middle = time.perf_counter()
        proba[start:stop] = model.predict_proba(volumes[: stop - start])
        extract_seconds += middle - begin
        predict_seconds += time.perf_counter() - middle
    precision = model._resolve_precision(model.inference_precision)
    return {
        "n_particles": n,
        "n_padded": int(stack.n_padded),
        "chunk": chunk,
        "forward_batch": model._inference_batch_size(),
        "device": str(model.device_),
        "precision": precision,
        "predict_seconds": predict_seconds,
        "predict_per_second": n / predict_seconds,
        "extract_seconds": extract_seconds,
        "extract_per_second": n / extract_seconds,
    }, proba


def agreement(out: Path, proba: np.ndarray) -> dict:
    """How well the command's written classes match the in-memory prediction.

    ``skdistill predict`` writes class ``classes_[k]`` as ``rlnClassNumber`` ``k + 1``.
    """
    table = starfile.read(out, always_dict=True)["particles"].iloc[: len(proba)]
    numbers = table["rlnClassNumber"].to_numpy()
    written = table["rlnMaxValueProbDistribution"].to_numpy()
    return {
        "class_agreement": float(np.mean(numbers == np.argmax(proba, axis=1) + 1)),
        "max_abs_probability_difference": float(np.abs(written - proba.max(axis=1)).max()),
    }


# -- report ----------------------------------------------------------------------------
def report(results: dict, machine: dict) -> str:
    s, cli, mem = results["setting"], results["command"], results["in_memory"]
    ratio = results["ratios"]
    subset = (
        f"all {mem['n_particles']:,}"
        if mem["n_particles"] == cli["n_particles"]
        else f"the first {mem['n_particles']:,} of the {cli['n_particles']:,}"
    )
    lines = [
        "# Classifying a tomography project",
        "",
        f"`python3 benchmarks/bench_project.py{' --quick' if s['quick'] else ''}`: "
        f"{cli['n_particles']:,} particles classified from {s['n_tomograms']} simulated "
        f"tomograms of {'x'.join(map(str, s['tomogram_shape']))} voxels (z, y, x; float32, "
        f"{s['tomogram_mib']:.0f} MiB each, {s['n_tomograms'] * s['tomogram_mib']:.0f} MiB in "
        f"all; {s['voxel_size']:g} Å voxels) by the student `{s['arch']}` at {s['box']}³ with "
        f"{s['n_classes']} classes ({s['n_parameters']:,} parameters, model file "
        f"{s['model_file_kib']:.0f} KiB), batch size {s['batch_size']} (forward passes of "
        f"{mem['forward_batch']}), {mem['precision']} on {mem['device']}.",
        "",
        f"Particles: the {s['n_true']:,} simulated particles plus {s['n_extra']:,} picks at "
        "random positions whose box lies inside the tomogram (throughput does not depend on "
        "what is in the box), listed tomogram by tomogram in one RELION 5 particles STAR file; "
        f"{mem['n_padded']:,} boxes of simulated particles reach beyond a tomogram edge and are "
        "padded with its mean. "
        f"The model is `{s['arch']}` fitted for 1 epoch on {s['n_fit']} extracted particles "
        "(its weights do not matter for speed) and saved with `skdistill.save_model`. The "
        "tomograms had just been written, so they were read from the page cache.",
        "",
        "## (a) `skdistill predict`",
        "",
        f"`{cli['command']}`",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| peak RSS (`ru_maxrss`) | {cli['peak_rss_mib']:.0f} MiB "
        f"({'under' if results['rss_ok'] else 'OVER'} the {RSS_LIMIT_MIB} MiB limit) |",
        f"| of which, at most: private (`RssAnon`) | {cli['polled_max_rss_anon_mib']:.0f} MiB |",
        f"| of which, at most: mapped files, tomograms and libraries (`RssFile`) "
        f"| {cli['polled_max_rss_file_mib']:.0f} MiB |",
        f"| wall time, start to exit | {cli['wall_seconds']:.1f} s |",
        f"| particles/s over the wall time | {cli['wall_per_second']:.1f} |",
        f'| its own line | "{cli["output_first_line"]}" |',
        f"| particles/s of that line (extraction + classification) "
        f"| {cli['classified_per_second']:.1f} |",
        "",
        "## (b) in-memory `predict_proba` on the same particles",
        "",
        f"The same model file loaded with `skdistill.load_model`, {subset} particles of the same "
        "`SubtomogramStack.from_tomograms` stack, cut batch by batch (as the command does) into "
        f"an in-memory buffer of {mem['chunk']:,} volumes; only `predict_proba` on the buffer is "
        "timed (after one warm-up call on 64 volumes). Extraction is the time to fill the "
        "buffers.",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| `predict_proba` particles/s | {mem['predict_per_second']:.1f} |",
        f"| extraction alone (filling the buffers) particles/s | {mem['extract_per_second']:.1f} |",
        f"| extraction + `predict_proba`, sequential, particles/s "
        f"| {ratio['sequential_per_second']:.1f} |",
        f"| classes written by (a) equal to (b)'s "
        f"| {100 * results['agreement']['class_agreement']:.2f} % |",
        f"| max abs difference of the class probability | "
        f"{results['agreement']['max_abs_probability_difference']:.1e} |",
        "",
        "## Ratio",
        "",
        "| `skdistill predict` / in-memory `predict_proba` | throughput ratio | loss |",
        "|---|---:|---:|",
        f"| its own line (extraction + classification) | {ratio['classified']:.3f} "
        f"| {100 * (1 - ratio['classified']):.1f} % |",
        f"| wall time (with start-up and writing the STAR file) | {ratio['wall']:.3f} "
        f"| {100 * (1 - ratio['wall']):.1f} % |",
        "",
        f"Target: within {100 * TARGET_LOSS:.0f} % of in-memory `predict_proba`: "
        f"{'met' if results['target_met'] else 'NOT met'} on the command's own line, "
        f"{'met' if results['target_met_wall'] else 'not met'} over its wall time. Start-up "
        f"(importing torch, reading the STAR files and tomogram headers, loading the model) "
        f"and writing the output took {cli['wall_seconds'] - cli['classified_seconds']:.1f} s.",
        "",
        f"Simulating the project took {s['simulate_seconds']:.0f} s; fitting and saving the "
        f"model {s['fit_seconds']:.0f} s.",
        "",
        "Machine:",
        "",
        markdown_machine(machine),
        "",
    ]
    return "\n".join(lines)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-particles", type=int, default=20_000, help="picks in the STAR file")
    parser.add_argument(
        "--batch-size", type=int, default=256, help="skdistill predict --batch-size"
    )
    parser.add_argument("--n-tomograms", type=int, default=4)
    parser.add_argument(
        "--tomogram-shape", type=int, nargs=3, default=(128, 1024, 1024), metavar=("Z", "Y", "X")
    )
    parser.add_argument(
        "--true-per-tomogram", type=int, default=1500, help="simulated particles per tomogram"
    )
    parser.add_argument("--n-fit", type=int, default=300, help="particles the model is fitted on")
    parser.add_argument(
        "--in-memory-particles", type=int, default=None,
        help="measure (b) on the first N particles only (default: all)",
    )  # fmt: skip
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda (both passes)")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="where to simulate (default: a temporary folder)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the simulated project")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder of project.md/.json (default: docs/benchmarks)",
    )
    parser.add_argument(
        "--quick", action="store_true",
        help="1,000 particles in 2 tomograms of 64x256x256, to check the script; results to "
        f"{_QUICK_OUT} unless --out",
    )  # fmt: skip
    args = parser.parse_args()
    if args.quick:
        args.n_particles, args.n_tomograms, args.tomogram_shape = 1000, 2, (64, 256, 256)
        args.true_per_tomogram, args.n_fit = 100, 200
        args.out = args.out or _QUICK_OUT
    args.out = args.out or RESULTS_DIR
    args.tomogram_shape = tuple(args.tomogram_shape)
    if args.n_tomograms * args.true_per_tomogram > args.n_particles:
        parser.error("--n-particles must be at least --n-tomograms * --true-per-tomogram.")
    if args.in_memory_particles is not None and args.in_memory_particles < 1:
        parser.error("--in-memory-particles must be at least 1.")
    if args.n_fit > args.n_tomograms * args.true_per_tomogram:
        parser.error("--n-fit must be at most the number of simulated particles.")
    return args


def main() -> None:
    args = _arguments()
    tomogram_bytes = 4 * math.prod(args.tomogram_shape)
    work = Path(tempfile.mkdtemp(prefix="skdistill-bench-project-", dir=args.work_dir))
    needed = args.n_tomograms * tomogram_bytes + 200 * 2**20
    free = shutil.disk_usage(work).free
    if free < needed:
        shutil.rmtree(work)
        raise SystemExit(
            f"{work.parent} has {free / 2**30:.1f} GiB free; the tomograms need "
            f"{needed / 2**30:.1f} GiB. Pass --work-dir on a larger disk or a smaller "
            "--tomogram-shape."
        )
    try:
        print(
            f"Simulating {args.n_tomograms} tomograms of {args.tomogram_shape} in {work}",
            flush=True,
        )
        project, star, simulate_seconds = simulate(args, work)
        model_path = work / f"{ARCH}.safetensors"
        model, fit_seconds = fit_model(project, args.n_fit, model_path)
        model_kib = model_path.stat().st_size / 1024
        print(f"Simulated in {simulate_seconds:.0f} s, fitted in {fit_seconds:.0f} s", flush=True)
        command = run_command(args, model_path, star, project, work / "classified.star")
        print("(a)", command, flush=True)
        memory, proba = in_memory(args, model_path, star, project)
        print("(b)", memory, flush=True)
        matched = agreement(work / "classified.star", proba)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    sequential = 1 / (1 / memory["predict_per_second"] + 1 / memory["extract_per_second"])
    ratios = {
        "classified": command["classified_per_second"] / memory["predict_per_second"],
        "wall": command["wall_per_second"] / memory["predict_per_second"],
        "sequential_per_second": sequential,
    }
    results = {
        "setting": {
            "quick": args.quick,
            "n_particles": args.n_particles,
            "n_true": args.n_tomograms * args.true_per_tomogram,
            "n_extra": args.n_particles - args.n_tomograms * args.true_per_tomogram,
            "n_tomograms": args.n_tomograms,
            "tomogram_shape": list(args.tomogram_shape),
            "tomogram_mib": tomogram_bytes / 2**20,
            "voxel_size": VOXEL_SIZE,
            "box": BOX,
            "arch": ARCH,
            "n_classes": N_CLASSES,
            "n_parameters": int(model.n_parameters_),
            "model_file_kib": model_kib,
            "n_fit": args.n_fit,
            "batch_size": args.batch_size,
            "simulate_seconds": simulate_seconds,
            "fit_seconds": fit_seconds,
            "work_dir": str(work) if args.keep else None,
        },
        "command": command,
        "in_memory": memory,
        "agreement": matched,
        "ratios": ratios,
        "rss_ok": command["peak_rss_mib"] < RSS_LIMIT_MIB,
        "target_met": ratios["classified"] >= 1 - TARGET_LOSS,
        "target_met_wall": ratios["wall"] >= 1 - TARGET_LOSS,
    }
    machine = machine_description()
    machine["cpu_native_bf16"] = bf16_supported("cpu")
    args.out.mkdir(parents=True, exist_ok=True)
    text = report(results, machine)
    (args.out / "project.md").write_text(text)
    (args.out / "project.json").write_text(
        json.dumps({"results": results, "machine": machine}, indent=2) + "\n"
    )
    print(text)


if __name__ == "__main__":
    main()
