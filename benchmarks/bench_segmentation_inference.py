"""Segmentation prediction speed against the number of volumes per forward pass.

Segmentation nets keep full-resolution feature maps to their last layer, so the batch that
is fastest for the classifiers (64 volumes of 40³ on CPU) is not necessarily fastest for
them. For ``Cnn3DSegmenter`` with SSN3D and a light U-Net at 40³ this measures, in one run,
``predict`` throughput (volumes/s, best of ``--repeats``) at several inference batch sizes,
in fp32 and with the default ``inference_precision="auto"``; the batch the segmenters use
by default (:data:`skdistill.estimators._segmenter.SEGMENTATION_INFERENCE_VOXELS`) is marked,
and its speed-up over 64 volumes per batch is reported. It also times the scoring step:
``skdistill.metrics.mean_iou`` (bincount confusion matrix) against scikit-learn's
``jaccard_score`` on the same masks. Results go to
``docs/benchmarks/segmentation_inference.md`` and ``.json``.

Run ``python3 benchmarks/bench_segmentation_inference.py`` (about 2 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
from _machine import RESULTS_DIR, machine_description, markdown_machine
from sklearn.metrics import jaccard_score

import skdistill.estimators._segmenter as segmenter_module
from skdistill import Cnn3DSegmenter
from skdistill.datasets import make_segmentation_subtomograms
from skdistill.metrics import mean_iou

MODELS = {"ssn3d": {}, "unet (base_filters=16)": {"base_filters": 16}}
BATCH_SIZES = (1, 2, 4, 8, 16, 64)


def fitted_segmenter(arch_name: str, knobs: dict, X, y) -> Cnn3DSegmenter:
    """A segmenter trained one epoch (speed does not depend on the weights)."""
    arch = arch_name.split()[0]
    return Cnn3DSegmenter(
        arch, **knobs, max_epochs=1, batch_size=8, validation_fraction=None, random_state=0
    ).fit(X, y)


def throughput(segmenter, X, batch_size: int, precision: str, repeats: int) -> float:
    """Best volumes/s of ``predict`` with ``batch_size`` volumes per forward pass."""
    voxels = math.prod(X.shape[1:])
    segmenter_module.SEGMENTATION_INFERENCE_VOXELS["cpu"] = batch_size * voxels
    segmenter_module.SEGMENTATION_INFERENCE_VOXELS["cuda"] = batch_size * voxels
    segmenter.set_params(inference_precision=precision)
    segmenter.predict(X[:batch_size])  # warm-up
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        segmenter.predict(X)
        best = max(best, len(X) / (time.perf_counter() - start))
    return best


def scoring_seconds(n_volumes: int, size: int, repeats: int) -> dict:
    """Best seconds of mean IoU on ``n_volumes`` random 2-class masks, ours vs sklearn's."""
    rng = np.random.default_rng(0)
    y_true = (rng.random((n_volumes, size, size, size)) < 0.05).astype(np.int8)
    y_pred = (rng.random((n_volumes, size, size, size)) < 0.05).astype(np.int8)
    timings = {}
    for name, score in {
        "mean_iou": lambda: mean_iou(y_true, y_pred),
        "jaccard_score": lambda: jaccard_score(
            y_true.ravel(), y_pred.ravel(), average="macro", zero_division=0.0
        ),
    }.items():
        best = math.inf
        for _ in range(repeats):
            start = time.perf_counter()
            value = score()
            best = min(best, time.perf_counter() - start)
        timings[name] = {"seconds": best, "value": float(value)}
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=128, help="volumes per timed predict")
    parser.add_argument("--size", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--n-scored", type=int, default=500, help="masks per timed mean IoU")
    args = parser.parse_args()

    defaults = dict(segmenter_module.SEGMENTATION_INFERENCE_VOXELS)
    X, y = make_segmentation_subtomograms(
        args.n, size=args.size, n_classes=4, snr=0.5, crowding=2, random_state=0
    )
    rows = []
    for name, knobs in MODELS.items():
        segmenter = fitted_segmenter(name, knobs, X[:16], y[:16])
        device = torch.device(segmenter.device_).type
        default_batch = max(1, defaults[device] // args.size**3)
        for precision in ("fp32", "auto"):
            for batch_size in sorted({*BATCH_SIZES, default_batch}):
                speed = throughput(segmenter, X, batch_size, precision, args.repeats)
                rows.append(
                    {
                        "model": name,
                        "precision": precision,
                        "batch_size": batch_size,
                        "default": batch_size == default_batch,
                        "volumes_per_s": speed,
                    }
                )
                print(f"{name:24s} {precision:5s} batch {batch_size:3d}: {speed:7.1f} volumes/s")
    segmenter_module.SEGMENTATION_INFERENCE_VOXELS.update(defaults)

    machine = machine_description()
    lines = [
        "# Segmentation inference: volumes per forward pass",
        "",
        f"`python3 benchmarks/bench_segmentation_inference.py` ({args.size}³, {args.n} volumes "
        f"per timed `predict`, best of {args.repeats}, device `{device}`). Volumes/s; "
        "**bold** = the segmenters' default batch; last column = default / batch of 64.",
        "",
        "| model | precision | "
        + " | ".join(f"batch {b}" for b in sorted({r["batch_size"] for r in rows}))
        + " | default / 64 |",
    ]
    batches = sorted({r["batch_size"] for r in rows})
    lines.append("|---|---|" + "---:|" * (len(batches) + 1))
    for name in MODELS:
        for precision in ("fp32", "auto"):
            chosen = {
                r["batch_size"]: r
                for r in rows
                if r["model"] == name and r["precision"] == precision
            }
            cells = [
                f"**{chosen[b]['volumes_per_s']:.1f}**"
                if chosen[b]["default"]
                else f"{chosen[b]['volumes_per_s']:.1f}"
                for b in batches
            ]
            default = next(r for r in chosen.values() if r["default"])
            ratio = default["volumes_per_s"] / chosen[64]["volumes_per_s"]
            lines.append(f"| {name} | {precision} | " + " | ".join(cells) + f" | {ratio:.2f}x |")
    scoring = scoring_seconds(args.n_scored, args.size, args.repeats)
    ours, sklearn_time = scoring["mean_iou"]["seconds"], scoring["jaccard_score"]["seconds"]
    lines += [
        "",
        f"Scoring {args.n_scored} masks of {args.size}³ (best of {args.repeats}): "
        f"`skdistill.metrics.mean_iou` {ours:.3f} s, scikit-learn `jaccard_score` "
        f"{sklearn_time:.3f} s ({sklearn_time / ours:.1f}x); values "
        f"{scoring['mean_iou']['value']:.6f} and {scoring['jaccard_score']['value']:.6f}.",
        "",
        markdown_machine(machine),
        "",
    ]
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "segmentation_inference.md").write_text("\n".join(lines))
    (RESULTS_DIR / "segmentation_inference.json").write_text(
        json.dumps(
            {"results": rows, "scoring": scoring, "machine": machine, "args": vars(args)},
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS_DIR / 'segmentation_inference.md'}")


if __name__ == "__main__":
    main()
