"""Prediction speed: naive skorch baseline vs our fp32 path vs our fast path, and bf16 training.

For the teacher and the students s1, s2, s3 at 40³ and 23 classes this measures, in one run:

* ``naive``: skorch's ``NeuralNetClassifier.predict_proba`` in fp32 on the plain module,
  the baseline a user would write;
* ``ours fp32``: ``predict_proba`` with ``inference_precision="fp32"`` (channels-last,
  inference mode, batches of 64);
* ``ours fast``: ``predict_proba`` with ``inference_precision="auto"`` (bf16 autocast where the
  hardware has native bf16).

A matmul micro-benchmark gives the machine's fp32 and bf16 GEMM peak; each model's
FLOPs per sample (counted by ``torch.utils.flop_counter``) turn throughput into a share of
that peak. Finally s1 is trained at 28³ in fp32 and in bf16 with the same seed, to measure
training speed-up and accuracy effect. Results go to ``docs/benchmarks/inference.md``,
``inference.json`` and ``inference.png``.

Run ``python3 benchmarks/bench_inference.py`` (about 5 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from _machine import RESULTS_DIR, machine_description, markdown_machine
from skorch import NeuralNetClassifier
from torch.utils.flop_counter import FlopCounterMode

from skdistill import Cnn3DClassifier
from skdistill.architectures import build_network
from skdistill.datasets import make_subtomograms
from skdistill.preprocessing import VolumeNormalizer
from skdistill.utils.precision import bf16_supported

MODELS = ("dsrf3d_v2", "s1", "s2", "s3")


def gemm_peak(dtype: torch.dtype, size: int = 2048, seconds: float = 2.0) -> float:
    """Best FLOP/s of a square matmul in ``dtype``."""
    a = torch.randn(size, size, dtype=dtype)
    b = torch.randn(size, size, dtype=dtype)
    a @ b
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        a @ b
        best = max(best, 2 * size**3 / (time.perf_counter() - start))
    return best


def flops_per_sample(arch: str, size: int, n_classes: int) -> float:
    """FLOPs (2 x multiply-adds) of one forward pass of one volume."""
    module = build_network(arch, n_classes, (size, size, size)).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(torch.zeros(1, 1, size, size, size))
    return float(counter.get_total_flops())


def throughput(predict, X: np.ndarray, repeats: int) -> float:
    """Best volumes/s of ``repeats`` calls of ``predict(X)`` after one warm-up call."""
    predict(X[:8])
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        predict(X)
        best = min(best, time.perf_counter() - start)
    return len(X) / best


def fitted_classifier(arch: str, X: np.ndarray, y: np.ndarray) -> Cnn3DClassifier:
    """A classifier with trained-shape state (one short epoch: speed does not need accuracy)."""
    return Cnn3DClassifier(
        arch=arch, max_epochs=1, batch_size=8, validation_fraction=None, random_state=0
    ).fit(X, y)


def naive_baseline(clf: Cnn3DClassifier) -> NeuralNetClassifier:
    """skorch's classifier around the same weights, contiguous memory, fp32, defaults."""
    module = build_network(clf.arch, len(clf.classes_), clf.input_shape_)
    module.load_state_dict(clf.net_.module_.state_dict())
    module = module.to(memory_format=torch.contiguous_format)
    return NeuralNetClassifier(module, device="cpu").initialize()


def inference_results(args) -> dict:
    X, _ = make_subtomograms(args.n, n_classes=23, size=40, snr=0.05, random_state=0)
    X = VolumeNormalizer().fit_transform(X)
    X5 = X[:, np.newaxis]
    peaks = {"fp32": gemm_peak(torch.float32), "bf16": gemm_peak(torch.bfloat16)}
    results = {"gemm_peak_flops": peaks, "models": {}}
    for arch in MODELS:
        clf = fitted_classifier(arch, X[:16], np.arange(16) % 23)
        naive = naive_baseline(clf)
        row = {"flops_per_sample": flops_per_sample(arch, 40, 23)}
        row["naive"] = throughput(naive.predict_proba, X5, args.repeats)
        clf.set_params(inference_precision="fp32")
        row["ours_fp32"] = throughput(clf.predict_proba, X, args.repeats)
        clf.set_params(inference_precision="auto")
        row["ours_fast"] = throughput(clf.predict_proba, X, args.repeats)
        fast_peak = peaks["bf16"] if bf16_supported("cpu") else peaks["fp32"]
        row["limit_fast"] = fast_peak / row["flops_per_sample"]
        row["fast_share_of_limit"] = row["ours_fast"] / row["limit_fast"]
        row["fast_over_naive"] = row["ours_fast"] / row["naive"]
        results["models"][arch] = row
        print(arch, {k: round(v, 3) for k, v in row.items()}, flush=True)
    return results


def training_results(args) -> dict:
    # The demo's data (same simulation seed: the first 1,200 volumes are the demo's
    # training + validation set) and its student setting, trained once in each precision.
    X, y = make_subtomograms(args.n_train + 200, n_classes=8, size=28, snr=0.5, random_state=0)
    X = VolumeNormalizer().fit_transform(X)
    rows = {}
    for precision in ("fp32", "bf16"):
        clf = Cnn3DClassifier(
            arch="s1", optimizer="adam", lr=1e-3, batch_size=16, max_epochs=args.train_epochs,
            validation_fraction=0.2, early_stopping=3, precision=precision, random_state=0,
        )  # fmt: skip
        start = time.perf_counter()
        clf.fit(X[: args.n_train], y[: args.n_train])
        seconds = time.perf_counter() - start
        X_test, y_test = X[args.n_train :], y[args.n_train :]
        clf.set_params(inference_precision="fp32")
        exact = clf.predict_proba(X_test)
        clf.set_params(inference_precision="bf16")
        fast = clf.predict_proba(X_test)
        rows[precision] = {
            "volumes_per_second": 0.8 * args.n_train * args.train_epochs / seconds,
            "test_accuracy": float(np.mean(clf.classes_[exact.argmax(1)] == y_test)),
            "bf16_inference_argmax_agreement": float(np.mean(exact.argmax(1) == fast.argmax(1))),
            "bf16_inference_max_abs_proba_diff": float(np.abs(exact - fast).max()),
        }
        print("train", precision, rows[precision], flush=True)
    rows["speedup"] = rows["bf16"]["volumes_per_second"] / rows["fp32"]["volumes_per_second"]
    return rows


def report(results: dict, machine: dict, args) -> str:
    peaks = results["inference"]["gemm_peak_flops"]
    lines = [
        "# Inference speed",
        "",
        f"Volumes/s of `predict_proba` on {args.n} simulated 40³ subtomograms (23 classes), best "
        f"of {args.repeats}; `python3 benchmarks/bench_inference.py`. `naive` is skorch's "
        "`NeuralNetClassifier.predict_proba` (fp32, contiguous, batch 128); `ours fp32` is "
        '`inference_precision="fp32"`; `ours fast` is the default `"auto"`.',
        "",
        f"GEMM peak (2048² matmul): fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, bf16 "
        f"{peaks['bf16'] / 1e9:.0f} GFLOP/s. Limit = peak ÷ FLOPs per volume (bf16 peak where "
        "bf16 is native). Speed does not depend on the weights (one short training epoch); "
        "the bf16-vs-fp32 agreement of trained nets is tested in `tests/test_precision.py` and "
        "below for a trained s1.",
        "",
        "| model | GFLOPs/volume | naive | ours fp32 | ours fast | fast / naive | limit "
        "| fast % of limit |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for arch, row in results["inference"]["models"].items():
        lines.append(
            f"| {arch} | {row['flops_per_sample'] / 1e9:.2f} | {row['naive']:.1f} "
            f"| {row['ours_fp32']:.1f} | {row['ours_fast']:.1f} | {row['fast_over_naive']:.2f}x "
            f"| {row['limit_fast']:.1f} | {100 * row['fast_share_of_limit']:.0f} % |"
        )
    training = results["training"]
    lines += [
        "",
        f"## Training s1 at 28³ in bf16 vs fp32 ({args.n_train} volumes, 20 % held out for "
        f"validation, 8 classes, SNR 0.5, <= {args.train_epochs} epochs with patience 3, Adam "
        "lr 1e-3, same seed: the demo's s1 hard-label fit)",
        "",
        "Volumes/s counts training volumes per second of fit (validation passes included in the "
        "time). Without batch-norm these nets sit on a loss plateau at chance for a seed-"
        "dependent number of epochs, so one run's accuracy difference is mostly that luck.",
        "",
        "| training precision | volumes/s | test accuracy (200, fp32 inference) "
        "| bf16 vs fp32 inference: argmax agreement | max abs Δp |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {p} | {training[p]['volumes_per_second']:.1f} "
            f"| {training[p]['test_accuracy']:.3f} "
            f"| {training[p]['bf16_inference_argmax_agreement']:.3f} "
            f"| {training[p]['bf16_inference_max_abs_proba_diff']:.1e} |"
            for p in ("fp32", "bf16")
        ),
        "",
        f"bf16 training speed-up: {training['speedup']:.2f}x.",
        "",
        "Machine:",
        "",
        markdown_machine(machine),
        "",
    ]
    return "\n".join(lines)


def plot(results: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = results["inference"]["models"]
    paths = ("naive", "ours_fp32", "ours_fast")
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.25
    for i, name in enumerate(paths):
        ax.bar(np.arange(len(models)) + (i - 1) * width, [m[name] for m in models.values()],
               width, label=name.replace("_", " "))  # fmt: skip
    ax.scatter(np.arange(len(models)) + width, [m["limit_fast"] for m in models.values()],
               marker="_", s=400, color="black", label="GEMM-peak limit")  # fmt: skip
    ax.set_xticks(np.arange(len(models)), list(models))
    ax.set_ylabel("volumes / s (40³)")
    ax.set_title("predict_proba throughput")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=192, help="volumes per timed prediction")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--n-train", type=int, default=1200)
    parser.add_argument("--train-epochs", type=int, default=6)
    args = parser.parse_args()
    torch.manual_seed(0)
    results = {"inference": inference_results(args), "training": training_results(args)}
    machine = machine_description()
    machine["cpu_native_bf16"] = bf16_supported("cpu")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    text = report(results, machine, args)
    (RESULTS_DIR / "inference.md").write_text(text)
    (RESULTS_DIR / "inference.json").write_text(
        json.dumps({"results": results, "machine": machine}, indent=2) + "\n"
    )
    plot(results, RESULTS_DIR / "inference.png")
    print(text)


if __name__ == "__main__":
    main()
