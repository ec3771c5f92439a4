"""Reproductions of the papers' experiments, as functions the CLI and benchmarks share."""

from .distillation import (
    CPU_SETTING,
    PAPER_SETTING,
    DistillationResult,
    DistillationSetting,
    ModelResult,
    run_distillation_experiment,
)

__all__ = [
    "CPU_SETTING",
    "PAPER_SETTING",
    "DistillationResult",
    "DistillationSetting",
    "ModelResult",
    "run_distillation_experiment",
]
