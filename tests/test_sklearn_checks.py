"""scikit-learn's generic estimator checks, on the ``tiny`` architecture."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from skdistill import Cnn3DClassifier, DistilledClassifier
from skdistill.preprocessing import VolumeNormalizer

from .conftest import FAST

# Each expected failure with the reason it is expected.
EXPECTED_FAILED_CHECKS = {
    "DistilledClassifier": {
        "check_classifiers_classes": (
            "The check trains on labels {-1, 1}; -1 marks unlabeled rows (scikit-learn's "
            "SelfTrainingClassifier convention), so only one labeled class remains."
        ),
    },
}


def _expected_failed_checks(estimator):
    return EXPECTED_FAILED_CHECKS.get(type(estimator).__name__, {})


ESTIMATORS = [
    VolumeNormalizer(),
    Cnn3DClassifier(arch="tiny", random_state=0, **FAST),
    Cnn3DClassifier(arch="tiny", random_state=0, **{**FAST, "validation_fraction": 0.2}),
    DistilledClassifier(
        Cnn3DClassifier(arch="tiny", random_state=0, **FAST),
        student_arch="tiny",
        random_state=0,
        **FAST,
    ),
]


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failed_checks)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
