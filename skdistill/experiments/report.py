"""Tables, figures and files of a distillation run (see :mod:`.distillation`)."""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import joblib

from ..io._atomic import check_targets, write_atomically
from .distillation import DistillationResult

__all__ = ["OUTPUT_FILES", "format_table", "plot_results", "result_record", "write_outputs"]

#: Files a run writes into its output directory.
OUTPUT_FILES = ("table.md", "results.json", "figure.png", "model.joblib")


def _number(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(result: DistillationResult) -> str:
    """The run as one markdown table in the form of the paper's Tables 1-2."""
    n_test = result.setting.n_test
    lines = [
        f"| model | #parameters | accuracy (hard) | accuracy (soft) | test time ({n_test}) "
        "| compression rate | accuracy ratio | speedup |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for model in result.models:
        derived = result.derived(model)
        is_teacher = model is result.teacher
        lines.append(
            f"| {'teacher ' if is_teacher else ''}{model.name} | {model.n_parameters:,} "
            f"| {_number(model.accuracy_hard)} | {_number(model.accuracy_soft)} "
            f"| {model.test_seconds:.2f} s "
            f"| {'-' if is_teacher else _number(derived['compression_rate'], 1)} "
            f"| {'-' if is_teacher else _number(derived['accuracy_ratio'])} "
            f"| {'-' if is_teacher else _number(derived['speedup'], 2)} |"
        )
    return "\n".join(lines)


def result_record(result: DistillationResult) -> dict:
    """Everything measured, as JSON-ready data."""
    return {
        "setting": dataclasses.asdict(result.setting),
        "simulate_seconds": result.simulate_seconds,
        "models": [
            {**dataclasses.asdict(model), **result.derived(model)} for model in result.models
        ],
        "best_student": list(result.best_student()),
    }


def plot_results(result: DistillationResult, path: Path) -> None:
    """Accuracy against parameter count, and speedup per student, hard versus soft labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    students = result.models[1:]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    teacher = result.teacher
    left.scatter([teacher.n_parameters], [teacher.accuracy_hard], marker="*", s=200,
                 color="black", label="teacher (DSRF3D-v2)")  # fmt: skip
    for how, marker in (("hard", "o"), ("soft", "s")):
        params = [m.n_parameters for m in students]
        accuracy = [m.accuracy_hard if how == "hard" else m.accuracy_soft for m in students]
        left.scatter(params, accuracy, marker=marker, s=60, label=f"students, {how} labels")
        for m, a in zip(students, accuracy, strict=True):
            left.annotate(m.name, (m.n_parameters, a), textcoords="offset points", xytext=(5, 5))
    chance = 1 / result.setting.n_classes
    left.axhline(chance, color="gray", linestyle=":", label=f"chance ({chance:.3f})")
    left.set_xscale("log")
    left.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    left.set_xlabel("parameters")
    left.set_ylabel("test accuracy")
    left.set_title("Accuracy vs size")
    left.legend(fontsize=8)
    speedups = [result.derived(m)["speedup"] for m in students]
    right.bar([m.name for m in students], speedups, color="tab:blue")
    right.axhline(1.0, color="gray", linestyle=":")
    right.set_ylabel("speedup over the teacher (test time)")
    right.set_title("Prediction speedup (same for hard and soft)")
    setting = result.setting
    fig.suptitle(
        f"{setting.n_classes} classes, {setting.size}³, SNR {setting.snr:g}, "
        f"{setting.n_train}/{setting.n_valid}/{setting.n_test} volumes, T={setting.temperature:g}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)


def write_outputs(result: DistillationResult, out: Path, *, overwrite: bool = False) -> dict:
    """Write the table, the JSON record, the figure and the best student into ``out``.

    The best student is chosen by validation accuracy (not test accuracy) and saved with
    :func:`joblib.dump` as a pipeline (per-volume normalisation, then the student).

    Returns
    -------
    dict
        Output name → path.
    """
    out = Path(out)
    paths = {name: out / name for name in OUTPUT_FILES}
    check_targets(paths.values(), overwrite=overwrite)
    out.mkdir(parents=True, exist_ok=True)
    table = format_table(result)
    record = json.dumps(result_record(result), indent=2) + "\n"
    model = result.deployable(result.best_student())
    write_atomically(
        [
            (paths["table.md"], lambda path: path.write_text(table + "\n")),
            (paths["results.json"], lambda path: path.write_text(record)),
            (paths["figure.png"], functools.partial(_save_figure, result)),
            (paths["model.joblib"], lambda path: joblib.dump(model, path)),
        ]
    )
    return paths


def _save_figure(result: DistillationResult, path: Path) -> None:
    # matplotlib picks the format from the suffix; the temporary name has none.
    with open(path, "wb") as file:
        plot_results(result, file)
