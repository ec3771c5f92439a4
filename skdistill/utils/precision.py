"""Numeric precision of training and inference: bf16 detection, autocast, memory format."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

__all__ = [
    "PRECISIONS",
    "autocast",
    "bf16_supported",
    "resolve_precision",
    "to_channels_last",
]

#: Accepted values of the ``precision`` and ``inference_precision`` parameters.
PRECISIONS = ("auto", "fp32", "bf16")


def bf16_supported(device: str) -> bool:
    """Whether ``device`` computes in bfloat16 natively (fast, not emulated).

    CUDA devices report it themselves; on a CPU this needs AVX512_BF16 or AMX instructions.

    Parameters
    ----------
    device : str
        A resolved torch device, e.g. ``"cpu"`` or ``"cuda:0"``.
    """
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if kind != "cpu":
        return False
    # torch exposes the checks privately; fall back to the kernel's CPU flags without them.
    checks = [getattr(torch.cpu, name, None) for name in _CPU_BF16_CHECKS]
    checks = [check for check in checks if check is not None]
    if checks:
        return any(check() for check in checks)
    return bool(_CPU_BF16_FLAGS & _cpu_flags())


_CPU_BF16_CHECKS = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
_CPU_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def resolve_precision(precision: str, device: str) -> str:
    """Turn ``"auto"`` into ``"bf16"`` where the device supports it natively, else ``"fp32"``.

    An explicit ``"bf16"`` is kept even without native support (autocast then emulates it,
    slowly but correctly).

    Examples
    --------
    >>> resolve_precision("fp32", "cpu")
    'fp32'
    """
    if precision == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}.")
    return precision


def autocast(device: str, precision: str) -> contextlib.AbstractContextManager:
    """A bf16 autocast context for ``precision == "bf16"``, a no-op context otherwise."""
    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def to_channels_last(tensor: torch.Tensor) -> torch.Tensor:
    """Volumes ``(n, C, D, H, W)`` in the ``channels_last_3d`` memory format.

    oneDNN (CPU) and cuDNN run 3D convolutions faster on channels-last data; other tensors
    are returned as they are.
    """
    if tensor.dim() != 5:
        return tensor
    return tensor.contiguous(memory_format=torch.channels_last_3d)
