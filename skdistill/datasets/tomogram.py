"""Simulated tomograms: many macromolecules of known class, pose and position in one volume.

:func:`make_tomogram` builds a crowded tomogram the way :func:`make_subtomograms` builds a
subtomogram, in the order of image formation, but over the whole volume: the templates are
rendered at random poses at random positions where they do not overlap, the sum is multiplied
in Fourier space by the CTF and the missing-wedge mask of a tilt series about y (one filter
for the whole tomogram, as a reconstruction has), and white Gaussian noise is added. The
parameters and their accepted ranges are those of the subtomogram simulator
(:mod:`skdistill.datasets.parameters`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path

import numpy as np
import pandas as pd

from ..utils.memory import check_memory
from ._placement import PLACEMENT_TRIES, max_particles_by_volume, place_without_overlap
from .parameters import MIN_SIZE, check_simulated_volumes, check_simulation_parameters
from .physics import (
    apply_fourier_filter,
    ctf,
    missing_wedge_mask,
    random_euler_angles,
    rotation_matrices,
    transform_volumes,
)
from .simulation import CHUNK_SIZE, SimulationPlan, seed_entropy
from .templates import _BOX_FILL, render_assemblies, synthetic_assemblies

__all__ = ["PARTICLE_COLUMNS", "SimulatedTomogram", "make_tomogram", "tomogram_nbytes"]

#: Columns of :attr:`SimulatedTomogram.particles`.
PARTICLE_COLUMNS = ("class", "class_name", "z", "y", "x", "rot", "tilt", "psi")
#: Synthetic classes of a tomogram when neither ``n_classes`` nor ``templates`` is given.
DEFAULT_N_CLASSES = 3
# A user template's extent: the voxels above this share of its largest absolute density.
_SUPPORT_THRESHOLD = 0.01


@dataclass(frozen=True)
class SimulatedTomogram:
    """A simulated tomogram and the particles in it.

    Attributes
    ----------
    volume : ndarray of shape (D, H, W), dtype float32
        The tomogram, axes (z, y, x).
    particles : pandas.DataFrame
        One row per particle, columns :data:`PARTICLE_COLUMNS`: ``class`` (int, index into
        ``class_names``), ``class_name``, ``z``, ``y``, ``x`` (the centre in voxels: voxel
        ``k`` of an axis has its centre at coordinate ``k``) and ``rot``, ``tilt``, ``psi``
        (ZYZ Euler angles in degrees, RELION's ``rlnAngleRot/Tilt/Psi``, the convention of
        :func:`~skdistill.datasets.physics.rotation_matrices` and of
        :func:`~skdistill.datasets.make_subtomograms`).
    class_names : list of str
        Name of each class.
    templates : ndarray of shape (n_classes, box, box, box), dtype float32
        The template densities in their reference pose, without CTF, centred on voxel
        ``box // 2`` (the box each particle is rendered in).
    voxel_size : float
        Voxel size in Å.

    Notes
    -----
    It unpacks as the tomogram and its particle table:
    ``volume, particles = make_tomogram(...)``.
    """

    volume: np.ndarray
    particles: pd.DataFrame
    class_names: list[str]
    templates: np.ndarray
    voxel_size: float

    def __iter__(self) -> Iterator:
        """``volume`` and ``particles``, for ``volume, particles = make_tomogram(...)``."""
        return iter((self.volume, self.particles))


class _TomogramPlan:
    """Everything fixed across the tomograms of one simulation, checked once.

    The parameters are those of :func:`make_tomogram`. Particles are rendered in a cubic box
    in which the largest synthetic template fills the share of the box it fills in
    :func:`~skdistill.datasets.make_subtomograms` (so it keeps its physical size), or the box
    of the user's template maps; :class:`~skdistill.datasets.simulation.SimulationPlan` checks
    the parameters and makes the templates in it.
    """

    def __init__(
        self,
        shape,
        *,
        n_classes,
        templates,
        voxel_size,
        snr,
        tilt_range,
        defocus,
        voltage,
        cs,
    ):
        self.shape = _check_shape(shape)
        n_classes = _n_classes(n_classes, templates)
        # The physical parameters first: the box size is computed from voxel_size.
        check_simulation_parameters(
            n_classes=n_classes,
            size=MIN_SIZE,
            voxel_size=voxel_size,
            snr=snr,
            tilt_range=tilt_range,
            defocus=defocus,
            voltage=voltage,
            cs=cs,
            max_shift=0.0,
            synthetic=False,
        )
        box = _template_box(n_classes, templates, voxel_size)
        self.box = box
        self.snr, self.voxel_size = snr, float(voxel_size)
        self.voltage, self.cs = float(voltage), float(cs)
        self.plan = SimulationPlan(
            n_classes=n_classes,
            size=box,
            voxel_size=voxel_size,
            snr=snr,
            tilt_range=tuple(tilt_range),
            defocus=defocus,
            voltage=voltage,
            cs=cs,
            max_shift=0.0,
            templates=templates,
            entropy=0,
        )
        if self.plan.assemblies is not None:
            self.radii = np.array([a.radius / voxel_size for a in self.plan.assemblies])
        else:
            self.radii = np.array([_support_radius(t) for t in self.plan.templates])
        _check_fits(self.shape, self.radii, self.plan.class_names, voxel_size)
        check_memory(
            tomogram_nbytes(self.shape, box),
            what=f"Simulating a tomogram of {_shape_text(self.shape)} voxels",
            hint="Use a smaller shape.",
        )
        self.description = f"shape={self.shape}, {self.plan.description}"
        self.fourier_filter = (
            ctf(self.shape, voxel_size, defocus=defocus, voltage=voltage, cs=cs)
            * missing_wedge_mask(self.shape, tuple(tilt_range))
        ).astype(np.float32)

    @property
    def class_names(self) -> list[str]:
        return list(self.plan.class_names)

    def check_n_particles(self, n_particles) -> None:
        """Raise ``ValueError`` unless ``n_particles`` is an integer that could fit."""
        if not isinstance(n_particles, Integral) or isinstance(n_particles, bool):
            raise ValueError(f"n_particles must be an integer, got {n_particles!r}.")
        if n_particles < 1:
            raise ValueError(f"n_particles must be at least 1, got {n_particles}.")
        bound = max_particles_by_volume(self.shape, self.radii)
        if n_particles > bound:
            raise ValueError(
                f"n_particles={n_particles} cannot fit without overlap in a tomogram of "
                f"{_shape_text(self.shape)} voxels: even packed as densely as spheres can "
                f"be, at most {bound} particles of these classes fit (random placement fits "
                f"about half as many). Ask for fewer particles, a larger shape or a larger "
                "voxel_size (smaller particles in voxels)."
            )

    def simulate(self, n_particles: int, rng: np.random.Generator) -> SimulatedTomogram:
        """A tomogram with ``n_particles`` particles, balanced over the classes."""
        self.check_n_particles(n_particles)
        n_classes = self.plan.n_classes
        classes = rng.permutation(np.arange(n_particles) % n_classes)
        positions, n_placed = place_without_overlap(self.radii[classes], self.shape, rng)
        if n_placed < n_particles:
            raise ValueError(
                f"Only {n_placed} of the {n_particles} particles fit without overlap in a "
                f"tomogram of {_shape_text(self.shape)} voxels (particles up to "
                f"{2 * self.radii.max() * self.voxel_size:.0f} Å across at voxel_size="
                f"{self.voxel_size:g} Å; no free place found for the next one in "
                f"{PLACEMENT_TRIES} random tries). Ask for fewer particles (about {n_placed} "
                "fit), a larger shape or a larger voxel_size."
            )
        angles = random_euler_angles(n_particles, rng)
        volume = np.zeros(self.shape, dtype=np.float32)
        centres = np.round(positions).astype(np.int64)
        for start in range(0, n_particles, CHUNK_SIZE):
            chunk = slice(start, start + CHUNK_SIZE)
            boxes = self._render(classes[chunk], angles[chunk], positions[chunk] - centres[chunk])
            for box, centre in zip(boxes, centres[chunk], strict=True):
                target, source = _overlap(centre, self.box, self.shape)
                volume[target] += box[source]
        # Overflow (huge user templates) is reported below, with the parameters.
        with np.errstate(over="ignore", invalid="ignore"):
            signal = apply_fourier_filter(volume, self.fourier_filter)
            del volume
            if self.snr is not None:
                noise_std = math.sqrt(self._particle_variance(signal, centres) / self.snr)
                noise = rng.standard_normal(self.shape, dtype=np.float32)
                noise *= np.float32(noise_std)
                signal += noise
        check_simulated_volumes(signal[None], np.zeros(1, dtype=np.int64), self.description)
        names = self.plan.class_names
        particles = pd.DataFrame(
            {
                "class": classes.astype(np.int64),
                "class_name": [names[c] for c in classes],
                "z": positions[:, 0],
                "y": positions[:, 1],
                "x": positions[:, 2],
                "rot": angles[:, 0],
                "tilt": angles[:, 1],
                "psi": angles[:, 2],
            },
            columns=list(PARTICLE_COLUMNS),
        )
        return SimulatedTomogram(
            volume=signal,
            particles=particles,
            class_names=self.class_names,
            templates=self.plan.templates.copy(),
            voxel_size=self.voxel_size,
        )

    def _render(self, classes: np.ndarray, angles: np.ndarray, shifts: np.ndarray) -> np.ndarray:
        matrices = rotation_matrices(angles)
        if self.plan.assemblies is None:
            return transform_volumes(self.plan.templates[classes], matrices, shifts)
        return render_assemblies(
            [self.plan.assemblies[c] for c in classes],
            matrices,
            shifts,
            self.box,
            self.voxel_size,
            n_subunits=self.plan.max_subunits,
        )

    def _particle_variance(self, signal: np.ndarray, centres: np.ndarray) -> float:
        """Mean variance of the signal in the box of each particle: what ``snr`` refers to."""
        variances = []
        for centre in centres:
            target, _ = _overlap(centre, self.box, self.shape)
            variances.append(float(signal[target].var(dtype=np.float64)))
        return float(np.mean(variances))


def tomogram_nbytes(shape: tuple[int, int, int], box: int) -> int:
    """Estimated peak memory in bytes of simulating one tomogram of ``shape`` voxels.

    The float64 frequency grids of the CTF (their peak, 16 bytes per voxel of the half
    spectrum, comes before the tomogram exists), then the tomogram, its real and complex
    spectra, the filter and the noise (4 bytes each per voxel), and a chunk of particle boxes.
    Within 10-20 % above the peak measured with :mod:`tracemalloc` at 64x256x256 to
    128x256x256 voxels (about 20 bytes per voxel).
    """
    voxels = float(math.prod(shape))
    half_spectrum = voxels / 2
    ctf_peak = 5 * 8 * half_spectrum
    simulation_peak = (4 + 4 + 8 + 4) * voxels + 4 * half_spectrum
    return int(max(ctf_peak, simulation_peak) + 2 * CHUNK_SIZE * 4 * float(box) ** 3)


def _check_shape(shape) -> tuple[int, int, int]:
    try:
        values = tuple(shape)
    except TypeError:
        values = ()
    if len(values) != 3 or not all(
        isinstance(n, Integral) and not isinstance(n, bool) and n >= MIN_SIZE for n in values
    ):
        raise ValueError(
            f"shape must be three integers (z, y, x) of at least {MIN_SIZE} voxels, e.g. "
            f"(64, 256, 256); got {shape!r}."
        )
    return tuple(int(n) for n in values)


def _n_classes(n_classes, templates) -> int:
    if templates is not None and not isinstance(templates, (list, tuple)):
        raise ValueError(
            "templates must be a list of 3D arrays or MRC paths (one per class), got "
            f"{type(templates).__name__}."
        )
    if n_classes is None:
        return DEFAULT_N_CLASSES if templates is None else len(templates)
    return n_classes


def _template_box(n_classes: int, templates, voxel_size: float) -> int:
    """Edge of the cubic box a particle is rendered in."""
    if templates is None:
        # The box in which the largest assembly fills _BOX_FILL, as in make_subtomograms:
        # fitted_assemblies then keeps every assembly at its physical size.
        largest = max(a.radius for a in synthetic_assemblies(n_classes))
        return max(MIN_SIZE, math.ceil(largest / (_BOX_FILL * voxel_size)))
    return max(MIN_SIZE, *(_template_edge(t, voxel_size) for t in templates))


def _template_edge(template, voxel_size: float) -> int:
    """Longest edge in voxels at ``voxel_size`` of a template array or MRC map."""
    if isinstance(template, (str, Path)):
        from ..io.mrc import read_header

        if not Path(template).is_file():
            raise FileNotFoundError(f"Template map {str(template)!r} does not exist.")
        info = read_header(template)
        scale = 1.0 if info.voxel_size is None else info.voxel_size / voxel_size
        return round(max(info.shape) * scale)
    return max(np.shape(template), default=0)


def _support_radius(template: np.ndarray) -> float:
    """Distance in voxels from the box centre to the farthest voxel holding density."""
    magnitude = np.abs(template)
    support = np.argwhere(magnitude > _SUPPORT_THRESHOLD * magnitude.max())
    if len(support) == 0:
        raise ValueError("A template is zero everywhere; pass templates that hold a density.")
    return float(np.linalg.norm(support - template.shape[0] // 2, axis=1).max()) + 0.5


def _check_fits(shape, radii: np.ndarray, class_names: list[str], voxel_size: float) -> None:
    largest = int(np.argmax(radii))
    needed = math.floor(2 * radii[largest]) + 1
    if min(shape) < needed:
        raise ValueError(
            f"shape={shape} is too small: the class {class_names[largest]!r} is "
            f"{2 * radii[largest]:.1f} voxels across at voxel_size={voxel_size:g} Å, so every "
            f"axis needs at least {needed} voxels. Use a larger shape or a larger voxel_size."
        )


def _overlap(centre: np.ndarray, box: int, shape) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Slices of the tomogram and of a particle box centred (voxel ``box // 2``) on ``centre``."""
    target, source = [], []
    for c, n in zip(centre, shape, strict=True):
        start = int(c) - box // 2
        low, high = max(start, 0), min(start + box, n)
        target.append(slice(low, high))
        source.append(slice(low - start, high - start))
    return tuple(target), tuple(source)


def _shape_text(shape) -> str:
    return "x".join(str(n) for n in shape)


def make_tomogram(
    shape,
    n_particles: int,
    *,
    n_classes: int | None = None,
    templates=None,
    voxel_size: float = 10.0,
    snr: float | None = 0.05,
    tilt_range: tuple[float, float] = (-60, 60),
    defocus: float = -5.0,
    voltage: float = 300.0,
    cs: float = 2.0,
    random_state=None,
) -> SimulatedTomogram:
    """Simulate a crowded tomogram of particles of known class, pose and position.

    The particles are balanced over the classes (as evenly as ``n_particles`` allows, in a
    random order). Each is rendered at a uniformly random rotation (SO(3)) and a uniformly
    random position where it overlaps no other particle and lies wholly inside the tomogram:
    its centre is at least its radius (the template's extent out to two subunit widths) from
    every face and at least the sum of the radii from every other centre. The sum is
    multiplied in Fourier space by the phase-contrast transfer function
    (:func:`~skdistill.datasets.physics.ctf`) and the missing-wedge mask of a single-axis tilt
    series about y (:func:`~skdistill.datasets.physics.missing_wedge_mask`), both over the
    whole tomogram; then white Gaussian noise is added.

    The signal-to-noise ratio means what it means in
    :func:`~skdistill.datasets.make_subtomograms`: in a subtomogram around a particle, the
    variance of the signal over that of the noise. Here the noise is one level for the whole
    tomogram, set from the signal's variance in the box around each particle (the box in
    which the largest template fills 80 %, as in ``make_subtomograms``) averaged over the
    particles, so the empty space between particles does not dilute it.

    Parameters
    ----------
    shape : (int, int, int)
        Tomogram shape in voxels, ordered (z, y, x); each at least the largest particle's
        diameter plus one voxel.
    n_particles : int
        Number of particles. A ``ValueError`` says how many fit if they do not.
    n_classes : int or None, default=None
        Number of classes: the first ``n_classes`` synthetic templates; None for 3, or one
        class per template with ``templates``.
    templates : list of (ndarray or path-like), default=None
        Own template maps, as in :func:`~skdistill.datasets.make_subtomograms` (3D arrays at
        ``voxel_size`` or MRC files); their extent (voxels above 1 % of the largest density)
        sets how close particles come.
    voxel_size : float, default=10.0
        Voxel size in Å, in [0.5, 100].
    snr : float or None, default=0.05
        Signal-to-noise ratio (variance ratio) around a particle, in [1e-6, 1e6]; None for a
        noise-free tomogram: the same particles in the same poses and places as any ``snr``
        with the same ``random_state``.
    tilt_range : (float, float), default=(-60, 60)
        Tilt angles in degrees; the rest of Fourier space is the missing wedge.
    defocus : float, default=-5.0
        Defocus in µm, negative for underfocus: in [-20, -0.1].
    voltage : float, default=300.0
        Acceleration voltage in kV, in [60, 1000].
    cs : float, default=2.0
        Spherical aberration in mm, in [0, 10].
    random_state : int, RandomState instance or None, default=None
        Seed of the simulation.

    Returns
    -------
    SimulatedTomogram
        ``volume`` (float32, (z, y, x)), ``particles`` (a DataFrame: ``class``,
        ``class_name``, ``z``, ``y``, ``x`` in voxels, ``rot``, ``tilt``, ``psi`` in degrees),
        ``class_names``, ``templates`` and ``voxel_size``.

    Raises
    ------
    ValueError
        If a parameter is out of its range, the shape is too small for a particle, or the
        particles do not fit without overlap (saying how many do).
    MemoryError
        If this machine lacks the memory for the simulation (before any work).

    See Also
    --------
    write_relion_project : Tomograms like this one written as a RELION 5 project.

    Examples
    --------
    >>> from skdistill.datasets import make_tomogram
    >>> tomogram = make_tomogram((48, 96, 96), 6, random_state=0)
    >>> tomogram.volume.shape, tomogram.volume.dtype
    ((48, 96, 96), dtype('float32'))
    >>> sorted(tomogram.particles["class"].tolist())
    [0, 0, 1, 1, 2, 2]
    """
    plan = _TomogramPlan(
        shape,
        n_classes=n_classes,
        templates=templates,
        voxel_size=voxel_size,
        snr=snr,
        tilt_range=tilt_range,
        defocus=defocus,
        voltage=voltage,
        cs=cs,
    )
    rng = np.random.default_rng(np.random.SeedSequence(seed_entropy(random_state)))
    return plan.simulate(n_particles, rng)
