"""How long the full pruning benchmark would take here, from a ``--quick`` run.

The run's cost is counted in volumes passed through each network: training passes
(forward + backward + update; the Taylor calibration is counted as one too) and inference
passes (validation, scores, timing). Seconds per volume of each network are measured here
at the quick and at the full sizes; the quick run's measured time minus its counted compute
gives the fixed overhead per fit (network building, pruning graphs, skorch set-up), added
per fit of the full run. Pruned networks are costed as unpruned, so the compute part is an
upper bound (at 75 % fewer channels fine-tuning is several times cheaper).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np

from skdistill import Cnn3DClassifier, Cnn3DSegmenter


@dataclass(frozen=True)
class Plan:
    """The counts that set a run's cost (one per run configuration)."""

    tasks: tuple[str, ...]
    n_seeds: int
    amounts: tuple[float, ...]
    n_criteria: int
    steps: int
    finetune_epochs: int
    calibration_size: int
    timing_volumes: int
    repeats: int
    teacher: bool
    classification: dict
    segmentation: dict

    @property
    def n_configs(self) -> int:
        return len(self.amounts) * self.n_criteria

    def shrinkage(self) -> float:
        """Mean FLOPs fraction of the fine-tuned nets over rounds and amounts, taken as
        ``(1 - removed)²`` (both channel counts of a convolution shrink): an approximation,
        as the criteria do not remove channels evenly across layers."""
        fractions = [(1 - amount * k / self.steps) ** 2
                     for amount in self.amounts for k in range(1, self.steps + 1)]  # fmt: skip
        return sum(fractions) / len(fractions)


def work(plan: Plan, shrink: float = 1.0) -> tuple[Counter, Counter, int]:
    """Training and inference volumes per network key, and the number of fits; fine-tuning
    volumes count ``shrink`` times (the pruned nets' share of the unpruned cost)."""
    train, infer, fits = Counter(), Counter(), 0
    c, s = plan.classification, plan.segmentation
    layouts = {
        "classification": ("s1", c["n_train"], c["n_valid"], c["n_test"], c["epochs"]),
        "segmentation": ("unet", s["n_train"], 0, s["n_test"], s["epochs"]),
    }
    timed = min(plan.timing_volumes, c["n_test"])
    for task in plan.tasks:
        net, n_train, n_valid, n_test, epochs = layouts[task]
        timed = min(plan.timing_volumes, n_test)
        calibration = plan.steps * min(plan.calibration_size, n_train)
        finetune = plan.steps * plan.finetune_epochs
        train[net] += plan.n_seeds * epochs * n_train
        infer[net] += plan.n_seeds * (epochs * n_valid + n_test)
        per_config_train = 2 * calibration + shrink * finetune * n_train
        per_config_infer = (4 * plan.steps + finetune) * n_valid + 2 * n_test
        per_config_infer += 2 * (plan.repeats * timed + 8)
        train[net] += plan.n_seeds * plan.n_configs * per_config_train
        infer[net] += plan.n_seeds * plan.n_configs * per_config_infer
        fits += plan.n_seeds * (1 + 2 * plan.n_configs)
    if plan.teacher and "classification" in plan.tasks:
        n_train, n_valid, n_test = c["n_train"], c["n_valid"], c["n_test"]
        calibration = plan.steps * min(plan.calibration_size, n_train)
        finetune = plan.steps * plan.finetune_epochs
        train["dsrf3d_v2"] += plan.n_seeds * (c["teacher_epochs"] * n_train + calibration
                                              + shrink * finetune * n_train)  # fmt: skip
        infer["dsrf3d_v2"] += plan.n_seeds * (
            c["teacher_epochs"] * n_valid + 2 * (n_train + n_valid) + 3 * n_test
            + 3 * (plan.repeats * timed + 8)
        )  # fmt: skip
        train["s1"] += plan.n_seeds * (
            c["epochs"] * n_train + calibration + shrink * finetune * n_train
        )
        infer["s1"] += plan.n_seeds * (
            (c["epochs"] + finetune) * n_valid + 4 * n_test + 4 * (plan.repeats * timed + 8)
        )
        fits += plan.n_seeds * 4
    return train, infer, fits


def seconds_per_volume(
    net: str, size: int, batch_size: int, precision: str, unet: dict
) -> tuple[float, float]:
    """(training, inference) seconds per volume of ``net`` at ``size``³, measured here
    (``unet``: the U-Net's knobs); the best of 7 one-batch epochs / predictions."""
    rng = np.random.default_rng(0)
    n = batch_size
    X = rng.standard_normal((n, size, size, size), dtype=np.float32)
    training = {"max_epochs": 8, "batch_size": batch_size, "validation_fraction": None,
                "precision": precision, "random_state": 0}  # fmt: skip
    if net == "unet":
        y = (X > 0).astype(np.int64)
        model = Cnn3DSegmenter("unet", **unet, **training).fit(X, y)
    else:
        model = Cnn3DClassifier(arch=net, optimizer="adam", lr=1e-3, **training)
        model.fit(X, np.arange(n) % 8)
    # The best of many short samples (one-batch epochs and predictions): other work on a
    # shared machine only slows a sample down.
    train = min(model.history_[1:, "dur"]) / n
    model.predict_proba(X[:8])
    infer = []
    for _ in range(7):
        start = time.perf_counter()
        model.predict_proba(X)
        infer.append(time.perf_counter() - start)
    return train, min(infer) / n


def measure_unit_costs(plans: dict[str, Plan], log) -> dict:
    """Seconds per volume of every (network, size) the plans use, keyed ``"net@size"``."""
    costs = {}
    for plan in plans.values():
        c, s = plan.classification, plan.segmentation
        needed = []
        if "classification" in plan.tasks:
            needed.append(("s1", c["size"], c["batch_size"], c["precision"]))
            if plan.teacher:
                needed.append(("dsrf3d_v2", c["size"], c["batch_size"], c["precision"]))
        if "segmentation" in plan.tasks:
            needed.append(("unet", s["size"], s["batch_size"], "fp32"))
        for net, size, batch, precision in needed:
            key = f"{net}@{size}"
            if key not in costs:
                costs[key] = seconds_per_volume(net, size, batch, precision, s["unet"])
                log(f"cost of {key}: {costs[key][0] * 1e3:.1f} ms/volume training, "
                    f"{costs[key][1] * 1e3:.2f} ms/volume inference")  # fmt: skip
    return costs


def compute_seconds(plan: Plan, costs: dict, shrink: float = 1.0) -> float:
    """Counted compute of ``plan`` with ``costs`` (see :func:`measure_unit_costs`)."""
    sizes = {"s1": plan.classification["size"], "dsrf3d_v2": plan.classification["size"],
             "unet": plan.segmentation["size"]}  # fmt: skip
    train, infer, _ = work(plan, shrink)
    return sum(
        train[net] * costs[f"{net}@{sizes[net]}"][0] + infer[net] * costs[f"{net}@{sizes[net]}"][1]
        for net in set(train) | set(infer)
    )


def simulation_seconds(plan: Plan, quick: Plan, quick_seconds: dict) -> float:
    """The quick run's simulation time scaled by volumes x voxels."""
    total = 0.0
    for task, seconds in quick_seconds.items():
        full, small = getattr(plan, task), getattr(quick, task)
        volumes = (full["n_train"] + full.get("n_valid", 0) + full["n_test"]) / (
            small["n_train"] + small.get("n_valid", 0) + small["n_test"]
        )
        total += seconds * volumes * (full["size"] / small["size"]) ** 3
    return total


def estimate_full_run(full: Plan, quick: Plan, costs: dict, record: dict) -> str:
    """A paragraph: the full run's estimated hours here, and how they were estimated."""
    simulated = {name: task["simulate_seconds"] for name, task in record["tasks"].items()}
    measured = record["wall_minutes"] * 60 - sum(simulated.values())
    counted = compute_seconds(quick, costs)
    overhead = max(measured - counted, 0.0) / work(quick)[2]
    fixed = work(full)[2] * overhead * full.steps / quick.steps
    fixed += simulation_seconds(full, quick, simulated)
    upper = compute_seconds(full, costs) + fixed
    lower = compute_seconds(full, costs, full.shrinkage()) + fixed
    rates = ", ".join(f"{key} {1 / train:.0f}" for key, (train, _) in costs.items())
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return (
        f"Estimated full run ({full.n_seeds} seeds x {full.n_configs} amount-criterion pairs, "
        f"{', '.join(full.tasks)}{', teacher + distilled student' if full.teacher else ''}, "
        f"{full.steps} rounds x {full.finetune_epochs} fine-tuning epochs) on this machine "
        f"({record['machine']['cores']} cores, load average {load} while measuring): "
        f"{lower / 3600:.1f}-{upper / 3600:.1f} h. Upper: fine-tuning costed at the unpruned "
        f"nets' speed; lower: at {full.shrinkage():.2f} of it (their mean FLOPs fraction if "
        f"channels fell evenly). Training volumes/s measured here: {rates}; the time scales "
        "inversely with them (a busy or AVX2-only machine is slower). Quick run: "
        f"{measured:.0f} s measured (without simulation) vs {counted:.0f} s counted."
    )
