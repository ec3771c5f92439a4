"""Simulation speed: ``make_subtomograms`` versus a naive per-sample scipy pipeline.

Both paths make the same kind of data (synthetic templates, uniform random pose, CTF x missing
wedge, noise at the requested SNR) at the same size; they are timed in one run on one machine,
so their ratio is meaningful even when absolute speeds vary between runs. Results go to
``docs/benchmarks/simulate.md`` and ``simulate.json``.

Run ``python3 benchmarks/bench_simulate.py`` (about a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from _machine import RESULTS_DIR, machine_description, markdown_machine
from scipy.ndimage import affine_transform

from skdistill.datasets import make_subtomograms, make_templates
from skdistill.datasets.physics import (
    ctf,
    missing_wedge_mask,
    random_euler_angles,
    rotation_matrices,
)


def naive_subtomograms(n: int, size: int, snr: float, seed: int) -> np.ndarray:
    """One sample at a time: rotate a stored template map, float64 FFT filter, noise."""
    rng = np.random.default_rng(seed)
    _, templates = make_templates(23, size, 9.2)
    fourier_filter = ctf(size, 9.2) * missing_wedge_mask(size)
    center = np.full(3, size // 2, dtype=float)
    out = np.empty((n, size, size, size), dtype=np.float32)
    for i in range(n):
        rotation = rotation_matrices(random_euler_angles(1, rng))[0][::-1, ::-1].T
        shift = rng.uniform(-0.05 * size, 0.05 * size, 3)
        density = affine_transform(
            templates[i % 23], rotation, offset=center - rotation @ (center + shift), order=1
        )
        signal = np.fft.irfftn(
            np.fft.rfftn(density) * fourier_filter, s=density.shape, axes=(0, 1, 2)
        )
        noise = rng.standard_normal(signal.shape) * np.sqrt(signal.var() / snr)
        out[i] = signal + noise
    return out


def measured_snr(snr: float, size: int, n: int = 200) -> tuple[float, float]:
    """Mean and std over volumes of var(noise-free) / var(noisy - noise-free)."""
    noisy, _ = make_subtomograms(n, size=size, snr=snr, random_state=1)
    clean, _ = make_subtomograms(n, size=size, snr=None, random_state=1)
    ratio = clean.var(axis=(1, 2, 3)) / (noisy - clean).var(axis=(1, 2, 3))
    return float(ratio.mean()), float(ratio.std())


def wedge_power_fraction(size: int, n: int = 200) -> float:
    """Fourier power inside the missing wedge over power outside, noise-free volumes."""
    clean, _ = make_subtomograms(n, size=size, snr=None, random_state=1)
    power = np.abs(np.fft.fftn(clean, axes=(1, 2, 3))) ** 2
    kz, _, kx = np.meshgrid(*(np.fft.fftfreq(size),) * 3, indexing="ij")
    in_wedge = np.abs(kz) > np.tan(np.radians(60)) * np.abs(kx) + 1e-9
    return float(power[:, in_wedge].sum() / power[:, ~in_wedge].sum())


def rate(function, n: int, repeats: int) -> float:
    """Best samples/s of ``repeats`` runs (the least disturbed by other processes)."""
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return n / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="samples per timed run (fast path)")
    parser.add_argument("--n-naive", type=int, default=300, help="samples per naive run")
    parser.add_argument("--size", type=int, default=40)
    parser.add_argument("--snr", type=float, default=0.05)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    make_subtomograms(32, size=args.size, random_state=0)  # templates cached, code warm
    results = {
        "size": args.size,
        "snr": args.snr,
        "naive_per_sample_scipy": rate(
            lambda: naive_subtomograms(args.n_naive, args.size, args.snr, 0),
            args.n_naive,
            args.repeats,
        ),
    }
    for n_jobs in (1, 2):
        results[f"make_subtomograms_n_jobs_{n_jobs}"] = rate(
            lambda n_jobs=n_jobs: make_subtomograms(
                args.n, size=args.size, snr=args.snr, random_state=0, n_jobs=n_jobs
            ),
            args.n,
            args.repeats,
        )
    snr_rows = []
    for snr in (0.05, 0.5, 5.0):
        mean, std = measured_snr(snr, args.size)
        results[f"measured_snr_at_{snr:g}"] = {"mean": mean, "std": std}
        snr_rows.append(f"| {snr:g} | {mean:.4f} | {std:.4f} |")
    results["wedge_power_fraction"] = wedge_power_fraction(args.size)
    machine = machine_description()
    naive = results["naive_per_sample_scipy"]
    rows = [
        f"| {name} | {value:,.0f} | {value / naive:.2f}x |"
        for name, value in results.items()
        if name.startswith(("naive", "make_subtomograms"))
    ]
    report = "\n".join(
        [
            "# Simulation speed",
            "",
            f"Subtomograms/s at {args.size}^3 with noise (SNR {args.snr}), best of "
            f"{args.repeats} runs; `python3 benchmarks/bench_simulate.py`.",
            "",
            "| path | subtomograms/s | vs naive |",
            "|---|---:|---:|",
            *rows,
            "",
            "Measured SNR, var(noise-free) / var(noisy - noise-free) per volume, 200 volumes:",
            "",
            "| requested | measured mean | std over volumes |",
            "|---:|---:|---:|",
            *snr_rows,
            "",
            "Fourier power inside the missing wedge / power outside (noise-free, ±60°): "
            f"{results['wedge_power_fraction']:.2e}",
            "",
            "Machine:",
            "",
            markdown_machine(machine),
            "",
        ]
    )
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "simulate.md").write_text(report)
    (RESULTS_DIR / "simulate.json").write_text(
        json.dumps({"results": results, "machine": machine}, indent=2) + "\n"
    )
    print(report)


if __name__ == "__main__":
    main()
