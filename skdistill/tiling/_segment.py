"""Segment a whole tomogram with a segmenter trained on subtomograms: overlapping tiles, blended.

Memory stays bounded: the tomogram is read in bands of rows, one row of tiles at a time, the
blended class probabilities are kept only for that band and tile depth, and every block that
no later tile covers is finished (divided by its weights, reduced to labels) and handed to
the output, in memory or an MRC file written block by block (:mod:`skdistill.tiling._blend`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from ..architectures.segmentation import check_segmentation_input_size
from ..estimators._segmenter import SEGMENTATION_INFERENCE_VOXELS, label_dtype
from ..estimators._voxel_size import warn_if_voxel_size_differs
from ..io.atomic import write_atomically
from ._blend import run_tiles
from ._grid import BLENDS, tile_starts, tile_weights
from ._sinks import ArraySink, MrcSink
from ._source import TomogramSource, open_tomogram

__all__ = ["DEFAULT_TILE_EDGE", "segment_tomogram", "write_segmentation"]

#: Longest default tile edge in voxels (a multiple of the training size up to this).
DEFAULT_TILE_EDGE = 64


def segment_tomogram(
    segmenter,
    tomogram,
    *,
    tile_size: int | Sequence[int] | None = None,
    overlap: float = 0.25,
    blend: str = "gaussian",
    batch_size: int | None = None,
    out: str | os.PathLike | None = None,
    probabilities: bool = False,
    overwrite: bool = False,
    progress: bool = False,
):
    """Segment a tomogram of any size with a segmenter trained on subtomograms.

    The tomogram is covered by overlapping tiles of the training size (or ``tile_size``),
    each predicted by the network, and the class probabilities of overlapping tiles are
    blended with weights that are lowest at the tiles' borders, where the network sees
    zero padding, so no seams remain (MONAI's ``sliding_window_inference`` semantics; see
    :mod:`skdistill.tiling`). Memory does not grow with the tomogram: it is read and
    finished one slab of tiles at a time, and with ``out`` written to the file slab by slab.

    Parameters
    ----------
    segmenter : fitted Cnn3DSegmenter, DistilledSegmenter or PrunedSegmenter
        Trained on single-channel volumes.
    tomogram : array-like of shape (D, H, W), or str or path-like
        The voxels (a ``numpy.memmap`` is read slab by slab) or an uncompressed MRC file,
        memory-mapped. At least the tile size along every axis; any shape otherwise
        (anisotropic such as 64 x 200 x 180, not a multiple of the tile).
    tile_size : int or sequence of 3 int, default=None
        Tile shape, a size the network accepts (for the U-Net a multiple of
        ``2**(levels - 1)``). None: the training depth along the first axis and, along the
        other two, the largest multiple of the training size up to 64 voxels and within the
        tomogram that the network accepts (the training shape for a network of fixed input
        size). Larger tiles agree better with a prediction of the whole volume (fewer
        voxels near a tile's border, where the network sees zero padding) and are faster
        per voxel. Memory does not depend on the tile count: the tomogram is processed in
        bands of rows whose blend buffers fit about 128 MiB
        (:data:`skdistill.tiling._blend.BAND_BYTES`), plus the network's activations for a
        batch of tiles.
    overlap : float, default=0.25
        Fraction of a tile shared with its neighbour along each axis, in [0, 1).
    blend : {"gaussian", "linear", "constant"}, default="gaussian"
        Weights of a tile's voxels in the blend (:func:`skdistill.tiling.tile_weights`).
    batch_size : int, default=None
        Tiles per forward pass; None: the segmenter's inference batch, in voxels.
    out : str or path-like, default=None
        An MRC file to write (atomically, with the tomogram's voxel size and origin) instead
        of returning the result: int8 labels (mode 0), or with ``probabilities=True`` a
        float32 volume stack, one volume per class.
    probabilities : bool, default=False
        Return (or write) the blended class probabilities ``(n_classes, D, H, W)`` instead
        of the labels.
    overwrite : bool, default=False
        Replace an existing ``out``.
    progress : bool, default=False
        Show a progress bar over the tiles (tqdm, on stderr).

    Returns
    -------
    ndarray of shape (D, H, W) or (n_classes, D, H, W), or Path
        Labels (int8, int16 above 128 classes) or float32 probabilities; the path of
        ``out`` when given.

    Raises
    ------
    ValueError
        If the tomogram is smaller than a tile, not 3D, holds non-finite values, or a tile
        size does not fit the network.
    FileExistsError
        If ``out`` exists and ``overwrite`` is false (checked before any work).

    See Also
    --------
    skdistill.picking.pick_particles : Particles from the labels or probabilities.

    Examples
    --------
    >>> labels = segment_tomogram(segmenter, "TS_01.mrc")  # doctest: +SKIP
    >>> segment_tomogram(segmenter, "TS_01.mrc", out="TS_01_labels.mrc")  # doctest: +SKIP
    """
    if out is None:
        model = _fitted_segmenter(segmenter)
        with open_tomogram(tomogram) as source:
            plan = _plan(model, source, tile_size, overlap, blend, batch_size)
            n_classes = model.n_classes_
            sink = (
                ArraySink((n_classes, *source.shape), np.float32)
                if probabilities
                else ArraySink(source.shape, label_dtype(n_classes))
            )
            sinks = {"probabilities" if probabilities else "labels": sink}
            run_tiles(model, source, plan, sinks, progress=progress)
            return sink.result()
    targets = {"probabilities" if probabilities else "labels": out}
    written = write_segmentation(
        segmenter, tomogram, **targets, tile_size=tile_size, overlap=overlap, blend=blend,
        batch_size=batch_size, overwrite=overwrite, progress=progress,
    )  # fmt: skip
    return written[0]


def write_segmentation(
    segmenter,
    tomogram,
    *,
    labels: str | os.PathLike | None = None,
    probabilities: str | os.PathLike | None = None,
    tile_size: int | Sequence[int] | None = None,
    overlap: float = 0.25,
    blend: str = "gaussian",
    batch_size: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> list[Path]:
    """Write a tomogram's labels and/or class probabilities to MRC files in one pass.

    As :func:`segment_tomogram` with ``out``; both files come from the same tiles, are
    written slab by slab to temporary files beside their targets and moved into place only
    when the whole tomogram is done (a failure leaves existing files as they were).

    Parameters
    ----------
    segmenter, tomogram, tile_size, overlap, blend, batch_size, overwrite, progress
        As in :func:`segment_tomogram`.
    labels : str or path-like, default=None
        MRC file of the int8 labels (mode 0).
    probabilities : str or path-like, default=None
        MRC volume stack of the float32 class probabilities, one volume per class.

    Returns
    -------
    list of Path
        The files written: labels first.
    """
    targets = {
        name: Path(path)
        for name, path in (("labels", labels), ("probabilities", probabilities))
        if path is not None
    }
    if not targets:
        raise ValueError("Pass labels= and/or probabilities=: the MRC files to write.")
    if len(set(targets.values())) < len(targets):
        raise ValueError("labels and probabilities must be different files.")
    for path in targets.values():
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True to replace it.")
        if path.exists() and not path.is_file():
            raise IsADirectoryError(f"{path} is a folder; pass the MRC file to write.")
    model = _fitted_segmenter(segmenter)
    with open_tomogram(tomogram) as source:
        plan = _plan(model, source, tile_size, overlap, blend, batch_size)
        shapes = {
            "labels": (source.shape, label_dtype(model.n_classes_)),
            "probabilities": ((model.n_classes_, *source.shape), np.float32),
        }
        sinks: dict[str, MrcSink] = {}
        try:
            for name, target in targets.items():
                target.parent.mkdir(parents=True, exist_ok=True)
                shape, dtype = shapes[name]
                staging = target.with_name(f".{target.name}.{os.getpid()}.partial")
                sinks[name] = MrcSink(
                    staging, shape, dtype, voxel_size=source.voxel_size, origin=source.origin
                )
            run_tiles(model, source, plan, sinks, progress=progress)
            for sink in sinks.values():
                sink.result()
            write_atomically(
                [(targets[name], _move_from(sink.path)) for name, sink in sinks.items()],
                overwrite=overwrite,
            )
        finally:
            for sink in sinks.values():
                sink.close()
                with contextlib.suppress(FileNotFoundError):
                    sink.path.unlink()
    return list(targets.values())


def _move_from(staging: Path):
    def move(temporary: Path) -> None:
        os.replace(staging, temporary)

    return move


# -- checks -------------------------------------------------------------------------------


def _fitted_segmenter(segmenter):
    """The fitted segmenter that predicts (a pruned segmenter's pruned estimator)."""
    inner = getattr(segmenter, "estimator_", None)
    if inner is not None and getattr(inner, "_segments_volumes", False):
        segmenter = inner  # PrunedSegmenter
    if not getattr(segmenter, "_segments_volumes", False):
        raise TypeError(
            "segment_tomogram needs a fitted volume segmenter (Cnn3DSegmenter, "
            f"DistilledSegmenter or PrunedSegmenter), not {type(segmenter).__name__}."
        )
    check_is_fitted(segmenter, "net_")
    if segmenter.n_channels_ != 1:
        raise ValueError(
            f"This segmenter was trained on {segmenter.n_channels_}-channel volumes; a "
            "tomogram has one channel."
        )
    return segmenter


class _Plan:
    """Tiles, weights and batch size of one tomogram."""

    def __init__(self, shape, tile, overlap, blend, batch_size) -> None:
        self.tile = tile
        self.starts = [tile_starts(n, t, overlap) for n, t in zip(shape, tile, strict=True)]
        self.weights = tile_weights(tile, blend)
        self.batch_size = batch_size

    @property
    def n_tiles(self) -> int:
        return int(np.prod([len(starts) for starts in self.starts]))


def _plan(model, source: TomogramSource, tile_size, overlap, blend, batch_size) -> _Plan:
    """Check the tiling arguments against the model and the tomogram."""
    tile = _tile_shape(model, tile_size, source.shape)
    if not isinstance(overlap, Real) or not 0 <= overlap < 1:
        raise ValueError(f"overlap must be a fraction in [0, 1), not {overlap!r}.")
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {', '.join(BLENDS)}; got {blend!r}.")
    if batch_size is not None and (not isinstance(batch_size, Integral) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None, not {batch_size!r}.")
    small = [axis for axis in range(3) if source.shape[axis] < tile[axis]]
    if small:
        raise ValueError(
            f"The tomogram of shape {source.shape} is smaller than a tile {tile} along axis "
            f"{small[0]}. Pass a smaller tile_size (the training size "
            f"{tuple(model.input_shape_)} or a size the network accepts), or pad the "
            "tomogram."
        )
    warn_if_voxel_size_differs(model, source)
    if batch_size is None:
        device_type = torch.device(model.device_).type
        voxels = SEGMENTATION_INFERENCE_VOXELS.get(
            device_type, SEGMENTATION_INFERENCE_VOXELS["cpu"]
        )
        batch_size = max(1, voxels // int(np.prod(tile)))
    return _Plan(source.shape, tile, overlap, blend, int(batch_size))


def _tile_shape(model, tile_size, shape) -> tuple[int, int, int]:
    """The tile shape: ``tile_size`` checked against the network, or the default.

    The default keeps the training depth along the first axis (the depth of the blend
    buffers, which span the tomogram's other two axes) and takes the largest multiple of the
    training size, up to :data:`DEFAULT_TILE_EDGE` voxels and within the tomogram, along the
    other two, if the network accepts it (else the training shape). Larger tiles have fewer
    voxels near a border, where the network sees zero padding instead of the tomogram, so
    they agree better with a prediction of the whole volume, and run faster per voxel.
    """
    trained = tuple(int(n) for n in model.input_shape_)
    arch = getattr(model, model._arch_parameter)
    if tile_size is None:
        sides = [
            t * max(1, min(DEFAULT_TILE_EDGE // t, n // t))
            for t, n in zip(trained[1:], shape[1:], strict=True)
        ]
        wider = (trained[0], *sides)
        if wider == trained or not isinstance(arch, str):
            return trained
        try:
            check_segmentation_input_size(arch, wider, **model._knobs())
        except ValueError:
            return trained
        return wider
    sizes = (tile_size,) * 3 if isinstance(tile_size, Integral) else tuple(tile_size)
    if len(sizes) != 3 or not all(isinstance(n, Integral) and n >= 1 for n in sizes):
        raise ValueError(
            f"tile_size must be a positive int or 3 positive ints (D, H, W), not {tile_size!r}."
        )
    if isinstance(arch, str):
        check_segmentation_input_size(arch, sizes, **model._knobs())
    return tuple(int(n) for n in sizes)
