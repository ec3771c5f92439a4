"""Files written by other tools are read strictly: wrong sizes, compression, 2D stacks, STAR
pixel sizes and values that are not numbers each get an error or a warning that says why."""

from __future__ import annotations

import bz2
import gzip
import re
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile

from skdistill.cli import main
from skdistill.io import PixelSizeWarning, SubtomogramStack, read_subtomograms
from skdistill.io.mrc import header_problems, read_header

SIZE, VOXEL_SIZE = 8, 2.5


def _write_mrc(path: Path, data, voxel_size: float = VOXEL_SIZE, **kwargs) -> Path:
    with mrcfile.new(path, np.asarray(data), **kwargs) as mrc:
        mrc.voxel_size = voxel_size
    return path


def _volumes(n: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, SIZE, SIZE, SIZE)).astype(np.float32)


def _particles_star(path: Path, names: list[str], optics: dict | None = None, **columns) -> Path:
    blocks = {}
    if optics is not None:
        blocks["optics"] = pd.DataFrame(optics)
    blocks["particles"] = pd.DataFrame({"rlnImageName": names, **columns})
    starfile.write(blocks, path)
    return path


def _data_set(tmp_path: Path, n: int = 3, voxel_size: float = VOXEL_SIZE) -> list[str]:
    names = [f"p{i}.mrc" for i in range(n)]
    for name, volume in zip(names, _volumes(n), strict=True):
        _write_mrc(tmp_path / name, volume, voxel_size)
    return names


def _one_line_error(capsys, *args) -> str:
    code = main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    assert (code, out) == (1, "")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


# MRC sizes --------------------------------------------------------------------------------


def _mode_lie(tmp_path: Path) -> Path:
    """Header of an int16 (mode 1) volume followed by the same voxels as float32."""
    path = _write_mrc(tmp_path / "lie.mrc", np.zeros((SIZE, SIZE, SIZE), dtype=np.int16))
    header = path.read_bytes()[:1024]
    path.write_bytes(header + _volumes(1)[0].tobytes())
    return path


def test_header_mode_that_does_not_fit_the_data_is_an_error(tmp_path):
    path = _mode_lie(tmp_path)
    message = (
        rf"{re.escape(str(path))} has the wrong size.*mode 1 \(int16\).*{1024 + 2 * SIZE**3} "
        rf"bytes.*has {1024 + 4 * SIZE**3} bytes.*mode 2 \(float32\).*mode is probably wrong"
    )
    with pytest.raises(ValueError, match=message):
        SubtomogramStack(path)
    with pytest.raises(ValueError, match=message):
        read_subtomograms(tmp_path)


def test_trailing_data_is_an_error(tmp_path):
    path = _write_mrc(tmp_path / "long.mrc", _volumes(1)[0])
    path.write_bytes(path.read_bytes() + b"\0" * 100)
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}.*100 bytes follow the data"):
        SubtomogramStack(path)


def test_short_file_is_an_error_naming_the_sizes(tmp_path):
    path = _write_mrc(tmp_path / "short.mrc", _volumes(1)[0])
    path.write_bytes(path.read_bytes()[:-7])
    expected, actual = 1024 + 4 * SIZE**3, 1024 + 4 * SIZE**3 - 7
    message = rf"{re.escape(str(path))}.*{expected} bytes.*{actual} bytes.*truncated"
    with pytest.raises(ValueError, match=message):
        read_header(path)


def test_file_grown_after_opening_is_an_error_not_a_warning(tmp_path):
    path = _write_mrc(tmp_path / "grows.mrc", _volumes(1)[0])
    stack = SubtomogramStack(path)
    path.write_bytes(path.read_bytes() + b"\0" * 8)
    # mrcfile only warns ("8 bytes larger than expected"); pytest turns warnings into
    # errors, so a RuntimeWarning would fail here too: the ValueError must come first.
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}.*mrcfile reports.*larger"):
        stack[0]


def test_info_refuses_a_file_whose_mode_lies(tmp_path, capsys):
    path = _mode_lie(tmp_path)
    err = _one_line_error(capsys, "info", path)
    assert str(path) in err and "mode is probably wrong" in err


def test_info_lists_header_problems_found_by_mrcfile_validate(tmp_path, capsys):
    path = _write_mrc(tmp_path / "old.mrc", _volumes(1)[0])
    with mrcfile.open(path, mode="r+") as mrc:
        mrc.header.nversion = 0
    assert header_problems(path) == [
        "File does not declare MRC format version 20140 or 20141: nversion = 0"
    ]
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^problem\s+mrcfile.validate: File does not declare MRC format", out, re.M)


def test_info_lists_no_problems_for_a_clean_data_set(tmp_path, capsys):
    _data_set(tmp_path)
    assert main(["info", str(tmp_path)]) == 0
    assert re.search(r"^problems\s+none$", capsys.readouterr().out, re.M)


# Compressed files -------------------------------------------------------------------------


@pytest.mark.parametrize(("compression", "name"), [("gzip", "v.map.gz"), ("bzip2", "v.mrc.bz2")])
def test_compressed_files_are_read(tmp_path, compression, name):
    volumes = _volumes(4)
    path = _write_mrc(tmp_path / name, volumes, compression=compression)
    info = read_header(path)
    assert (info.compression, info.shape, info.voxel_size) == (compression, volumes.shape, 2.5)
    stack = SubtomogramStack(path)
    np.testing.assert_array_equal(stack[1:3], volumes[1:3])
    np.testing.assert_array_equal(np.asarray(stack), volumes)


def test_sizes_of_compressed_files_are_checked_on_the_decompressed_data(tmp_path):
    plain = _write_mrc(tmp_path / "v.mrc", _volumes(1)[0])
    path = tmp_path / "v.map.gz"
    path.write_bytes(gzip.compress(plain.read_bytes()[:-16]))
    with pytest.raises(ValueError, match=r"decompressed gzip stream.*truncated") as info:
        read_header(path)
    assert "interrupted copy" not in str(info.value)


def test_corrupt_compressed_file_says_it_cannot_be_decompressed(tmp_path):
    plain = _write_mrc(tmp_path / "v.mrc", _volumes(1)[0])
    path = tmp_path / "v.mrc.bz2"
    path.write_bytes(bz2.compress(plain.read_bytes())[:-20])
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))} is bzip2-compressed but"):
        read_header(path)


# 2D images --------------------------------------------------------------------------------

NEEDS_3D = r"3D subtomograms.*'Write output as 2D stacks\?' set to No"


@pytest.mark.parametrize("n_images", [100, SIZE])
def test_mrcs_image_stack_is_refused_as_2d(tmp_path, n_images):
    path = tmp_path / "particles.mrcs"
    with mrcfile.new(path, np.zeros((n_images, SIZE, SIZE), dtype=np.float32)) as mrc:
        mrc.set_image_stack()
    message = rf"stack of {n_images} 2D images of {SIZE} x {SIZE} pixels.*\.mrcs.*{NEEDS_3D}"
    with pytest.raises(ValueError, match=message):
        SubtomogramStack(path)


def test_image_stack_space_group_with_non_cubic_shape_is_refused_as_2d(tmp_path):
    path = tmp_path / "tilts.mrc"
    with mrcfile.new(path, np.zeros((41, SIZE, SIZE), dtype=np.float32)) as mrc:
        mrc.set_image_stack()
    with pytest.raises(ValueError, match=rf"41 2D images.*space group 0.*{NEEDS_3D}"):
        SubtomogramStack(path)


def test_non_cubic_volume_with_image_stack_space_group_is_not_called_only_a_stack(tmp_path):
    path = tmp_path / "imod.mrc"
    with mrcfile.new(path, np.zeros((10, 12, 12), dtype=np.float32)) as mrc:
        mrc.set_image_stack()
    with pytest.raises(ValueError, match=r"either a stack of 10 2D images.*or a non-cubic volume"):
        read_header(path)


@pytest.mark.parametrize("stamp", [(0, 0, 0, 0), (0x44, 0x20, 0x20, 0x20)])
def test_non_standard_machine_stamp_is_read_with_a_warning(tmp_path, stamp):
    """cryoDRGN (before 2023) and some IMOD/Amira exports write odd machine stamps."""
    volumes = _volumes(1)
    path = _write_mrc(tmp_path / "stamp.mrc", volumes[0])
    with mrcfile.open(path, "r+") as mrc:
        mrc.header.machst = stamp
    with pytest.warns(UserWarning, match="non-standard machine stamp.*IEEE_LE_MACHST"):
        X, _ = read_subtomograms(path)
    np.testing.assert_array_equal(X[0], volumes[0])


def test_machine_stamp_is_not_an_excuse_for_a_wrong_size(tmp_path):
    path = _write_mrc(tmp_path / "stamp.mrc", _volumes(1)[0])
    with mrcfile.open(path, "r+") as mrc:
        mrc.header.machst = (0, 0, 0, 0)
    with open(path, "ab") as handle:
        handle.write(b"junk")
    with pytest.warns(UserWarning, match="machine stamp"), pytest.raises(ValueError, match="4"):
        read_header(path)


def test_cubic_volume_with_image_stack_space_group_is_read(tmp_path):
    # Older programs write space group 0 for volumes too.
    path = tmp_path / "old.mrc"
    with mrcfile.new(path, _volumes(1)[0]) as mrc:
        mrc.set_image_stack()
    assert SubtomogramStack(path).shape == (1, SIZE, SIZE, SIZE)


def test_star_with_image_dimensionality_2_is_refused(tmp_path):
    names = _data_set(tmp_path)
    optics = {"rlnOpticsGroup": [1], "rlnImageDimensionality": [2], "rlnImageSize": [SIZE]}
    star = _particles_star(tmp_path / "p.star", names, optics, rlnOpticsGroup=[1, 1, 1])
    with pytest.raises(ValueError, match=rf"{re.escape(str(star))} lists 2D images.*{NEEDS_3D}"):
        SubtomogramStack(star)


def test_relion5_star_of_2d_stacks_is_refused_although_files_look_like_volumes(tmp_path):
    names = _data_set(tmp_path)
    star = tmp_path / "run_data.star"
    rows = "\n".join(f"{name} 1" for name in names)
    star.write_text(
        "data_general\n\n_rlnTomoSubTomosAre2DStacks 1\n\n"
        "data_optics\n\nloop_\n_rlnOpticsGroup #1\n_rlnImagePixelSize #2\n1 2.5\n\n"
        f"data_particles\n\nloop_\n_rlnImageName #1\n_rlnOpticsGroup #2\n{rows}\n"
    )
    with pytest.raises(ValueError, match=rf"rlnTomoSubTomosAre2DStacks = 1.*{NEEDS_3D}"):
        SubtomogramStack(star)


def test_image_size_reveals_a_stack_of_2d_images(tmp_path):
    path = _write_mrc(tmp_path / "tilts.mrc", np.zeros((5, SIZE, SIZE), dtype=np.float32))
    optics = {"rlnOpticsGroup": [1], "rlnImageSize": [SIZE], "rlnImageDimensionality": [3]}
    star = _particles_star(tmp_path / "p.star", [path.name], optics, rlnOpticsGroup=[1])
    message = rf"5 2D images of {SIZE} x {SIZE} pixels.*rlnImageSize {SIZE}.*2D stacks"
    with pytest.raises(ValueError, match=message):
        SubtomogramStack(star)


def test_image_size_that_differs_from_the_volumes_is_an_error(tmp_path):
    names = _data_set(tmp_path)
    star = _particles_star(tmp_path / "p.star", names, {"rlnImageSize": [2 * SIZE]})
    with pytest.raises(ValueError, match=rf"shape \({SIZE}, {SIZE}, {SIZE}\).*rlnImageSize 16"):
        SubtomogramStack(star)


def test_info_refuses_a_2d_stack(tmp_path, capsys):
    path = tmp_path / "particles.mrcs"
    with mrcfile.new(path, np.zeros((100, SIZE, SIZE), dtype=np.float32)) as mrc:
        mrc.set_image_stack()
    err = _one_line_error(capsys, "info", path)
    assert "2D images" in err and "3D subtomograms" in err


# Pixel sizes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("detector_um", "magnification", "expected"), [(5.0, 10000.0, 5.0), (14.0, 50000.0, 2.8)]
)
def test_relion30_detector_pixel_size_and_magnification(
    tmp_path, detector_um, magnification, expected
):
    names = _data_set(tmp_path, voxel_size=0.0)  # headers without a pixel size
    star = _particles_star(
        tmp_path / "p.star",
        names,
        rlnDetectorPixelSize=[detector_um] * 3,
        rlnMagnification=[magnification] * 3,
    )
    assert SubtomogramStack(star).voxel_size == pytest.approx(expected)


def test_relion4_tilt_series_pixel_size_times_binning(tmp_path):
    names = _data_set(tmp_path, voxel_size=0.0)
    optics = {"rlnTomoTiltSeriesPixelSize": [1.35], "rlnTomoSubtomogramBinning": [4.0]}
    star = _particles_star(tmp_path / "p.star", names, optics)
    assert SubtomogramStack(star).voxel_size == pytest.approx(5.4)


def test_star_pixel_size_that_disagrees_with_the_header_wins_with_a_warning(tmp_path):
    names = _data_set(tmp_path, voxel_size=1.0)
    star = _particles_star(tmp_path / "p.star", names, {"rlnImagePixelSize": [2.5]})
    message = (
        rf"{re.escape(str(star))} gives the pixel size 2.5 Å \(rlnImagePixelSize\) but the MRC "
        rf"header of {re.escape(str(tmp_path / 'p0.mrc'))} \(and 2 more files\) says 1 Å\. "
        r"Using the STAR file's 2.5 Å, as RELION does"
    )
    with pytest.warns(PixelSizeWarning, match=message):
        stack = SubtomogramStack(star)
    assert stack.voxel_size == 2.5


def test_star_pixel_size_within_half_a_percent_of_the_header_is_silent(tmp_path):
    names = _data_set(tmp_path, voxel_size=2.51)
    star = _particles_star(tmp_path / "p.star", names, {"rlnImagePixelSize": [2.5]})
    assert SubtomogramStack(star).voxel_size == 2.5  # no warning: pytest turns it into an error


def test_info_lists_a_pixel_size_disagreement_as_a_problem(tmp_path, capsys):
    names = _data_set(tmp_path, voxel_size=1.0)
    _particles_star(tmp_path / "particles.star", names, {"rlnImagePixelSize": [2.5]})
    assert main(["info", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^voxel size\s+2.5 Å$", out, re.M)
    assert re.search(r"^problem\s+STAR file .* 2.5 Å .* says 1 Å\. Using the STAR", out, re.M)


def _two_optics_groups(tmp_path: Path, sizes: tuple[float, float]) -> Path:
    names = _data_set(tmp_path, voxel_size=sizes[0])
    optics = {"rlnOpticsGroup": [1, 2], "rlnImagePixelSize": list(sizes)}
    return _particles_star(tmp_path / "p.star", names, optics, rlnOpticsGroup=[2, 1, 1])


def test_optics_groups_within_one_percent_are_read_with_a_warning(tmp_path):
    star = _two_optics_groups(tmp_path, (1.24, 1.25))
    message = r"mixes pixel sizes 1.24, 1.25 Å.*0.81%.*using 1.24 Å.*2 of 3"
    with pytest.warns(PixelSizeWarning, match=message):
        stack = SubtomogramStack(star)
    assert stack.voxel_size == 1.24


def test_optics_groups_one_percent_apart_or_more_are_refused(tmp_path):
    star = _two_optics_groups(tmp_path, (1.24, 1.36))
    with pytest.raises(ValueError, match=r"1.24, 1.36 Å.*9.7%.*Rescale.*--rescale_angpix"):
        SubtomogramStack(star)


# Values that are not numbers, missing images ----------------------------------------------


@pytest.mark.parametrize("column", ["rlnClassNumber", "rlnAngleRot", "rlnOriginXAngst"])
def test_non_numeric_column_names_file_column_and_value(tmp_path, column):
    names = _data_set(tmp_path)
    values = {column: ["1", "ribosome", "2"]}
    star = _particles_star(tmp_path / "p.star", names, {"rlnImagePixelSize": [2.5]}, **values)
    message = (
        rf"{re.escape(str(star))} has the non-numeric value 'ribosome' in column {column} of "
        r"data_particles \(row 2\)"
    )
    with pytest.raises(ValueError, match=message):
        SubtomogramStack(star)


def test_missing_image_names_both_places_tried(tmp_path, monkeypatch):
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    (project / "Refine3D").mkdir(parents=True)
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    star = _particles_star(project / "Refine3D" / "run_data.star", ["Extract/job1/p0.mrc"])
    message = (
        rf"Extract/job1/p0.mrc: it is neither at "
        rf"{re.escape(str(project / 'Refine3D' / 'Extract' / 'job1' / 'p0.mrc'))} .*nor at "
        rf"{re.escape(str(elsewhere / 'Extract' / 'job1' / 'p0.mrc'))} .*run skdistill from "
        r"the RELION project folder"
    )
    with pytest.raises(FileNotFoundError, match=message):
        SubtomogramStack(star)
