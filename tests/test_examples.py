"""The examples run end to end (at a tiny size)."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_quickstart_runs_and_reports():
    result = subprocess.run(
        [
            sys.executable,
            EXAMPLES / "quickstart.py",
            "--n-samples",
            "16",
            "--size",
            "27",
            "--max-epochs",
            "1",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    assert "teacher (dsrf3d_v2)" in result.stdout
    assert "student (s1, T=5)" in result.stdout
    assert "pickled student:" in result.stdout
    # s1 at 27^3 pools to one voxel as at 40^3; with 4 classes: 1,014,071 - 19 * 1,025.
    assert "994,596" in result.stdout


def test_simulated_subtomograms_figure_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    figure = tmp_path / "figure.png"
    result = subprocess.run(
        [sys.executable, EXAMPLES / "plot_simulated_subtomograms.py", "--size", "16",
         "--out", figure],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )  # fmt: skip
    assert figure.stat().st_size > 10_000
    assert str(figure) in result.stdout


def test_unet_size_search_example_runs(tmp_path):
    pytest.importorskip("matplotlib")
    figure = tmp_path / "size_search.png"
    result = subprocess.run(
        [sys.executable, EXAMPLES / "plot_unet_size_search.py", "--n-samples", "16",
         "--max-epochs", "1", "--out", figure],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )  # fmt: skip
    assert figure.stat().st_size > 10_000
    assert "Best:" in result.stdout and "*" in result.stdout  # a Pareto front is marked
