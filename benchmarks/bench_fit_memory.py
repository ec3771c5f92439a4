"""Peak memory of ``DistilledSegmenter.fit``: this checkout against a baseline commit.

``DistilledSegmenter.fit`` holds the teacher's per-voxel log-probabilities and the packed
soft targets for the whole data set, ``n_classes`` (+ 1) values per voxel. This benchmark
fits a distilled U-Net student on 200 simulated subtomograms of 40³ (the SSN3D task:
target against background, 2 classes) from a frozen small U-Net teacher, once with the
skdistill of this checkout and once with the skdistill of a baseline git commit (extracted
with ``git archive``), each in a fresh Python process, and records for the ``fit`` call:

- the **tracemalloc peak**: numpy and Python allocations (torch's CPU tensors bypass it);
- the **peak RSS** (``VmHWM`` of ``/proc/self/status``, reset through
  ``/proc/self/clear_refs`` just before ``fit``), and its rise over the RSS before ``fit``.

The teacher is trained (1 epoch on 16 of the volumes) in the same process *before* the
measurement, so its training is excluded; its prediction on the 200 volumes, which ``fit``
runs, is included.
The student trains 1 epoch (batch 8, the default 20 % validation split). Results go to
``docs/benchmarks/fit_memory.md`` and ``.json``.

Run ``python3 benchmarks/bench_fit_memory.py --baseline <commit>`` from a git checkout
(about 4 minutes on 2 busy CPU cores).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

TEACHER = {"base_filters": 8, "levels": 3, "last_filters": 8}
STUDENT = {"base_filters": 4, "levels": 2, "last_filters": 4}
TEACHER_VOLUMES = 16
TRAINING = {"max_epochs": 1, "batch_size": 8, "device": "cpu", "random_state": 0}


def _status_kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status (Linux only)")


def child(data_dir: Path) -> dict:
    """Fit the teacher, then measure the student's ``fit``; run in a fresh process."""
    import gc
    import tracemalloc

    import numpy as np
    from sklearn.frozen import FrozenEstimator

    import skdistill
    from skdistill import Cnn3DSegmenter, DistilledSegmenter

    X, y = np.load(data_dir / "X.npy"), np.load(data_dir / "y.npy")
    teacher = Cnn3DSegmenter("unet", **TEACHER, **TRAINING, validation_fraction=None)
    # Trained on a few volumes: only its prediction is measured, and it doubles as warm-up
    # (the first fit imports modules lazily, which tracemalloc would count).
    teacher = FrozenEstimator(teacher.fit(X[:TEACHER_VOLUMES], y[:TEACHER_VOLUMES]))
    student = DistilledSegmenter(teacher, student_arch="unet", **STUDENT, **TRAINING)
    gc.collect()
    rss_before = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    tracemalloc.start()
    start = time.perf_counter()
    student.fit(X, y)
    seconds = time.perf_counter() - start
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak_rss = _status_kib("VmHWM")
    return {
        "skdistill_file": skdistill.__file__,
        "n_classes": int(student.n_classes_),
        "fit_seconds": seconds,
        "tracemalloc_peak_mib": traced_peak / 2**20,
        "rss_before_fit_mib": rss_before / 1024,
        "peak_rss_mib": peak_rss / 1024,
        "peak_rss_rise_mib": (peak_rss - rss_before) / 1024,
    }


def measure(source_root: Path, data_dir: Path) -> dict:
    """Run :func:`child` in a fresh process importing skdistill from ``source_root``."""
    env = {**os.environ, "PYTHONPATH": str(source_root)}
    result = subprocess.run(
        [sys.executable, __file__, "--child", str(data_dir)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"measurement with {source_root} failed:\n{result.stderr}")
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    if not Path(measured["skdistill_file"]).is_relative_to(source_root):
        raise RuntimeError(f"imported {measured['skdistill_file']}, not from {source_root}")
    return measured


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def extract(commit: str, target: Path) -> None:
    """The ``skdistill`` package of ``commit``, written under ``target``."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", commit, "skdistill"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="main", help="git commit to compare against")
    parser.add_argument("--n", type=int, default=200, help="volumes")
    parser.add_argument("--size", type=int, default=40)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child)))
        return

    sys.path.insert(0, str(REPO / "benchmarks"))
    import numpy as np
    from _machine import RESULTS_DIR, machine_description, markdown_machine

    from skdistill.datasets import make_segmentation_subtomograms

    baseline = _git("rev-parse", "--short", args.baseline)
    current = _git("rev-parse", "--short", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--", "skdistill"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        X, y = make_segmentation_subtomograms(args.n, size=args.size, random_state=0)
        np.save(tmp / "X.npy", X)
        np.save(tmp / "y.npy", y)
        del X, y
        (tmp / "old").mkdir()
        extract(baseline, tmp / "old")
        results = {}
        for name, root in (("before", tmp / "old"), ("after", REPO)):
            results[name] = measure(root, tmp)
            print(f"{name}: {json.dumps(results[name])}", flush=True)

    command = f"python3 benchmarks/bench_fit_memory.py --baseline {baseline}"
    before, after = results["before"], results["after"]
    rows = [
        ("tracemalloc peak (numpy, Python)", "tracemalloc_peak_mib"),
        ("peak RSS during fit", "peak_rss_mib"),
        ("peak RSS rise over RSS before fit", "peak_rss_rise_mib"),
        ("fit time (s)", "fit_seconds"),
    ]
    machine = machine_description()
    lines = [
        "# Peak memory of `DistilledSegmenter.fit`",
        "",
        f"`{command}`: {args.n} simulated subtomograms of {args.size}³ "
        f"({after['n_classes']} classes, the SSN3D task), frozen U-Net teacher "
        f"{TEACHER} (trained on {TEACHER_VOLUMES} volumes before the measurement: its "
        "training is excluded, its "
        f"prediction inside `fit` included), U-Net student {STUDENT}, 1 epoch, batch 8, "
        "default 20 % validation split, CPU. Each side runs in a fresh process; peak RSS is "
        "`VmHWM`, reset just before `fit`. MiB unless noted.",
        "",
        f"| | before ({baseline}) | after ({current}{', modified' if dirty else ''}) "
        "| after / before |",
        "|---|---:|---:|---:|",
    ]
    for label, key in rows:
        lines.append(
            f"| {label} | {before[key]:.1f} | {after[key]:.1f} | {after[key] / before[key]:.2f} |"
        )
    lines += ["", markdown_machine(machine), ""]
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "fit_memory.md").write_text("\n".join(lines))
    payload = {
        "command": command,
        "baseline": baseline,
        "current": current,
        "current_modified": dirty,
        "config": {
            "n_volumes": args.n,
            "size": args.size,
            "teacher": TEACHER,
            "student": STUDENT,
            "training": TRAINING,
        },
        "results": results,
        "machine": machine,
    }
    (RESULTS_DIR / "fit_memory.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {RESULTS_DIR / 'fit_memory.md'}")


if __name__ == "__main__":
    main()
