"""Prediction streams over lazy ``SubtomogramStack`` sources in bounded memory."""

import tracemalloc

import mrcfile
import numpy as np
import pytest

from skdistill import Cnn3DClassifier
from skdistill.datasets import make_toy_volumes
from skdistill.estimators._base import INFERENCE_BATCH_SIZE
from skdistill.io import SubtomogramStack

from .conftest import FAST

N_VOLUMES, SIZE = 2000, 16


@pytest.fixture(scope="module")
def fitted():
    X, y = make_toy_volumes(60, n_classes=3, size=SIZE, noise=0.3, random_state=0)
    return Cnn3DClassifier(arch="tiny", random_state=0, **FAST).fit(X, y)


@pytest.fixture(scope="module")
def stack_file(tmp_path_factory):
    """One MRC volume stack of 2,000 toy volumes (32 MB as float32)."""
    X, _ = make_toy_volumes(N_VOLUMES, n_classes=3, size=SIZE, noise=0.3, random_state=1)
    path = tmp_path_factory.mktemp("stack") / "particles.mrcs"
    with mrcfile.new(path) as mrc:
        mrc.set_data(X)
        mrc.voxel_size = 9.2
    return path


def test_predicting_a_2000_volume_stack_uses_bounded_memory(fitted, stack_file):
    stack = SubtomogramStack(stack_file)
    assert stack.shape == (N_VOLUMES, SIZE, SIZE, SIZE)
    full_size = N_VOLUMES * SIZE**3 * 4
    tracemalloc.start()
    try:
        proba = fitted.predict_proba(stack)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert proba.shape == (N_VOLUMES, 3)
    # Batches of 64 volumes (1 MB) are read and validated one at a time: the peak is a few
    # batches, whatever the stack's length; loading the stack would take 32 MB.
    batch_size = INFERENCE_BATCH_SIZE["cpu"] * SIZE**3 * 4
    assert peak < 3 * batch_size < full_size / 2, f"peak {peak / 1e6:.1f} MB"
    np.testing.assert_allclose(proba, fitted.predict_proba(np.asarray(stack)), atol=1e-6)


def test_predict_and_score_accept_a_stack(fitted, stack_file):
    stack = SubtomogramStack(stack_file)
    _, y = make_toy_volumes(N_VOLUMES, n_classes=3, size=SIZE, noise=0.3, random_state=1)
    labels = fitted.predict(stack)
    np.testing.assert_array_equal(labels, fitted.predict(np.asarray(stack)))
    assert fitted.score(stack, y) == pytest.approx(np.mean(labels == y))


def test_stack_of_the_wrong_volume_shape_is_rejected(fitted, tmp_path):
    path = tmp_path / "small.mrcs"
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.zeros((3, 8, 8, 8), dtype=np.float32))
    with pytest.raises(ValueError, match="16"):
        fitted.predict(SubtomogramStack(path))
