"""Simulated crowded subtomograms with voxel labels: one target among neighbours (SSN3D data)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from numbers import Integral, Real

import numpy as np
from sklearn.utils import Bunch
from sklearn.utils._param_validation import Interval, StrOptions, validate_params

from .parameters import check_segmentation_parameters, check_simulated_volumes
from .physics import (
    add_noise,
    apply_fourier_filter,
    random_euler_angles,
    random_shifts,
    rotation_matrices,
)
from .simulation import SimulationPlan, check_simulation_memory, seed_entropy, simulate_chunks
from .templates import render_assemblies

__all__ = ["SegmentationPlan", "make_segmentation_subtomograms"]

#: Range of the closest approach of a neighbour to the target: the smallest distance between
#: a subunit of each, in units of the sum of their widths (sigmas). At the default threshold
#: (0.5) the labels of two equal subunits touch at 1.18; at 2.5 they are 2.6 sigma apart.
CONTACT_RANGE = (1.2, 2.5)
#: Placements tried per neighbour before one that comes closer than ``CONTACT_RANGE[0]`` to
#: an earlier neighbour is accepted.
PLACEMENT_TRIES = 20
# Spawn key of the per-sample streams; SimulationPlan uses 0 (poses) and 1 (class blocks).
_SAMPLE_STREAM = 2


@dataclass
class SegmentationBatch:
    """Simulated samples with their labels and the poses of every macromolecule in them.

    Attributes
    ----------
    X : ndarray of shape (k, size, size, size), dtype float32
        Images.
    y : ndarray of shape (k, size, size, size), dtype int8
        Label volumes.
    target_classes : ndarray of shape (k,), dtype int64
    rotations, shifts : ndarray of shape (k, 3)
        Pose of each target: ZYZ Euler angles in degrees; offset from the centre voxel in
        voxels, ordered (z, y, x).
    neighbour_classes : ndarray of shape (k, crowding), dtype int64
    neighbour_rotations, neighbour_shifts : ndarray of shape (k, crowding, 3)
        Poses of the neighbours, as for the targets.
    """

    X: np.ndarray
    y: np.ndarray
    target_classes: np.ndarray
    rotations: np.ndarray
    shifts: np.ndarray
    neighbour_classes: np.ndarray
    neighbour_rotations: np.ndarray
    neighbour_shifts: np.ndarray


class SegmentationPlan:
    """Everything fixed across the samples of one segmentation simulation.

    Builds on :class:`~skdistill.datasets.simulation.SimulationPlan` (synthetic assemblies,
    CTF times missing-wedge filter, balanced target classes). Sample ``i`` draws its target pose,
    its neighbours and its noise from its own :class:`numpy.random.SeedSequence` child, so any
    split of the indices into chunks or processes yields the same arrays. The parameters are
    checked as by :func:`make_segmentation_subtomograms` before anything is made.
    """

    def __init__(
        self,
        *,
        n_classes: int,
        size: int,
        voxel_size: float,
        snr: float | None,
        crowding: int,
        labels: str,
        tilt_range: tuple[float, float],
        max_shift: float,
        mask_threshold: float,
        entropy: int,
    ):
        check_segmentation_parameters(
            n_classes=n_classes, crowding=crowding, labels=labels, mask_threshold=mask_threshold
        )
        check_simulation_memory(size=size, n_classes=n_classes, crowding=crowding)
        self.base = SimulationPlan(
            n_classes=n_classes,
            size=size,
            voxel_size=voxel_size,
            snr=snr,
            tilt_range=tilt_range,
            defocus=-5.0,
            voltage=300.0,
            cs=2.0,
            max_shift=max_shift,
            templates=None,
            entropy=entropy,
        )
        self.size, self.voxel_size, self.snr = size, voxel_size, snr
        self.n_classes, self.crowding, self.labels = n_classes, crowding, labels
        self.max_shift, self.mask_threshold, self.entropy = max_shift, mask_threshold, entropy

    def render(self, classes: np.ndarray, angles: np.ndarray, shifts: np.ndarray) -> np.ndarray:
        """Noise-free, pre-CTF densities of macromolecules at given poses.

        Parameters
        ----------
        classes : ndarray of int, shape (...)
        angles, shifts : ndarray of shape (..., 3)
            ZYZ Euler angles in degrees; offsets from the centre voxel in voxels (z, y, x).

        Returns
        -------
        ndarray of shape (..., size, size, size), dtype float32
            Peak amplitude 1 per subunit (see
            :func:`~skdistill.datasets.templates.render_assemblies`).
        """
        classes = np.asarray(classes)
        flat = classes.ravel()
        if flat.size == 0:
            return np.zeros((*classes.shape, *(self.size,) * 3), dtype=np.float32)
        density = render_assemblies(
            [self.base.assemblies[c] for c in flat],
            rotation_matrices(np.reshape(angles, (-1, 3))),
            np.reshape(shifts, (-1, 3)),
            self.size,
            self.voxel_size,
            n_subunits=self.base.max_subunits,
        )
        return density.reshape(*classes.shape, *(self.size,) * 3)

    def simulate(self, indices: np.ndarray) -> SegmentationBatch:
        """Simulate samples ``indices`` (see :func:`make_segmentation_subtomograms`)."""
        indices = np.asarray(indices)
        targets = self.base.labels(indices)
        rngs = [
            np.random.Generator(
                np.random.PCG64(
                    np.random.SeedSequence(self.entropy, spawn_key=(_SAMPLE_STREAM, int(i)))
                )
            )
            for i in indices
        ]
        poses = [self._draw_sample(rng, target) for rng, target in zip(rngs, targets, strict=True)]
        rotations, shifts, near_classes, near_rotations, near_shifts = (
            np.stack(values) for values in zip(*poses, strict=True)
        )
        classes = np.concatenate([targets[:, None], near_classes], axis=1)
        density = self.render(
            classes,
            np.concatenate([rotations[:, None], near_rotations], axis=1),
            np.concatenate([shifts[:, None], near_shifts], axis=1),
        )  # (k, 1 + crowding, size, size, size), the target first
        # Summed in a fixed order, so a sample's image does not depend on its batch.
        total = density[:, 0].copy()
        for j in range(1, density.shape[1]):
            total += density[:, j]
        signal = apply_fourier_filter(total, self.base.fourier_filter)
        X = signal if self.snr is None else add_noise(signal, self.snr, rngs)
        # Only the images: a label volume may rightly be all background.
        check_simulated_volumes(X, indices, f"{self.base.description}, crowding={self.crowding}")
        return SegmentationBatch(
            X=X,
            y=self._label_volumes(density, classes),
            target_classes=targets,
            rotations=rotations,
            shifts=shifts,
            neighbour_classes=near_classes,
            neighbour_rotations=near_rotations,
            neighbour_shifts=near_shifts,
        )

    def check_memory(self, n_samples: int, n_jobs: int | None = 1) -> None:
        """Raise ``MemoryError`` if streaming ``n_samples`` samples needs more than is free."""
        check_simulation_memory(
            size=self.size,
            n_classes=self.n_classes,
            n_samples=n_samples,
            n_jobs=n_jobs,
            crowding=self.crowding,
        )

    def _draw_sample(self, rng: np.random.Generator, target: int) -> tuple[np.ndarray, ...]:
        """Target pose, then neighbour classes, rotations and positions, from one stream.

        The target is drawn first, so it is the same particle in the same pose whatever the
        ``crowding``.
        """
        rotation = random_euler_angles(1, rng)[0]
        shift = random_shifts(1, self.size, self.max_shift, rng)[0]
        if self.crowding == 0:
            return rotation, shift, np.zeros(0, dtype=np.int64), np.zeros((0, 3)), np.zeros((0, 3))
        # Uniform over the other classes: draw from n - 1 and skip the target's index.
        classes = rng.integers(self.n_classes - 1, size=self.crowding)
        classes += classes >= target
        rotations = random_euler_angles(self.crowding, rng)
        target_subunits = self._subunits(target, rotation)
        placed: list[tuple[np.ndarray, np.ndarray]] = []
        offsets = np.zeros((self.crowding, 3))
        for j, (label, angles) in enumerate(zip(classes, rotations, strict=True)):
            offsets[j] = self._place(rng, target_subunits, self._subunits(label, angles), placed)
        return rotation, shift, classes, rotations, shift + offsets

    def _subunits(self, label: int, angles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Subunit centres (voxels, (z, y, x), about the assembly's centre) and widths (voxels)."""
        assembly = self.base.assemblies[label]
        matrix = rotation_matrices(np.reshape(angles, (1, 3)))[0]
        return (assembly.centers @ matrix.T)[:, ::-1] / self.voxel_size, (
            assembly.sigmas / self.voxel_size
        )

    def _place(
        self,
        rng: np.random.Generator,
        target: tuple[np.ndarray, np.ndarray],
        neighbour: tuple[np.ndarray, np.ndarray],
        placed: list[tuple[np.ndarray, np.ndarray]],
    ) -> np.ndarray:
        """Offset of a neighbour from the target's centre, in voxels; appends it to ``placed``.

        The neighbour comes in from far away along a uniformly random direction and stops at
        its first contact with the target: where a subunit pair is ``c * (sigma_i + sigma_j)``
        apart, ``c`` uniform in ``CONTACT_RANGE``. A neighbour whose path misses the target
        (a ring around a small globule) stops where their bounding spheres touch. Directions
        that bring it closer than ``CONTACT_RANGE[0]`` to an earlier neighbour are drawn again,
        up to ``PLACEMENT_TRIES`` times.
        """
        positions, sigmas = neighbour
        bounding = _bounding_radius(*target) + _bounding_radius(*neighbour)
        for _ in range(PLACEMENT_TRIES):
            direction = rng.standard_normal(3)
            direction /= np.linalg.norm(direction)
            contact = rng.uniform(*CONTACT_RANGE)
            distance = _first_contact(target, neighbour, direction, contact)
            offset = (bounding if distance is None else distance) * direction
            if all(
                _closest_approach(other, (positions + offset, sigmas)) >= CONTACT_RANGE[0]
                for other in placed
            ):
                break
        placed.append((positions + offset, sigmas))
        return offset

    def _label_volumes(self, density: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """Target mask, or the class (+1) of the densest macromolecule above the threshold."""
        above = density[:, 0] >= self.mask_threshold
        labels = above.astype(np.int8)
        if self.labels == "target":
            return labels
        labels *= (classes[:, 0] + 1).astype(np.int8)[:, None, None, None]
        # A running maximum over the macromolecules, the target first: a neighbour takes a
        # voxel only where it is strictly denser, so ties go to the target.
        densest = density[:, 0].copy()
        for j in range(1, density.shape[1]):
            denser = density[:, j] > densest
            np.maximum(densest, density[:, j], out=densest)
            take = denser & (density[:, j] >= self.mask_threshold)
            label = (classes[:, j] + 1).astype(np.int8)[:, None, None, None]
            labels = np.where(take, label, labels)
        return labels


def _bounding_radius(positions: np.ndarray, sigmas: np.ndarray) -> float:
    """Radius about the centre enclosing the subunits out to two widths."""
    return float(np.max(np.linalg.norm(positions, axis=1) + 2 * sigmas))


def _closest_approach(
    first: tuple[np.ndarray, np.ndarray], second: tuple[np.ndarray, np.ndarray]
) -> float:
    """Smallest subunit distance between two placed assemblies over the sum of the widths."""
    distances = np.linalg.norm(first[0][:, None] - second[0][None], axis=2)
    return float(np.min(distances / (first[1][:, None] + second[1][None])))


def _first_contact(
    fixed: tuple[np.ndarray, np.ndarray],
    moving: tuple[np.ndarray, np.ndarray],
    direction: np.ndarray,
    contact: float,
) -> float | None:
    """How far along ``direction`` ``moving``, coming in from far away, first touches ``fixed``.

    Subunits ``i`` of ``fixed`` and ``j`` of ``moving`` (centred at ``d * direction``) touch
    when ``|f_i - m_j - d * direction| = contact * (sigma_i + sigma_j)``; the larger root of
    each such quadratic in ``d`` is where that pair last touches on the way in. None when no
    pair ever touches, or only behind the target's centre.
    """
    apart = fixed[0][:, None] - moving[0][None]  # (k_fixed, k_moving, 3)
    reach = contact * (fixed[1][:, None] + moving[1][None])
    along = apart @ direction
    discriminant = along**2 - np.sum(apart**2, axis=2) + reach**2
    touching = discriminant > 0
    if not touching.any():
        return None
    distance = float(np.max(along[touching] + np.sqrt(discriminant[touching])))
    return distance if distance > 0 else None


@validate_params(
    {
        "n_samples": [Interval(Integral, 1, None, closed="left")],
        "size": [Integral],
        "n_classes": [Interval(Integral, 1, None, closed="left")],
        "snr": [Real, None],
        "crowding": [Integral],
        "labels": [StrOptions({"target", "class"})],
        "voxel_size": [Real],
        "tilt_range": [tuple, list],
        "max_shift": [Real],
        "mask_threshold": [Real],
        "random_state": ["random_state"],
        "return_info": ["boolean"],
        "n_jobs": [Integral, None],
    },
    prefer_skip_nested_validation=True,
)
def make_segmentation_subtomograms(
    n_samples: int = 1000,
    *,
    size: int = 40,
    n_classes: int = 23,
    snr: float | None = 0.05,
    crowding: int = 4,
    labels: str = "target",
    voxel_size: float = 9.2,
    tilt_range: tuple[float, float] = (-60, 60),
    max_shift: float = 0.05,
    mask_threshold: float = 0.5,
    random_state=None,
    return_info: bool = False,
    n_jobs: int | None = None,
):
    """Simulate crowded subtomograms with voxel labels for segmentation.

    Each volume holds one **target** macromolecule near the centre and ``crowding``
    **neighbours** of other classes packed around it, as in a crowded cell (the data of the
    SSN3D paper, Liu et al. 2018). The macromolecules are the synthetic assemblies of
    :func:`make_subtomograms`, rendered at uniformly random rotations; the image is made from
    the sum of their densities with the same physics: phase-contrast CTF and missing wedge of
    a tilt series about y, then white Gaussian noise with ``var(signal) / var(noise) == snr``
    per volume (the signal includes the neighbours).

    Placement: the target is shifted by at most ``max_shift * size`` voxels along each axis.
    Each neighbour comes in towards the target from a uniformly random direction and stops at
    first contact: where the closest pair of subunits, one of each, is ``c * (sigma_1 +
    sigma_2)`` apart, ``c`` uniform in [1.2, 2.5]. With the default threshold the labels of
    the two then touch (``c`` near 1.18) or are a few voxels apart, as macromolecules in a
    crowded cell; about 1 neighbour in 12 ends up within one voxel of the target's label.
    Their centres lie 0.2-1.5 box half-widths from the target's (median 0.8 at the defaults)
    and may lie outside the box, so more than half of them are cut by the box edge.
    Neighbours also keep ``c >= 1.2`` from each other when one of 20 random directions allows
    it. Neighbour classes are drawn uniformly from the classes other than the target's, with
    repetition.

    Labels come from the noise-free density before CTF and wedge, in units of one subunit's
    peak amplitude (the output of
    :func:`~skdistill.datasets.templates.render_assemblies`): a voxel belongs to a
    macromolecule where its density is at least ``mask_threshold``. For an isolated Gaussian
    subunit of width ``sigma``, a threshold ``t`` keeps the ball of radius
    ``sigma * sqrt(2 ln(1 / t))``: 0.5 keeps voxels within 1.18 sigma of a subunit centre
    (its full width at half maximum); overlapping subunits of one assembly merge.

    Target classes are balanced as in :func:`make_subtomograms` (every block of ``n_classes``
    samples holds each class once). Sample ``i`` draws its target pose, its neighbours and its
    noise from its own :class:`numpy.random.SeedSequence` child, so the same
    ``random_state`` gives identical samples however they are split into chunks or jobs; the
    target comes first in that stream, so ``crowding``, ``labels`` and ``snr`` (noise is
    drawn last) do not change it.

    Parameters
    ----------
    n_samples : int, default=1000
        Number of subtomograms.
    size : int, default=40
        Box edge in voxels: large enough that the narrowest template subunit spans half a
        voxel, as in :func:`make_subtomograms`.
    n_classes : int, default=23
        Number of macromolecule classes; at least 2 when ``crowding > 0``.
    snr : float or None, default=0.05
        Signal-to-noise ratio (variance ratio) per volume, in [1e-6, 1e6]; ``None`` returns
        noise-free images of the same scenes.
    crowding : int, default=4
        Neighbours per volume, 0 to 32; 0 gives an isolated target.
    labels : {"target", "class"}, default="target"
        ``"target"``: 1 where the target's density is at least ``mask_threshold``, else 0
        (the SSN3D task). ``"class"``: at each voxel, the class index + 1 of the
        macromolecule (target or neighbour) with the highest density there, among those at
        least ``mask_threshold``; ties go to the target; 0 is background.
    voxel_size : float, default=9.2
        Voxel size in Å, in [0.5, 100]; at most twice the narrowest subunit's Gaussian width
        (28 Å for 23 classes).
    tilt_range : (float, float), default=(-60, 60)
        Tilt angles in degrees, ``-90 <= low < high <= 90``; the rest of Fourier space is the
        missing wedge.
    max_shift : float, default=0.05
        Largest shift of the target along each axis as a fraction of the box edge, in
        [0, 0.5).
    mask_threshold : float, default=0.5
        Density threshold of the labels in [0.01, 1], in units of one subunit's peak (see
        above).
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
    y : ndarray of shape (n_samples, size, size, size), dtype int8
        Label volumes: 0/1 for ``labels="target"``, ``0..n_classes`` for ``labels="class"``
        (which needs ``n_classes <= 126`` to fit int8).
    info : Bunch
        Only with ``return_info=True``: ``class_names`` (list of str), ``target_classes``
        (ndarray ``(n_samples,)``), ``rotations`` and ``shifts`` of the targets (ndarrays
        ``(n_samples, 3)``: ZYZ Euler angles ``(rot, tilt, psi)`` in degrees; offsets from the
        centre voxel ``size // 2`` in voxels, ordered (z, y, x)), ``neighbour_classes``
        (ndarray ``(n_samples, crowding)``), ``neighbour_rotations`` and ``neighbour_shifts``
        (ndarrays ``(n_samples, crowding, 3)``, same conventions), and ``voxel_size``,
        ``snr``, ``labels``, ``mask_threshold``.

    See Also
    --------
    make_subtomograms : One centred particle per volume with a class label.

    Examples
    --------
    >>> from skdistill.datasets import make_segmentation_subtomograms
    >>> X, y = make_segmentation_subtomograms(4, size=24, n_classes=5, random_state=0)
    >>> X.shape, X.dtype, y.shape, y.dtype, sorted(set(y.ravel().tolist()))
    ((4, 24, 24, 24), dtype('float32'), (4, 24, 24, 24), dtype('int8'), [0, 1])
    """
    plan = SegmentationPlan(
        n_classes=n_classes,
        size=size,
        voxel_size=voxel_size,
        snr=snr,
        crowding=crowding,
        labels=labels,
        tilt_range=tuple(tilt_range),
        max_shift=max_shift,
        mask_threshold=mask_threshold,
        entropy=seed_entropy(random_state),
    )
    check_simulation_memory(
        size=size,
        n_classes=n_classes,
        n_samples=n_samples,
        n_jobs=n_jobs,
        crowding=crowding,
        keep_output=True,
    )
    parts = list(simulate_chunks(plan, n_samples, n_jobs))
    batch = SegmentationBatch(
        *(
            np.concatenate([getattr(part, field.name) for part in parts])
            for field in fields(SegmentationBatch)
        )
    )
    if not return_info:
        return batch.X, batch.y
    info = Bunch(
        class_names=plan.base.class_names,
        target_classes=batch.target_classes,
        rotations=batch.rotations,
        shifts=batch.shifts,
        neighbour_classes=batch.neighbour_classes,
        neighbour_rotations=batch.neighbour_rotations,
        neighbour_shifts=batch.neighbour_shifts,
        voxel_size=float(voxel_size),
        snr=snr,
        labels=labels,
        mask_threshold=float(mask_threshold),
    )
    return batch.X, batch.y, info
