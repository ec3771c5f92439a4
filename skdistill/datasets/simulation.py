"""Simulated subtomograms: template → pose → CTF → missing wedge → noise.

:func:`make_subtomograms` returns a data set in memory. The command line and the experiments
stream larger ones chunk by chunk with the same building blocks: a :class:`SimulationPlan`
(everything fixed across the samples, checked once), :func:`chunk_indices` and
:func:`simulate_chunks`; any chunking gives the same volumes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from numbers import Integral, Real

import numpy as np
from joblib import Parallel, delayed, effective_n_jobs
from sklearn.utils import Bunch
from sklearn.utils._param_validation import Interval, validate_params

from ..utils.device import draw_seed
from ..utils.memory import check_memory
from .parameters import (
    check_simulated_volumes,
    check_simulation_parameters,
    check_template_sampling,
    simulation_nbytes,
)
from .physics import (
    add_noise,
    apply_fourier_filter,
    ctf,
    missing_wedge_mask,
    random_euler_angles,
    random_shifts,
    rotation_matrices,
    transform_volumes,
)
from .templates import fitted_assemblies, load_template_maps, make_templates, render_assemblies

__all__ = [
    "CHUNK_SIZE",
    "SimulationPlan",
    "check_simulation_memory",
    "chunk_indices",
    "make_subtomograms",
    "seed_entropy",
    "simulate_chunks",
]

#: Volumes simulated per batch: large enough for batched FFTs, small enough to stay in cache.
CHUNK_SIZE = 32


class SimulationPlan:
    """Everything fixed across the samples of one simulation, and the per-sample recipe.

    Sample ``i`` depends only on the plan and ``i``: its pose and noise come from its own
    :class:`numpy.random.SeedSequence` child, and its class from the shuffled block of
    ``n_classes`` samples it falls in. Any split of the indices into chunks or processes
    therefore yields the same arrays. Used by :func:`make_subtomograms` and the command line.

    The parameters are those of :func:`make_subtomograms` (``templates=None``: the synthetic
    ones; ``entropy``: the root seed, see :func:`seed_entropy`). They are checked against the
    accepted ranges (:func:`~skdistill.datasets.parameters.check_simulation_parameters`) and
    the memory of the plan and of one chunk against the available memory before anything
    is made.

    Attributes
    ----------
    class_names : list of str
    templates : ndarray of shape (n_classes, size, size, size)
        Template densities in their reference pose.
    description : str
        The parameters, for messages.

    Raises
    ------
    ValueError
        If a parameter is outside its accepted range.
    MemoryError
        If this machine lacks the memory for the templates and one chunk of volumes.
    """

    def __init__(
        self,
        *,
        n_classes: int,
        size: int,
        voxel_size: float,
        snr: float | None,
        tilt_range: tuple[float, float],
        defocus: float,
        voltage: float,
        cs: float,
        max_shift: float,
        templates,
        entropy: int,
    ):
        check_simulation_parameters(
            n_classes=n_classes,
            size=size,
            voxel_size=voxel_size,
            snr=snr,
            tilt_range=tilt_range,
            defocus=defocus,
            voltage=voltage,
            cs=cs,
            max_shift=max_shift,
            synthetic=False,
        )
        # Before the templates are even described: n_classes may be huge.
        check_simulation_memory(size=size, n_classes=n_classes)
        if templates is None:
            check_template_sampling(n_classes=n_classes, size=size, voxel_size=voxel_size)
        self.size, self.voxel_size, self.snr, self.max_shift = size, voxel_size, snr, max_shift
        self.entropy = entropy
        self.description = (
            f"size={size}, voxel_size={voxel_size:g} Å, snr={snr}, tilt_range={tilt_range}, "
            f"defocus={defocus:g} µm, voltage={voltage:g} kV, cs={cs:g} mm, "
            f"{'synthetic' if templates is None else 'user-supplied'} templates"
        )
        if templates is None:
            self.assemblies = fitted_assemblies(n_classes, size, voxel_size)
            self.max_subunits = max(len(a.sigmas) for a in self.assemblies)
            self.class_names, self.templates = make_templates(n_classes, size, voxel_size)
        else:
            self.assemblies = None
            self.class_names, self.templates = load_template_maps(templates, size, voxel_size)
            if len(self.templates) != n_classes:
                raise ValueError(
                    f"n_classes={n_classes} but {len(self.templates)} templates were given; "
                    f"pass n_classes={len(self.templates)}."
                )
        self.n_classes = n_classes
        self.fourier_filter = (
            ctf(size, voxel_size, defocus=defocus, voltage=voltage, cs=cs)
            * missing_wedge_mask(size, tilt_range)
        ).astype(np.float32)

    def labels(self, indices: np.ndarray) -> np.ndarray:
        """Classes of samples ``indices``: each block of ``n_classes`` holds every class once."""
        blocks, offsets = np.divmod(np.asarray(indices), self.n_classes)
        permutations = {
            block: np.random.Generator(
                np.random.PCG64(np.random.SeedSequence(self.entropy, spawn_key=(1, int(block))))
            ).permutation(self.n_classes)
            for block in np.unique(blocks)
        }
        return np.array(
            [permutations[b][o] for b, o in zip(blocks, offsets, strict=True)], dtype=np.int64
        )

    def simulate(
        self, indices: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Simulate samples ``indices``.

        Returns
        -------
        X : ndarray of shape (k, size, size, size), dtype float32
        y : ndarray of shape (k,), dtype int64
        rotations : ndarray of shape (k, 3)
            ZYZ Euler angles (rot, tilt, psi) in degrees.
        shifts : ndarray of shape (k, 3)
            Offsets from the box centre in voxels, ordered (z, y, x).
        """
        y = self.labels(indices)
        rngs = [
            np.random.Generator(
                np.random.PCG64(np.random.SeedSequence(self.entropy, spawn_key=(0, int(i))))
            )
            for i in indices
        ]
        angles = np.vstack([random_euler_angles(1, rng) for rng in rngs])
        shifts = np.vstack([random_shifts(1, self.size, self.max_shift, rng) for rng in rngs])
        matrices = rotation_matrices(angles)
        if self.assemblies is not None:
            density = render_assemblies(
                [self.assemblies[label] for label in y],
                matrices,
                shifts,
                self.size,
                self.voxel_size,
                n_subunits=self.max_subunits,
            )
        else:
            density = transform_volumes(self.templates[y], matrices, shifts)
        # Overflow (huge user templates) is reported below, with the parameters, not as a
        # warning of numpy's.
        with np.errstate(over="ignore", invalid="ignore"):
            signal = apply_fourier_filter(density, self.fourier_filter)
            X = signal if self.snr is None else add_noise(signal, self.snr, rngs)
        check_simulated_volumes(X, indices, self.description)
        return X, y, angles, shifts

    def check_memory(self, n_samples: int, n_jobs: int | None = 1) -> None:
        """Raise ``MemoryError`` if streaming ``n_samples`` volumes needs more than is free."""
        check_simulation_memory(
            size=self.size, n_classes=self.n_classes, n_samples=n_samples, n_jobs=n_jobs
        )


def chunk_indices(n_samples: int, chunk_size: int = CHUNK_SIZE) -> Iterator[np.ndarray]:
    """Consecutive index chunks covering ``range(n_samples)``."""
    for start in range(0, n_samples, chunk_size):
        yield np.arange(start, min(start + chunk_size, n_samples))


def simulate_chunks(plan, n_samples: int, n_jobs: int | None) -> Iterator[tuple]:
    """``plan.simulate`` of each index chunk of ``range(n_samples)``, in order.

    With ``n_jobs`` other than 1, chunks run in joblib workers and results stream back in
    order as they finish (so a caller can write or count them as they come). The memory of
    ``plan.check_memory`` is checked first: a ``MemoryError`` comes before any work.
    """
    plan.check_memory(n_samples, n_jobs)
    chunks = list(chunk_indices(n_samples))
    if effective_n_jobs(n_jobs) == 1 or len(chunks) == 1:
        return map(plan.simulate, chunks)
    return Parallel(n_jobs=n_jobs, return_as="generator")(
        delayed(plan.simulate)(chunk) for chunk in chunks
    )


def check_simulation_memory(
    *,
    size: int,
    n_classes: int,
    n_samples: int | None = None,
    n_jobs: int | None = 1,
    crowding: int | None = None,
    keep_output: bool = False,
) -> None:
    """Raise ``MemoryError`` if a simulation needs more memory than this machine has free.

    Parameters
    ----------
    size, n_classes : int
        Box edge in voxels and number of templates.
    n_samples : int or None, default=None
        Number of volumes; None for the plan and one chunk.
    n_jobs : int or None, default=1
        As in :func:`simulate_chunks`.
    crowding : int or None, default=None
        Neighbours per volume of segmentation data; None for classification data.
    keep_output : bool, default=False
        All volumes are returned in memory rather than streamed.
    """
    samples = CHUNK_SIZE if n_samples is None else n_samples
    n_chunks = math.ceil(samples / CHUNK_SIZE)
    workers = effective_n_jobs(n_jobs)
    workers = 1 if workers == 1 or n_chunks == 1 else min(workers, n_chunks)
    required = simulation_nbytes(
        size=size,
        n_classes=n_classes,
        n_samples=samples,
        chunk_size=CHUNK_SIZE,
        n_workers=workers,
        crowding=crowding,
        keep_output=keep_output,
    )
    what = (
        f"Simulating volumes of {size}^3 voxels with {n_classes} templates"
        if n_samples is None
        else f"Simulating {n_samples} volumes of {size}^3 voxels"
        + (f" in {workers} processes" if workers > 1 else "")
    )
    hint = "Use a smaller size (box edge in voxels)"
    if workers > 1:
        hint += " or fewer parallel jobs (n_jobs, --jobs)"
    if keep_output:
        hint += ", or fewer samples at a time (skdistill simulate streams them to disk)"
    check_memory(required, what=what, hint=hint + ".")


def seed_entropy(random_state) -> int:
    """The root entropy of a simulation: the integer itself, or drawn from a RandomState."""
    if isinstance(random_state, Integral):
        return int(random_state)
    return draw_seed(random_state)


@validate_params(
    {
        "n_samples": [Interval(Integral, 1, None, closed="left")],
        "n_classes": [Interval(Integral, 1, None, closed="left")],
        "size": [Integral],
        "voxel_size": [Real],
        "snr": [Real, None],
        "tilt_range": [tuple, list],
        "defocus": [Real],
        "voltage": [Real],
        "cs": [Real],
        "max_shift": [Real],
        "templates": [list, tuple, None],
        "random_state": ["random_state"],
        "return_info": ["boolean"],
        "n_jobs": [Integral, None],
    },
    prefer_skip_nested_validation=True,
)
def make_subtomograms(
    n_samples: int = 1000,
    *,
    n_classes: int = 23,
    size: int = 40,
    voxel_size: float = 9.2,
    snr: float | None = 0.05,
    tilt_range: tuple[float, float] = (-60, 60),
    defocus: float = -5.0,
    voltage: float = 300.0,
    cs: float = 2.0,
    max_shift: float = 0.05,
    templates=None,
    random_state=None,
    return_info: bool = False,
    n_jobs: int | None = None,
):
    """Simulate cryo-ET subtomograms of macromolecules in random poses.

    Each sample is made in the order of image formation: the class's template density is
    rendered at a uniformly random rotation (SO(3)) and a random shift within ``±max_shift`` of
    the box; multiplied in Fourier space by the phase-contrast transfer function
    (:func:`~skdistill.datasets.physics.ctf`) and the missing-wedge mask of a single-axis tilt
    series about y (:func:`~skdistill.datasets.physics.missing_wedge_mask`); then white
    Gaussian noise is added so that ``var(signal) / var(noise) == snr`` for each volume (plain
    additive noise after the wedge; AITom splits it before and after the CTF instead).

    The default templates are **synthetic**: assemblies of Gaussian subunits, 5-30 nm across
    (see :mod:`skdistill.datasets.templates`), not atomic models of real complexes.

    Classes are balanced: every block of ``n_classes`` consecutive samples holds each class
    once, in a random order. Sample ``i`` draws from its own :class:`numpy.random.SeedSequence`
    child, so the same ``random_state`` gives identical samples however they are split into
    chunks or jobs, and the first ``k`` samples of a larger simulation equal a simulation of
    ``k`` samples.

    The physical parameters must lie within ranges a microscopist would use (see
    :mod:`skdistill.datasets.parameters`); outside them the volumes would be NaN, infinite,
    constant or without the claimed contrast, so a ``ValueError`` says which parameter is out
    of range instead. A simulation that needs more memory than is available raises
    ``MemoryError`` before it starts, with the amount needed.

    Parameters
    ----------
    n_samples : int, default=1000
        Number of subtomograms.
    n_classes : int, default=23
        Number of classes (the papers' 23). With ``templates``, their number.
    size : int, default=40
        Box edge in voxels, at least 4; with the synthetic templates large enough that their
        narrowest subunit spans half a voxel (Gaussian sigma): at least 14 for 23 classes.
    voxel_size : float, default=9.2
        Voxel size in Å (0.92 nm in the papers), in [0.5, 100]; with the synthetic templates
        at most twice the width of their narrowest subunit (28 Å for 23 classes).
    snr : float or None, default=0.05
        Signal-to-noise ratio (variance ratio) per volume, in [1e-6, 1e6]. ``None`` returns
        the noise-free volumes: the same particles in the same poses as any ``snr`` with the
        same ``random_state``.
    tilt_range : (float, float), default=(-60, 60)
        Tilt angles in degrees, ``-90 <= low < high <= 90``; the rest of Fourier space is the
        missing wedge.
    defocus : float, default=-5.0
        Defocus in µm, negative for underfocus: in [-20, -0.1].
    voltage : float, default=300.0
        Acceleration voltage in kV, in [60, 1000].
    cs : float, default=2.0
        Spherical aberration in mm, in [0, 10].
    max_shift : float, default=0.05
        Largest shift along each axis as a fraction of the box edge, in [0, 0.5).
    templates : list of (ndarray or path-like), default=None
        Own template maps: 3D arrays at ``voxel_size`` or MRC files (resampled from their
        header's voxel size), centred in the box. Rotated by trilinear resampling, which is
        slower than the rendering of the synthetic templates.
    random_state : int, RandomState instance or None, default=None
        Seed of the simulation.
    return_info : bool, default=False
        Also return a :class:`~sklearn.utils.Bunch` describing the simulation.
    n_jobs : int or None, default=None
        Parallel jobs (joblib) over chunks of samples; ``None`` means 1 unless in a
        :func:`joblib.parallel_config` context, ``-1`` all cores.

    Returns
    -------
    X : ndarray of shape (n_samples, size, size, size), dtype float32
        Subtomograms, axes (z, y, x).
    y : ndarray of shape (n_samples,), dtype int64
        Class of each subtomogram, in ``range(n_classes)``.
    info : Bunch
        Only with ``return_info=True``: ``class_names`` (list of str), ``templates`` (ndarray
        ``(n_classes, size, size, size)``, reference pose, no CTF), ``rotations`` (ndarray
        ``(n_samples, 3)``: ZYZ Euler angles ``(rot, tilt, psi)`` in degrees, RELION's
        convention, see :func:`~skdistill.datasets.physics.rotation_matrices`), ``shifts``
        (ndarray ``(n_samples, 3)``: offsets from the centre voxel ``size // 2`` in voxels,
        ordered (z, y, x)), and ``voxel_size``, ``snr``.

    Examples
    --------
    >>> from skdistill.datasets import make_subtomograms
    >>> X, y = make_subtomograms(8, n_classes=4, size=24, random_state=0)
    >>> X.shape, X.dtype, sorted(y.tolist())
    ((8, 24, 24, 24), dtype('float32'), [0, 0, 1, 1, 2, 2, 3, 3])
    """
    plan = SimulationPlan(
        n_classes=n_classes,
        size=size,
        voxel_size=voxel_size,
        snr=snr,
        tilt_range=tuple(tilt_range),
        defocus=defocus,
        voltage=voltage,
        cs=cs,
        max_shift=max_shift,
        templates=templates,
        entropy=seed_entropy(random_state),
    )
    check_simulation_memory(
        size=size, n_classes=n_classes, n_samples=n_samples, n_jobs=n_jobs, keep_output=True
    )
    parts = list(simulate_chunks(plan, n_samples, n_jobs))
    X, y, rotations, shifts = (np.concatenate(values) for values in zip(*parts, strict=True))
    if not return_info:
        return X, y
    info = Bunch(
        class_names=plan.class_names,
        templates=plan.templates,
        rotations=rotations,
        shifts=shifts,
        voxel_size=float(voxel_size),
        snr=snr,
    )
    return X, y, info
