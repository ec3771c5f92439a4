"""Device resolution and local (non-global) seeding of torch."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from sklearn.utils import check_random_state

__all__ = ["draw_seed", "local_torch_seed", "resolve_device"]


def resolve_device(device: str | torch.device) -> str:
    """Turn ``"auto"`` into ``"cuda"`` when CUDA is available, else ``"cpu"``.

    Parameters
    ----------
    device : str or torch.device
        ``"auto"``, or anything :class:`torch.device` accepts (``"cpu"``, ``"cuda:1"``).

    Returns
    -------
    str
        The device to train and predict on.
    """
    if isinstance(device, str) and device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device={device!r} is not a valid torch device; use 'auto', 'cpu', 'cuda' or 'cuda:N'."
        ) from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was requested but CUDA is not available on this machine; "
            "use device='auto' or 'cpu'."
        )
    return str(resolved)


def draw_seed(random_state) -> int:
    """Draw a 31-bit integer seed from ``random_state`` (None, int or RandomState)."""
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


@contextlib.contextmanager
def local_torch_seed(seed: int) -> Iterator[None]:
    """Seed torch inside the block and restore the global RNG state afterwards.

    Parameters
    ----------
    seed : int
        Seed for the block.
    """
    # torch.manual_seed reseeds every CUDA device, so every one is forked and restored.
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices, device_type="cuda"):
        torch.manual_seed(seed)
        yield
