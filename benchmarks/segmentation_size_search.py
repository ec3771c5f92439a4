"""Light U-Net size search and segmentation distillation on simulated crowded subtomograms.

1. ``GridSearchCV`` over the U-Net knobs (``base_filters``, ``filter_multiplier``, ``levels``,
   ``last_filters``) with 3-fold mean IoU, plus SSN3D as a reference: mean IoU against
   parameter count, Pareto front marked (seed 003's experiment on our data).
2. Distillation: two small U-Nets, each trained on hard masks (balanced class weights) and
   distilled (T=5, per-voxel KL) from a large U-Net teacher without and with balanced class
   weights, at equal epochs, over three student seeds, scored on a held-out test set.

Writes ``docs/benchmarks/segmentation_size_search.md``, ``.json`` and ``.png``.
Run ``python3 benchmarks/segmentation_size_search.py`` (a few minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from _machine import RESULTS_DIR, machine_description, markdown_machine
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import GridSearchCV

from skdistill import Cnn3DSegmenter, DistilledSegmenter
from skdistill.architectures import build_segmentation_network, count_parameters
from skdistill.metrics import mean_iou_scorer

GRID = [
    {"arch": ["unet"], "base_filters": [2, 4, 8, 16], "levels": [2, 3], "last_filters": [4]},
    {"arch": ["unet"], "base_filters": [8], "levels": [3], "filter_multiplier": [1.5],
     "last_filters": [2, 8]},
    {"arch": ["ssn3d"]},
]  # fmt: skip
TEACHER = {"base_filters": 16, "levels": 3, "last_filters": 16}
STUDENTS = (
    {"base_filters": 2, "levels": 2, "last_filters": 2},
    {"base_filters": 4, "levels": 2, "last_filters": 4},
)
STUDENT_SEEDS = (0, 1, 2)


def parameters(candidate: dict, size: int) -> int:
    options = {k: v for k, v in candidate.items() if k != "arch"}
    network = build_segmentation_network(candidate["arch"], 2, (size,) * 3, **options)
    return count_parameters(network)


def student_variants(teacher, student: dict, training: dict, seed: int) -> dict:
    """The same small U-Net trained on hard masks and distilled from ``teacher``."""
    common = {**student, **training, "random_state": seed}
    frozen = FrozenEstimator(teacher)
    return {
        "hard masks, balanced": Cnn3DSegmenter("unet", class_weight="balanced", **common),
        "distilled T=5": DistilledSegmenter(frozen, "unet", temperature=5.0, **common),
        "distilled T=5, balanced": DistilledSegmenter(
            frozen, "unet", temperature=5.0, class_weight="balanced", **common
        ),
    }


def pareto_front(params: np.ndarray, scores: np.ndarray) -> list[int]:
    """Indices, by increasing size, of candidates that no smaller candidate outscores."""
    order = np.argsort(params, kind="stable")
    return [i for k, i in enumerate(order) if scores[i] > max(scores[order[:k]], default=-1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=192)
    parser.add_argument("--n-test", type=int, default=64)
    parser.add_argument("--size", type=int, default=24)
    parser.add_argument("--snr", type=float, default=1.0)
    parser.add_argument("--crowding", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    from skdistill.datasets import make_segmentation_subtomograms

    start = time.perf_counter()
    X, y = make_segmentation_subtomograms(
        args.n_train + args.n_test, size=args.size, n_classes=8, snr=args.snr,
        crowding=args.crowding, mask_threshold=0.2, random_state=0,
    )  # fmt: skip
    X_train, y_train = X[: args.n_train], y[: args.n_train]
    X_test, y_test = X[args.n_train :], y[args.n_train :]
    training = {"max_epochs": args.epochs, "batch_size": 8, "lr": 1e-2,
                "validation_fraction": None, "random_state": 0}  # fmt: skip

    search = GridSearchCV(
        Cnn3DSegmenter(class_weight="balanced", **training), GRID, cv=3, scoring=mean_iou_scorer
    )
    search.fit(X_train, y_train)
    candidates = search.cv_results_["params"]
    params = np.array([parameters(c, args.size) for c in candidates])
    scores = search.cv_results_["mean_test_score"]
    front = pareto_front(params, scores)

    teacher = Cnn3DSegmenter("unet", **TEACHER, class_weight="balanced", **training)
    teacher.fit(X_train, y_train)
    distillation = {
        "teacher": {"params": teacher.n_parameters_, "test_iou": [teacher.score(X_test, y_test)]}
    }
    for student in STUDENTS:
        for seed in STUDENT_SEEDS:
            for variant, model in student_variants(teacher, student, training, seed).items():
                row = distillation.setdefault(f"student {student}: {variant}", {"test_iou": []})
                model.fit(X_train, y_train)
                row["params"] = model.n_parameters_
                row["test_iou"].append(model.score(X_test, y_test))
    minutes = (time.perf_counter() - start) / 60

    rows = [
        f"| {'*' if i in front else ''} | {candidates[i]} | {params[i]:,} | {scores[i]:.3f} "
        f"| {search.cv_results_['std_test_score'][i]:.3f} |"
        for i in np.argsort(params, kind="stable")
    ]
    machine = machine_description()
    text = "\n".join([
        "# Segmentation: U-Net size search and distillation",
        "",
        f"`python3 benchmarks/segmentation_size_search.py` ({minutes:.1f} min): "
        f"{args.n_train} training / {args.n_test} test crowded subtomograms of {args.size}³, "
        f"8 template classes, SNR {args.snr:g}, crowding {args.crowding}; target masks "
        f"(density >= 0.2 subunit peak, 2 classes); {args.epochs} epochs, Adam lr 1e-2, batch 8, "
        "balanced class weights for the hard-mask nets.",
        "",
        "## Size search (3-fold CV mean IoU; * = Pareto front)",
        "",
        "| front | candidate | parameters | mean IoU | std |",
        "|---|---|---:|---:|---:|",
        *rows,
        "",
        f"## Distillation (test mean IoU, equal epochs; teacher U-Net {TEACHER}; students: "
        f"mean ± std over seeds {STUDENT_SEEDS})",
        "",
        "| model | parameters | test mean IoU | per seed |",
        "|---|---:|---:|---|",
        *(f"| {name} | {row['params']:,} | {np.mean(row['test_iou']):.3f} ± "
          f"{np.std(row['test_iou']):.3f} | {', '.join(f'{v:.3f}' for v in row['test_iou'])} |"
          for name, row in distillation.items()),
        "",
        "Machine:",
        "",
        markdown_machine(machine),
        "",
    ])  # fmt: skip
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stem = RESULTS_DIR / "segmentation_size_search"
    stem.with_suffix(".md").write_text(text)
    record = {
        "candidates": [
            {"params": candidate, "n_parameters": int(p), "mean_iou": float(s)}
            for candidate, p, s in zip(candidates, params, scores, strict=True)
        ],
        "pareto_front": [int(i) for i in front],
        "distillation": distillation,
        "wall_minutes": minutes,
        "machine": machine,
    }
    stem.with_suffix(".json").write_text(json.dumps(record, indent=2, default=str) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(params, scores, label="candidates")
    ax.plot(params[front], scores[front], "o-", color="tab:red", label="Pareto front")
    for name, row in distillation.items():
        ax.scatter(
            [row["params"]], [np.mean(row["test_iou"])], marker="x", s=60, label=f"{name} (test)"
        )
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("mean IoU")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(stem.with_suffix(".png"), dpi=120)
    print(text)


if __name__ == "__main__":
    main()
