"""Shared fixtures: seeds, tiny toy volumes, and fast training settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from skdistill.datasets import make_toy_volumes

#: Training settings that keep every test fit to a fraction of a second.
FAST = {"max_epochs": 8, "batch_size": 16, "lr": 0.05, "validation_fraction": None}


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def seed() -> int:
    """The seed every randomised test uses."""
    return 0


@pytest.fixture(scope="session")
def volumes() -> tuple[np.ndarray, np.ndarray]:
    """60 toy volumes of 8^3 voxels in 3 classes (for the ``tiny`` architecture)."""
    return make_toy_volumes(60, n_classes=3, size=8, noise=0.3, random_state=0)


@pytest.fixture(scope="session")
def student_volumes() -> tuple[np.ndarray, np.ndarray]:
    """24 toy volumes of 27^3 voxels, the smallest size the students s1-s3 accept."""
    return make_toy_volumes(24, n_classes=2, size=27, noise=0.3, random_state=1)
