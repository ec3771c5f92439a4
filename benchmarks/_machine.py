"""Description of the machine a benchmark ran on, for the result files."""

from __future__ import annotations

import os
import platform
from pathlib import Path

#: Where benchmark results are written.
RESULTS_DIR = Path(__file__).resolve().parent.parent / "docs" / "benchmarks"


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where available)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


#: CPU features that change the speed of the networks by 2-3x (AVX2 vs AVX-512, native bf16).
SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_flags() -> str:
    """Which of :data:`SPEED_FLAGS` this CPU has (from /proc/cpuinfo), e.g. ``"avx2 avx512f"``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                present = set(line.split(":", 1)[1].split())
                return " ".join(flag for flag in SPEED_FLAGS if flag in present) or "none"
    except OSError:
        pass
    return "unknown"


def machine_description() -> dict:
    """CPU model, usable cores, OS, Python and key library versions."""
    import numpy
    import scipy

    description = {
        "cpu": cpu_model(),
        "cores": len(os.sched_getaffinity(0)),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
    }
    description["cpu_flags"] = cpu_flags()
    try:
        import torch

        description["torch"] = torch.__version__
        description["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        if torch.cuda.is_available():
            description["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return description


def markdown_machine(description: dict) -> str:
    """The machine description as a markdown bullet list."""
    return "\n".join(f"- {key}: {value}" for key, value in description.items())
