"""Fitting on stacks: the voxel size a model is trained at, and memory checked before reading."""

import warnings

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from skdistill import Cnn3DClassifier, Cnn3DSegmenter, DistilledClassifier
from skdistill.datasets import make_toy_volumes
from skdistill.exceptions import VoxelSizeWarning
from skdistill.io import SubtomogramStack, write_subtomograms
from skdistill.utils import memory

from .conftest import FAST

TINY = {**FAST, "max_epochs": 1, "random_state": 0}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    X, y = make_toy_volumes(16, n_classes=2, size=8, noise=0.3, random_state=0)
    folder = tmp_path_factory.mktemp("stack") / "particles"
    return SubtomogramStack(write_subtomograms(folder, X, y, voxel_size=9.2))


@pytest.fixture(scope="module")
def fitted(stack):
    return Cnn3DClassifier("tiny", **TINY).fit(stack, stack.labels)


def test_voxel_size_comes_from_the_stack(fitted):
    assert fitted.voxel_size_ == pytest.approx(9.2)


def test_voxel_size_fit_parameter(stack):
    X, y = np.asarray(stack), stack.labels
    assert Cnn3DClassifier("tiny", **TINY).fit(X, y).voxel_size_ is None
    assert Cnn3DClassifier("tiny", **TINY).fit(X, y, voxel_size=4.6).voxel_size_ == 4.6
    # Agreeing with the stack within 1 %: accepted.
    assert Cnn3DClassifier("tiny", **TINY).fit(stack, y, voxel_size=9.25).voxel_size_ == 9.25


def test_voxel_size_contradicting_the_stack_is_an_error(stack):
    with pytest.raises(ValueError, match=r"voxel_size=4.6\) contradicts .* 9.2 Å"):
        Cnn3DClassifier("tiny", **TINY).fit(stack, stack.labels, voxel_size=4.6)


@pytest.mark.parametrize("bad", [0, -9.2, float("nan"), "9.2", True])
def test_invalid_voxel_size_is_an_error(stack, bad):
    with pytest.raises(ValueError, match="voxel_size must be a positive number"):
        Cnn3DClassifier("tiny", **TINY).fit(np.asarray(stack), stack.labels, voxel_size=bad)


def test_prediction_at_another_voxel_size_warns(fitted, stack, monkeypatch):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fitted.predict(stack)  # the training voxel size
        fitted.predict(np.asarray(stack))  # unknown: nothing to compare
    monkeypatch.setattr(stack, "voxel_size", 4.6)
    for method in (fitted.predict, fitted.predict_proba):
        with pytest.warns(VoxelSizeWarning, match=r"4.6 Å.*trained at 9.2 Å.*voxel_size=9.2"):
            method(stack)
    with pytest.warns(VoxelSizeWarning):
        fitted.score(stack, stack.labels)


def test_voxel_size_passes_through_pipelines_and_searches(stack):
    X, y = np.asarray(stack), stack.labels
    pipeline = make_pipeline(FunctionTransformer(), Cnn3DClassifier("tiny", **TINY))
    pipeline.fit(X, y, cnn3dclassifier__voxel_size=4.6)
    assert pipeline[-1].voxel_size_ == 4.6
    search = GridSearchCV(Cnn3DClassifier("tiny", **TINY), {"lr": [0.05]}, cv=2)
    assert search.fit(X, y, voxel_size=4.6).best_estimator_.voxel_size_ == 4.6


def test_segmenter_and_distilled_remember_the_voxel_size(stack):
    X, y = np.asarray(stack), stack.labels
    student = DistilledClassifier(Cnn3DClassifier("tiny", **TINY), "tiny", **TINY)
    assert student.fit(stack, y).voxel_size_ == pytest.approx(9.2)
    masks = (X > 0.5).astype(np.int8)
    segmenter = Cnn3DSegmenter("unet", base_filters=4, levels=2, last_filters=4, **TINY)
    assert segmenter.fit(X, masks, voxel_size=4.6).voxel_size_ == 4.6


# -- memory --------------------------------------------------------------------------------
def test_fit_on_a_stack_too_big_for_memory_fails_before_reading(stack, monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda: 16 * 8**3 * 4)  # the volumes
    monkeypatch.setattr(SubtomogramStack, "_read", lambda *args: pytest.fail("the stack was read"))
    with pytest.raises(MemoryError) as excinfo:
        Cnn3DClassifier("tiny", **TINY).fit(stack, np.arange(16) % 2)
    message = str(excinfo.value)
    # 1.5 copies of 32 KiB of volumes needed, 32 KiB available.
    assert "16 volumes of 8x8x8 voxels" in message
    assert "needs about 48.0 KiB" in message and "only 32.0 KiB is available" in message
    assert "fewer particles" in message and "smaller box" in message


def test_distilled_fit_needs_more(stack, monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda: 16 * 8**3 * 4 * 2)
    with pytest.raises(MemoryError, match=r"DistilledClassifier.*needs about 80.0 KiB"):
        DistilledClassifier(Cnn3DClassifier("tiny"), "tiny", **TINY).fit(stack, stack.labels)


def test_arrays_in_memory_are_not_checked(stack, monkeypatch):
    X = np.asarray(stack)
    monkeypatch.setattr(memory, "available_memory", lambda: 1024)
    Cnn3DClassifier("tiny", **TINY).fit(X, stack.labels)
