"""Predicted classes written back into real RELION / Warp particle STAR files."""

from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile

from skdistill.io import SubtomogramStack, write_predictions, write_subtomograms
from skdistill.io.star import CLASSES_BLOCK

DATA = Path(__file__).parent / "data"
REAL_STARS = [
    "relion5_3d_run_it050_data.star",  # RELION 5: optics + particles, two optics groups
    "relion5_2d_stacks_run_it025_data.star",  # RELION 5: general + optics + particles
    "warp_relion30.star",  # Warp / RELION 3.0: one unnamed block
]
NEW = ["rlnClassNumber", "rlnMaxValueProbDistribution"]


def _particles(blocks: dict) -> tuple[str, pd.DataFrame]:
    name = "particles" if "particles" in blocks else next(iter(blocks))
    return name, blocks[name]


@pytest.mark.parametrize("name", REAL_STARS)
def test_round_trip_keeps_every_block_column_and_row(tmp_path, name, seed):
    source = DATA / name
    before = starfile.read(source, always_dict=True)
    block, particles = _particles(before)
    n = len(particles)
    classes = np.array(["proteasome", "ribosome", "tric"])
    rng = np.random.default_rng(seed)
    labels = classes[rng.integers(0, 3, n)]
    proba = rng.dirichlet(np.ones(3), n)

    out = write_predictions(source, tmp_path / "classified.star", labels, proba, classes=classes)
    after = starfile.read(out, always_dict=True)

    assert list(after) == [*before, CLASSES_BLOCK]  # block names and order kept
    for key, table in before.items():
        if key == block:
            continue
        if isinstance(table, pd.DataFrame):
            pd.testing.assert_frame_equal(after[key], table)
        else:
            assert after[key] == table
    written = after[block]
    kept = [column for column in particles.columns if column not in NEW]
    assert [c for c in written.columns if c in kept] == kept  # column order kept
    pd.testing.assert_frame_equal(written[kept], particles[kept])  # values and dtypes kept
    np.testing.assert_array_equal(written["rlnClassNumber"], np.searchsorted(classes, labels) + 1)
    np.testing.assert_allclose(written["rlnMaxValueProbDistribution"], proba.max(axis=1))
    table = after[CLASSES_BLOCK]
    assert table["rlnClassNumber"].tolist() == [1, 2, 3]
    assert table["skdistillClassName"].tolist() == classes.tolist()


def test_existing_class_column_keeps_its_place(tmp_path):
    source = DATA / "relion5_3d_run_it050_data.star"
    particles = starfile.read(source, always_dict=True)["particles"]
    position = list(particles.columns).index("rlnClassNumber")
    out = write_predictions(source, tmp_path / "out.star", np.zeros(len(particles), int))
    written = starfile.read(out, always_dict=True)["particles"]
    assert list(written.columns).index("rlnClassNumber") == position
    assert (written["rlnClassNumber"] == 1).all()


def test_classes_fix_the_numbering_and_unknown_labels_are_refused(tmp_path):
    source = DATA / "relion5_3d_run_it050_data.star"
    n = len(starfile.read(source, always_dict=True)["particles"])
    out = write_predictions(source, tmp_path / "a.star", np.full(n, 7), classes=[3, 7, 9])
    assert (starfile.read(out, always_dict=True)["particles"]["rlnClassNumber"] == 2).all()
    with pytest.raises(ValueError, match=r"label 5 is not one of classes \[3, 7, 9\]"):
        write_predictions(source, tmp_path / "b.star", np.full(n, 5), classes=[3, 7, 9])
    with pytest.raises(ValueError, match="one predicted class per particle"):
        write_predictions(source, tmp_path / "c.star", np.zeros(n + 1, int))
    with pytest.raises(ValueError, match=r"proba has shape \(\d+, 2\); expected \(\d+, 3\)"):
        write_predictions(
            source, tmp_path / "d.star", np.full(n, 7), np.ones((n, 2)) / 2, classes=[3, 7, 9]
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.star"]  # nothing else written


def test_never_overwrites_without_overwrite_and_leaves_no_temporary(tmp_path):
    source = DATA / "relion5_3d_run_it050_data.star"
    n = len(starfile.read(source, always_dict=True)["particles"])
    out = tmp_path / "out.star"
    out.write_text("precious")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_predictions(source, out, np.zeros(n, int))
    assert out.read_text() == "precious"
    write_predictions(source, out, np.zeros(n, int), overwrite=True)
    assert "data_skdistill_classes" in out.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.star"]


def test_a_stack_read_from_a_star_file_is_written_back(tmp_path, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((4, 8, 8, 8)).astype(np.float32)
    write_subtomograms(tmp_path / "set", X, np.array([0, 1, 0, 1]), voxel_size=10.0)
    stack = SubtomogramStack(tmp_path / "set")
    out = write_predictions(stack, tmp_path / "classified.star", np.array([1, 1, 0, 0]))
    written = starfile.read(out, always_dict=True)["particles"]
    assert written["rlnClassNumber"].tolist() == [2, 2, 1, 1]
    assert "rlnImageName" in written
    with pytest.raises(ValueError, match="not read from a STAR file"):
        write_predictions(SubtomogramStack(stack.paths), tmp_path / "x.star", np.zeros(4, int))


def test_a_stack_that_skipped_particles_writes_only_the_kept_rows(tmp_path):
    """Particles outside their tomogram (on_outside="skip") are left out of the output."""
    with mrcfile.new(tmp_path / "TS_01.mrc", data=np.zeros((16, 16, 16), np.float32)) as mrc:
        mrc.voxel_size = 10.0
    star = tmp_path / "picks.star"
    starfile.write(
        pd.DataFrame(
            {
                "rlnMicrographName": ["TS_01.mrc"] * 4,
                "rlnCoordinateX": [4.0, 40.0, 8.0, 12.0],  # row 2 lies outside (x >= 16)
                "rlnCoordinateY": [8.0, 8.0, 8.0, 8.0],
                "rlnCoordinateZ": [8.0, 8.0, 8.0, 8.0],
                "rlnTomoParticleName": ["TS_01/1", "TS_01/2", "TS_01/3", "TS_01/4"],
            }
        ),
        star,
    )
    stack = SubtomogramStack.from_tomograms(
        star, {"TS_01": tmp_path / "TS_01.mrc"}, box_size=4, on_outside="skip"
    )
    assert len(stack) == 3 and len(stack.skipped) == 1
    out = write_predictions(stack, tmp_path / "out.star", np.array([1, 2, 1]), classes=[1, 2])
    _, table = _particles(starfile.read(out, always_dict=True))
    assert table["rlnTomoParticleName"].tolist() == ["TS_01/1", "TS_01/3", "TS_01/4"]
    assert table["rlnClassNumber"].tolist() == [1, 2, 1]
    with pytest.raises(ValueError, match="the particles the stack kept"):
        write_predictions(stack, tmp_path / "bad.star", np.array([1, 2, 1, 1]), classes=[1, 2])
