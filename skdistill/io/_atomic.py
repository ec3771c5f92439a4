"""Atomic writes: each file goes to a temporary file beside its target, then ``os.replace``."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

__all__ = ["check_targets", "write_atomically"]


def check_targets(targets: Iterable[Path], *, overwrite: bool) -> None:
    """Raise ``FileExistsError`` for the first existing target unless ``overwrite`` is true.

    Called before anything is written, so that a refused write changes nothing on disk.
    """
    if overwrite:
        return
    for target in targets:
        if target.exists() or target.is_symlink():
            raise FileExistsError(
                f"{target} already exists and would be overwritten. Pass overwrite=True to "
                "replace it, or write to another directory."
            )


def write_atomically(jobs: Sequence[tuple[Path, Callable[[Path], None]]]) -> None:
    """Write several files so that each target is either left as it was or fully replaced.

    Every ``write(temporary_path)`` runs first; only when all of them succeed are the
    temporary files moved onto their targets with :func:`os.replace`, which is atomic within
    one file system (the temporary files live in the targets' directories). A failure while
    writing therefore leaves every existing target untouched, and no temporary file remains
    whether the writes succeed or fail.

    Parameters
    ----------
    jobs : sequence of (Path, callable)
        Target paths and the functions that write their contents to a given (new) path.
    """
    temporaries: list[Path] = []
    try:
        for target, write in jobs:
            temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
            temporaries.append(temporary)
            write(temporary)
        for (target, _), temporary in zip(jobs, temporaries, strict=True):
            os.replace(temporary, target)
    finally:
        for temporary in temporaries:
            temporary.unlink(missing_ok=True)
