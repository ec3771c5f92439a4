"""Warnings and errors raised by skdistill."""

from __future__ import annotations

__all__ = ["DeviceFallbackWarning", "TrainingDivergedError"]


class DeviceFallbackWarning(UserWarning):
    """A model saved on a device that is not available here was moved to the CPU."""


class TrainingDivergedError(RuntimeError):
    """The training loss became NaN or infinite."""
