"""Whole-folder publishing (:mod:`skdistill.io.atomic`): races, errors, signals, leftovers.

The tests with two processes run real Python processes: a lock that only works within one
process, or clean-up that only runs on exceptions, would pass in-process tests.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from skdistill.io import atomic, read_subtomograms, write_subtomograms
from skdistill.io.atomic import OutputLockedError, publish_directory


def _names(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def _publish(target: Path, files: dict[str, str], **kwargs) -> None:
    with publish_directory(target, **kwargs) as staging:
        for name, text in files.items():
            (staging / name).write_text(text)


# In one process ---------------------------------------------------------------------------


def test_a_new_folder_appears_complete_with_nothing_beside_it(tmp_path):
    target = tmp_path / "a" / "b" / "out"
    with publish_directory(target) as staging:
        (staging / "one").write_text("1")
        assert not target.exists()  # nothing visible until the block succeeds
        assert staging.parent == target.parent and staging.name.startswith(".out.")
    assert _names(target) == ["one"]
    assert _names(target.parent) == ["out"]


def test_an_error_leaves_nothing_and_removes_the_parents_it_created(tmp_path):
    with pytest.raises(RuntimeError, match="boom"), publish_directory(tmp_path / "a/b/out") as s:
        (s / "one").write_text("1")
        raise RuntimeError("boom")
    assert _names(tmp_path) == []


def test_an_error_while_overwriting_keeps_the_old_set(tmp_path):
    target = tmp_path / "out"
    _publish(target, {"old": "1"})
    with pytest.raises(KeyboardInterrupt), publish_directory(target, overwrite=True) as staging:
        (staging / "new").write_text("2")
        raise KeyboardInterrupt
    assert _names(target) == ["old"]
    assert _names(tmp_path) == ["out"]


def test_a_folder_that_is_not_empty_needs_overwrite(tmp_path):
    target = tmp_path / "out"
    _publish(target, {"old": "1"})
    with pytest.raises(FileExistsError, match=r"out is not empty.*overwrite=True.*--overwrite"):
        _publish(target, {"new": "2"})
    assert _names(target) == ["old"]
    assert _names(tmp_path) == ["out"]


def test_an_existing_empty_folder_is_filled(tmp_path):
    target = tmp_path / "out"
    target.mkdir(mode=0o750)
    _publish(target, {"new": "2"})
    assert _names(target) == ["new"]
    assert target.stat().st_mode & 0o777 == 0o750  # the folder's permissions are kept


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_overwrite_replaces_the_whole_set(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    target = tmp_path / "out"
    _publish(target, {"a": "old", "b": "old"})
    _publish(target, {"a": "new"}, overwrite=True)
    assert _names(target) == ["a"]  # nothing of the old set survives beside the new one
    assert (target / "a").read_text() == "new"
    assert _names(tmp_path) == ["out"]


def test_overwrite_never_deletes_files_of_another_kind(tmp_path):
    target = tmp_path / "out"
    _publish(target, {"data.mrc": "old", "notes.txt": "mine"})
    with pytest.raises(FileExistsError, match=r"notes\.txt.*not outputs of this kind"):
        _publish(target, {"data.mrc": "new"}, overwrite=True, replaceable=lambda name: "." in name
                 and name.endswith(".mrc"))  # fmt: skip
    assert (target / "notes.txt").read_text() == "mine"


def test_a_file_in_the_way_is_refused_before_the_work(tmp_path):
    (tmp_path / "blocker").write_text("")
    with pytest.raises(NotADirectoryError, match=r"blocker is a file, not a folder"):
        _publish(tmp_path / "blocker" / "deeper" / "out", {})
    with pytest.raises(NotADirectoryError, match=r"blocker exists and is not a folder"):
        _publish(tmp_path / "blocker", {})
    assert _names(tmp_path) == ["blocker"]


def test_the_working_folder_is_refused(tmp_path, monkeypatch):
    target = tmp_path / "here"
    target.mkdir()
    monkeypatch.chdir(target)
    with pytest.raises(OSError, match="working folder"):
        _publish(Path("."), {"a": "1"})
    with pytest.raises(OSError, match="working folder"):
        _publish(tmp_path, {"a": "1"}, overwrite=True)
    assert _names(tmp_path) == ["here"] and _names(target) == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write anywhere")
def test_a_read_only_parent_is_refused_before_the_work(tmp_path):
    parent = tmp_path / "read-only"
    parent.mkdir(mode=0o555)
    with pytest.raises(PermissionError, match=r"read-only must be writable"):
        _publish(parent / "out", {})


def test_leftovers_of_a_killed_writer_are_swept_by_the_next_one(tmp_path):
    target = tmp_path / "out"
    (tmp_path / ".out.skdistill-tmp-99999-0123abcd").mkdir()
    (tmp_path / ".out.skdistill-tmp-99999-0123abcd" / "subtomo_000001.mrc").write_text("half")
    (tmp_path / ".out.skdistill-old-99999-0123abcd").mkdir()
    (tmp_path / ".out.skdistill-lock").write_text("pid 99999 on elsewhere\n")  # not locked
    (tmp_path / ".other.skdistill-tmp-1-0").mkdir()  # another target's: left alone
    _publish(target, {"a": "1"})
    assert _names(tmp_path) == [".other.skdistill-tmp-1-0", "out"]


def test_sigterm_handler_is_restored_and_an_applications_own_is_kept(tmp_path):
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    with publish_directory(tmp_path / "a"):
        assert callable(signal.getsignal(signal.SIGTERM))
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

    def own(signum, frame):
        pass

    previous = signal.signal(signal.SIGTERM, own)
    try:
        with publish_directory(tmp_path / "b"):
            assert signal.getsignal(signal.SIGTERM) is own
        assert signal.getsignal(signal.SIGTERM) is own
    finally:
        signal.signal(signal.SIGTERM, previous)


def _signal_during(monkeypatch, step: str, signum: int) -> None:
    """Send ``signum`` to this process at the start of ``atomic.<step>``."""
    original = getattr(atomic, step)

    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signum)
        return original(*args, **kwargs)

    monkeypatch.setattr(atomic, step, interrupted)


def test_sigterm_while_publishing_waits_until_the_set_is_published(tmp_path, monkeypatch):
    target = tmp_path / "out"
    _publish(target, {"old": "1"})
    _signal_during(monkeypatch, "_publish", signal.SIGTERM)
    with pytest.raises(SystemExit) as exit_info:
        _publish(target, {"new": "2"}, overwrite=True)
    assert exit_info.value.code == 143
    assert _names(target) == ["new"]
    assert _names(tmp_path) == ["out"]  # the old set (in the private folder) was removed


def test_ctrl_c_while_cleaning_up_does_not_cut_the_clean_up_short(tmp_path, monkeypatch):
    target = tmp_path / "out"
    _publish(target, {"old": "1"})
    _signal_during(monkeypatch, "_remove", signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        _publish(target, {"new": "2"}, overwrite=True)
    assert _names(target) == ["new"]
    assert _names(tmp_path) == ["out"]


def test_write_subtomograms_replaces_a_larger_set_entirely(tmp_path):
    X = np.arange(2 * 4**3, dtype=np.float32).reshape(2, 4, 4, 4)
    write_subtomograms(tmp_path / "set", X, [0, 1], voxel_size=1.0)
    write_subtomograms(tmp_path / "set", X[:1] + 1, voxel_size=1.0, overwrite=True)
    assert _names(tmp_path / "set") == ["particles.star", "subtomo_000001.mrc"]
    X_read, y_read = read_subtomograms(tmp_path / "set")
    np.testing.assert_array_equal(X_read, X[:1] + 1)
    assert y_read is None


def test_write_subtomograms_replaces_leftovers_of_earlier_versions(tmp_path):
    X = np.zeros((1, 4, 4, 4), dtype=np.float32)
    target = tmp_path / "set"
    target.mkdir()
    (target / ".subtomo_000007.mrc.0123456789ab.tmp").write_text("left by a killed run")
    write_subtomograms(target, X, voxel_size=1.0, overwrite=True)
    assert _names(target) == ["particles.star", "subtomo_000001.mrc"]


# Two processes ----------------------------------------------------------------------------

_HOLDER = """
import sys, time
from skdistill.io.atomic import publish_directory
with publish_directory(sys.argv[1]) as staging:
    (staging / "subtomo_000001.mrc").write_text("half-written")
    print("writing", flush=True)
    time.sleep(120)
print("published", flush=True)
"""


def _start_holder(target: Path) -> subprocess.Popen:
    """A process inside ``publish_directory(target)``, once this returns."""
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_HOLDER), str(target)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline() == "writing\n", holder.stderr.read()
    return holder


def test_a_second_writer_fails_at_once_and_a_killed_ones_leftovers_are_swept(tmp_path):
    target = tmp_path / "out"
    holder = _start_holder(target)
    try:
        with pytest.raises(OutputLockedError, match=rf"pid {holder.pid} on .*Wait for it"):
            _publish(target, {"a": "1"})
    finally:
        holder.kill()  # SIGKILL: no clean-up runs
        holder.communicate(timeout=60)
    leftovers = _names(tmp_path)
    assert ".out.skdistill-lock" in leftovers and "out" not in leftovers
    assert any(name.startswith(".out.skdistill-tmp-") for name in leftovers)

    _publish(target, {"a": "1"})  # the dead holder's lock is free, its folder swept
    assert _names(tmp_path) == ["out"]
    assert _names(target) == ["a"]


def test_sigterm_cleans_up(tmp_path):
    # SIGINT needs no test of its own: Python raises KeyboardInterrupt for it, as tested above.
    holder = _start_holder(tmp_path / "out")
    holder.terminate()
    _, stderr = holder.communicate(timeout=60)
    assert holder.returncode == 143
    assert _names(tmp_path) == [], stderr


def test_write_atomically_without_overwrite_never_replaces_a_file_that_appeared(tmp_path):
    target = tmp_path / "out.star"

    def write(path: Path) -> None:
        path.write_text("new")
        target.write_text("written by another process meanwhile")

    with pytest.raises(FileExistsError, match="created by another writer"):
        atomic.write_atomically([(target, write)], overwrite=False)
    assert target.read_text() == "written by another process meanwhile"
    assert [p.name for p in tmp_path.iterdir()] == ["out.star"]  # no temporary left
    atomic.write_atomically([(target, write)])
    assert target.read_text() == "new"
