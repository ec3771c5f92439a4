"""Tests of ``skdistill fit`` and ``skdistill predict`` (in-process, tiny networks)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import starfile

from skdistill import load_model
from skdistill.cli import main
from skdistill.cli._predict import format_histogram
from skdistill.datasets import make_toy_volumes
from skdistill.io import EdgePaddingWarning, SubtomogramStack, write_subtomograms

PREFIX = "skdistill: error:"
TINY = ["--arch", "tiny", "--epochs", "3", "--batch-size", "8", "--device", "cpu", "-q"]
NAMES = ["ribosome", "proteasome", "membrane"]


def _main(capsys, *args) -> tuple[int, str, str]:
    code = main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(err: str, *fragments: str) -> None:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(PREFIX)
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A folder of 36 extracted 8^3 subtomograms of 3 named classes with particles.star."""
    folder = tmp_path_factory.mktemp("cli") / "particles"
    X, y = make_toy_volumes(36, n_classes=3, size=8, noise=0.3, random_state=0)
    write_subtomograms(folder, X, y, voxel_size=9.2, class_names=NAMES)
    return folder


@pytest.fixture(scope="module")
def fitted(project, tmp_path_factory) -> Path:
    """``skdistill fit`` of a tiny classifier on the project: the model file."""
    model = tmp_path_factory.mktemp("models") / "tiny.safetensors"
    assert (
        main(["fit", "--star", str(project / "particles.star"), *TINY, "--model", str(model)]) == 0
    )
    return model


def test_fit_writes_a_model_that_remembers_the_data(fitted):
    model = load_model(fitted)
    assert list(model.classes_) == [1, 2, 3]  # rlnClassNumber: written back the same
    assert model.voxel_size_ == pytest.approx(9.2)
    assert model.standardize is True  # each volume scaled, in fit and predict
    assert tuple(model.input_shape_) == (8, 8, 8)


def test_predict_writes_classes_back_as_the_model_predicts(project, fitted, tmp_path, capsys):
    star = project / "particles.star"
    out = tmp_path / "classified.star"
    code, stdout, err = _main(
        capsys,
        "predict",
        "--model",
        fitted,
        "--star",
        star,
        "--out",
        out,
        "--batch-size",
        "5",
        "-q",
    )
    assert code == 0, err
    model = load_model(fitted)
    stack = SubtomogramStack(star)
    expected = model.predict(np.asarray(stack))
    written = starfile.read(out, always_dict=True)
    numbers = written["particles"]["rlnClassNumber"].to_numpy()
    np.testing.assert_array_equal(model.classes_[numbers - 1], expected)
    proba = model.predict_proba(np.asarray(stack)).max(axis=1)
    np.testing.assert_allclose(
        written["particles"]["rlnMaxValueProbDistribution"], proba, rtol=1e-5
    )
    assert "written to" in stdout
    assert format_histogram(expected, model.classes_) in stdout


@pytest.fixture(scope="module")
def student_file(project, fitted, tmp_path_factory) -> tuple[Path, str]:
    """``skdistill fit --teacher`` (the tiny classifier): the model file and stdout."""
    model = tmp_path_factory.mktemp("student") / "student.safetensors"
    arguments = ["fit", "--star", project / "particles.star", *TINY]
    arguments += ["--teacher", fitted, "--temperature", "3", "--model", model]
    with pytest.MonkeyPatch.context() as patch:
        lines = []
        patch.setattr("builtins.print", lambda *a, **k: lines.append(" ".join(map(str, a))))
        assert main([str(argument) for argument in arguments]) == 0
    return model, "\n".join(lines)


def test_fit_distils_from_a_teacher_file(student_file):
    model, stdout = student_file
    student = load_model(model)
    assert type(student).__name__ == "DistilledClassifier"
    assert student.temperature == 3
    assert "teacher" in stdout


def test_fit_with_a_teacher_architecture(project, tmp_path, capsys):
    model = tmp_path / "new" / "folder" / "student.safetensors"  # folders are created
    code, _, err = _main(
        capsys,
        "fit",
        "--star",
        project / "particles.star",
        *TINY,
        "--teacher-arch",
        "tiny",
        "--optimizer",
        "adam",
        "--lr",
        "0.002",
        "--teacher-lr",
        "0.001",
        "--no-standardize",
        "--model",
        model,
    )
    assert code == 0, err
    student = load_model(model)
    assert type(student).__name__ == "DistilledClassifier"
    assert (student.optimizer, student.lr, student.standardize) == ("adam", 0.002, False)
    assert (student.teacher.lr, student.teacher.optimizer) == (0.001, "adam")


def test_histogram_lists_every_class_in_model_order():
    table = format_histogram(np.array(["b", "b", "a"], dtype=object), np.array(["a", "b", "c"]))
    lines = table.splitlines()
    assert lines[1].split() == ["1", "a", "1", "33.3%"]
    assert lines[2].split() == ["2", "b", "2", "66.7%"]
    assert lines[3].split() == ["3", "c", "0", "0.0%"]


def test_prune_writes_a_smaller_model_that_predicts(project, fitted, tmp_path, capsys):
    out = tmp_path / "pruned.safetensors"
    code, stdout, err = _main(
        capsys, "prune", "--model", fitted, "--star", project / "particles.star",
        "--amount", "0.5", "--steps", "2", "--finetune-epochs", "1", "--device", "cpu",
        "-q", "--out", out,
    )  # fmt: skip
    assert code == 0, err
    pruned = load_model(out)
    assert type(pruned).__name__ == "PrunedClassifier"
    assert pruned.n_parameters_ < pruned.n_parameters_before_
    assert (pruned.amount, pruned.steps, pruned.finetune_labels) == (0.5, 2, "hard")
    assert list(pruned.classes_) == list(load_model(fitted).classes_)
    stack = np.asarray(SubtomogramStack(project / "particles.star"))
    assert set(pruned.predict(stack)) <= {1, 2, 3}
    assert f"{pruned.n_parameters_:,} parameters" in stdout
    assert len([line for line in stdout.splitlines() if line.strip()[:1] in "12"]) >= 2
    # and the pruned model file classifies particles
    star = project / "particles.star"
    code, _, err = _main(capsys, "predict", "--model", out, "--star", star,
                         "--out", tmp_path / "c.star", "-q")  # fmt: skip
    assert code == 0, err


def test_prune_fine_tunes_a_student_on_its_teachers_soft_labels(
    project, fitted, student_file, tmp_path, capsys
):
    out = tmp_path / "pruned-student.safetensors"
    code, stdout, err = _main(
        capsys, "prune", "--model", student_file[0], "--teacher", fitted,
        "--star", project / "particles.star", "--steps", "1", "--finetune-epochs", "1",
        "-q", "--out", out,
    )  # fmt: skip
    assert code == 0, err
    assert "on soft labels" in stdout
    assert load_model(out).finetuned_on_soft_labels_ is True


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        (["--teacher", "MODEL"], ("--teacher", "hard labels", "Leave out --teacher")),
        (["--amount", "1.5"], ("--amount", "fraction")),
    ],
)
def test_prune_bad_input_is_one_line(project, fitted, tmp_path, capsys, extra, fragments):
    extra = [str(fitted) if item == "MODEL" else item for item in extra]
    out = tmp_path / "p.safetensors"
    code, _, err = _main(capsys, "prune", "--model", fitted, "--star",
                         project / "particles.star", *extra, "--out", out)  # fmt: skip
    assert code != 0
    _one_line_error(err, *fragments)
    assert not out.exists()


@pytest.mark.parametrize("command", ["fit", "predict", "prune"])
def test_help_has_an_example(command, capsys):
    code, stdout, _ = _main(capsys, command, "--help")
    assert code == 0
    assert f"skdistill {command} --" in stdout.split("example")[1]


def test_existing_output_is_refused_before_any_work(project, fitted, tmp_path, capsys):
    out = tmp_path / "classified.star"
    out.write_text("keep me")
    code, _, err = _main(
        capsys, "predict", "--model", fitted, "--star", project / "particles.star", "--out", out
    )
    assert code == 1
    _one_line_error(err, str(out), "--overwrite")
    assert out.read_text() == "keep me"
    code, _, err = _main(
        capsys, "fit", "--star", project / "particles.star", *TINY, "--model", fitted
    )
    assert code == 1
    _one_line_error(err, "--overwrite")


@pytest.mark.parametrize(
    ("arguments", "fragments"),
    [
        (["--star", "missing.star"], ["missing.star", "does not exist"]),
        (["--label-column", "rlnNoSuchColumn"], ["rlnNoSuchColumn", "--label-column"]),
        (["--tomograms", "."], ["--box"]),
        (["--voxel-size", "4.6"], ["9.2", "--tomograms"]),
        (["--temperature", "2"], ["--teacher"]),
        (["--teacher", "missing.safetensors"], ["missing.safetensors"]),
        (["--teacher-lr", "0.001"], ["--teacher-arch"]),
    ],
)
def test_fit_bad_input_is_one_line(project, tmp_path, capsys, arguments, fragments):
    star = ["--star", project / "particles.star"] if "--star" not in arguments else []
    model = tmp_path / "m.safetensors"
    code, _, err = _main(capsys, "fit", *star, *TINY, *arguments, "--model", model)
    assert code == 1
    _one_line_error(err, *fragments)
    assert not model.exists()


def test_predict_needs_a_model_file(project, tmp_path, capsys):
    code, _, err = _main(
        capsys,
        "predict",
        "--model",
        tmp_path / "none.safetensors",
        "--star",
        project / "particles.star",
        "--out",
        tmp_path / "o.star",
    )
    assert code == 1
    _one_line_error(err, "none.safetensors")


@pytest.fixture(scope="module")
def relion_project(tmp_path_factory):
    """A small simulated RELION 5 project: 2 tomograms, centred Å coordinates."""
    from skdistill.datasets import write_relion_project

    folder = tmp_path_factory.mktemp("relion") / "project"
    return write_relion_project(
        folder, n_tomograms=2, shape=(32, 96, 96), n_particles=8, n_classes=2, random_state=0
    )


def test_fit_and_predict_from_tomograms(relion_project, tmp_path, capsys):
    """Boxes of 8 voxels of 20 Å, resampled from 10 Å tomograms (some padded at the edges)."""
    model = tmp_path / "m.safetensors"
    out = tmp_path / "classified.star"
    star, tomograms = relion_project.particles_star, relion_project.tomograms_star
    particles = ["--star", star, "--tomograms", tomograms]
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # shown by the command line, not raised
        code, stdout, err = _main(
            capsys, "fit", *particles, "--box", 8, "--voxel-size", 20, *TINY, "--model", model
        )
        assert code == 0, err
        assert "at 20 Å" in stdout
        # Warnings are one line each, without a source file and line.
        assert "skdistill: warning:" in err and "edge of their tomogram" in err
        assert ".py:" not in err
        code, stdout, err = _main(capsys, "predict", "--model", model, *particles, "--out", out)
    assert code == 0, err
    loaded = load_model(model)
    assert loaded.voxel_size_ == 20 and tuple(loaded.input_shape_) == (8, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EdgePaddingWarning)
        stack = SubtomogramStack.from_tomograms(star, tomograms, box_size=8, voxel_size=20)
    written = starfile.read(out, always_dict=True)["particles"]
    np.testing.assert_array_equal(written["rlnClassNumber"], loaded.predict(np.asarray(stack)))
    original = starfile.read(star, always_dict=True)["particles"]
    assert list(written.columns[: len(original.columns)]) == list(original.columns)


def test_picks_without_tomograms_say_to_pass_them(relion_project, fitted, tmp_path, capsys):
    code, _, err = _main(
        capsys, "predict", "--model", fitted, "--star", relion_project.particles_star,
        "--out", tmp_path / "o.star",
    )  # fmt: skip
    assert code == 1
    _one_line_error(err, "picked coordinates", "--tomograms")
    assert not (tmp_path / "o.star").exists()
