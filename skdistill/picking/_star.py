"""Write picked particles as a RELION 5 particles STAR file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import starfile

from ..io.atomic import write_atomically
from ..io.conventions import CENTERED_LABELS, centered_angstrom

__all__ = ["write_particles"]


def write_particles(
    picks: pd.DataFrame,
    path: str | os.PathLike,
    *,
    tomo_name: str,
    voxel_size: float,
    shape: tuple[int, int, int],
    overwrite: bool = False,
) -> Path:
    """Write picks of one tomogram to a RELION 5 ``particles.star``.

    The particles get RELION 5's centred coordinates ``rlnCenteredCoordinate{X,Y,Z}Angst``
    (Å from the tomogram's centre: ``(x - W / 2) * voxel_size`` for a tomogram of
    ``shape = (D, H, W)`` voxels, voxel ``k`` centred at ``k``), ``rlnTomoName``,
    ``rlnTomoParticleName`` (``name/1``, ``name/2``, ...), ``rlnClassNumber`` (the picked
    class) and ``rlnAutopickFigureOfMerit`` (the score), in optics group 1 named after the
    tomogram. :meth:`~skdistill.io.SubtomogramStack.from_tomograms` reads the file back with
    the tomogram; RELION 5 reads it as picked particles.

    Parameters
    ----------
    picks : pandas.DataFrame
        :func:`~skdistill.picking.pick_particles`'s table: columns ``z, y, x`` in voxels,
        ``class`` and ``score``.
    path : str or path-like
        The STAR file to write (atomically).
    tomo_name : str
        The tomogram's name as the project knows it (``rlnTomoName``, e.g. ``TS_01``).
    voxel_size : float
        Voxel size in Å of the tomogram the picks were made on.
    shape : tuple of 3 int
        That tomogram's shape ``(D, H, W)`` in voxels.
    overwrite : bool, default=False
        Replace an existing file.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    missing = [column for column in ("z", "y", "x", "class", "score") if column not in picks]
    if missing:
        raise ValueError(f"picks lacks the columns {missing}; pass the table of pick_particles.")
    if not str(tomo_name).strip():
        raise ValueError("tomo_name must name the tomogram (rlnTomoName), e.g. 'TS_01'.")
    if not np.isfinite(voxel_size) or voxel_size <= 0:
        raise ValueError(f"voxel_size must be a positive number of Å, not {voxel_size!r}.")
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be the tomogram's (D, H, W) in voxels, not {shape!r}.")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; pass the STAR file to write.")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it.")
    n = len(picks)
    centred = centered_angstrom(picks[["z", "y", "x"]].to_numpy(float), shape, float(voxel_size))
    names = [f"{tomo_name}/{k}" for k in range(1, n + 1)]
    particles = pd.DataFrame({"rlnTomoName": [str(tomo_name)] * n, "rlnTomoParticleName": names})
    for column, values in zip(CENTERED_LABELS, centred.T, strict=True):
        particles[column] = values
    particles["rlnOpticsGroup"] = 1
    particles["rlnClassNumber"] = picks["class"].to_numpy(dtype=int)
    particles["rlnAutopickFigureOfMerit"] = picks["score"].to_numpy(dtype=float)
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": [str(tomo_name)]})
    path.parent.mkdir(parents=True, exist_ok=True)
    blocks = {"optics": optics, "particles": particles}
    write_atomically(
        [(path, lambda temporary: starfile.write(blocks, temporary))], overwrite=overwrite
    )
    return path
