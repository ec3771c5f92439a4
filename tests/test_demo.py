"""``skdistill demo`` end to end at a tiny size, and the table's definitions."""

import json
import subprocess
import sys

import joblib
import numpy as np
import pytest

from skdistill.datasets import make_subtomograms
from skdistill.experiments import CPU_SETTING, DistillationResult, ModelResult
from skdistill.experiments.report import format_table

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
    assert "already holds" in result.stderr and "--overwrite" in result.stderr
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
