"""Accepted ranges of the simulation parameters, checked before any work, and of its results.

A simulation whose parameters lie outside these ranges would not fail: it would return NaN,
infinite or constant volumes, or volumes without the contrast the parameters claim (no
phase contrast at zero defocus, templates that fall between the voxels). Both
:func:`~skdistill.datasets.make_subtomograms` and the plans that the command line and the
experiments use directly (:class:`~skdistill.datasets.simulation.SimulationPlan`) call
:func:`check_simulation_parameters`, and every simulated chunk passes
:func:`check_simulated_volumes` before it is returned.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np

from .templates import _BOX_FILL, synthetic_assemblies

__all__ = [
    "CS_RANGE",
    "DEFOCUS_RANGE",
    "MASK_THRESHOLD_RANGE",
    "MAX_CROWDING",
    "MIN_SIZE",
    "MIN_SUBUNIT_SIGMA",
    "SNR_RANGE",
    "VOLTAGE_RANGE",
    "VOXEL_SIZE_RANGE",
    "check_segmentation_parameters",
    "check_simulated_volumes",
    "check_simulation_parameters",
    "check_template_sampling",
    "simulation_nbytes",
]

#: Voxel size in Å: from sub-ångström super-resolution pixels to the 10-30 Å of binned
#: tomograms, with room above. Smaller voxels make the box a few Å wide; larger ones blur
#: the 5-30 nm templates into a few voxels (see also :data:`MIN_SUBUNIT_SIGMA`).
VOXEL_SIZE_RANGE = (0.5, 100.0)
#: Defocus in µm, negative for underfocus (the sign of the CTF's phase here; RELION's
#: ``rlnDefocusU`` is positive for underfocus). Phase contrast needs defocus: at 0 only the
#: spherical aberration gives contrast, 2e-5 of the signal's standard deviation at 5 µm
#: underfocus (23 templates, 40^3, 9.2 Å); at 0.1 µm, 2 %. Tomograms are recorded 0.5-15 µm
#: under focus (phase-plate data near focus).
DEFOCUS_RANGE = (-20.0, -0.1)
#: Spherical aberration in mm: 0 (corrected) up to the 2.0-2.7 mm of common objectives and
#: more for older lenses.
CS_RANGE = (0.0, 10.0)
#: Acceleration voltage in kV: from low-voltage (60-120 kV) to high-voltage (1 MV) microscopes.
VOLTAGE_RANGE = (60.0, 1000.0)
#: Signal-to-noise ratio (variance ratio). Below 1e-6 the signal is under 1/1000 of the noise
#: amplitude: float32 keeps it with fewer than 14 of its 24 significant bits, and at 1e-300
#: the noise variance overflows to NaN and infinity. Above 1e6 the noise is under 1/1000 of
#: the signal amplitude: pass ``snr=None`` for noise-free volumes.
SNR_RANGE = (1e-6, 1e6)
#: Smallest box edge in voxels.
MIN_SIZE = 4
#: Narrowest subunit of a synthetic template, as a Gaussian standard deviation in voxels.
#: Sampled at half a voxel or more, a subunit keeps its density (sum over voxels) within a
#: few percent wherever it falls on the grid; narrower ones alias, and at a tenth of a voxel
#: a subunit falling between voxels vanishes (at 1e9 Å voxels all templates are zero).
MIN_SUBUNIT_SIGMA = 0.5
#: Label threshold of segmentation data, in units of one subunit's peak density: 0.01 keeps
#: voxels within 3 widths (sigmas) of a subunit, out in the tails that the CTF blurs away;
#: lower ones label ever more of the empty space around it (1e-9: 6.4 widths, 38 % of a
#: 16^3 box with one neighbour).
MASK_THRESHOLD_RANGE = (0.01, 1.0)
#: Neighbours per segmentation volume: twelve equal spheres can touch a central one, so
#: beyond a few dozen neighbours pile onto each other instead of crowding the target.
MAX_CROWDING = 32


def check_simulation_parameters(
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
    synthetic: bool = True,
) -> None:
    """Raise ``ValueError`` if a simulation parameter is outside its accepted range.

    Each message names the parameter, its value, the accepted range with its unit, and why.
    The ranges are the module's constants (:data:`VOXEL_SIZE_RANGE`, ...).

    Parameters
    ----------
    n_classes, size, voxel_size, snr, tilt_range, defocus, voltage, cs, max_shift
        As in :func:`~skdistill.datasets.make_subtomograms`.
    synthetic : bool, default=True
        The synthetic templates are used: also check that their narrowest subunit is at least
        :data:`MIN_SUBUNIT_SIGMA` voxels wide at this ``size`` and ``voxel_size``
        (:func:`check_template_sampling`).

    Raises
    ------
    ValueError
        Naming the first parameter out of range.

    Examples
    --------
    >>> check_simulation_parameters(
    ...     n_classes=23, size=40, voxel_size=9.2, snr=0.05, tilt_range=(-60, 60),
    ...     defocus=-5.0, voltage=300.0, cs=2.0, max_shift=0.05)
    >>> check_simulation_parameters(
    ...     n_classes=23, size=40, voxel_size=9.2, snr=0.05, tilt_range=(-60, 60),
    ...     defocus=0.0, voltage=300.0, cs=2.0, max_shift=0.05)
    Traceback (most recent call last):
    ...
    ValueError: defocus=0.0 µm is outside the accepted range [-20, -0.1] µm...
    """
    _check_integer("n_classes", n_classes, 1)
    _check_integer("size", size, MIN_SIZE, unit="voxels")
    _check_range(
        "voxel_size",
        voxel_size,
        VOXEL_SIZE_RANGE,
        "Å",
        "the size of one voxel of the volumes, 1-30 Å in subtomogram work",
    )
    if snr is not None:
        _check_range(
            "snr",
            snr,
            SNR_RANGE,
            "",
            "below, the signal drowns in float32 rounding of the noise (and overflows at "
            "1e-300); above, the noise is negligible: pass snr=None for noise-free volumes",
        )
    _check_tilt_range(tilt_range)
    reason = "negative for underfocus; at 0 there is no phase contrast"
    if _is_number(defocus) and -DEFOCUS_RANGE[1] <= defocus <= -DEFOCUS_RANGE[0]:
        reason += f" (this is an overfocus: did you mean defocus={-defocus:g}?)"
    _check_range("defocus", defocus, DEFOCUS_RANGE, "µm", reason)
    _check_range("voltage", voltage, VOLTAGE_RANGE, "kV", "the acceleration voltage")
    _check_range(
        "cs", cs, CS_RANGE, "mm", "the spherical aberration: 0 for corrected, 2.7 for a Krios"
    )
    if not (_is_number(max_shift) and 0 <= max_shift < 0.5):
        raise ValueError(
            f"max_shift={max_shift!r} is outside the accepted range [0, 0.5): the largest shift "
            "along each axis as a fraction of the box edge, which keeps the particle's centre "
            "in the box."
        )
    if synthetic:
        check_template_sampling(n_classes=n_classes, size=size, voxel_size=voxel_size)


def check_segmentation_parameters(
    *, n_classes: int, crowding: int, labels: str, mask_threshold: float
) -> None:
    """Raise ``ValueError`` if a parameter of the segmentation data is outside its range.

    Parameters
    ----------
    n_classes, crowding, labels, mask_threshold
        As in :func:`~skdistill.datasets.make_segmentation_subtomograms`.

    Raises
    ------
    ValueError
        Naming the first parameter out of range.
    """
    _check_integer(
        "crowding",
        crowding,
        0,
        maximum=MAX_CROWDING,
        unit="neighbours",
        why="more would pile onto each other rather than crowd the target",
    )
    if crowding > 0 and n_classes < 2:
        raise ValueError(
            f"crowding={crowding} needs n_classes >= 2: neighbours are of classes other than "
            "the target's. Pass n_classes >= 2 or crowding=0."
        )
    if labels not in ("target", "class"):
        raise ValueError(f"labels must be 'target' or 'class', got {labels!r}.")
    int8_max = np.iinfo(np.int8).max
    if labels == "class" and n_classes >= int8_max:
        raise ValueError(
            f"labels='class' stores class index + 1 in int8 label volumes, so n_classes must "
            f"be at most {int8_max - 1}, got {n_classes}. Use labels='target' or fewer classes."
        )
    _check_range(
        "mask_threshold",
        mask_threshold,
        MASK_THRESHOLD_RANGE,
        "",
        "in units of one subunit's peak density; 0.01 already labels 3 subunit widths (sigmas) "
        "around each subunit, lower ones the empty space around it",
    )


def simulation_nbytes(
    *,
    size: int,
    n_classes: int,
    n_samples: int,
    chunk_size: int,
    n_workers: int = 1,
    crowding: int | None = None,
    keep_output: bool = False,
    n_subunits: int = 28,
) -> int:
    """Estimated peak memory in bytes of simulating ``n_samples`` volumes of ``size³`` voxels.

    Counts the plan (templates, also in the template cache, and the float64 temporaries of
    the CTF), each worker's copy of the plan and the arrays of one chunk (densities, filtered
    signal, noise and its temporaries; for segmentation data each macromolecule's density and
    the label volumes), the chunks that wait in the parent process, and with ``keep_output``
    the output arrays twice (the chunks and their concatenation). Within 10 % of the peak
    resident memory measured at 48^3-96^3 in one process.

    Parameters
    ----------
    size : int
        Box edge in voxels.
    n_classes : int
        Number of templates.
    n_samples : int
        Number of volumes.
    chunk_size : int
        Volumes simulated together.
    n_workers : int, default=1
        Processes simulating chunks at the same time; 1 means in this process.
    crowding : int or None, default=None
        Neighbours per volume of segmentation data; None for classification data.
    keep_output : bool, default=False
        The volumes are returned in memory (not streamed to disk).
    n_subunits : int, default=28
        Subunits of the largest template (28 for the synthetic ones).

    Returns
    -------
    int
    """
    voxels = float(size) ** 3
    chunk = min(chunk_size, n_samples)
    bodies = 1 if crowding is None else 1 + crowding
    # Bytes per voxel of a chunk's volume, measured with tracemalloc at 64^3: 4 per body's
    # density, 12 for the filtered signal, the noise and the noisy result, and for
    # segmentation data 4 for the summed density and 5 for the label work. The rendering's
    # 2D profile planes (4 bytes per subunit and pixel) are freed before that peak.
    per_voxel = 4 * bodies + 12 + (0 if crowding is None else 9)
    rendering = 4 * bodies * (n_subunits * float(size) ** 2 + voxels)
    chunk_bytes = chunk * max(per_voxel * voxels, rendering)
    sample_bytes = (4 if crowding is None else 5) * voxels
    # The templates (also in their cache) and the float64 temporaries of the CTF.
    plan = 8 * n_classes * voxels + 24 * voxels
    if n_workers > 1:
        # Each worker holds a copy of the plan (without the template cache) and its chunk;
        # the parent the results, or up to two chunks per worker on their way to disk.
        worker_plan = 4 * n_classes * voxels + 2 * voxels
        kept = 2 * (n_samples if keep_output else n_workers * chunk) * sample_bytes
        total = plan + n_workers * (worker_plan + chunk_bytes) + kept
    elif keep_output:
        # The chunks done while the last one is simulated, then all and their concatenation.
        total = plan + max(
            chunk_bytes + (n_samples - chunk) * sample_bytes, 2 * n_samples * sample_bytes
        )
    else:
        total = plan + chunk_bytes
    return int(min(total, 2.0**80))


def check_simulated_volumes(X: np.ndarray, indices: np.ndarray, parameters: str) -> None:
    """Raise ``ValueError`` if a simulated volume is not finite or is constant.

    Parameters
    ----------
    X : ndarray of shape (k, D, H, W)
        Simulated volumes.
    indices : ndarray of shape (k,)
        Their sample indices, for the message.
    parameters : str
        The simulation's parameters, for the message.
    """
    flat = X.reshape(len(X), -1)
    # NaN propagates through min and max, so two reductions check finiteness too.
    low, high = flat.min(axis=1), flat.max(axis=1)
    bad = ~(np.isfinite(low) & np.isfinite(high)) | (low == high)
    if not bad.any():
        return
    i = int(np.flatnonzero(bad)[0])
    problem = (
        "contains NaN or infinite values"
        if not (np.isfinite(low[i]) and np.isfinite(high[i]))
        else f"is constant (every voxel {float(low[i]):g})"
    )
    raise ValueError(
        f"Simulated volume {int(indices[i])} {problem}, with {parameters}; "
        f"{int(bad.sum())} of the {len(X)} volumes of its chunk are. Nothing is returned or "
        "written: check that the templates hold finite, non-constant densities of a moderate "
        "scale and that the parameters lie within the accepted ranges "
        "(skdistill.datasets.parameters)."
    )


def _is_number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def _check_integer(
    name: str, value, minimum: int, *, maximum: int | None = None, unit: str = "", why: str = ""
) -> None:
    unit = f" {unit}" if unit else ""
    why = f": {why}" if why else ""
    high = "" if maximum is None else f" and at most {maximum}"
    if (
        not isinstance(value, Integral)
        or isinstance(value, bool)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        raise ValueError(
            f"{name}={value!r} must be an integer of at least {minimum}{high}{unit}{why}."
        )


def _check_range(name: str, value, accepted: tuple[float, float], unit: str, why: str) -> None:
    low, high = accepted
    if _is_number(value) and low <= value <= high:
        return
    value_text = f"{value!r} {unit}".rstrip()
    range_text = f"[{low:g}, {high:g}] {unit}".rstrip()
    raise ValueError(
        f"{name}={value_text} is outside the accepted range {range_text}: {why}. Pass a "
        "value within that range."
    )


def _check_tilt_range(tilt_range) -> None:
    try:
        low, high = tilt_range
    except (TypeError, ValueError):
        low = high = None
    if not (_is_number(low) and _is_number(high) and -90 <= low < high <= 90):
        raise ValueError(
            f"tilt_range={tilt_range!r} must be two tilt angles (low, high) in degrees with "
            "-90 <= low < high <= 90, e.g. (-60, 60)."
        )


def check_template_sampling(*, n_classes: int, size: int, voxel_size: float) -> None:
    """Raise ``ValueError`` if the narrowest synthetic template subunit is under-sampled.

    Its Gaussian width (sigma) must be at least :data:`MIN_SUBUNIT_SIGMA` voxels. Assemblies
    are rendered at their physical size unless the box is too small, when all shrink to fit
    (:func:`~skdistill.datasets.templates.fitted_assemblies`). A subunit of width ``sigma`` Å
    is therefore ``sigma * min(1 / voxel_size, fill * size / radius)``
    voxels wide, ``radius`` being the largest assembly's.

    Parameters
    ----------
    n_classes, size, voxel_size
        As in :func:`~skdistill.datasets.make_subtomograms`.
    """
    assemblies = synthetic_assemblies(n_classes)
    narrowest = min(assemblies, key=lambda a: float(a.sigmas.min()))
    sigma = float(narrowest.sigmas.min())
    radius = max(a.radius for a in assemblies)
    in_voxels = sigma * min(1 / voxel_size, _BOX_FILL * size / radius)
    if in_voxels >= MIN_SUBUNIT_SIGMA:
        return
    max_voxel_size = sigma / MIN_SUBUNIT_SIGMA
    min_size = math.ceil(MIN_SUBUNIT_SIGMA * radius / (_BOX_FILL * sigma))
    fixes = []
    if voxel_size > max_voxel_size:
        fixes.append(f"voxel_size <= {max_voxel_size:g} Å")
    if size < min_size:
        fixes.append(f"size >= {min_size} voxels")
    raise ValueError(
        f"At voxel_size={voxel_size:g} Å and size={size} the narrowest subunit of the "
        f"synthetic templates ({narrowest.name!r}) is {in_voxels:.2g} voxels wide (Gaussian "
        f"sigma), under the {MIN_SUBUNIT_SIGMA:g} voxels it needs not to fall between voxels "
        f"and vanish. Use {' and '.join(fixes)}, or fewer classes (n_classes)."
    )
