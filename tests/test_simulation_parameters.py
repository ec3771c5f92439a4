"""Simulation parameters out of range, memory, and never a non-finite or constant volume."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from skdistill.cli import main
from skdistill.datasets import make_segmentation_subtomograms, make_subtomograms
from skdistill.datasets.parameters import check_simulated_volumes, simulation_nbytes
from skdistill.datasets.simulation import CHUNK_SIZE, SimulationPlan, simulate_chunks
from skdistill.utils import memory

TINY = {"n_samples": 2, "n_classes": 3, "size": 16, "random_state": 0}
PLAN = {
    "n_classes": 3, "size": 16, "voxel_size": 9.2, "snr": 0.05, "tilt_range": (-60, 60),
    "defocus": -5.0, "voltage": 300.0, "cs": 2.0, "max_shift": 0.05, "templates": None,
    "entropy": 0,
}  # fmt: skip

#: (parameters, what the message must say): each gave NaN, infinite, all-zero or
#: contrast-free volumes, or a numpy traceback, before the ranges were checked.
OUT_OF_RANGE = [
    ({"snr": 1e-300}, r"snr=1e-300 is outside the accepted range \[1e-06, 1e\+06\]"),
    ({"snr": 1e9}, r"snr=1000000000.0 .*snr=None"),
    ({"voxel_size": 1e9}, r"voxel_size=1000000000.0 Å .* \[0.5, 100\] Å"),
    ({"voxel_size": 1e-6}, r"voxel_size=1e-06 Å .* \[0.5, 100\] Å"),
    ({"defocus": 0.0}, r"defocus=0.0 µm .* \[-20, -0.1\] µm.*no phase contrast"),
    ({"defocus": 5.0}, r"defocus=5.0 µm .*did you mean defocus=-5"),
    ({"defocus": -1e3}, r"defocus=-1000.0 µm"),
    ({"cs": -1.0}, r"cs=-1.0 mm .* \[0, 10\] mm"),
    ({"voltage": 1e-3}, r"voltage=0.001 kV .* \[60, 1000\] kV"),
    ({"voltage": float("nan")}, r"voltage=nan kV"),
    ({"tilt_range": (-60, float("inf"))}, r"tilt_range=.* degrees"),
    ({"max_shift": -0.1}, r"max_shift=-0.1 .*\[0, 0.5\)"),
    ({"size": 3}, r"size=3 must be an integer of at least 4 voxels"),
    # The narrowest synthetic subunit falls between voxels: 23 classes need size >= 14 and
    # voxels of at most 28 Å.
    ({"n_classes": 23, "size": 13}, r"size=13 .*'small-globule'.* Use size >= 14 voxels"),
    ({"n_classes": 23, "voxel_size": 30.0}, r"voxel_size=30 Å.* Use voxel_size <= 28 Å"),
    ({"n_classes": 1, "voxel_size": 70.0}, r"'globule'.* Use voxel_size <= 64 Å"),
]


@pytest.fixture
def little_memory(monkeypatch):
    """This machine has 16 GiB available, whatever it really has."""
    monkeypatch.setattr(memory, "available_memory", lambda: 16 * 2**30)


@pytest.mark.parametrize(("kwargs", "match"), OUT_OF_RANGE)
def test_out_of_range_parameters_are_refused_with_range_and_unit(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_subtomograms(**{**TINY, **kwargs})


@pytest.mark.parametrize(("kwargs", "match"), OUT_OF_RANGE)
def test_the_plan_that_the_command_line_uses_refuses_them_too(kwargs, match):
    kwargs = {**PLAN, **kwargs}
    kwargs.pop("n_samples", None)
    with pytest.raises(ValueError, match=match):
        SimulationPlan(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"snr": 1e-300}, r"snr=1e-300 is outside"),
        ({"voxel_size": 1e9}, r"voxel_size=1000000000.0 Å"),
        ({"mask_threshold": 1e-9}, r"mask_threshold=1e-09 is outside .*\[0.01, 1\]"),
        ({"crowding": 1000}, r"crowding=1000 must be an integer of at least 0 and at most 32"),
        ({"n_classes": 23, "size": 12}, r"size >= 14 voxels"),
    ],
)
def test_segmentation_data_refuse_them(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_segmentation_subtomograms(**{**TINY, "crowding": 1, **kwargs})


@pytest.mark.parametrize(
    "make", [make_subtomograms, make_segmentation_subtomograms], ids=["classes", "segmentation"]
)
def test_a_box_too_large_for_memory_says_how_much_it_needs(little_memory, make):
    with pytest.raises(MemoryError, match=r"100000\^3 voxels .* needs about .* [PE]iB .*16.0 GiB"):
        make(**{**TINY, "size": 100_000})


def test_too_many_samples_for_memory_are_refused_before_any_work(little_memory):
    with pytest.raises(MemoryError, match=r"Simulating 10000000 volumes of 64\^3 .* TiB"):
        make_subtomograms(10_000_000, n_classes=3, size=64, random_state=0)


def test_parallel_jobs_count_a_plan_and_a_chunk_each(monkeypatch):
    """Enough memory for one process: four processes are refused before they start."""
    one = simulation_nbytes(size=32, n_classes=3, n_samples=256, chunk_size=CHUNK_SIZE)
    monkeypatch.setattr(memory, "available_memory", lambda: int(one / memory.USABLE_FRACTION) + 16)
    plan = SimulationPlan(**{**PLAN, "size": 32})
    with pytest.raises(MemoryError, match=r"256 volumes of 32\^3 voxels in 4 processes"):
        simulate_chunks(plan, 256, n_jobs=4)


def test_memory_estimate_covers_the_allocations(seed):
    """The estimate is above what numpy allocates, and not far above (templates not cached)."""
    kwargs = {"n_classes": 23, "size": 30, "random_state": seed}
    tracemalloc.start()
    try:
        make_subtomograms(40, **kwargs)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    estimate = simulation_nbytes(
        size=30, n_classes=23, n_samples=40, chunk_size=CHUNK_SIZE, keep_output=True
    )
    assert peak <= estimate <= 1.5 * peak


@pytest.mark.parametrize(
    ("template", "match"),
    [
        (np.zeros((6, 6, 6)), r"Simulated volume 0 is constant \(every voxel 0\)"),
        (np.full((6, 6, 6), 1e30), r"Simulated volume 0 contains NaN or infinite values"),
    ],
)
def test_templates_that_give_garbage_are_refused_not_returned(template, match):
    with pytest.raises(ValueError, match=match + r".*user-supplied templates"):
        make_subtomograms(2, n_classes=1, size=16, templates=[template], random_state=0)


@pytest.mark.parametrize(
    ("where", "value", "problem"),
    [
        ((1, 0, 0, 0), np.nan, "volume 8 contains NaN or infinite values"),
        ((2, 3, 1, 0), -np.inf, "volume 9 contains NaN or infinite values"),
        (0, 1.5, r"volume 7 is constant \(every voxel 1.5\)"),
    ],
)
def test_check_simulated_volumes_names_the_first_bad_volume(where, value, problem, seed):
    X = np.random.default_rng(seed).normal(size=(3, 4, 4, 4)).astype(np.float32)
    check_simulated_volumes(X, np.arange(7, 10), "snr=1")
    X[where] = value
    with pytest.raises(ValueError, match=problem + r", with snr=1; 1 of the 3 volumes"):
        check_simulated_volumes(X, np.arange(7, 10), "snr=1")


def _assert_meaningful(X):
    assert np.isfinite(X).all()
    flat = X.reshape(len(X), -1)
    assert np.all(flat.min(axis=1) < flat.max(axis=1))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"snr": 1e-6},
        {"snr": 1e6},
        {"snr": None},
        {"voxel_size": 0.5},
        {"n_classes": 23, "size": 14},
        {"n_classes": 23, "voxel_size": 28.0},
        {"n_classes": 1, "size": 4},
        {"defocus": -0.1},
        {"defocus": -20.0},
        {"cs": 0.0},
        {"cs": 10.0},
        {"voltage": 60.0},
        {"voltage": 1000.0},
        {"tilt_range": (-90, 90)},
        {"tilt_range": (0, 1)},
        {"max_shift": 0.0},
    ],
)
def test_values_at_the_edges_of_the_ranges_give_meaningful_volumes(kwargs):
    X, _ = make_subtomograms(**{**TINY, **kwargs})
    assert X.shape[0] == 2 and X.dtype == np.float32
    _assert_meaningful(X)


def test_largest_voxel_size_with_own_templates():
    template = np.zeros((8, 8, 8), np.float32)
    template[2:6, 3:5, 1:7] = 1
    X, _ = make_subtomograms(2, n_classes=1, size=16, voxel_size=100.0, templates=[template])
    _assert_meaningful(X)


@pytest.mark.parametrize(
    "kwargs",
    [{"crowding": 0}, {"crowding": 32}, {"mask_threshold": 0.01, "labels": "class"}],
)
def test_segmentation_edges_give_meaningful_images(kwargs):
    X, y = make_segmentation_subtomograms(**{**TINY, "snr": 0.5, **kwargs})
    _assert_meaningful(X)
    assert y.max() >= 1


# -- through the command line ------------------------------------------------------------
@pytest.mark.parametrize(
    ("option", "value", "fragment"),
    [
        ("--snr", "1e-300", "snr=1e-300 is outside the accepted range"),
        ("--voxel-size", "1e9", "voxel_size=1000000000.0 Å is outside"),
        ("--voxel-size", "1e-6", "voxel_size=1e-06 Å is outside"),
        ("--defocus", "0", "defocus=0.0 µm is outside"),
        ("--cs", "-1", "cs=-1.0 mm is outside"),
        ("--voltage", "5", "voltage=5.0 kV is outside"),
    ],
)
def test_command_line_refuses_them_on_one_line_and_writes_nothing(
    tmp_path, capsys, option, value, fragment
):
    out = tmp_path / "out"
    args = ["simulate", "--n", "4", "--size", "16", "--classes", "3", "--quiet"]
    code = main([*args, "--out", str(out), option, value])
    _, err = capsys.readouterr()
    assert code == 1
    assert "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert line.startswith("skdistill: error:") and fragment in line
    assert not out.exists()


def test_command_line_refuses_a_box_too_large_for_memory(tmp_path, capsys, little_memory):
    out = tmp_path / "out"
    code = main(["simulate", "--n", "4", "--size", "100000", "--quiet", "--out", str(out)])
    _, err = capsys.readouterr()
    assert code == 1
    (line,) = err.strip().splitlines()
    assert "needs about" in line and "PiB" in line
    assert not out.exists()
