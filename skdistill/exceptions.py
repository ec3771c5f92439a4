"""Warnings and errors raised by skdistill."""

from __future__ import annotations

__all__ = [
    "DeviceFallbackWarning",
    "IncompatibleModelError",
    "InconsistentVersionWarning",
    "ModelFileError",
    "NonFiniteOutputError",
    "PruningError",
    "TrainingDivergedError",
    "VoxelSizeWarning",
]


class DeviceFallbackWarning(UserWarning):
    """A model saved on a device that is not available here was moved to the CPU."""


class TrainingDivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


class NonFiniteOutputError(FloatingPointError, ValueError):
    """A network (or a teacher) gave NaN or infinite outputs, so no prediction is made.

    Raised by ``predict``, ``predict_proba``, ``predict_log_proba`` and ``score`` when the
    logits of a batch are not finite, typically because the input values are far outside the
    range the network was trained on (e.g. unnormalised volumes), and by the distilled
    estimators when the teacher's probabilities are not finite. A :class:`ValueError` (the
    input is at fault) and a :class:`FloatingPointError`.
    """


class InconsistentVersionWarning(UserWarning):
    """A model saved (pickled or as a model file) by another skdistill version was loaded.

    Mirrors :class:`sklearn.exceptions.InconsistentVersionWarning`, for skdistill's own
    version (scikit-learn warns separately about its version).

    Parameters
    ----------
    estimator_name : str
        Class name of the loaded estimator.
    current_version : str
        The skdistill version loading the model.
    original_version : str
        The skdistill version that saved it (``"unknown"`` for pickles that predate the
        stored version).
    """

    def __init__(self, *, estimator_name: str, current_version: str, original_version: str):
        self.estimator_name = estimator_name
        self.current_version = current_version
        self.original_version = original_version

    def __str__(self) -> str:
        if self.original_version == "unknown":
            saved = "an unknown skdistill version (before versions were stored in pickles)"
            hint = "Refit the model with this version."
        else:
            saved = f"skdistill version {self.original_version}"
            hint = (
                "Refit the model with this version, or load it with the version it was "
                f"saved with (pip install skdistill=={self.original_version})."
            )
        return (
            f"Trying to load estimator {self.estimator_name} from {saved} when using "
            f"version {self.current_version}. This might lead to breaking code or invalid "
            f"results. {hint}"
        )


class IncompatibleModelError(RuntimeError):
    """The weights of a saved model (pickle or model file) do not fit this version's network."""


class ModelFileError(ValueError):
    """A file is not a skdistill model file, or describes a model that cannot be rebuilt safely.

    Raised by :func:`skdistill.load_model` for files that are not safetensors files, that
    hold no (or invalid) ``"skdistill"`` metadata, that name a class outside skdistill's
    estimators, or that were written in a newer format than this version reads.
    """


class PruningError(ValueError):
    """A network cannot be pruned: its dependency graph cannot be traced or followed."""


class VoxelSizeWarning(UserWarning):
    """Volumes given to a fitted estimator have another voxel size than it was trained at."""
