"""The memory check: the tightest limit of the job's own cgroups counts."""

from __future__ import annotations

import pytest

from skdistill.utils import memory


def _limit_files(tmp_path, limits: dict[str, tuple[str, int]]):
    files = []
    for group, (limit, used) in limits.items():
        folder = tmp_path / group
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "memory.max").write_text(f"{limit}\n")
        (folder / "memory.current").write_text(f"{used}\n")
        files.append(folder / "memory.max")
    return files


def test_the_tightest_cgroup_limit_counts(tmp_path, monkeypatch):
    files = _limit_files(
        tmp_path, {"job/step": ("max", 0), "job": (str(2 * 2**30), 6 * 2**30), "user": ("max", 0)}
    )
    monkeypatch.setattr(memory, "_cgroup_limit_files", lambda: files)
    assert memory._cgroup_limit() == 2 * 2**30
    monkeypatch.setattr(memory, "_meminfo_available", lambda: 100 * 2**30)
    assert memory.available_memory() == 2 * 2**30
    with pytest.raises(MemoryError, match=r"needs about 3\.0 GiB.*only 2\.0 GiB"):
        memory.check_memory(3 * 2**30, what="A job")


def test_no_limit_means_the_machine_s_available_memory(tmp_path, monkeypatch):
    files = _limit_files(tmp_path, {"job": ("max", 5)})
    monkeypatch.setattr(memory, "_cgroup_limit_files", lambda: files)
    monkeypatch.setattr(memory, "_meminfo_available", lambda: 3 * 2**30)
    assert memory._cgroup_limit() is None
    assert memory.available_memory() == 3 * 2**30
