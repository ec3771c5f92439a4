"""Image-formation steps of the subtomogram simulator, each usable on its own.

Axes are ordered ``(z, y, x)``; the beam runs along z and the tilt axis is y. Fourier-space
filters are defined on the grid of :func:`numpy.fft.rfftn` over the last three axes, so one
filter applies to a whole batch of volumes with batched real FFTs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.fft
from scipy.ndimage import affine_transform
from scipy.spatial.transform import Rotation

__all__ = [
    "add_noise",
    "apply_fourier_filter",
    "ctf",
    "electron_wavelength",
    "frequency_grid",
    "missing_wedge_mask",
    "random_euler_angles",
    "random_shifts",
    "rotation_matrices",
    "transform_volumes",
]


def electron_wavelength(voltage: float) -> float:
    """Relativistic electron wavelength in Å for an acceleration voltage in kV.

    >>> round(electron_wavelength(300.0), 5)
    0.01969
    """
    volts = voltage * 1e3
    return float(12.2643 / np.sqrt(volts * (1 + 0.978466e-6 * volts)))


def frequency_grid(
    size: int | Sequence[int], voxel_size: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spatial frequencies ``(k_z, k_y, k_x)`` in 1/Å on the ``rfftn`` grid of a box.

    ``size`` is the edge of a cubic box or the shape ``(D, H, W)`` of any box (a tomogram);
    the grids are sparse (broadcastable to ``(D, H, W // 2 + 1)``).
    """
    depth, height, width = _box_shape(size)
    return np.meshgrid(
        np.fft.fftfreq(depth, d=voxel_size),
        np.fft.fftfreq(height, d=voxel_size),
        np.fft.rfftfreq(width, d=voxel_size),
        indexing="ij",
        sparse=True,
    )


def _box_shape(size: int | Sequence[int]) -> tuple[int, int, int]:
    """``(D, H, W)`` of a cubic edge or a shape."""
    if np.ndim(size) == 0:
        return (int(size),) * 3
    depth, height, width = (int(n) for n in size)
    return depth, height, width


def ctf(
    size: int | Sequence[int],
    voxel_size: float,
    *,
    defocus: float = -5.0,
    voltage: float = 300.0,
    cs: float = 2.0,
    envelope: float = 0.4,
) -> np.ndarray:
    """Phase-contrast transfer function with a Gaussian envelope, on the ``rfftn`` grid.

    ``CTF(k) = sin(pi / 2 * (Cs * lambda**3 * k**4 - 2 * dz * lambda * k**2))`` times
    ``exp(-k**2 / (2 * sigma**2))`` with ``sigma = envelope * Nyquist``.

    Parameters
    ----------
    size : int or (int, int, int)
        Edge length of the cubic box in voxels, or the shape ``(D, H, W)`` of any box.
    voxel_size : float
        Voxel size in Å.
    defocus : float, default=-5.0
        Defocus ``dz`` in µm (negative: underfocus, as in the papers' simulations).
    voltage : float, default=300.0
        Acceleration voltage in kV.
    cs : float, default=2.0
        Spherical aberration in mm.
    envelope : float, default=0.4
        Envelope width as a fraction of the Nyquist frequency.

    Returns
    -------
    ndarray of shape (size, size, size // 2 + 1), or (D, H, W // 2 + 1) for a shape
    """
    kz, ky, kx = frequency_grid(size, voxel_size)
    k2 = kz**2 + ky**2 + kx**2
    wavelength = electron_wavelength(voltage)
    phase = np.pi / 2 * (cs * 1e7 * wavelength**3 * k2**2 - 2 * defocus * 1e4 * wavelength * k2)
    sigma = envelope / (2 * voxel_size)
    return np.sin(phase) * np.exp(-k2 / (2 * sigma**2))


def missing_wedge_mask(
    size: int | Sequence[int], tilt_range: tuple[float, float] = (-60.0, 60.0)
) -> np.ndarray:
    """Fourier samples a single-axis tilt series about y records, on the ``rfftn`` grid.

    A tilt by angle ``a`` samples the central plane through the k_y axis whose normal is the
    tilted beam; the sampled planes cover the directions in the (k_x, k_z) plane within
    ``tilt_range`` of the k_x axis. The rest, a wedge around k_z, is the missing wedge.

    Parameters
    ----------
    size : int or (int, int, int)
        Edge length of the cubic box, or the shape ``(D, H, W)`` of any box (voxels are
        cubic, so the wedge's angles are the same in voxel and physical units).
    tilt_range : (float, float), default=(-60, 60)
        Lowest and highest tilt angle in degrees.

    Returns
    -------
    ndarray of bool, shape (size, size, size // 2 + 1), or (D, H, W // 2 + 1) for a shape
        True where data are measured (the origin included).
    """
    low, high = tilt_range
    if not -90 <= low < high <= 90:
        raise ValueError(f"tilt_range must satisfy -90 <= low < high <= 90, got {tilt_range}.")
    kz, _, kx = frequency_grid(size, 1.0)
    # Angle of (k_x, k_z) from the k_x axis, folded to [-90, 90): a plane and its
    # Friedel mate are the same measurement.
    angle = np.degrees(np.arctan2(kz, kx))
    angle = (angle + 90) % 180 - 90
    measured = (angle >= low) & (angle <= high)
    measured = measured | ((kx == 0) & (kz == 0))
    depth, height, width = _box_shape(size)
    return np.broadcast_to(measured, (depth, height, width // 2 + 1)).copy()


def apply_fourier_filter(volumes: np.ndarray, fourier_filter: np.ndarray) -> np.ndarray:
    """Multiply the Fourier transforms of ``volumes`` (last three axes) by a filter.

    Parameters
    ----------
    volumes : ndarray of shape (..., D, H, W)
        Real volumes.
    fourier_filter : ndarray of shape (D, H, W // 2 + 1)
        Filter on the ``rfftn`` grid (e.g. ``ctf(...) * missing_wedge_mask(...)``).

    Returns
    -------
    ndarray of the same shape as ``volumes``, dtype float32
    """
    # scipy.fft keeps float32 in single precision (numpy.fft promotes to float64). One
    # transform per volume: a batched transform vectorises across volumes, which rounds a
    # volume differently depending on the batch it is in (seen at 32^3).
    volumes = np.asarray(volumes, dtype=np.float32)
    shape = volumes.shape[-3:]
    fourier_filter = fourier_filter.astype(np.float32, copy=False)
    flat = volumes.reshape(-1, *shape)
    out = np.empty(flat.shape, dtype=np.float32)
    for i, volume in enumerate(flat):
        out[i] = scipy.fft.irfftn(scipy.fft.rfftn(volume) * fourier_filter, s=shape)
    return out.reshape(volumes.shape)


def add_noise(
    volumes: np.ndarray, snr: float, rng: np.random.Generator | Sequence[np.random.Generator]
) -> np.ndarray:
    """Add white Gaussian noise so that ``var(signal) / var(noise) == snr`` per volume.

    Parameters
    ----------
    volumes : ndarray of shape (n, D, H, W)
        Noise-free signal (after CTF and missing wedge).
    snr : float
        Signal-to-noise ratio, > 0.
    rng : numpy.random.Generator or sequence of them
        Source of the noise; one generator per volume makes each volume's noise independent of
        the others in the batch.

    Returns
    -------
    ndarray of the same shape, dtype float32
    """
    if snr <= 0:
        raise ValueError(f"snr must be > 0 (or None for noise-free volumes), got {snr}.")
    axes = tuple(range(1, volumes.ndim))
    std = np.sqrt(volumes.var(axis=axes, keepdims=True) / snr)
    if isinstance(rng, np.random.Generator):
        noise = rng.standard_normal(volumes.shape, dtype=np.float32)
    else:
        if len(rng) != len(volumes):
            raise ValueError(f"Got {len(rng)} generators for {len(volumes)} volumes.")
        noise = np.stack([g.standard_normal(volumes.shape[1:], dtype=np.float32) for g in rng])
    return (volumes + std * noise).astype(np.float32, copy=False)


def random_euler_angles(n: int, rng: np.random.Generator) -> np.ndarray:
    """Uniformly random rotations in SO(3) as ZYZ Euler angles in degrees (RELION's
    ``rlnAngleRot``, ``rlnAngleTilt``, ``rlnAnglePsi``).

    Returns
    -------
    ndarray of shape (n, 3)
    """
    return Rotation.random(n, random_state=rng).as_euler("ZYZ", degrees=True)


def random_shifts(n: int, size: int, max_shift: float, rng: np.random.Generator) -> np.ndarray:
    """Uniform random offsets within ``+-max_shift * size`` voxels along each axis.

    Returns
    -------
    ndarray of shape (n, 3)
        Offsets in voxels, ordered (z, y, x).
    """
    return rng.uniform(-max_shift * size, max_shift * size, size=(n, 3))


def rotation_matrices(angles: np.ndarray) -> np.ndarray:
    """Rotation matrices, acting on (x, y, z) column vectors, of ZYZ Euler angles in degrees.

    The matrix is ``Rz(rot) @ Ry(tilt) @ Rz(psi)`` (intrinsic ZYZ), the form of RELION's
    ``rlnAngleRot``, ``rlnAngleTilt`` and ``rlnAnglePsi``.

    Parameters
    ----------
    angles : ndarray of shape (n, 3)
        ``(rot, tilt, psi)`` in degrees.

    Returns
    -------
    ndarray of shape (n, 3, 3)
    """
    return Rotation.from_euler("ZYZ", np.asarray(angles), degrees=True).as_matrix()


def transform_volumes(volumes: np.ndarray, rotations: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Rotate and shift volumes about the box centre by trilinear resampling.

    The output at position ``p`` is the input at ``R.T @ (p - c - t) + c``, with ``c`` the
    centre voxel ``size // 2``: the same pose convention as the rendering of Gaussian
    assemblies. Used for user-supplied template maps; voxels outside the input are zero.

    Parameters
    ----------
    volumes : ndarray of shape (n, D, H, W)
        Cubic volumes.
    rotations : ndarray of shape (n, 3, 3)
        Rotation matrices acting on (x, y, z) vectors (see :func:`rotation_matrices`).
    shifts : ndarray of shape (n, 3)
        Offsets in voxels, ordered (z, y, x).

    Returns
    -------
    ndarray of shape (n, D, H, W), dtype float32
    """
    center = np.full(3, volumes.shape[-1] // 2, dtype=float)
    out = np.empty(volumes.shape, dtype=np.float32)
    for i, (volume, rotation, shift) in enumerate(zip(volumes, rotations, shifts, strict=True)):
        # Reverse the axis order: the matrices act on (x, y, z), the arrays are (z, y, x).
        inverse = rotation[::-1, ::-1].T
        offset = center - inverse @ (center + shift)
        out[i] = affine_transform(volume, inverse, offset=offset, order=1, mode="constant")
    return out
