"""Tests of the command line: ``skdistill simulate`` and ``skdistill info``.

A few tests run the real program (``python -m skdistill`` and the ``skdistill`` console
script) in a subprocess; the rest call :func:`skdistill.cli.main` in-process, which runs the
same code without paying for a Python start-up (importing torch) each time.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile

from skdistill.cli import main
from skdistill.cli._info import value_statistics
from skdistill.datasets import make_subtomograms
from skdistill.datasets.simulation import SimulationPlan
from skdistill.io import SubtomogramStack, read_subtomograms, write_subtomograms

N, SIZE, N_CLASSES, VOXEL_SIZE = 12, 16, 3, 9.2
SMALL = ["--n", str(N), "--size", str(SIZE), "--classes", str(N_CLASSES)]
PREFIX = "skdistill: error:"


def _python_m(*args) -> subprocess.CompletedProcess:
    return _subprocess([sys.executable, "-m", "skdistill", *args])


def _subprocess(command: list) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        encoding="utf-8",
        env={**os.environ, "PYTHONUTF8": "1"},
        timeout=300,
        check=False,
    )


def _main(capsys, *args) -> tuple[int, str, str]:
    code = main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    return code, out, err


def _assert_one_line_error(err: str, *fragments: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(PREFIX)
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def _simulated(seed: int, n: int = N, **kwargs):
    return make_subtomograms(
        n, n_classes=N_CLASSES, size=SIZE, random_state=seed, return_info=True, **kwargs
    )


def _assert_same_star(star: Path, expected: Path) -> None:
    blocks, expected_blocks = starfile.read(star), starfile.read(expected)
    assert list(blocks) == list(expected_blocks)
    for name, block in blocks.items():
        pd.testing.assert_frame_equal(block, expected_blocks[name])


def _assert_same_files(directory: Path, expected: Path) -> None:
    names = sorted(path.name for path in directory.iterdir())
    assert names == sorted(path.name for path in expected.iterdir())
    for name in names:
        if name.endswith(".mrc"):
            with mrcfile.open(directory / name) as mrc, mrcfile.open(expected / name) as ref:
                np.testing.assert_array_equal(mrc.data, ref.data)
                assert mrc.voxel_size == ref.voxel_size
    _assert_same_star(directory / "particles.star", expected / "particles.star")


# simulate ---------------------------------------------------------------------------------


def test_simulate_writes_what_make_subtomograms_returns(tmp_path, seed):
    out = tmp_path / "sim"
    result = _python_m("simulate", *SMALL, "--seed", seed, "--out", out)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    assert f"Wrote {N} subtomograms" in lines[0] and str(out) in lines[0]
    assert f"seed {seed}" in lines[0] and "volumes/s" in lines[0]
    assert f"{N}/{N}" in result.stderr  # the progress bar

    X, y, info = _simulated(seed)
    stack = SubtomogramStack(out)
    np.testing.assert_array_equal(np.asarray(stack), X)
    np.testing.assert_array_equal(stack.labels, y)
    assert stack.voxel_size == VOXEL_SIZE
    assert stack.class_names == info.class_names
    with mrcfile.open(out / "subtomo_000001.mrc") as mrc:
        assert mrc.data.dtype == np.float32
        assert mrc.voxel_size.x == pytest.approx(VOXEL_SIZE)

    # Same names, same STAR file, as the library's writer of the same data.
    reference = write_subtomograms(
        tmp_path / "reference",
        X,
        y,
        voxel_size=VOXEL_SIZE,
        class_names=info.class_names,
        rotations=info.rotations,
        shifts=info.shifts,
    )
    _assert_same_files(out, reference.parent)
    np.testing.assert_allclose(stack.rotations, info.rotations, atol=1e-6)
    np.testing.assert_allclose(stack.shifts, info.shifts, atol=1e-6)


def test_parallel_jobs_write_identical_files(tmp_path, seed, capsys):
    common = ["--n", 70, "--size", SIZE, "--classes", N_CLASSES, "--seed", seed, "--quiet"]
    assert _main(capsys, "simulate", *common, "--out", tmp_path / "one")[0] == 0
    assert _main(capsys, "simulate", *common, "--jobs", 2, "--out", tmp_path / "two")[0] == 0
    _assert_same_files(tmp_path / "two", tmp_path / "one")
    assert len(list((tmp_path / "two").glob("*.mrc"))) == 70


@pytest.mark.parametrize("none", ["none", "NONE", "None"])
def test_snr_none_writes_noise_free_volumes(tmp_path, seed, capsys, none):
    code, out, _ = _main(
        capsys, "simulate", *SMALL, "--snr", none, "--seed", seed, "--quiet", "--out", tmp_path
    )
    assert code == 0
    assert "noise-free" in out
    X, y = read_subtomograms(tmp_path)
    X_expected, y_expected, _ = _simulated(seed, snr=None)
    np.testing.assert_array_equal(X, X_expected)
    np.testing.assert_array_equal(y, y_expected)


def test_drawn_seed_is_printed_and_reproduces_the_data(tmp_path, capsys):
    code, out, _ = _main(capsys, "simulate", *SMALL, "--quiet", "--out", tmp_path / "a")
    assert code == 0
    seed = int(re.search(r"seed (\d+) \(drawn\)", out).group(1))
    assert (
        _main(capsys, "simulate", *SMALL, "--seed", seed, "--quiet", "--out", tmp_path / "b")[0]
        == 0
    )
    _assert_same_files(tmp_path / "a", tmp_path / "b")


def test_refuses_to_overwrite_then_overwrites_when_asked(tmp_path, seed, capsys):
    out = tmp_path / "sim"
    assert _main(capsys, "simulate", *SMALL, "--seed", seed, "--quiet", "--out", out)[0] == 0
    before = {path.name: path.read_bytes() for path in out.iterdir()}

    result = _python_m("simulate", *SMALL, "--seed", seed + 1, "--out", out)
    assert result.returncode == 1
    _assert_one_line_error(result.stderr, str(out), "--overwrite")
    assert result.stdout == ""
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before

    code, _, err = _main(
        capsys, "simulate", *SMALL, "--seed", seed + 1, "--quiet", "--overwrite", "--out", out
    )
    assert code == 0, err
    X, _ = read_subtomograms(out)
    np.testing.assert_array_equal(X, _simulated(seed + 1)[0])
    assert not list(out.glob(".*.tmp"))


def test_refuses_a_folder_that_is_not_empty(tmp_path, capsys):
    out = tmp_path / "sim"
    out.mkdir()
    (out / "particles.star").write_text("keep me")
    code, _, err = _main(capsys, "simulate", *SMALL, "--quiet", "--out", out)
    assert code == 1
    _assert_one_line_error(err, f"{out} is not empty", "particles.star", "--overwrite")
    assert sorted(path.name for path in out.iterdir()) == ["particles.star"]
    assert (out / "particles.star").read_text() == "keep me"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["sim"]  # no lock, no leftovers


def test_overwrite_replaces_the_whole_set(tmp_path, seed, capsys):
    out = tmp_path / "sim"
    args = ["simulate", "--size", SIZE, "--classes", N_CLASSES, "--quiet", "--out", out]
    assert _main(capsys, *args, "--n", 2, "--seed", seed)[0] == 0
    assert _main(capsys, *args, "--n", 1, "--seed", seed + 1, "--overwrite")[0] == 0
    assert sorted(path.name for path in out.iterdir()) == ["particles.star", "subtomo_000001.mrc"]
    X, _ = read_subtomograms(out)
    np.testing.assert_array_equal(X, _simulated(seed + 1, n=1)[0])
    assert sorted(path.name for path in tmp_path.iterdir()) == ["sim"]


def test_overwrite_keeps_a_folder_holding_other_files(tmp_path, capsys):
    out = tmp_path / "sim"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    code, _, err = _main(capsys, "simulate", *SMALL, "--quiet", "--overwrite", "--out", out)
    assert code == 1
    _assert_one_line_error(err, str(out / "notes.txt"), "not outputs of this kind")
    assert (out / "notes.txt").read_text() == "my notes"


def test_output_that_is_a_file_is_an_error(tmp_path, capsys):
    out = tmp_path / "file"
    out.write_text("")
    code, _, err = _main(capsys, "simulate", *SMALL, "--quiet", "--out", out)
    assert code == 1
    _assert_one_line_error(err, str(out), "not a folder")


def test_output_under_a_file_fails_before_simulating(tmp_path, capsys, monkeypatch):
    (tmp_path / "blocker").write_text("")
    monkeypatch.setattr(SimulationPlan, "simulate", _never_called)
    code, _, err = _main(capsys, "simulate", *SMALL, "--quiet", "--out", tmp_path / "blocker/x")
    assert code == 1
    _assert_one_line_error(err, str(tmp_path / "blocker"), "is a file")


def test_too_little_memory_fails_before_simulating(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("skdistill.utils.memory.available_memory", lambda: 2**20)
    monkeypatch.setattr(SimulationPlan, "simulate", _never_called)
    code, _, err = _main(capsys, "simulate", *SMALL, "--quiet", "--out", tmp_path / "sim")
    assert code == 1
    _assert_one_line_error(err, "Simulating 16^3 volumes", "memory", "--jobs")
    assert list(tmp_path.iterdir()) == []


def _never_called(*args, **kwargs):
    raise AssertionError("simulated although the command should have failed first")


def _fail_on_second_chunk(monkeypatch, error: BaseException) -> None:
    simulate = SimulationPlan.simulate

    def simulate_then_fail(self, indices):
        if indices[0] > 0:
            raise error
        return simulate(self, indices)

    monkeypatch.setattr(SimulationPlan, "simulate", simulate_then_fail)


def test_interrupted_run_exits_130_quietly_and_writes_nothing(tmp_path, capsys, monkeypatch):
    _fail_on_second_chunk(monkeypatch, KeyboardInterrupt())
    code, out, err = _main(
        capsys, "simulate", "--n", 40, "--size", SIZE, "--quiet", "--out", tmp_path
    )
    assert (code, out, err) == (130, "", "")
    assert list(tmp_path.iterdir()) == []


def test_interrupted_run_removes_the_folders_it_created(tmp_path, capsys, monkeypatch):
    _fail_on_second_chunk(monkeypatch, KeyboardInterrupt())
    out = tmp_path / "new" / "deeper" / "sim"
    code, _, _ = _main(capsys, "simulate", "--n", 40, "--size", SIZE, "--quiet", "--out", out)
    assert code == 130
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_leaves_existing_files_as_they_were(tmp_path, seed, capsys, monkeypatch):
    args = ["simulate", "--n", 40, "--size", SIZE, "--quiet", "--out", tmp_path]
    assert _main(capsys, *args, "--seed", seed)[0] == 0
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}

    _fail_on_second_chunk(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    code, out, err = _main(capsys, *args, "--seed", seed + 1, "--overwrite")
    assert (code, out) == (1, "")
    _assert_one_line_error(err, "No space left on device")
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before


# info -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A written data set, plus a single MRC volume, an MRC stack and a bare MRC directory."""
    X, y, info = _simulated(0)
    root = tmp_path_factory.mktemp("info")
    write_subtomograms(root / "set", X, y, voxel_size=VOXEL_SIZE, class_names=info.class_names)
    with mrcfile.new(root / "stack.mrc", X[:5]) as mrc:
        mrc.voxel_size = VOXEL_SIZE
    (root / "bare").mkdir()
    for name in ["subtomo_000001.mrc", "subtomo_000002.mrc", "subtomo_000003.mrc"]:
        shutil.copy(root / "set" / name, root / "bare" / name)
    return root, X, y, info.class_names


def _fields(out: str) -> dict[str, str]:
    """The ``key  value`` lines of ``info``'s output (not the indented class table)."""
    pairs = (re.split(r"\s{2,}", line, maxsplit=1) for line in out.splitlines())
    return {pair[0]: pair[1] for pair in pairs if len(pair) == 2 and pair[0]}


@pytest.mark.parametrize(
    ("source", "kind", "volumes", "labelled"),
    [
        ("set", "directory with particles.star", slice(None), True),
        ("set/particles.star", "STAR file", slice(None), True),
        ("set/subtomo_000002.mrc", "MRC volume", slice(1, 2), False),
        ("stack.mrc", "MRC stack", slice(0, 5), False),
        ("bare", "directory of MRC files", slice(0, 3), False),
    ],
)
def test_info_describes_each_kind_of_source(dataset, capsys, source, kind, volumes, labelled):
    root, X, y, class_names = dataset
    code, out, err = _main(capsys, "info", root / source)
    assert code == 0, err

    fields = _fields(out)
    data = X[volumes].astype(np.float64)
    assert fields["source"] == f"{kind}: {root / source}"
    assert fields["volumes"] == str(len(data))
    assert fields["volume shape"] == f"{SIZE} x {SIZE} x {SIZE} voxels (z, y, x)"
    assert fields["voxel size"] == f"{VOXEL_SIZE} Å"
    values = dict(item.split() for item in fields["values"].split(", "))
    expected = {"min": data.min(), "max": data.max(), "mean": data.mean(), "std": data.std()}
    for name, value in expected.items():
        assert float(values[name]) == pytest.approx(value, rel=1e-5, abs=1e-9)

    if not labelled:
        assert fields["classes"] == "no labels"
        return
    assert fields["classes"].startswith(f"{N_CLASSES} (named)")
    table = [line.split() for line in out.splitlines() if line.startswith("  ")]
    assert table[0] == ["label", "count", "name"]
    assert table[1:] == [
        [str(label), str(int(np.sum(y == label))), name] for label, name in enumerate(class_names)
    ]


def test_info_runs_as_console_script(dataset):
    executable = shutil.which("skdistill")
    if executable is None:
        pytest.skip("the skdistill console script is not installed (pip install -e .)")
    root, X, _, _ = dataset
    result = _subprocess([executable, "info", root / "set"])
    assert result.returncode == 0, result.stderr
    assert _fields(result.stdout)["volumes"] == str(len(X))
    assert result.stderr == ""


def test_info_on_a_corrupt_mrc_file_fails_in_one_line(tmp_path):
    bad = tmp_path / "bad.mrc"
    bad.write_bytes(b"not an MRC file" * 100)
    result = _python_m("info", bad)
    assert result.returncode == 1
    _assert_one_line_error(result.stderr, str(bad))
    assert result.stdout == ""


def test_info_on_a_truncated_mrc_file_fails_in_one_line(dataset, tmp_path, capsys):
    truncated = tmp_path / "truncated.mrc"
    truncated.write_bytes((dataset[0] / "stack.mrc").read_bytes()[:-100])
    code, _, err = _main(capsys, "info", truncated)
    assert code == 1
    _assert_one_line_error(err, str(truncated), "truncated")


def test_info_on_a_missing_path_fails_in_one_line(tmp_path, capsys):
    missing = tmp_path / "missing"
    code, out, err = _main(capsys, "info", missing)
    assert (code, out) == (1, "")
    _assert_one_line_error(err, str(missing), "does not exist")


def test_value_statistics_stay_accurate_over_many_batches(seed):
    values = 1e4 + np.random.default_rng(seed).normal(size=(50, 999))
    stats = value_statistics(iter(values))
    assert stats.count == values.size
    assert (stats.minimum, stats.maximum) == (values.min(), values.max())
    assert stats.mean == pytest.approx(values.mean(), rel=1e-12)
    assert stats.std == pytest.approx(values.std(), rel=1e-9)


# usage ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        ([], ["simulate", "info", "example"]),
        (
            ["simulate"],
            [
                "--out",
                "--n",
                "--snr",
                "--size",
                "--classes",
                "--voxel-size",
                "--tilt-range",
                "--seed",
                "--jobs",
                "--overwrite",
                "--quiet",
                "default: 0.05",
                "'none'",
                "example",
            ],
        ),
        (["info"], ["PATH", "STAR", "stack", "example"]),
    ],
)
def test_help_exits_0_and_lists_the_options(capsys, args, mentions):
    code, out, err = _main(capsys, *args, "--help")
    assert (code, err) == (0, "")
    assert out.startswith(f"usage: skdistill {' '.join(args)}".rstrip())
    for mention in mentions:
        assert mention in out


def test_version(capsys):
    code, out, _ = _main(capsys, "--version")
    assert code == 0
    assert re.fullmatch(r"skdistill \S+\n", out)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["simulate", "--out", "d", "--n", "-5"], "--n"),
        (["simulate", "--out", "d", "--n", "2.5"], "--n"),
        (["simulate", "--out", "d", "--snr", "abc"], "--snr"),
        (["simulate", "--out", "d", "--snr", "0"], "--snr"),
        (["simulate", "--out", "d", "--size", "2"], "--size"),
        (["simulate", "--out", "d", "--classes", "0"], "--classes"),
        (["simulate", "--out", "d", "--voxel-size", "nan"], "--voxel-size"),
        (["simulate", "--out", "d", "--tilt-range", "60", "-60"], "--tilt-range"),
        (["simulate", "--out", "d", "--max-shift", "0.5"], "--max-shift"),
        (["simulate", "--out", "d", "--jobs", "0"], "--jobs"),
        (["simulate", "--out", "d", "--seed", "-1"], "--seed"),
        (["simulate", "--n", "3"], "--out"),
        (["simulate", "--out", "d", "--bogus"], "--bogus"),
        (["info"], "PATH"),
        ([], "COMMAND"),
        (["train"], "train"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(tmp_path, capsys, monkeypatch, args, fragment):
    monkeypatch.chdir(tmp_path)
    code, out, err = _main(capsys, *args)
    assert (code, out) == (2, "")
    _assert_one_line_error(err, fragment)
    assert not (tmp_path / "d").exists()


def test_bad_argument_in_a_subprocess():
    result = _python_m("simulate", "--out", "unused", "--snr", "abc")
    assert result.returncode == 2
    line = _assert_one_line_error(result.stderr, "--snr", "'abc'")
    assert "usage:" not in line
    assert result.stdout == ""


def test_a_closed_stdout_ends_the_command_quietly(tmp_path):
    from skdistill.io import write_subtomograms

    write_subtomograms(tmp_path / "set", np.zeros((2, 4, 4, 4), np.float32), voxel_size=9.2)
    process = subprocess.Popen(
        [sys.executable, "-m", "skdistill", "info", str(tmp_path / "set")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    process.stdout.close()  # like `| head` quitting before the command writes
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0
    assert err.decode().strip() == ""
