"""Tables, figures and files of a distillation run (see :mod:`.distillation`).

The figure needs matplotlib, an optional dependency (``pip install "skdistill[plot]"``);
without it every other output is still written.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import joblib

from ..io.atomic import publish_directory
from .distillation import DistillationResult

__all__ = [
    "OUTPUT_FILES",
    "PLOT_HINT",
    "format_table",
    "is_report_output",
    "plot_results",
    "result_record",
    "save_report",
    "write_outputs",
]

#: Files a run writes into its output directory (figure.png only with matplotlib).
OUTPUT_FILES = ("table.md", "results.json", "figure.png", "model.joblib")

#: What to do when matplotlib, an optional dependency, is missing.
PLOT_HINT = (
    "The figure needs matplotlib, which is not installed. Install it with "
    'pip install "skdistill[plot]" (or pip install matplotlib).'
)


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


def plot_results(result: DistillationResult, path) -> None:
    """Accuracy against parameter count, and speedup per student, hard versus soft labels.

    Draws on a :class:`matplotlib.figure.Figure` of its own (no pyplot), so the caller's
    matplotlib backend and figures are left alone.

    Parameters
    ----------
    result : DistillationResult
        A finished run.
    path : str, path-like or binary file
        Where the PNG goes.

    Raises
    ------
    ImportError
        If matplotlib is not installed (``pip install "skdistill[plot]"``).
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        if exc.name != "matplotlib":  # installed but broken: let its own error say why
            raise
        raise ImportError(PLOT_HINT, name="matplotlib") from exc
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    students = result.models[1:]
    fig = Figure(figsize=(10, 4))
    left, right = fig.subplots(1, 2)
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
    left.xaxis.set_minor_formatter(NullFormatter())
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


def save_report(result: DistillationResult, directory: str | os.PathLike) -> dict[str, Path]:
    """Write the table, the JSON record, the figure and the best student into ``directory``.

    The files are written in place, one by one, into an existing folder: use
    :func:`write_outputs` for a folder that appears complete or not at all, or call this
    inside :func:`~skdistill.io.atomic.publish_directory` (as ``skdistill demo`` does). The
    best student is chosen by validation accuracy (not test accuracy) and saved with
    :func:`joblib.dump` as a pipeline (per-volume normalisation, then the student). Without
    matplotlib the figure is left out (see :data:`PLOT_HINT`).

    Returns
    -------
    dict
        Output name → path, for the files written.
    """
    directory = Path(directory)
    paths = {name: directory / name for name in OUTPUT_FILES}
    paths["table.md"].write_text(format_table(result) + "\n")
    paths["results.json"].write_text(json.dumps(result_record(result), indent=2) + "\n")
    try:
        plot_results(result, paths["figure.png"])
    except ImportError as exc:
        if exc.name != "matplotlib":
            raise
        del paths["figure.png"]
    joblib.dump(result.deployable(result.best_student()), paths["model.joblib"])
    return paths


def write_outputs(result: DistillationResult, out, *, overwrite: bool = False) -> dict:
    """Write the files of :func:`save_report` as the folder ``out``, complete or not at all.

    The files go into a private folder published by one rename
    (:func:`~skdistill.io.atomic.publish_directory`): ``out`` holds the complete old set or
    the complete new set, whatever happens to the process.

    Parameters
    ----------
    result : DistillationResult
        A finished run.
    out : str or path-like
        The output folder; it must be new or empty unless ``overwrite``.
    overwrite : bool, default=False
        Whether to replace an existing folder of such outputs, as a whole.

    Returns
    -------
    dict
        Output name → path, for the files written.
    """
    out = Path(out)
    with publish_directory(out, overwrite=overwrite, replaceable=is_report_output) as staging:
        written = save_report(result, staging)
    return {name: out / name for name in written}


def is_report_output(name: str) -> bool:
    """Whether a folder of :func:`write_outputs` may hold an entry ``name``."""
    return name in OUTPUT_FILES
