"""scikit-learn's generic estimator checks, on the ``tiny`` architecture and a tiny U-Net.

The segmenters run the generic checks too. Most of those fit on 2D feature rows with a 1D
target, which a segmenter refuses (it needs volumes and one label volume per volume); each
such check is listed below with its reason, and the ones that matter are re-run on volumes
in ``test_segmenter_*`` at the end of this file.
"""

import pickle

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks
from sklearn.utils.validation import check_is_fitted

from skdistill import Cnn3DClassifier, Cnn3DSegmenter, DistilledClassifier, DistilledSegmenter
from skdistill.preprocessing import VolumeNormalizer

from .conftest import FAST

_FITS_ON_FEATURE_ROWS = (
    "Fits on 2D feature rows (n_samples, n_features) with a 1D y; a segmenter needs volumes "
    "(n_samples, D, H, W) and one label volume per volume, and refuses the data. Re-run on "
    "volumes in {}."
)
_TWO_D_MESSAGE = (
    "Expects an error message naming the single {} of a 2D array; a segmenter refuses every "
    "2D array, with a message saying that it needs volumes (n_samples, D, H, W)."
)

#: Segmenter checks expected to fail, with the reason (the same for both segmenters).
SEGMENTER_EXPECTED_FAILED_CHECKS = {
    "check_fit_score_takes_y": _FITS_ON_FEATURE_ROWS.format("test_segmenter_fit"),
    "check_estimators_overwrite_params": _FITS_ON_FEATURE_ROWS.format("test_segmenter_fit"),
    "check_dont_overwrite_parameters": _FITS_ON_FEATURE_ROWS.format("test_segmenter_fit"),
    "check_estimators_fit_returns_self": _FITS_ON_FEATURE_ROWS.format("test_segmenter_fit"),
    "check_fit_check_is_fitted": _FITS_ON_FEATURE_ROWS.format("test_segmenter_fit"),
    "check_n_features_in": _FITS_ON_FEATURE_ROWS.format("test_segmenter_fit"),
    "check_n_features_in_after_fitting": _FITS_ON_FEATURE_ROWS.format(
        "test_segmenter_fit (n_features_in_) and test_segmenter_predict_checks_the_shape"
    ),
    "check_fit2d_predict1d": _FITS_ON_FEATURE_ROWS.format(
        "test_segmenter_predict_checks_the_shape"
    ),
    "check_dict_unchanged": _FITS_ON_FEATURE_ROWS.format("test_segmenter_predict_methods"),
    "check_methods_sample_order_invariance": _FITS_ON_FEATURE_ROWS.format(
        "test_segmenter_predict_methods"
    ),
    "check_methods_subset_invariance": _FITS_ON_FEATURE_ROWS.format(
        "test_segmenter_predict_methods"
    ),
    "check_estimators_pickle": _FITS_ON_FEATURE_ROWS.format("test_segmenter_predict_methods"),
    "check_pipeline_consistency": _FITS_ON_FEATURE_ROWS.format("test_segmenter_predict_methods"),
    "check_fit_idempotent": _FITS_ON_FEATURE_ROWS.format("test_segmenter_refit_is_idempotent"),
    "check_estimators_dtypes": _FITS_ON_FEATURE_ROWS.format(
        "test_segmenter_accepts_dtypes_and_read_only_input"
    ),
    "check_dtype_object": _FITS_ON_FEATURE_ROWS.format(
        "test_segmenter_accepts_dtypes_and_read_only_input"
    ),
    "check_readonly_memmap_input": _FITS_ON_FEATURE_ROWS.format(
        "test_segmenter_accepts_dtypes_and_read_only_input"
    ),
    "check_f_contiguous_array_estimator": _FITS_ON_FEATURE_ROWS.format(
        "test_segmenter_accepts_dtypes_and_read_only_input"
    ),
    "check_estimators_nan_inf": _FITS_ON_FEATURE_ROWS.format("test_segmenter_refuses_nan_and_inf"),
    "check_positive_only_tag_during_fit": _FITS_ON_FEATURE_ROWS.format(
        "test_segmenter_fit (the volumes hold negative values)"
    ),
    "check_fit2d_1sample": _TWO_D_MESSAGE.format("sample"),
    "check_fit2d_1feature": _TWO_D_MESSAGE.format("feature"),
}

# Each expected failure with the reason it is expected.
EXPECTED_FAILED_CHECKS = {
    "DistilledClassifier": {
        "check_classifiers_classes": (
            "The check trains on labels {-1, 1}; -1 marks unlabeled rows (scikit-learn's "
            "SelfTrainingClassifier convention), so only one labeled class remains."
        ),
    },
    "Cnn3DSegmenter": SEGMENTER_EXPECTED_FAILED_CHECKS,
    "DistilledSegmenter": SEGMENTER_EXPECTED_FAILED_CHECKS,
}


def _expected_failed_checks(estimator):
    return EXPECTED_FAILED_CHECKS.get(type(estimator).__name__, {})


#: The smallest U-Net, one epoch: segmenter fits take a fraction of a second.
UNET = {"base_filters": 2, "levels": 2, "last_filters": 2}
SEG_FAST = {"max_epochs": 1, "batch_size": 4, "lr": 0.05, "validation_fraction": None}


def _segmenters():
    return [
        Cnn3DSegmenter("unet", **UNET, **SEG_FAST, random_state=0),
        DistilledSegmenter(
            Cnn3DSegmenter("unet", **UNET, **SEG_FAST, random_state=0),
            student_arch="unet",
            **UNET,
            **SEG_FAST,
            random_state=0,
        ),
    ]


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
    *_segmenters(),
]


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failed_checks)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


# -- the segmenters' versions, on volumes, of the checks that fit on feature rows ------------
SIZE = 8


@pytest.fixture(scope="module")
def seg_data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(6, SIZE, SIZE, SIZE)).astype(np.float32)  # negative values too
    return X, (X > 0.5).astype(np.int8)


@pytest.fixture(scope="module", params=_segmenters(), ids=lambda e: type(e).__name__)
def fit_record(request, seg_data):
    """A segmenter fitted on volumes, with its parameters' hashes and public attributes
    from before the fit."""
    X, y = seg_data
    estimator = clone(request.param)
    with pytest.raises(NotFittedError):
        check_is_fitted(estimator)
    params = {k: joblib.hash(v) for k, v in estimator.get_params().items()}
    public = {k for k in vars(estimator) if not k.startswith("_")}
    assert estimator.fit(X, y) is estimator
    return estimator, params, public


@pytest.fixture(scope="module")
def fitted_segmenter(fit_record):
    return fit_record[0]


def test_segmenter_fit(fit_record):
    """check_estimators_fit_returns_self, check_dont_overwrite_parameters,
    check_estimators_overwrite_params, check_fit_check_is_fitted, check_n_features_in."""
    estimator, params_before, public_before = fit_record
    check_is_fitted(estimator)
    assert {k: joblib.hash(v) for k, v in estimator.get_params().items()} == params_before
    added = {k for k in vars(estimator) if not k.startswith("_")} - public_before
    assert added and all(k.endswith("_") for k in added), sorted(added)
    assert estimator.n_features_in_ == SIZE**3


def test_segmenter_predict_methods(fitted_segmenter, seg_data):
    """check_dict_unchanged, check_methods_subset_invariance, check_methods_sample_order_
    invariance, check_estimators_pickle, check_pipeline_consistency."""
    estimator = fitted_segmenter
    X, y = seg_data
    state = estimator.__dict__.copy()  # as check_dict_unchanged: the same objects
    results = {
        m: getattr(estimator, m)(X) for m in ("predict", "predict_proba", "predict_log_proba")
    }
    results["score"] = estimator.score(X, y)
    assert estimator.__dict__ == state
    order = np.random.default_rng(0).permutation(len(X))
    reloaded = pickle.loads(pickle.dumps(estimator))
    for method in ("predict", "predict_proba", "predict_log_proba"):
        full = results[method]
        np.testing.assert_allclose(getattr(estimator, method)(X[:2]), full[:2], atol=1e-6)
        np.testing.assert_allclose(getattr(estimator, method)(X[order]), full[order], atol=1e-6)
        np.testing.assert_allclose(getattr(reloaded, method)(X), full, atol=1e-6)
    assert reloaded.score(X, y) == pytest.approx(results["score"])


def test_segmenter_predict_checks_the_shape(fitted_segmenter, seg_data):
    """check_n_features_in_after_fitting, check_fit2d_predict1d."""
    X, _ = seg_data
    with pytest.raises(ValueError, match=r"fitted on volumes of shape \(8, 8, 8\)"):
        fitted_segmenter.predict(X[:, :4, :4, :4])
    with pytest.raises(ValueError):
        fitted_segmenter.predict(X[0, 0, 0])


def test_segmenter_refit_is_idempotent(fitted_segmenter, seg_data):
    """check_fit_idempotent: a refit with the same random_state predicts the same."""
    X, y = seg_data
    refit = clone(fitted_segmenter).fit(X, y)
    np.testing.assert_array_equal(refit.predict_proba(X), fitted_segmenter.predict_proba(X))


@pytest.mark.parametrize("estimator", _segmenters(), ids=lambda e: type(e).__name__)
def test_segmenter_accepts_dtypes_and_read_only_input(estimator, seg_data):
    """check_estimators_dtypes, check_dtype_object, check_readonly_memmap_input,
    check_f_contiguous_array_estimator."""
    X, y = seg_data
    X64, y64 = np.asfortranarray(X.astype(np.float64)), y.astype(np.int64)
    X64.setflags(write=False)
    fitted = clone(estimator).fit(X64, y64)
    assert fitted.predict(X64).shape == y.shape
    assert fitted.predict(X.astype(object)).shape == y.shape


@pytest.mark.parametrize("estimator", _segmenters(), ids=lambda e: type(e).__name__)
def test_segmenter_refuses_nan_and_inf(estimator, fitted_segmenter, seg_data):
    """check_estimators_nan_inf."""
    X, y = seg_data
    for bad in (np.nan, np.inf):
        X_bad = X.copy()
        X_bad[0, 0, 0, 0] = bad
        with pytest.raises(ValueError, match=r"NaN|infinity"):
            clone(estimator).fit(X_bad, y)
        with pytest.raises(ValueError, match=r"NaN|infinity"):
            fitted_segmenter.predict(X_bad)
