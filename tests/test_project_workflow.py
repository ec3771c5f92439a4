"""The project workflow: a simulated RELION 5 project, extracted and cross-validated by tomogram."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.model_selection import GroupKFold, cross_val_score

from skdistill import Cnn3DClassifier
from skdistill.datasets import write_relion_project
from skdistill.io import EdgePaddingWarning, SubtomogramStack

from .conftest import FAST


@pytest.fixture(scope="module")
def project_stack(tmp_path_factory):
    """4 tomograms of 6 particles each (36 Å voxels: ~8-voxel particles), in 8^3 boxes."""
    project = write_relion_project(
        tmp_path_factory.mktemp("workflow") / "project",
        n_tomograms=4,
        shape=(16, 32, 32),
        n_particles=6,
        voxel_size=36.0,
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EdgePaddingWarning)  # crowded, small tomograms
        stack = SubtomogramStack.from_tomograms(
            project.particles_star, project.tomograms_star, box_size=8
        )
    return project, stack


def test_group_k_fold_keeps_each_tomogram_on_one_side(project_stack):
    project, stack = project_stack
    y = stack.particles["rlnClassNumber"].to_numpy()
    assert sorted(set(stack.groups)) == project.tomogram_names
    tested = set()
    for train, test in GroupKFold(2).split(stack, y, groups=stack.groups):
        assert len(train) and len(test)
        assert not set(stack.groups[train]) & set(stack.groups[test])
        tested |= set(stack.groups[test])
    assert tested == set(project.tomogram_names)  # every tomogram is tested once


def test_cross_val_score_splits_a_tomogram_stack_by_tomogram(project_stack):
    _, stack = project_stack
    y = stack.particles["rlnClassNumber"].to_numpy()
    cv = GroupKFold(2)
    estimator = Cnn3DClassifier(arch="tiny", random_state=0, **FAST)
    scores = cross_val_score(estimator, stack, y, groups=stack.groups, cv=cv)
    # The same folds by hand, on the volumes read from the stack: the same scores.
    expected = [
        Cnn3DClassifier(arch="tiny", random_state=0, **FAST)
        .fit(stack[train], y[train])
        .score(stack[test], y[test])
        for train, test in cv.split(stack, y, groups=stack.groups)
    ]
    np.testing.assert_allclose(scores, expected)
    assert np.all((scores >= 0) & (scores <= 1))
