"""``SubtomogramStack``: subtomograms on disk, read lazily through memory maps."""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import starfile

from ._lazy import LazyVolumes
from .mrc import MrcInfo, read_header
from .star import (
    PARTICLES_STAR,
    ParticleTable,
    PixelSizeWarning,
    _particles_block,
    read_particles_star,
)

__all__ = ["SubtomogramStack"]

#: Relative difference between STAR and MRC-header pixel sizes that gets a warning.
_HEADER_TOLERANCE = 0.005

_SOURCES_HELP = (
    "Pass a particles.star file, a directory (with particles.star, or with *.mrc files), "
    "one MRC file (a volume or a volume stack) or a list of MRC files."
)


class SubtomogramStack(LazyVolumes):
    """Subtomograms stored as MRC files, indexed like a float32 array ``(n, D, H, W)``.

    Construction reads only the MRC headers, to check that every file is a valid MRC file
    and that all volumes share one cubic shape. Volumes are read on access through
    :func:`mrcfile.mmap` and files are closed again right away, so a stack over thousands
    of particles holds no open files.

    Parameters
    ----------
    source : str, path-like or sequence of them
        One of

        - a STAR file (``.star``), such as the ``particles.star`` written by
          :func:`~skdistill.io.write_subtomograms`, whose ``rlnImageName`` paths are read
          relative to the STAR file's directory;
        - a directory: its ``particles.star`` if present, else all its ``*.mrc`` files
          sorted by name;
        - one MRC file holding a volume or a volume stack;
        - a list of MRC files (volume stacks contribute all their volumes).

    Attributes
    ----------
    voxel_size : float or None
        Voxel size in Å, from the STAR file (see :func:`~skdistill.io.star.read_particles_star`
        for the labels read) or else the MRC headers; None when neither gives one. When the
        STAR file and an MRC header differ by more than 0.5 %, the STAR value is used, as
        RELION does, with a :class:`~skdistill.io.star.PixelSizeWarning` naming both.
    labels : ndarray of int64, shape (n,), or None
        0-based class labels (``rlnClassNumber - 1``), or None without labels.
    class_names : list of str or None
        Names of the classes 0..K-1, or None when the STAR file names none.
    rotations : ndarray of shape (n, 3) or None
        ZYZ Euler angles ``(rot, tilt, psi)`` in degrees, or None.
    shifts : ndarray of shape (n, 3) or None
        Particle offsets from the box centre in voxels, ordered ``(z, y, x)``, or None.
    particles, optics : pandas.DataFrame or None
        The STAR file's particle table (all columns, original order) and optics table.
    groups : ndarray of str or None
        The tomogram of each volume (``rlnTomoName``, else ``rlnMicrographName``), for
        ``GroupKFold``.
    star_path : Path or None
        The STAR file the particles were listed in (for
        :func:`~skdistill.io.write_predictions`), or None for MRC files and folders without
        one.
    paths : list of Path
        The file of each volume (a stack file repeats once per volume it holds).
    shape : tuple of int
        ``(n, D, H, W)``.
    ndim : int
        4.
    dtype : numpy.dtype
        float32, the type volumes are returned in whatever the file's MRC mode.

    See Also
    --------
    read_subtomograms : Read all volumes into memory at once.
    write_subtomograms : Write volumes and their metadata.

    Notes
    -----
    Indexing with an integer returns one volume ``(D, H, W)``; slices, integer sequences and
    boolean masks return ``(k, D, H, W)`` arrays. Each access reads from disk and returns a
    new array; ``np.asarray(stack)`` reads everything.

    MRC files are checked strictly (see :mod:`skdistill.io.mrc`): a file whose size differs
    from what its header implies, or that holds 2D images, raises ``ValueError``. gzip- and
    bzip2-compressed files (``.map.gz``, ``.mrc.bz2``) are read, but cannot be memory-mapped:
    each access decompresses the whole file, so decompress large ones (``gunzip``) first.
    """

    def __init__(self, source: str | os.PathLike | Sequence[str | os.PathLike]) -> None:
        table, description = _particle_table(source)
        infos = {path: read_header(path) for path in dict.fromkeys(table.paths)}
        if table.image_size is not None:
            _check_image_size(table, infos.values())
        self._volume_shape = _common_volume_shape(infos.values())
        self._paths, self._stack_indices = _volume_entries(table, infos)
        self._description = description
        self.voxel_size = (
            _header_voxel_size(infos)
            if table.voxel_size is None
            else _star_voxel_size(table, infos.values())
        )
        self.labels = table.labels
        self.class_names = table.class_names
        self.rotations = table.rotations
        self.shifts = table.shifts
        self.star_path = _star_path(source)

    @classmethod
    def from_tomograms(
        cls,
        particles: str | os.PathLike | pd.DataFrame,
        tomograms: str | os.PathLike | Mapping[str, str | os.PathLike] | None = None,
        *,
        box_size: int,
        voxel_size: float | None = None,
        coordinate_pixel_size: float | None = None,
        on_outside: str = "error",
    ) -> SubtomogramStack:
        """Subtomograms cut on demand from tomograms around picked particles.

        Construction reads the STAR files and the tomograms' MRC headers only. Each access
        cuts the cubes it needs from memory-mapped tomograms, opening each tomogram once per
        batch and closing it again. The conventions (RELION 3 to 5, Warp, pytom-match-pick;
        coordinates, pixel sizes, origins, names) are listed with their sources in
        :mod:`skdistill.io.conventions`.

        Parameters
        ----------
        particles : str, path-like or pandas.DataFrame
            A particles STAR file, or its particle table. Each row needs a tomogram name
            (``rlnTomoName``, else ``rlnMicrographName``) and coordinates: RELION 5's
            ``rlnCenteredCoordinate{X,Y,Z}Angst`` (Å from the tomogram centre) or
            ``rlnCoordinate{X,Y,Z}`` (pixels, 0-based). ``rlnOrigin{X,Y,Z}Angst`` (or
            pixel ``rlnOrigin{X,Y,Z}``) are applied as RELION does: centre = coordinate -
            origin.
        tomograms : str, path-like, mapping or None, default=None
            RELION's ``tomograms.star`` (``rlnTomoReconstructedTomogram``, pixel size
            ``rlnTomoTiltSeriesPixelSize * rlnTomoTomogramBinning``, ``rlnTomoSize{X,Y,Z}``;
            needed for RELION 5 centred coordinates; relative paths are looked for next to
            the STAR file, in each folder above it, then in the working directory), a folder
            of tomograms named after them (``TS_01.mrc`` for ``TS_01``, ``TS_01.tomostar``
            or ``TS_01_10.00Apx``), or a mapping name -> file. None reads the tomogram names
            as file names (RELION 3.0).
        box_size : int
            Edge of the cubes in output voxels; the particle sits at voxel ``box_size // 2``.
        voxel_size : float or None, default=None
            Output voxel size in Å; None keeps the tomograms' own. Otherwise the same
            physical box is cut and resampled (cubic interpolation, Gaussian antialiasing
            when downsampling), centred on the exact particle position.
        coordinate_pixel_size : float or None, default=None
            Å per pixel of ``rlnCoordinate{X,Y,Z}``; None reads it from the STAR file
            (``rlnTomoTiltSeriesPixelSize``, ``rlnDetectorPixelSize`` /
            ``rlnMagnification``) or else takes the tomogram's voxel size.
        on_outside : {"error", "skip"}, default="error"
            What to do with particles whose centre lies outside their tomogram: raise a
            ``ValueError`` naming them, or leave them out (listed in ``skipped``).

        Returns
        -------
        SubtomogramStack
            A lazy stack (a subclass) with the attributes of :class:`SubtomogramStack`
            (``particles`` holding the kept rows, indexed by their 0-based input row;
            ``voxel_size`` the output voxel size; ``shifts`` the sub-voxel offset of each
            particle from the box centre) plus ``n_padded``, the number of boxes that
            reached beyond a tomogram edge and were filled with the tomogram's mean (with
            one :class:`~skdistill.io.EdgePaddingWarning`), and ``skipped``, the rows left
            out (an empty table when none).

        Raises
        ------
        ValueError
            For missing columns, tomogram names without a tomogram, tomograms that are 2D,
            compressed or have non-cubic voxels, unknown pixel sizes, particles outside
            their tomogram (with ``on_outside="error"``) and bad arguments.
        FileNotFoundError
            For missing STAR or tomogram files (saying where they were looked for).
        """
        from .tomogram_stack import from_tomograms

        return from_tomograms(
            particles,
            tomograms,
            box_size=box_size,
            voxel_size=voxel_size,
            coordinate_pixel_size=coordinate_pixel_size,
            on_outside=on_outside,
        )

    @functools.cached_property
    def _star_blocks(self) -> dict:
        return {} if self.star_path is None else starfile.read(self.star_path, always_dict=True)

    @property
    def particles(self) -> pd.DataFrame | None:
        """The whole particle table of the STAR file (all columns, original order), or None.

        Read from the file on first access. Row ``i`` describes volume ``i``.
        """
        blocks = self._star_blocks
        return None if not blocks else _particles_block(self.star_path, blocks)

    @property
    def optics(self) -> pd.DataFrame | None:
        """The STAR file's optics table (RELION 3.1+), or None."""
        optics = self._star_blocks.get("optics")
        return optics if isinstance(optics, pd.DataFrame) else None

    @property
    def groups(self) -> np.ndarray | None:
        """The tomogram (``rlnTomoName``, else ``rlnMicrographName``) of each volume, or None.

        For ``GroupKFold``: ``cross_val_score(est, stack, y, groups=stack.groups,
        cv=GroupKFold(3))`` keeps the particles of one tomogram on one side of every split;
        splitting them across training and test folds leaks (neighbours share the tomogram's
        defocus, thickness and noise).
        """
        particles = self.particles
        for label in ("rlnTomoName", "rlnMicrographName"):
            if particles is not None and label in particles:
                return particles[label].astype(str).to_numpy()
        return None

    @property
    def dtype(self) -> np.dtype:
        """float32."""
        return np.dtype(np.float32)

    def __repr__(self) -> str:
        labels = "None" if self.labels is None else f"{int(self.labels.max()) + 1} classes"
        if self.class_names is not None:
            labels = f"{len(self.class_names)} named classes"
        return (
            f"SubtomogramStack(n={len(self)}, volume_shape={self._volume_shape}, "
            f"voxel_size={self.voxel_size}, labels={labels}, source={self._description!r})"
        )


def _particle_table(source) -> tuple[ParticleTable, str]:
    """The particles a source lists, and a short description of the source."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist. {_SOURCES_HELP}")
        if path.is_dir():
            star = path / PARTICLES_STAR
            if star.is_file():
                return read_particles_star(star), str(star)
            files = sorted(path.glob("*.mrc"))
            if not files:
                raise ValueError(
                    f"Directory {path} holds neither {PARTICLES_STAR} nor any *.mrc file. "
                    f"{_SOURCES_HELP}"
                )
            return _mrc_table(files), str(path)
        if path.suffix.lower() == ".star":
            return read_particles_star(path), str(path)
        return _mrc_table([path]), str(path)
    if not isinstance(source, Sequence):
        raise TypeError(f"Cannot read subtomograms from {type(source).__name__}. {_SOURCES_HELP}")
    files = [Path(item) for item in source]
    if not files:
        raise ValueError(f"The list of MRC files is empty. {_SOURCES_HELP}")
    missing = [file for file in files if not file.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {len(files)} MRC files do not exist, the first being "
            f"{missing[0]}. Check the paths."
        )
    return _mrc_table(files), f"{len(files)} MRC files"


def _mrc_table(files: list[Path]) -> ParticleTable:
    return ParticleTable(paths=list(files), stack_indices=[None] * len(files))


def _check_image_size(table: ParticleTable, infos) -> None:
    """Refuse MRC files whose volumes are not the ``rlnImageSize`` cubes the STAR file lists."""
    size = table.image_size
    for info in infos:
        depth, height, width = info.volume_shape
        if depth == height == width == size:
            continue
        if height == width == size:
            raise ValueError(
                f"MRC file {info.path} holds {depth} 2D images of {size} x {size} pixels, not "
                f"a {size}^3 volume (STAR file {table.star_path} gives rlnImageSize {size}): "
                "it is a stack of 2D (tilt) images. skdistill needs 3D subtomograms; in "
                "RELION 5, run Extract subtomos again with 'Write output as 2D stacks?' set "
                "to No."
            )
        raise ValueError(
            f"MRC file {info.path} holds volumes of shape {info.volume_shape}, but STAR file "
            f"{table.star_path} gives the box size rlnImageSize {size}. Fix rlnImageSize or "
            "extract the subtomograms again."
        )


def _common_volume_shape(infos) -> tuple[int, int, int]:
    first: MrcInfo | None = None
    for info in infos:
        shape = info.volume_shape
        if len(set(shape)) != 1:
            raise ValueError(
                f"MRC file {info.path} holds volumes of shape {shape}, which are not cubic. "
                "skdistill needs cubic subtomograms (D == H == W); crop or pad them to a cube "
                "or extract them again with a cubic box."
            )
        if first is None:
            first = info
        elif shape != first.volume_shape:
            raise ValueError(
                f"Subtomograms have different shapes: {first.path} holds {first.volume_shape} "
                f"but {info.path} holds {shape}. All subtomograms must share one box size; "
                "crop, pad or extract them again to one size."
            )
    return first.volume_shape


def check_volume_number(
    star: Path, path: Path, index: int | None, n_volumes: int, *, column: str, what: str = "volume"
) -> None:
    """Raise unless a STAR row's ``k@file`` reference names one existing volume of ``path``.

    Parameters
    ----------
    star : Path
        The STAR file, for the message.
    path : Path
        The MRC file the row refers to.
    index : int or None
        The 0-based volume number from ``k@file``; ``None`` when the row gives none.
    n_volumes : int
        Volumes in ``path``.
    column : str
        The STAR column holding the reference (``rlnImageName``, ``rlnMaskName``).
    what : str, default="volume"
        What the volumes are, for the message.
    """
    if index is None and n_volumes > 1:
        raise ValueError(
            f"STAR file {star} lists {path}, a stack of {n_volumes} {what}s, without a volume "
            f"number; name one volume as 'k@{path.name}' (k = 1..{n_volumes}) in {column}."
        )
    if index is not None and index >= n_volumes:
        raise ValueError(
            f"STAR file {star} refers to {what} {index + 1} of {path}, which holds only "
            f"{n_volumes}; fix {column}."
        )


def _volume_entries(table: ParticleTable, infos: dict) -> tuple[tuple[Path, ...], np.ndarray]:
    """File and in-file index of each volume (-1 for a single-volume file).

    A plain list of MRC files contributes every volume of each stack; a STAR file names
    exactly one volume per row.
    """
    paths: list[Path] = []
    indices: list[int] = []
    for path, index in zip(table.paths, table.stack_indices, strict=True):
        info = infos[path]
        if table.star_path is None:
            count = info.n_volumes
            paths.extend([path] * count)
            indices.extend(range(count) if info.is_stack else [-1])
            continue
        check_volume_number(table.star_path, path, index, info.n_volumes, column="rlnImageName")
        paths.append(path)
        indices.append((index or 0) if info.is_stack else -1)
    return tuple(paths), np.asarray(indices, dtype=np.intp)


def _star_voxel_size(table: ParticleTable, infos) -> float:
    """The STAR file's pixel size, with a warning when MRC headers give another one."""
    star_size = table.voxel_size
    differing = [
        info
        for info in infos
        if info.voxel_size is not None
        and abs(info.voxel_size - star_size) > _HEADER_TOLERANCE * star_size
    ]
    if differing:
        others = f" (and {len(differing) - 1} more files)" if len(differing) > 1 else ""
        warnings.warn(
            f"STAR file {table.star_path} gives the pixel size {star_size:g} Å "
            f"({table.voxel_size_label}) but the MRC header of {differing[0].path}{others} says "
            f"{differing[0].voxel_size:g} Å. Using the STAR file's {star_size:g} Å, as RELION "
            "does (it takes the pixel size from the STAR file, not from image headers); fix "
            "the STAR file if the header is right.",
            PixelSizeWarning,
            stacklevel=3,
        )
    return star_size


def _header_voxel_size(infos: dict) -> float | None:
    known = [info for info in infos.values() if info.voxel_size is not None]
    for info in known[1:]:
        if not np.isclose(info.voxel_size, known[0].voxel_size, rtol=1e-3):
            raise ValueError(
                f"MRC files have different voxel sizes: {known[0].path} has "
                f"{known[0].voxel_size} Å but {info.path} has {info.voxel_size} Å. Subtomograms "
                "of one data set must share a voxel size; rescale them to one size."
            )
    return known[0].voxel_size if known else None


def _star_path(source) -> Path | None:
    """The STAR file a stack's particles come from (a ``.star`` file or a data set folder)."""
    if not isinstance(source, (str, os.PathLike)):
        return None
    path = Path(source)
    if path.is_dir():
        path = path / PARTICLES_STAR
    return path if path.suffix.lower() == ".star" and path.is_file() else None
