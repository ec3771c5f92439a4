"""The readers on STAR and MRC files written by other software (see tests/data/README.md).

The STAR files list images that are not distributed with them; the tests write small
stand-ins at the paths the files give, in a project folder laid out as RELION's.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile

from skdistill.cli import main
from skdistill.io import PixelSizeWarning, SubtomogramStack

DATA = Path(__file__).parent / "data"
EMD_3197 = ["EMD-3197.map", "emd_3197.map.gz", "EMD-3197.map.bz2"]


def _stand_ins(star: Path, root: Path, size: int, voxel_size: float) -> None:
    """Write an int8 cube of ``size`` voxels at every rlnImageName of ``star``, from ``root``."""
    blocks = starfile.read(star, always_dict=True)
    particles = blocks.get("particles", next(iter(blocks.values())))  # RELION 3.0: one block
    for i, name in enumerate(particles["rlnImageName"]):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with mrcfile.new(path, np.full((size,) * 3, i, dtype=np.int8)) as mrc:
            mrc.voxel_size = voxel_size


# EMDB map from mrcfile's test data: plain, gzip and bzip2 ---------------------------------


@pytest.mark.parametrize("name", EMD_3197)
def test_emdb_map_plain_and_compressed(name):
    stack = SubtomogramStack(DATA / name)
    assert stack.shape == (1, 20, 20, 20)
    assert stack.voxel_size == pytest.approx(11.4)
    with mrcfile.open(DATA / EMD_3197[0]) as mrc:
        np.testing.assert_array_equal(stack[0], mrc.data)


def test_info_on_gzipped_emdb_map_lists_its_old_format_version(capsys):
    assert main(["info", str(DATA / "emd_3197.map.gz")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^volume shape\s+20 x 20 x 20 voxels", out, re.M)
    assert re.search(r"^problem\s+mrcfile.validate: .*nversion = 0", out, re.M)


# RELION 5 --------------------------------------------------------------------------------


def test_relion5_star_of_2d_tilt_stacks_is_refused(capsys):
    star = DATA / "relion5_2d_stacks_run_it025_data.star"
    with pytest.raises(ValueError, match=r"rlnTomoSubTomosAre2DStacks = 1.*2D stacks\?' set to No"):
        SubtomogramStack(star)
    assert main(["info", str(star)]) == 1
    assert "rlnTomoSubTomosAre2DStacks" in capsys.readouterr().err


@pytest.fixture
def relion5_project(tmp_path) -> Path:
    """RELION 5 Refine3D output (two optics groups, 12.42 Å, 64^3 boxes) in a project folder."""
    star = tmp_path / "Refine3D" / "job_refine" / "run_it050_data.star"
    star.parent.mkdir(parents=True)
    shutil.copy(DATA / "relion5_3d_run_it050_data.star", star)
    _stand_ins(star, tmp_path, size=64, voxel_size=12.42)
    return star


def test_relion5_3d_subtomograms_from_the_project_folder(relion5_project, monkeypatch):
    monkeypatch.chdir(relion5_project.parents[2])
    stack = SubtomogramStack(relion5_project)
    assert stack.shape == (5, 64, 64, 64)
    assert stack.voxel_size == pytest.approx(12.42)
    np.testing.assert_array_equal(stack.labels, [0, 0, 0, 0, 0])
    # rlnOriginXAngst of the first particle is -2.41904 Å: a shift of +2.41904 / 12.42 voxels.
    assert stack.shifts[0, 2] == pytest.approx(2.41904 / 12.42)
    assert stack[3][0, 0, 0] == 3


def test_relion5_stack_keeps_its_tables_and_tomogram_groups(relion5_project, monkeypatch):
    from sklearn.model_selection import GroupKFold

    monkeypatch.chdir(relion5_project.parents[2])
    stack = SubtomogramStack(relion5_project)
    tables = starfile.read(relion5_project, always_dict=True)
    pd.testing.assert_frame_equal(stack.particles, tables["particles"])
    pd.testing.assert_frame_equal(stack.optics, tables["optics"])
    np.testing.assert_array_equal(stack.groups, tables["particles"]["rlnTomoName"].astype(str))
    for train, test in GroupKFold(2).split(np.zeros(len(stack)), groups=stack.groups):
        assert not set(stack.groups[train]) & set(stack.groups[test])


def test_stack_without_a_star_file_has_no_tables(tmp_path):
    path = tmp_path / "one.mrc"
    with mrcfile.new(path, np.zeros((8, 8, 8), dtype=np.float32)) as mrc:
        mrc.voxel_size = 10.0
    stack = SubtomogramStack(path)
    assert stack.particles is None and stack.optics is None and stack.groups is None


def test_relion5_images_missing_from_elsewhere_name_both_places(relion5_project, tmp_path):
    star_dir = relion5_project.parent
    name = "Extract/job_extract/Subtomograms/TS_01/1_data.mrc"
    message = (
        rf"neither at {re.escape(str(star_dir / name))} .*nor at "
        rf"{re.escape(str(Path.cwd() / name))} .*RELION project folder"
    )
    with pytest.raises(FileNotFoundError, match=message):
        SubtomogramStack(relion5_project)


def test_relion5_header_pixel_size_of_the_tilt_series_gets_a_warning(tmp_path, monkeypatch):
    star = tmp_path / "run_it050_data.star"
    shutil.copy(DATA / "relion5_3d_run_it050_data.star", star)
    _stand_ins(star, tmp_path, size=64, voxel_size=3.105)  # unbinned tilt-series pixel
    monkeypatch.chdir(tmp_path)
    with pytest.warns(PixelSizeWarning, match=r"12.42 Å \(rlnImagePixelSize\).*says 3.105 Å"):
        stack = SubtomogramStack(star)
    assert stack.voxel_size == pytest.approx(12.42)


def test_info_on_relion5_project(relion5_project, monkeypatch, capsys):
    monkeypatch.chdir(relion5_project.parents[2])
    assert main(["info", str(relion5_project.relative_to(relion5_project.parents[2]))]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^volumes\s+5$", out, re.M)
    assert re.search(r"^voxel size\s+12.42 Å$", out, re.M)


# Warp (RELION 3.0 style) ------------------------------------------------------------------


def test_warp_star_pixel_size_from_detector_pixel_and_magnification(tmp_path):
    star = tmp_path / "relion" / "warp_relion30.star"
    star.parent.mkdir()
    shutil.copy(DATA / "warp_relion30.star", star)
    _stand_ins(star, star.parent, size=8, voxel_size=0.0)  # only the STAR file gives it
    stack = SubtomogramStack(star)
    # rlnDetectorPixelSize 5.364 µm at rlnMagnification 10000: 5.364 Å.
    assert stack.voxel_size == pytest.approx(5.364)
    assert stack.shape == (3, 8, 8, 8)
    assert stack.rotations[0] == pytest.approx([-60.199770, 120.999041, 86.088799])
