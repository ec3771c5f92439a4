"""Outputs that survive crashes and races: whole folders published by one rename.

:func:`publish_directory` is how skdistill writes every multi-file output (the ``simulate``
command, :func:`~skdistill.io.write_subtomograms`, the demo's report folder). The files are
written into a private, hidden folder beside the target, and only a complete set is moved into
place, by a single rename. So a reader of the target sees nothing, the complete old set or the
complete new set, never a mix, whatever happens to the writer:

- **Races.** An exclusive lock (``fcntl.flock`` on ``.NAME.skdistill-lock`` beside the target)
  admits one writer per target. A second one fails at once, before any expensive work, with
  an error naming the process that holds the lock. The kernel releases the lock when its
  holder dies, even by SIGKILL.
- **Errors and signals.** On an exception, Ctrl-C (SIGINT) or SIGTERM (a SLURM time limit,
  ``docker stop``) the private folder and the lock are removed and the target is left as it
  was. For the duration of the write, SIGTERM is turned into ``SystemExit(143)``, and both
  signals are held back while skdistill's own steps run (publishing, clean-up), so that
  they cannot cut those short; this only where the signal has its default action and in the
  main thread.
- **SIGKILL.** Leftovers are hidden siblings of the target
  (``.NAME.skdistill-tmp-*``, ``.NAME.skdistill-old-*``, the lock file), never inside it, so
  no reader takes them for data; the next write to the same target removes them. Files are
  not ``fsync``-ed: after a power cut or kernel crash, the file system may hold a published
  folder whose last-written files are empty or short (the readers' size checks refuse them).
- **Overwriting.** Without ``overwrite`` an existing non-empty target is refused. With it,
  the old folder is swapped for the new one (``renameat2(RENAME_EXCHANGE)`` on Linux, where
  the file system supports it: one atomic step; elsewhere two renames, between which the
  target is briefly absent) and then deleted, so no file of the old set survives beside the
  new one. A folder holding files the writer does not recognise as its own outputs is not
  replaced.
- **Checks first.** Entering the context creates missing parent folders, checks that the
  target can be created there (not under a file, not a mount point, not the working
  directory) and takes the lock: a bad output path fails before the work starts, and the
  parent folders created are removed again on failure.

:func:`write_atomically` is the single-file counterpart: each file is written to a temporary
file beside it and moved into place with :func:`os.replace`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import socket
import stat
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ._signals import Interruptions

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: a lock file created with O_EXCL instead
    fcntl = None

__all__ = ["OutputLockedError", "publish_directory", "write_atomically"]

_TMP, _OLD, _LOCK = "skdistill-tmp", "skdistill-old", "skdistill-lock"


class OutputLockedError(FileExistsError):
    """Another process is writing the same output folder."""


@contextlib.contextmanager
def publish_directory(
    target: str | os.PathLike,
    *,
    overwrite: bool = False,
    replaceable: Callable[[str], bool] | None = None,
) -> Iterator[Path]:
    """Yield a private empty folder; publish it as ``target`` when the block succeeds.

    Parameters
    ----------
    target : str or path-like
        The output folder. Its parent folders are created if missing.
    overwrite : bool, default=False
        Whether an existing non-empty ``target`` may be replaced (as a whole).
    replaceable : callable, default=None
        ``replaceable(name)`` is true for the names of entries a folder of this kind of output
        holds. With ``overwrite``, a target holding any other entry is refused rather than
        deleted. None accepts any name.

    Yields
    ------
    Path
        The private folder to write into (a hidden sibling of ``target``).

    Raises
    ------
    FileExistsError
        If ``target`` is a non-empty folder and ``overwrite`` is false, or it holds entries
        ``replaceable`` rejects.
    OutputLockedError
        If another process is writing ``target``.
    NotADirectoryError
        If ``target`` or one of its parents is a file.
    OSError
        If ``target`` cannot be created (permissions, a mount point, the working folder).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from skdistill.io.atomic import publish_directory
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     with publish_directory(Path(tmp) / "out") as staging:
    ...         _ = (staging / "a.txt").write_text("complete")
    ...     print(sorted(path.name for path in Path(tmp).iterdir()))
    ['out']
    """
    target = Path(os.path.realpath(target))
    with Interruptions() as interruptions:  # held back, except while the caller's block runs
        created = _make_parents(target)
        try:
            with _exclusive_lock(target):
                _sweep_leftovers(target)
                _check_target(target, overwrite=overwrite, replaceable=replaceable)
                staging = _sibling(target, _TMP)
                _mkdir(staging, target)
                try:
                    with interruptions.delivered():
                        yield staging
                    _check_target(target, overwrite=overwrite, replaceable=replaceable)
                    _publish(staging, target)
                finally:
                    _remove(staging)
        except BaseException:
            for folder in reversed(created):
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise


def write_atomically(
    jobs: Sequence[tuple[Path, Callable[[Path], None]]], *, overwrite: bool = True
) -> None:
    """Write several files so that each target is either left as it was or fully replaced.

    For single files (a model file, say); a set of files that belong together goes through
    :func:`publish_directory`. Every ``write(temporary_path)`` runs first; only when all of
    them succeed are the temporary files moved onto their targets with :func:`os.replace`,
    which is atomic within one file system (the temporary files live in the targets'
    folders). A failure leaves every existing target untouched and removes the temporary
    files.

    Parameters
    ----------
    jobs : sequence of (Path, callable)
        Target paths and the functions that write their contents to a given (new) path.
    overwrite : bool, default=True
        Replace existing targets. If false, each file is moved into place with
        :func:`os.link`, which fails rather than replace a target that appeared meanwhile
        (another process won the race): then ``FileExistsError`` names it.
    """
    temporaries: list[Path] = []
    try:
        for target, write in jobs:
            temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
            temporaries.append(temporary)
            write(temporary)
        for (target, _), temporary in zip(jobs, temporaries, strict=True):
            if overwrite:
                os.replace(temporary, target)
                continue
            try:
                os.link(temporary, target)
            except FileExistsError:
                raise FileExistsError(
                    f"{target} was created by another writer while this one was written; it "
                    "was not replaced. Pass overwrite=True or choose another file."
                ) from None
    finally:
        for temporary in temporaries:
            temporary.unlink(missing_ok=True)


# Entering: checks, parents, the lock, leftovers ------------------------------------------


def _make_parents(target: Path) -> list[Path]:
    """Create the missing parents of ``target``; return them, outermost first."""
    missing = []
    parent = target.parent
    while not parent.exists() and not parent.is_symlink():
        missing.append(parent)
        parent = parent.parent
    if not parent.is_dir():
        raise NotADirectoryError(
            f"Cannot create {target}: {parent} is a file, not a folder. Choose another output "
            "folder."
        )
    created: list[Path] = []
    for folder in reversed(missing):
        try:
            folder.mkdir()
        except OSError as exc:
            for done in reversed(created):
                with contextlib.suppress(OSError):
                    done.rmdir()
            raise type(exc)(
                f"Cannot create {target}: creating {folder} failed ({exc.strerror or exc}). "
                "Choose an output folder in a writable place."
            ) from None
        created.append(folder)
    return created


def _check_target(
    target: Path, *, overwrite: bool, replaceable: Callable[[str], bool] | None
) -> None:
    if not target.exists():
        return
    if not target.is_dir():
        raise NotADirectoryError(
            f"{target} exists and is not a folder; choose another output folder."
        )
    here = Path.cwd()
    if here == target or target in here.parents:
        raise OSError(
            f"{target} is the working folder or holds it. Outputs are written to a new folder "
            "and renamed into place; pass a new subfolder, e.g. "
            f"{target / 'out'}."
        )
    if target.stat().st_dev != target.parent.stat().st_dev:
        raise OSError(
            f"{target} is a mount point. Outputs are written beside their folder and renamed "
            f"into place; pass a new subfolder, e.g. {target / 'out'}."
        )
    entries = sorted(os.listdir(target))
    if not entries:
        return
    if not overwrite:
        raise FileExistsError(
            f"{target} is not empty: it holds {len(entries)} files or folders, the first "
            f"being {target / entries[0]}. Pass overwrite=True (--overwrite on the command "
            "line) to replace them all, or choose another output folder."
        )
    foreign = [name for name in entries if replaceable is not None and not replaceable(name)]
    if foreign:
        raise FileExistsError(
            f"{target} holds {target / foreign[0]} ({len(foreign)} of its {len(entries)} "
            "entries are not outputs of this kind), so it is not replaced even with "
            "overwrite: it may hold other work. Move those files away, or choose another "
            "output folder."
        )


@contextlib.contextmanager
def _exclusive_lock(target: Path) -> Iterator[None]:
    """Hold ``.NAME.skdistill-lock`` beside ``target``; remove it when done."""
    path = _sibling_name(target, _LOCK)
    descriptor = _acquire(path, target) if fcntl is not None else _acquire_exclusive(path, target)
    try:
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(descriptor)


def _acquire(path: Path, target: Path) -> int:
    while True:
        descriptor = _open_lock(path, target, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(descriptor)
            os.close(descriptor)
            raise OutputLockedError(
                f"{target} is being written by another process ({holder}; lock file {path}). "
                "Wait for it to finish, or choose another output folder."
            ) from None
        # The holder before us may have removed the file after we opened it: retry on the
        # file now at ``path`` so that two processes never hold locks on different files.
        try:
            same = os.stat(path).st_ino == os.fstat(descriptor).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return descriptor
        os.close(descriptor)


def _acquire_exclusive(path: Path, target: Path) -> int:  # pragma: no cover - Windows
    try:
        return _open_lock(path, target, os.O_RDWR | os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        raise OutputLockedError(
            f"{target} is being written by another process (lock file {path}). Wait for it "
            "to finish; if no skdistill process is running, delete the lock file."
        ) from None


def _open_lock(path: Path, target: Path, flags: int) -> int:
    try:
        return os.open(path, flags, 0o644)
    except FileExistsError:
        raise
    except OSError as exc:
        raise type(exc)(
            f"Cannot write {target}: creating {path} failed ({exc.strerror or exc}). Outputs "
            f"are written beside their folder and renamed into place, so {target.parent} must "
            "be writable; choose an output folder in a writable place."
        ) from None


def _read_holder(descriptor: int) -> str:
    with contextlib.suppress(OSError):
        text = os.pread(descriptor, 200, 0).decode(errors="replace").strip()
        if text:
            return text
    return "pid unknown"


def _sweep_leftovers(target: Path) -> None:
    """Remove the private folders of earlier writers of ``target`` that were killed.

    Called with the lock held: no live process owns a private folder of ``target`` then.
    """
    prefixes = (f".{target.name}.{_TMP}-", f".{target.name}.{_OLD}-")
    for name in os.listdir(target.parent):
        if name.startswith(prefixes):
            _remove(target.parent / name)


# Leaving: publish or clean up -------------------------------------------------------------


def _publish(staging: Path, target: Path) -> None:
    if not target.exists():
        _rename(staging, target)
        return
    os.chmod(staging, stat.S_IMODE(target.stat().st_mode))
    if not os.listdir(target):
        _rename(staging, target)  # replaces an empty folder in one step
    elif _exchange(staging, target):
        pass  # ``staging`` now holds the old set, removed by the caller
    else:
        old = _sibling(target, _OLD)
        os.rename(target, old)
        os.rename(staging, target)
        _remove(old)


def _rename(staging: Path, target: Path) -> None:
    try:
        os.rename(staging, target)
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
            raise FileExistsError(
                f"{target} appeared while it was being written (by something other than "
                "skdistill); nothing was written. Choose another output folder."
            ) from None
        raise


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders in one atomic step (Linux ``renameat2``); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # pragma: no cover - glibc < 2.28, musl
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p]
    renameat2.argtypes += [ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _sibling_name(target: Path, kind: str) -> Path:
    return target.parent / f".{target.name}.{kind}"


def _sibling(target: Path, kind: str) -> Path:
    return target.parent / f".{target.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _mkdir(staging: Path, target: Path) -> None:
    try:
        staging.mkdir()
    except OSError as exc:
        raise type(exc)(
            f"Cannot write {target}: creating {staging} failed ({exc.strerror or exc}). "
            f"Outputs are written beside their folder, so {target.parent} must be writable."
        ) from None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
