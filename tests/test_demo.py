"""``skdistill demo`` end to end at a tiny size, and the table's definitions."""

import json
import subprocess
import sys
import time
from types import SimpleNamespace

import joblib
import numpy as np
import pytest

import skdistill.cli._demo
from skdistill.cli import main
from skdistill.datasets import make_subtomograms
from skdistill.experiments import CPU_SETTING, DistillationResult, ModelResult
from skdistill.experiments.report import (
    PLOT_HINT,
    format_table,
    plot_results,
    save_report,
    write_outputs,
)
from skdistill.preprocessing import VolumeNormalizer

TINY = [
    "--classes", "2", "--size", "27", "--n-train", "16", "--n-valid", "8", "--n-test", "8",
    "--epochs", "1", "--teacher-epochs", "1", "--quiet",
]  # fmt: skip


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    result = subprocess.run(
        [sys.executable, "-m", "skdistill", "demo", *TINY, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    return out, result


def test_demo_prints_the_table_and_writes_its_outputs(demo_run):
    out, result = demo_run
    assert result.returncode == 0, result.stderr
    for row in ("teacher dsrf3d_v2", "| s1 |", "| s2 |", "| s3 |"):
        assert row in result.stdout
    assert "compression rate" in result.stdout and "speedup" in result.stdout
    assert "2 classes, 27^3 voxels" in result.stdout  # the setting is stated
    assert "Chance level is 0.500" in result.stdout
    for name in ("table.md", "results.json", "figure.png", "model.joblib"):
        assert (out / name).stat().st_size > 0
    record = json.loads((out / "results.json").read_text())
    assert [m["name"] for m in record["models"]] == ["dsrf3d_v2", "s1", "s2", "s3"]
    assert record["setting"]["n_classes"] == 2


def test_deployed_model_predicts_raw_volumes(demo_run):
    out, _ = demo_run
    model = joblib.load(out / "model.joblib")
    X, _ = make_subtomograms(4, n_classes=2, size=27, snr=0.5, random_state=5)
    assert model.predict(X).shape == (4,)
    assert model[-1].n_parameters_ < 1_100_000  # a student, not the teacher


def test_demo_refuses_to_overwrite_before_training(demo_run):
    out, _ = demo_run
    before = (out / "table.md").read_bytes()
    result = subprocess.run(
        [sys.executable, "-m", "skdistill", "demo", *TINY, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "is not empty" in result.stderr and "--overwrite" in result.stderr
    assert "Traceback" not in result.stderr
    assert "fitted" not in result.stdout
    assert (out / "table.md").read_bytes() == before


def test_table_uses_the_papers_definitions():
    teacher = ModelResult("dsrf3d_v2", 1000, 0.9, None, 2.0)
    student = ModelResult("s1", 100, 0.6, 0.81, 0.5)
    result = DistillationResult(CPU_SETTING, [teacher, student])
    derived = result.derived(student)
    assert derived == {"compression_rate": 10.0, "accuracy_ratio": pytest.approx(0.9),
                       "speedup": 4.0}  # fmt: skip
    table = format_table(result)
    assert "| s1 | 100 | 0.600 | 0.810 | 0.50 s | 10.0 | 0.900 | 4.00 |" in table
    assert "| teacher dsrf3d_v2 | 1,000 | 0.900 | - | 2.00 s | - | - | - |" in table


def test_cpu_setting_fits_the_paper_students():
    assert CPU_SETTING.size >= 27
    assert CPU_SETTING.students == ("s1", "s2", "s3")
    assert np.isclose(
        CPU_SETTING.training_parameters()["validation_fraction"],
        CPU_SETTING.n_valid / (CPU_SETTING.n_train + CPU_SETTING.n_valid),
    )


@pytest.mark.parametrize("field", ["n_train", "n_valid"])
def test_setting_needs_a_volume_of_every_class_for_training_and_validation(field):
    with pytest.raises(ValueError, match=rf"{field}=2 is smaller than n_classes=3"):
        CPU_SETTING.replace(n_classes=3, **{field: 2})


# Checks before training, the figure as an option -----------------------------------------


def _finished_run() -> DistillationResult:
    """A result as the experiment returns it, without training anything."""
    teacher = ModelResult("dsrf3d_v2", 1000, 0.9, None, 2.0)
    student = ModelResult("s1", 100, 0.6, 0.81, 0.5)
    estimators = {("s1", "hard"): SimpleNamespace(validation_score_=0.5)}
    return DistillationResult(
        CPU_SETTING, [teacher, student], estimators=estimators, normalizer=VolumeNormalizer()
    )


def _no_training(monkeypatch) -> None:
    monkeypatch.setattr(
        skdistill.cli._demo,
        "run_distillation_experiment",
        lambda setting, **kwargs: _finished_run(),
    )


def _block_matplotlib(monkeypatch) -> None:
    for name in [name for name in sys.modules if name.split(".")[0] == "matplotlib"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)


def test_demo_under_a_file_fails_before_training(tmp_path, capsys, monkeypatch):
    (tmp_path / "blocker").write_text("")
    monkeypatch.setattr(
        skdistill.cli._demo, "run_distillation_experiment", pytest.fail
    )  # training would fail the test
    start = time.perf_counter()
    code = main(["demo", "--quiet", "--out", str(tmp_path / "blocker" / "x")])
    assert time.perf_counter() - start < 5
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{tmp_path / 'blocker'} is a file" in err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["blocker"]


def test_demo_under_a_file_fails_at_once_as_a_program(tmp_path):
    (tmp_path / "blocker").write_text("")
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "skdistill", "demo", "--out", str(tmp_path / "blocker" / "x")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    # The default setting trains for minutes; this bound leaves room for starting Python
    # and importing torch (about 4 s on the 2-core test machine) but not for training.
    assert time.perf_counter() - start < 30
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("skdistill: error:") and result.stderr.count("\n") == 1
    assert "is a file" in result.stderr


def test_demo_with_too_little_memory_fails_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("skdistill.utils.memory.available_memory", lambda: 2**20)
    monkeypatch.setattr(skdistill.cli._demo, "run_distillation_experiment", pytest.fail)
    assert main(["demo", "--quiet", "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "The demo (1600 volumes of 28^3) needs about" in err and "--n-train" in err
    assert list(tmp_path.iterdir()) == []


def test_demo_without_matplotlib_writes_the_rest_and_says_how_to_get_the_figure(
    tmp_path, capsys, monkeypatch
):
    _no_training(monkeypatch)
    _block_matplotlib(monkeypatch)
    out = tmp_path / "out"
    assert main(["demo", "--quiet", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert sorted(path.name for path in out.iterdir()) == ["model.joblib", "results.json",
                                                          "table.md"]  # fmt: skip
    assert f"figure.png was not written. {PLOT_HINT}" in stdout
    assert 'pip install "skdistill[plot]"' in PLOT_HINT


def test_plot_results_without_matplotlib_says_how_to_install_it(tmp_path, monkeypatch):
    _block_matplotlib(monkeypatch)
    with pytest.raises(ImportError, match=r"skdistill\[plot\]"):
        plot_results(_finished_run(), tmp_path / "figure.png")
    assert list(tmp_path.iterdir()) == []


def test_plot_results_leaves_the_callers_backend_alone(tmp_path, monkeypatch):
    matplotlib = pytest.importorskip("matplotlib")
    backend = matplotlib.rcParams["backend"]

    def use(*args, **kwargs):
        raise AssertionError("plot_results switched the matplotlib backend")

    monkeypatch.setattr(matplotlib, "use", use)
    plot_results(_finished_run(), tmp_path / "figure.png")
    assert (tmp_path / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.rcParams["backend"] == backend


def test_write_outputs_publishes_a_complete_folder(tmp_path):
    out = tmp_path / "report"
    paths = write_outputs(_finished_run(), out)
    assert sorted(paths) == ["figure.png", "model.joblib", "results.json", "table.md"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["report"]
    with pytest.raises(FileExistsError, match="overwrite"):
        write_outputs(_finished_run(), out)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"notes\.txt"):
        write_outputs(_finished_run(), out, overwrite=True)
    (out / "notes.txt").unlink()
    (out / "figure.png").unlink()
    assert sorted(save_report(_finished_run(), tmp_path / "report")) == sorted(paths)
