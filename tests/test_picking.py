"""Particle picking from label maps and probabilities, and the STAR file it writes."""

from __future__ import annotations

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile

from skdistill.io import SubtomogramStack
from skdistill.picking import pick_particles, write_particles

SHAPE = (40, 64, 56)
#: Known particles: centre (z, y, x), class, radius in voxels.
PARTICLES = [((10, 12, 14), 1, 4), ((25, 40, 30), 2, 5), ((30, 15, 45), 1, 3), ((12, 50, 40), 2, 4)]


def ball(shape, centre, radius):
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius**2


@pytest.fixture(scope="module")
def labels():
    volume = np.zeros(SHAPE, dtype=np.int8)
    for centre, value, radius in PARTICLES:
        volume[ball(SHAPE, centre, radius)] = value
    volume[2, 2, 2] = 1  # a speck of noise, below min_size
    return volume


@pytest.fixture(scope="module")
def probabilities(labels):
    """Three classes; inside each ball the class probability falls from 0.95 to 0.6."""
    rng = np.random.default_rng(0)
    proba = np.zeros((3, *SHAPE), dtype=np.float32)
    proba[0] = 1
    for centre, value, radius in PARTICLES:
        inside = ball(SHAPE, centre, radius)
        proba[value][inside] = rng.uniform(0.6, 0.95, inside.sum())
        proba[0][inside] = 1 - proba[value][inside]
    return proba


def expected_table():
    rows = sorted((value, *centre) for centre, value, _ in PARTICLES)
    return pd.DataFrame(rows, columns=["class", "z", "y", "x"])


def test_label_map_gives_every_particle_at_its_centre(labels):
    picks = pick_particles(labels)
    assert list(picks.columns[:6]) == ["z", "y", "x", "class", "size", "score"]
    assert len(picks) == len(PARTICLES)  # the speck is left out
    expected = expected_table()
    np.testing.assert_array_equal(picks["class"], expected["class"])
    np.testing.assert_allclose(picks[["z", "y", "x"]], expected[["z", "y", "x"]], atol=1e-9)
    sizes = {(v, c): int(ball(SHAPE, c, r).sum()) for c, v, r in PARTICLES}
    for row in picks.itertuples():
        assert row.size == sizes[(row[4], (int(row.z), int(row.y), int(row.x)))]
    assert (picks["score"] == 1).all()
    assert "rlnCenteredCoordinateXAngst" not in picks


def test_probabilities_give_positions_and_mean_probability(probabilities):
    picks = pick_particles(probabilities, voxel_size=10.0)
    assert len(picks) == len(PARTICLES)
    expected = expected_table()
    np.testing.assert_allclose(picks[["z", "y", "x"]], expected[["z", "y", "x"]], atol=0.5)
    assert picks["score"].between(0.6, 0.95).all()
    # RELION 5 centred coordinates: (x - W / 2) * voxel size.
    np.testing.assert_allclose(
        picks["rlnCenteredCoordinateXAngst"], (picks["x"] - SHAPE[2] / 2) * 10.0
    )
    np.testing.assert_allclose(
        picks["rlnCenteredCoordinateZAngst"], (picks["z"] - SHAPE[0] / 2) * 10.0
    )
    # A high threshold keeps fewer voxels: smaller components.
    strict = pick_particles(probabilities, threshold=0.8)
    assert (strict["size"].sum()) < picks["size"].sum()


def test_foreground_probability_map_is_class_one(probabilities):
    foreground = 1 - probabilities[0]
    picks = pick_particles(foreground)
    assert len(picks) == len(PARTICLES) and set(picks["class"]) == {1}


def test_classes_and_size_limits_filter(labels):
    assert set(pick_particles(labels, classes=[2])["class"]) == {2}
    small = int(ball(SHAPE, (0, 0, 0), 3).sum())
    picks = pick_particles(labels, min_size=small + 1, max_size=400)
    sizes = picks["size"]
    assert len(picks) and (sizes > small).all() and (sizes <= 400).all()
    assert pick_particles(np.zeros(SHAPE, np.int8)).empty


def test_written_star_is_read_back_by_from_tomograms(labels, tmp_path):
    tomogram = np.random.default_rng(0).normal(size=SHAPE).astype(np.float32)
    with mrcfile.new(tmp_path / "TS_01.mrc", data=tomogram) as mrc:
        mrc.voxel_size = 10.0
    picks = pick_particles(labels, voxel_size=10.0)
    star = write_particles(
        picks, tmp_path / "picks" / "particles.star", tomo_name="TS_01", voxel_size=10.0,
        shape=SHAPE,
    )  # fmt: skip
    blocks = starfile.read(star, always_dict=True)
    particles = blocks["particles"]
    assert list(particles["rlnClassNumber"]) == list(picks["class"])
    stack = SubtomogramStack.from_tomograms(star, tmp_path, box_size=8)
    assert len(stack) == len(picks)
    volumes = stack[:]
    for volume, row in zip(volumes, picks.itertuples(), strict=True):
        z, y, x = int(row.z), int(row.y), int(row.x)
        np.testing.assert_allclose(volume.reshape(8, 8, 8)[4, 4, 4], tomogram[z, y, x])


def test_write_particles_keeps_an_existing_file(labels, tmp_path):
    path = tmp_path / "particles.star"
    path.write_text("precious")
    picks = pick_particles(labels)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_particles(picks, path, tomo_name="TS_01", voxel_size=10.0, shape=SHAPE)
    assert path.read_text() == "precious"
    write_particles(picks, path, tomo_name="TS_01", voxel_size=10.0, shape=SHAPE, overwrite=True)
    assert len(starfile.read(path, always_dict=True)["particles"]) == len(picks)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_size": 0}, "min_size must be a positive"),
        ({"max_size": 2}, "max_size must be None or"),
        ({"threshold": 0}, "threshold must be a probability"),
        ({"voxel_size": -1.0}, "voxel_size must be a positive"),
    ],
)
def test_bad_options_are_explained(labels, kwargs, message):
    with pytest.raises(ValueError, match=message):
        pick_particles(labels, **kwargs)


def test_bad_inputs_are_explained(probabilities):
    with pytest.raises(ValueError, match="Expected labels"):
        pick_particles(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="not among the 3 classes"):
        pick_particles(probabilities, classes=[3])
    with pytest.raises(FileNotFoundError):
        pick_particles("missing.mrc")
    with pytest.raises(ValueError, match="lacks the columns"):
        write_particles(pd.DataFrame({"z": [1]}), "x.star", tomo_name="a", voxel_size=1,
                        shape=SHAPE)  # fmt: skip


def test_cli_pick_from_a_labels_file(labels, tmp_path, capsys):
    from skdistill.cli import main

    path = tmp_path / "labels.mrc"
    with mrcfile.new(path, data=labels) as mrc:
        mrc.voxel_size = 10.0
    out = tmp_path / "particles.star"
    code = main(["pick", "--segmentation", str(path), "--tomo-name", "TS_01", "--out", str(out)])
    stdout = capsys.readouterr().out
    assert code == 0 and "Picked 4 particles (class 1: 2, class 2: 2)" in stdout
    particles = starfile.read(out, always_dict=True)["particles"]
    np.testing.assert_allclose(
        np.sort(particles["rlnCenteredCoordinateXAngst"]),
        np.sort([(c[2] - SHAPE[2] / 2) * 10.0 for c, _, _ in PARTICLES]),
    )
    code = main(["pick", "--segmentation", str(path), "--tomo-name", "TS_01", "--out", str(out)])
    assert code != 0 and "--overwrite" in capsys.readouterr().err


def test_score_picks_pairs_one_to_one_within_the_tolerance():
    from skdistill.picking import score_picks

    truth = pd.DataFrame(
        {"z": [10, 30, 50, 10], "y": [10] * 4, "x": [10] * 4, "class": [1, 1, 1, 2]}
    )
    picks = pd.DataFrame(
        {"z": [11, 12, 31, 80, 10], "y": [10] * 5, "x": [10] * 5, "class": [1, 1, 1, 1, 3]}
    )
    scores = score_picks(picks, truth, tolerance=3)
    # class 1: two picks near the first particle count once; 80 is far; 50 is missed.
    assert scores.loc[1, "true_positives"] == 2
    assert scores.loc[1, "precision"] == pytest.approx(2 / 4)
    assert scores.loc[1, "recall"] == pytest.approx(2 / 3)
    assert scores.loc[1, "f1"] == pytest.approx(2 * 2 / 7)
    assert scores.loc[2, "recall"] == 0 and np.isnan(scores.loc[2, "precision"])
    assert scores.loc[3, "true_positives"] == 0  # a pick of a class that has no particle
    assert scores.loc["all", "n_true"] == 4 and scores.loc["all", "n_picked"] == 5
    with pytest.raises(ValueError, match="tolerance must be a positive"):
        score_picks(picks, truth, tolerance=0)
