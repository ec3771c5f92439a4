"""The examples run end to end (at a tiny size).

Each runs as a program (about 6-9 s, mostly Python and torch start-up plus a short fit), so
the module is marked ``slow``: ``.ci/run`` runs it in its second step (``pytest -m slow``),
which keeps the README's test command short.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

pytestmark = pytest.mark.slow


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


def test_relion_project_example_runs_end_to_end(tmp_path):
    import starfile

    from skdistill import load_model

    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, EXAMPLES / "relion_project.py", "--n-tomograms", "2",
         "--n-particles", "6", "--shape", "16", "32", "32", "--voxel-size", "36", "--box", "8",
         "--teacher-arch", "tiny", "--student-arch", "tiny", "--epochs", "1", "--out", out],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )  # fmt: skip
    accuracy = re.search(
        r"test accuracy on (TS_0\d) vs the true rlnClassNumber: teacher ([\d.]+), "
        r"student ([\d.]+)",
        result.stdout,
    )
    assert accuracy is not None, result.stdout
    assert all(0 <= float(value) <= 1 for value in accuracy.group(2, 3))
    assert "reloaded model predicts the test particles as the fitted one did: True" in (
        result.stdout
    )
    assert "skdistill fit --star" in result.stdout and "skdistill predict --model" in result.stdout

    model = load_model(out / "model.safetensors")
    assert model.classes_.tolist() == [1, 2, 3]  # rlnClassNumber's values
    assert model.input_shape_ == (8, 8, 8) and model.voxel_size_ == 36.0

    original = starfile.read(out / "project" / "particles.star", always_dict=True)
    written = starfile.read(out / "classified.star", always_dict=True)
    particles = written["particles"]
    assert len(particles) == 12
    assert particles["rlnClassNumber"].isin([1, 2, 3]).all()
    assert particles["rlnMaxValueProbDistribution"].between(0.33, 1).all()  # the top of 3
    assert particles["rlnTomoParticleName"].tolist() == (
        original["particles"]["rlnTomoParticleName"].tolist()
    )
    assert written["skdistill_classes"]["rlnClassNumber"].tolist() == [1, 2, 3]
    assert written["optics"].equals(original["optics"])

    # The command-line equivalent trains on the training tomogram's particles only.
    test_tomogram = accuracy.group(1)
    train = starfile.read(out / "train.star", always_dict=True)["particles"]
    assert len(train) == 6 and test_tomogram not in set(train["rlnTomoName"])


def test_tomogram_picking_example_runs_the_whole_loop(tmp_path):
    import starfile

    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, EXAMPLES / "tomogram_picking.py", "--n-tomograms", "2",
         "--n-particles", "6", "--shape", "16", "32", "32", "--voxel-size", "36",
         "--segmenter-box", "16", "--segmenter-samples", "16", "--box", "8",
         "--teacher-arch", "tiny", "--student-arch", "tiny", "--epochs", "1",
         "--min-size", "2", "--out", out],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )  # fmt: skip
    scores = re.findall(r"(TS_0\d): segmented in [\d.]+ s, (\d+) picks for 6 particles: "
                        r"precision ([\d.na]+), recall ([\d.]+), F1", result.stdout)  # fmt: skip
    assert [name for name, *_ in scores] == ["TS_01", "TS_02"], result.stdout
    for name, n_picks, _, recall in scores:
        picks = starfile.read(out / f"picks_{name}.star", always_dict=True)["particles"]
        assert len(picks) == int(n_picks) and 0 <= float(recall) <= 1
        assert set(picks["rlnTomoName"]) <= {name}
    if "nothing picked" not in result.stdout:
        classified = starfile.read(out / "classified_TS_02.star", always_dict=True)
        assert classified["particles"]["rlnClassNumber"].isin([1, 2, 3]).all()
