"""Kill tests: real processes racing for one output folder, or killed at random points.

After every SIGTERM or SIGKILL the output folder must be absent or hold a complete set (the
old one or the new one, never a mix) that the readers accept, and the next run into the same
folder must succeed and leave nothing beside it. The campaigns (marked ``slow``) print what
they saw: how many kills landed while writing, how many left the old set, the new set or
nothing. Run them with ``pytest -m slow -s tests/test_kill.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import joblib
import numpy as np
import pytest

from skdistill.cli import main
from skdistill.datasets.simulation import SimulationPlan
from skdistill.io import SubtomogramStack, read_subtomograms

SIZE, N_CLASSES = 16, 3
SIGNALS = (signal.SIGTERM, signal.SIGKILL)


def _start(*args) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUTF8": "1"},
    )


def _simulate(out: Path, n: int, seed: int, *more) -> subprocess.Popen:
    common = ["--n", n, "--size", SIZE, "--classes", N_CLASSES, "--quiet"]
    return _start("-m", "skdistill", "simulate", *common, "--seed", seed, "--out", out, *more)


def _expected(n: int, seed: int) -> np.ndarray:
    """What ``simulate --n n --seed seed`` writes (the same as make_subtomograms)."""
    plan = SimulationPlan(n_classes=N_CLASSES, size=SIZE, voxel_size=9.2, snr=0.05,
                          tilt_range=(-60.0, 60.0), defocus=-5.0, voltage=300.0, cs=2.0,
                          max_shift=0.05, templates=None, entropy=seed)  # fmt: skip
    return plan.simulate(np.arange(n))[0]


def _siblings(target: Path) -> list[str]:
    return sorted(path.name for path in target.parent.iterdir())


def _info_accepts(target: Path, capsys) -> bool:
    code = main(["info", str(target)])
    capsys.readouterr()
    return code == 0


def test_two_simulate_runs_into_one_folder_exactly_one_succeeds(tmp_path, capsys):
    out, n = tmp_path / "conc", 200
    runs = [_simulate(out, n, seed) for seed in (1, 2)]
    results = [run.communicate(timeout=300) for run in runs]
    codes = [run.returncode for run in runs]
    assert sorted(codes) == [0, 1], results
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
    assert "Wrote 200 subtomograms" in results[winner][0]
    stdout, stderr = results[loser]
    assert stdout == "" and stderr.count("\n") == 1 and "Traceback" not in stderr
    # The loser either found the folder locked or, if it came second, not empty.
    assert "being written by another process" in stderr or "--overwrite" in stderr
    np.testing.assert_array_equal(read_subtomograms(out)[0], _expected(n, seed=winner + 1))
    assert _info_accepts(out, capsys)
    assert _siblings(out) == ["conc"]


# Campaigns: kill at random points ---------------------------------------------------------


def _wait_for_lock(process: subprocess.Popen, target: Path, timeout: float = 300) -> float:
    """Wait until ``process`` holds the lock of ``target``: its work has begun."""
    lock = target.parent / f".{target.name}.skdistill-lock"
    start = time.perf_counter()
    while process.poll() is None:
        try:
            if lock.read_text().startswith(f"pid {process.pid} "):
                break
        except FileNotFoundError:
            pass
        assert time.perf_counter() - start < timeout, "the process never started writing"
        time.sleep(0.01)
    return time.perf_counter()


def _kill_at_random(
    process: subprocess.Popen, target: Path, signum: int, delay: float, seen: Counter
) -> None:
    """Kill ``process`` ``delay`` seconds after it took its lock; count the phase hit."""
    time.sleep(delay)
    names = _siblings(target)
    if any(".skdistill-tmp-" in name for name in names):
        phase = "while writing"
    elif f".{target.name}.skdistill-lock" in names:
        phase = "while starting to write"
    else:
        phase = "after publishing"  # the process is printing its summary and exiting
    if process.poll() is not None:
        seen["finished before the kill"] += 1
    else:
        process.send_signal(signum)
        seen[f"{signal.Signals(signum).name} {phase}"] += 1
    process.communicate(timeout=120)
    if signum == signal.SIGTERM:
        # Interrupted work exits with 143; once published, SIGTERM's default action is back.
        assert process.returncode in (0, 143, -signal.SIGTERM)
        # SIGTERM cleans up: neither the process's private folder nor the lock remain.
        left = [name for name in _siblings(target) if f"-{process.pid}-" in name]
        assert left == [] and not (target.parent / f".{target.name}.skdistill-lock").exists()


def _report(what: str, seen: Counter) -> None:
    print(f"\n{what}: " + ", ".join(f"{count} {key}" for key, count in sorted(seen.items())))


@pytest.mark.slow
def test_simulate_killed_at_random_points(tmp_path, capsys):
    rng = np.random.default_rng(0)
    out, n = tmp_path / "out", 600
    first = _simulate(out, n, 0)
    locked = _wait_for_lock(first, out)
    first.communicate(timeout=300)
    assert first.returncode == 0
    duration = max(time.perf_counter() - locked, 1.0)
    expected = {0: _expected(n, 0)}
    current, seen = 0, Counter()
    for kill in range(10):
        seed = kill + 1
        process = _simulate(out, n, seed, "--overwrite")
        _wait_for_lock(process, out)
        _kill_at_random(process, out, SIGNALS[kill % 2], rng.uniform(0, 0.8 * duration), seen)
        X, _ = read_subtomograms(out)  # never absent: a complete set existed before
        assert len(X) == n and len(SubtomogramStack(out)) == n
        if seed not in expected:
            expected[seed] = _expected(n, seed)
        if np.array_equal(X, expected[seed]):
            current, state = seed, "new"
        else:
            np.testing.assert_array_equal(X, expected[current])  # the old set, whole
            state = "old"
        seen[f"left the {state} set"] += 1
        assert _info_accepts(out, capsys)
    final = _simulate(out, n, 99, "--overwrite")
    final.communicate(timeout=300)
    assert final.returncode == 0
    assert _siblings(out) == ["out"]  # the killed runs' leftovers are swept
    with capsys.disabled():
        _report(f"simulate --n {n} --size {SIZE}, 10 kills", seen)


_WRITER = """
    import importlib.util, sys, types
    import numpy as np
    # Import skdistill.io without skdistill/__init__ (which imports torch): a faster start.
    spec = importlib.util.find_spec("skdistill")
    package = types.ModuleType("skdistill")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["skdistill"] = package
    from skdistill.io import write_subtomograms
    target, n, first, count = sys.argv[1], *map(int, sys.argv[2:])
    for k in range(first, first + count):
        X = np.full((n, 8, 8, 8), k, dtype=np.float32)
        write_subtomograms(target, X, np.arange(n) % 3, voxel_size=1.0, overwrite=True)
        print(k, flush=True)
"""


@pytest.mark.slow
def test_write_subtomograms_killed_at_random_points(tmp_path):
    """A writer publishing set after set (every volume of set k holds k) is killed 10 times."""
    rng = np.random.default_rng(1)
    out, n, seen, value = tmp_path / "out", 300, Counter(), None
    for kill in range(10):
        first = 1000 * (kill + 1)
        process = _start("-c", textwrap.dedent(_WRITER), out, n, first, 10**6)
        _wait_for_lock(process, out)
        _kill_at_random(process, out, SIGNALS[kill % 2], rng.uniform(0, 1.5), seen)
        if not out.exists():
            assert value is None  # absent only before the first set was published
            seen["left no folder"] += 1
            continue
        X, y = read_subtomograms(out)
        assert X.shape == (n, 8, 8, 8) and np.array_equal(y, np.arange(n) % 3)
        values = np.unique(X)
        assert len(values) == 1, f"a mix of sets {values}"  # never a mix
        seen["left the old set" if values[0] == value else "left a new set"] += 1
        value = values[0]
    # The last kill was a SIGKILL: its leftovers are swept by the next writer.
    _, stderr = _start("-c", textwrap.dedent(_WRITER), out, n, 7, 1).communicate(timeout=120)
    assert _siblings(out) == ["out"], stderr
    assert np.unique(read_subtomograms(out)[0]).tolist() == [7.0]
    _report(f"write_subtomograms of {n} volumes, 10 kills", seen)


DEMO = ["--classes", "2", "--size", "27", "--n-train", "16", "--n-valid", "8", "--n-test", "8",
        "--epochs", "1", "--teacher-epochs", "1", "--quiet"]  # fmt: skip


def _demo(out: Path, seed: int, *more) -> subprocess.Popen:
    return _start("-m", "skdistill", "demo", *DEMO, "--seed", seed, "--out", out, *more)


def _demo_seed(out: Path) -> int:
    """The seed of the complete demo output in ``out``; fails on an incomplete one."""
    names = sorted(path.name for path in out.iterdir())
    assert names == ["figure.png", "model.joblib", "results.json", "table.md"]
    joblib.load(out / "model.joblib")
    assert "| s3 |" in (out / "table.md").read_text()
    return json.loads((out / "results.json").read_text())["setting"]["seed"]


@pytest.mark.slow
def test_demo_killed_at_random_points(tmp_path):
    rng = np.random.default_rng(2)
    out, seen = tmp_path / "out", Counter()
    first = _demo(out, 0)
    locked = _wait_for_lock(first, out)
    first.communicate(timeout=600)
    duration = time.perf_counter() - locked
    assert first.returncode == 0 and _demo_seed(out) == 0
    current = 0
    for kill in range(4):
        process = _demo(out, kill + 1, "--overwrite")
        _wait_for_lock(process, out)
        _kill_at_random(process, out, SIGNALS[kill % 2], rng.uniform(0, 0.9 * duration), seen)
        seed = _demo_seed(out)
        assert seed in (current, kill + 1)
        seen["left the new set" if seed == kill + 1 else "left the old set"] += 1
        current = seed
    final = _demo(out, 9, "--overwrite")
    final.communicate(timeout=600)
    assert final.returncode == 0 and _demo_seed(out) == 9
    assert _siblings(out) == ["out"]
    _report("demo (tiny setting), 4 kills", seen)
