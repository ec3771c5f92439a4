"""Synthetic macromolecule templates: symmetric assemblies of Gaussian subunits.

These templates are **synthetic**. They stand in for the atomic maps (PDB → Situs-like density)
of the papers' simulations: 23 assemblies of 2-28 Gaussian subunits of 5-30 nm overall size,
with cyclic, dihedral, cubic and helical symmetries. Some classes are easy to tell apart (a single
globule versus an icosahedral shell); some are hard (a six- versus a seven-membered ring of the
same radius, two dihedral assemblies differing by one subunit per ring), as with real complexes.

An assembly is kept as subunit centres, widths and amplitudes, so the simulator renders it
directly at any pose (rotating centres instead of resampling voxels is what makes it fast).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from threadpoolctl import ThreadpoolController

__all__ = [
    "N_SYNTHETIC_TEMPLATES",
    "GaussianAssembly",
    "load_template_maps",
    "make_templates",
    "render_assemblies",
    "synthetic_assemblies",
]

#: Number of hand-designed assemblies; more classes are filled with seeded random clusters.
N_SYNTHETIC_TEMPLATES = 23

#: Share of the box (as a radius: 0.4 = 80 % of the edge) that the largest assembly may fill;
#: if a box is smaller, all assemblies shrink by one common factor so relative sizes stay.
_BOX_FILL = 0.4


@dataclass(frozen=True)
class GaussianAssembly:
    """An assembly of isotropic Gaussian subunits.

    Attributes
    ----------
    name : str
        Class name, e.g. ``"C7-ring"``.
    centers : ndarray of shape (k, 3)
        Subunit centres in Å, ordered (x, y, z), relative to the assembly's centre.
    sigmas : ndarray of shape (k,)
        Subunit widths (Gaussian standard deviations) in Å.
    """

    name: str
    centers: np.ndarray
    sigmas: np.ndarray

    @property
    def radius(self) -> float:
        """Radius in Å enclosing the subunits out to two standard deviations."""
        return float(np.max(np.linalg.norm(self.centers, axis=1) + 2 * self.sigmas))

    def scaled(self, factor: float) -> GaussianAssembly:
        """The same assembly with all lengths multiplied by ``factor``."""
        return replace(self, centers=self.centers * factor, sigmas=self.sigmas * factor)


def _ring(n: int, radius: float, z: float = 0.0, phase: float = 0.0) -> np.ndarray:
    angles = phase + 2 * np.pi * np.arange(n) / n
    return np.column_stack([radius * np.cos(angles), radius * np.sin(angles), np.full(n, z)])


def _dihedral(n: int, radius: float, separation: float) -> np.ndarray:
    return np.vstack(
        [_ring(n, radius, separation / 2), _ring(n, radius, -separation / 2, np.pi / n)]
    )


def _helix(n: int, radius: float, rise: float, twist_degrees: float) -> np.ndarray:
    angles = np.radians(twist_degrees) * np.arange(n)
    z = rise * (np.arange(n) - (n - 1) / 2)
    return np.column_stack([radius * np.cos(angles), radius * np.sin(angles), z])


def _polyhedron(name: str, radius: float) -> np.ndarray:
    golden = (1 + np.sqrt(5)) / 2
    signs = np.array([-1.0, 1.0])
    if name == "tetrahedron":
        vertices = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=float)
    elif name == "octahedron":
        vertices = np.vstack([np.eye(3), -np.eye(3)])
    elif name == "cube":
        vertices = np.array(np.meshgrid(signs, signs, signs)).reshape(3, -1).T
    elif name == "icosahedron":
        vertices = np.array(
            [
                point
                for a in signs
                for b in signs
                for point in ([0, a, b * golden], [a, b * golden, 0], [b * golden, 0, a])
            ]
        )
    else:  # dodecahedron
        cube = np.array(np.meshgrid(signs, signs, signs)).reshape(3, -1).T
        inverse = 1 / golden
        rest = np.array(
            [
                point
                for a in signs
                for b in signs
                for point in (
                    [0, a * inverse, b * golden],
                    [a * inverse, b * golden, 0],
                    [b * golden, 0, a * inverse],
                )
            ]
        )
        vertices = np.vstack([cube, rest])
    return radius * vertices / np.linalg.norm(vertices[0])


def _line(n: int, spacing: float) -> np.ndarray:
    return np.column_stack([np.zeros(n), np.zeros(n), spacing * (np.arange(n) - (n - 1) / 2)])


def _designed() -> list[tuple[str, np.ndarray, float]]:
    """The 23 designed assemblies as (name, centres in Å, subunit sigma in Å).

    Ordered so that the first few classes already differ in shape and size: a simulation with
    ``n_classes=4`` gets a globule, a ring, a filament and a cubic shell.
    """
    origin = np.zeros((1, 3))
    return [
        ("globule", origin, 32.0),
        ("C6-ring", _ring(6, 60), 20.0),
        ("actin-like-filament", _helix(9, 22, 27.5, -166.6), 18.0),
        ("tetrahedron", _polyhedron("tetrahedron", 55), 24.0),
        ("dimer", _line(2, 55), 24.0),
        ("C7-ring", _ring(7, 60), 20.0),
        ("D3", _dihedral(3, 45, 50), 20.0),
        ("icosahedral-shell", _polyhedron("icosahedron", 80), 20.0),
        ("C3-trimer", _ring(3, 40), 22.0),
        ("D4", _dihedral(4, 50, 50), 20.0),
        ("octahedron", _polyhedron("octahedron", 60), 22.0),
        ("proteasome-like", np.vstack([_ring(7, 50, z) for z in (-52.5, -17.5, 17.5, 52.5)]), 16.0),
        ("small-globule", origin, 14.0),
        ("C5-ring", _ring(5, 55), 20.0),
        ("rod", _line(5, 35), 18.0),
        ("cube", _polyhedron("cube", 60), 20.0),
        ("D6", _dihedral(6, 60, 50), 18.0),
        ("dodecahedral-shell", _polyhedron("dodecahedron", 100), 18.0),
        ("C4-ring", _ring(4, 50), 20.0),
        ("L-shape", np.vstack([_line(3, 32), [[32, 0, -32], [64, 0, -32]]]), 18.0),
        ("T-shape", np.vstack([_line(4, 32), [[32, 0, 48], [-32, 0, 48]]]), 18.0),
        ("ring-with-core", np.vstack([_ring(8, 95), origin]), 22.0),
        ("D2", _dihedral(2, 40, 50), 22.0),
    ]


def _random_cluster(index: int) -> tuple[str, np.ndarray, float]:
    """A seeded random cluster of 3-12 subunits, for classes beyond the designed 23."""
    rng = np.random.default_rng(index)
    n = int(rng.integers(3, 13))
    centers = rng.normal(size=(n, 3))
    centers *= rng.uniform(30, 90) / np.linalg.norm(centers, axis=1).max()
    return f"cluster-{index}", centers, float(rng.uniform(14, 26))


def synthetic_assemblies(n_classes: int = 23) -> list[GaussianAssembly]:
    """The first ``n_classes`` synthetic assemblies, at their physical size.

    Parameters
    ----------
    n_classes : int, default=23
        Number of classes. The first 23 are hand-designed; further ones are seeded random
        clusters, so any ``n_classes`` gives the same assemblies every time.

    Returns
    -------
    list of GaussianAssembly

    Examples
    --------
    >>> [a.name for a in synthetic_assemblies(4)]
    ['globule', 'C6-ring', 'actin-like-filament', 'tetrahedron']
    """
    if n_classes < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}.")
    specs = _designed()[:n_classes]
    specs += [_random_cluster(i) for i in range(N_SYNTHETIC_TEMPLATES, n_classes)]
    return [
        GaussianAssembly(name, centers - np.mean(centers, axis=0), np.full(len(centers), sigma))
        for name, centers, sigma in specs
    ]


def fitted_assemblies(n_classes: int, size: int, voxel_size: float) -> list[GaussianAssembly]:
    """Synthetic assemblies shrunk by one common factor if the largest does not fit the box."""
    assemblies = synthetic_assemblies(n_classes)
    largest = max(assembly.radius for assembly in assemblies)
    factor = min(1.0, _BOX_FILL * size * voxel_size / largest)
    return [assembly.scaled(factor) for assembly in assemblies]


def render_assemblies(
    assemblies: list[GaussianAssembly],
    rotations: np.ndarray,
    shifts: np.ndarray,
    size: int,
    voxel_size: float,
    n_subunits: int | None = None,
) -> np.ndarray:
    """Render assemblies at given poses: density of each rotated, shifted assembly in a box.

    Each subunit is a separable 3D Gaussian, so a volume is a sum of outer products of three
    1D profiles: one batched matrix product per batch, no voxel resampling.

    Parameters
    ----------
    assemblies : list of GaussianAssembly
        One assembly per volume.
    rotations : ndarray of shape (n, 3, 3)
        Rotation matrices acting on (x, y, z) column vectors.
    shifts : ndarray of shape (n, 3)
        Offsets of the assembly centre from the box centre (voxel ``size // 2``) in voxels,
        ordered (z, y, x).
    size : int
        Box edge in voxels.
    voxel_size : float
        Voxel size in Å.
    n_subunits : int, optional
        Pad every assembly to this many subunits (zero amplitude). A fixed value makes each
        volume's floating-point arithmetic independent of the other assemblies in the batch;
        default: the most subunits among ``assemblies``.

    Returns
    -------
    ndarray of shape (n, size, size, size), dtype float32
        Peak amplitude 1 per subunit.
    """
    n = len(assemblies)
    k = max(len(a.sigmas) for a in assemblies) if n_subunits is None else n_subunits
    centers = np.zeros((n, k, 3))
    sigmas = np.ones((n, k))
    amplitudes = np.zeros((n, k), dtype=np.float32)
    for i, assembly in enumerate(assemblies):
        m = len(assembly.sigmas)
        centers[i, :m], sigmas[i, :m], amplitudes[i, :m] = assembly.centers, assembly.sigmas, 1
    # Rotate centres (x, y, z), convert to voxels ordered (z, y, x), add the shift.
    positions = np.einsum("nij,nkj->nki", rotations, centers)[..., ::-1] / voxel_size
    positions += shifts[:, None, :] + size // 2
    grid = np.arange(size, dtype=float)
    profiles = np.exp(
        -((grid - positions[..., None]) ** 2) / (2 * (sigmas[..., None, None] / voxel_size) ** 2)
    ).astype(np.float32)  # (n, k, 3 axes, size)
    plane = profiles[:, :, 0, :, None] * (profiles[:, :, 1, None, :] * amplitudes[..., None, None])
    # Multithreaded BLAS rounds differently with the thread count; one thread keeps a volume
    # bit-identical in any process (n_jobs) and costs little at this matrix size.
    with _blas_controller().limit(limits=1, user_api="blas"):
        volumes = np.matmul(plane.reshape(n, k, size * size).transpose(0, 2, 1), profiles[:, :, 2])
    return volumes.reshape(n, size, size, size)


@functools.cache
def _blas_controller() -> ThreadpoolController:
    return ThreadpoolController()


@functools.lru_cache(maxsize=16)
def _cached_templates(n_classes: int, size: int, voxel_size: float) -> tuple:
    assemblies = fitted_assemblies(n_classes, size, voxel_size)
    identity = np.broadcast_to(np.eye(3), (n_classes, 3, 3))
    densities = render_assemblies(assemblies, identity, np.zeros((n_classes, 3)), size, voxel_size)
    densities.setflags(write=False)
    return tuple(assemblies), densities


def make_templates(
    n_classes: int = 23, size: int = 40, voxel_size: float = 9.2
) -> tuple[list[str], np.ndarray]:
    """Synthetic template densities in their reference pose, made once and cached.

    Parameters
    ----------
    n_classes : int, default=23
        Number of classes.
    size : int, default=40
        Box edge in voxels.
    voxel_size : float, default=9.2
        Voxel size in Å.

    Returns
    -------
    class_names : list of str
    templates : ndarray of shape (n_classes, size, size, size), dtype float32

    Examples
    --------
    >>> names, maps = make_templates(3, size=16)
    >>> names, maps.shape
    (['globule', 'C6-ring', 'actin-like-filament'], (3, 16, 16, 16))
    """
    assemblies, densities = _cached_templates(int(n_classes), int(size), float(voxel_size))
    return [a.name for a in assemblies], densities.copy()


def load_template_maps(templates, size: int, voxel_size: float) -> tuple[list[str], np.ndarray]:
    """User-supplied template maps, resampled to the voxel size and centred in the box.

    Parameters
    ----------
    templates : list of (ndarray or path-like)
        3D arrays (taken to be sampled at ``voxel_size`` already) or MRC files (rescaled from
        the voxel size in their header). Each map is centre-cropped or zero-padded to the box.
    size : int
        Box edge in voxels.
    voxel_size : float
        Voxel size in Å.

    Returns
    -------
    class_names : list of str
        File stems for MRC files, ``"template-<i>"`` for arrays.
    templates : ndarray of shape (n_templates, size, size, size), dtype float32
    """
    from scipy.ndimage import zoom

    names, maps = [], []
    for i, template in enumerate(templates):
        if isinstance(template, (str, Path)):
            density, file_voxel_size = _read_map(Path(template))
            if not np.isclose(file_voxel_size, voxel_size):
                density = zoom(density, file_voxel_size / voxel_size, order=1)
            names.append(Path(template).stem)
        else:
            density = np.asarray(template, dtype=np.float32)
            names.append(f"template-{i}")
        if density.ndim != 3:
            raise ValueError(
                f"Template {names[-1]!r} has shape {density.shape}; templates must be 3D maps "
                "(D, H, W)."
            )
        if not np.isfinite(density).all():
            raise ValueError(f"Template {names[-1]!r} contains NaN or infinite values.")
        maps.append(_center_in_box(density, size))
    if not maps:
        raise ValueError("templates is empty; pass at least one 3D map or MRC path.")
    return names, np.stack(maps).astype(np.float32)


def _read_map(path: Path) -> tuple[np.ndarray, float]:
    # skdistill.io's readers check the header, truncation and mode, and name the file.
    from ..io.mrc import read_header, read_volumes

    if not path.is_file():
        raise FileNotFoundError(f"Template map {str(path)!r} does not exist.")
    info = read_header(path)
    if len(info.shape) != 3:
        raise ValueError(
            f"Template map {str(path)!r} holds data of shape {info.shape}; a template is one "
            "3D map."
        )
    if info.voxel_size is None:
        raise ValueError(
            f"Template map {str(path)!r} has no voxel size in its header; set it (e.g. with "
            "mrcfile: mrc.voxel_size = 9.2) or pass the map as an array at the target voxel size."
        )
    return read_volumes(path, np.zeros(1, dtype=np.intp), info.shape)[0], info.voxel_size


def _center_in_box(density: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop or zero-pad each axis of ``density`` to ``size``."""
    box = np.zeros((size, size, size), dtype=np.float32)
    source, target = [], []
    for length in density.shape:
        if length >= size:
            start = (length - size) // 2
            source.append(slice(start, start + size))
            target.append(slice(0, size))
        else:
            start = (size - length) // 2
            source.append(slice(0, length))
            target.append(slice(start, start + length))
    box[tuple(target)] = density[tuple(source)]
    return box
