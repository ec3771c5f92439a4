"""The subcommands' output directories: refuse to replace files unless ``--overwrite``."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..io._atomic import check_targets

__all__ = ["check_output_directory"]


def check_output_directory(out: Path, targets: Iterable[Path], *, overwrite: bool) -> None:
    """Raise, before anything is written, if ``out`` cannot take ``targets``.

    Parameters
    ----------
    out : Path
        The ``--out`` directory (it may not exist yet).
    targets : iterable of Path
        The files the command will write into ``out``.
    overwrite : bool
        The ``--overwrite`` flag: existing targets may be replaced.
    """
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a directory; pass another --out.")
    targets = list(targets)
    try:
        check_targets(targets, overwrite=overwrite)
    except FileExistsError:
        existing = [target for target in targets if target.exists() or target.is_symlink()]
        raise FileExistsError(
            f"{out} already holds {len(existing)} of the {len(targets)} files to write "
            f"(the first being {existing[0].name}); pass --overwrite to replace them, or "
            "choose another --out directory."
        ) from None
