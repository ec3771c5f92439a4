"""How much memory a job needs and whether this machine has it, checked before the work starts."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["available_memory", "check_memory", "format_bytes"]

#: Share of the available memory one job may plan to use; the rest is left for the
#: interpreter, libraries and other processes.
USABLE_FRACTION = 0.8


def format_bytes(n_bytes: float) -> str:
    """Return ``n_bytes`` in binary units, e.g. ``"1.5 GiB"``.

    Examples
    --------
    >>> format_bytes(1536 * 1024**2)
    '1.5 GiB'
    >>> format_bytes(512)
    '512 B'
    """
    value = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if abs(value) < 1024 or unit == "EiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def _cgroup_limit_files() -> list[Path]:
    """Memory-limit files of this process's cgroups and their ancestors, then the root ones."""
    root = Path("/sys/fs/cgroup")
    files = []
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            number, controllers, path = line.split(":", 2)
            if number == "0" and not controllers:  # cgroup v2: "0::/path/of/this/cgroup"
                base, name = root, "memory.max"
            elif "memory" in controllers.split(","):  # cgroup v1: "4:memory:/path"
                base, name = root / "memory", "memory.limit_in_bytes"
            else:
                continue
            group = base / path.strip().lstrip("/")
            while group != base and base in group.parents:
                files.append(group / name)
                group = group.parent
    except (OSError, ValueError):
        pass
    return [*files, root / "memory.max", root / "memory" / "memory.limit_in_bytes"]


def _cgroup_limit() -> int | None:
    """The tightest memory limit of this process's cgroups (containers, SLURM jobs), if any.

    The group's current use is not subtracted: it counts the page cache, which the kernel
    reclaims, so subtracting it would refuse jobs that fit.
    """
    limits = []
    for path in _cgroup_limit_files():
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:
            limits.append(int(text))
    return min(limits) if limits else None


def _meminfo_available() -> int | None:
    """``MemAvailable`` from ``/proc/meminfo`` (Linux), in bytes."""
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


def available_memory() -> int | None:
    """Return the memory, in bytes, that a new allocation can use now, or None if unknown.

    On Linux this is ``MemAvailable`` from ``/proc/meminfo``, capped by the cgroup limit of a
    container or batch job; elsewhere the physical memory (``os.sysconf``).
    """
    candidates = [value for value in (_meminfo_available(), _cgroup_limit()) if value is not None]
    if not candidates:
        try:
            candidates = [os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")]
        except (AttributeError, ValueError, OSError):
            return None
    return min(candidates)


def check_memory(required_bytes: float, *, what: str, hint: str = "") -> None:
    """Raise ``MemoryError`` before any work if ``what`` needs more memory than is available.

    Parameters
    ----------
    required_bytes : float
        The estimated peak memory of the job.
    what : str
        The job, as the message should name it, e.g. ``"simulating 1000 volumes of 400^3"``.
    hint : str, default=""
        How to need less (appended to the message).

    Raises
    ------
    MemoryError
        If ``required_bytes`` exceeds :data:`USABLE_FRACTION` of :func:`available_memory`.
        Nothing is checked when the available memory is unknown.

    Examples
    --------
    >>> check_memory(1024, what="a tiny job")
    >>> check_memory(2.0**70, what="a huge job")
    Traceback (most recent call last):
    ...
    MemoryError: a huge job needs about 1024.0 EiB...
    """
    available = available_memory()
    if available is None or required_bytes <= USABLE_FRACTION * available:
        return
    message = (
        f"{what} needs about {format_bytes(required_bytes)} of memory, but only "
        f"{format_bytes(available)} is available on this machine."
    )
    raise MemoryError(f"{message} {hint}".strip())
