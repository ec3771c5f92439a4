"""Preprocessing of subtomograms."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin, _fit_context
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from .utils.validation import input_ndim

__all__ = ["VolumeNormalizer", "standardize_volumes"]


class VolumeNormalizer(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Scale each volume to zero mean and unit variance, independently of the others.

    Stateless: nothing is learned in ``fit``, so it is safe in a ``Pipeline`` under
    cross-validation. Constant volumes become all zeros.

    Examples
    --------
    >>> import numpy as np
    >>> from skdistill.preprocessing import VolumeNormalizer
    >>> X = np.random.default_rng(0).normal(3.0, 2.0, size=(2, 8, 8, 8))
    >>> Xt = VolumeNormalizer().fit_transform(X)
    >>> np.allclose(Xt.mean(axis=(1, 2, 3)), 0), np.allclose(Xt.std(axis=(1, 2, 3)), 1)
    (True, True)
    """

    _parameter_constraints: dict = {}

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Check ``X``; nothing is learned.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Volumes ``(n, D, H, W)``, ``(n, C, D, H, W)`` or 2D features ``(n, F)``.
        y : None
            Ignored.

        Returns
        -------
        self : VolumeNormalizer
        """
        self._check(X, reset=True)
        return self

    def transform(self, X):
        """Normalise every volume (row) of ``X`` to zero mean and unit variance.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Volumes or 2D features, as in ``fit``.

        Returns
        -------
        ndarray of the same shape as ``X``
            float32 input stays float32; anything else becomes float64.
        """
        check_is_fitted(self)
        return standardize_volumes(self._check(X, reset=False))

    def _check(self, X, *, reset: bool) -> np.ndarray:
        dtypes = [np.float64, np.float32]
        if input_ndim(X) >= 3:
            X = check_array(X, allow_nd=True, dtype=dtypes, estimator=self, input_name="X")
            validate_data(self, X.reshape(len(X), -1), reset=reset, skip_check_array=True)
            return X
        return validate_data(self, X, reset=reset, dtype=dtypes)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.requires_fit = False
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


def standardize_volumes(X: np.ndarray) -> np.ndarray:
    """Each row of ``X`` (a volume) scaled to zero mean and unit variance; constant rows to 0.

    What :class:`VolumeNormalizer` does, without the input checks: the estimators' own
    ``standardize=True`` applies it to each batch they read.

    Parameters
    ----------
    X : ndarray of shape (n_samples, ...)
        Volumes (or feature rows), float32 or float64.

    Returns
    -------
    ndarray of the same shape and dtype as ``X`` (a new array)

    Examples
    --------
    >>> import numpy as np
    >>> from skdistill.preprocessing import standardize_volumes
    >>> standardize_volumes(np.array([[1.0, 3.0], [2.0, 2.0]]))
    array([[-1.,  1.],
           [ 0.,  0.]])
    """
    flat = X.reshape(len(X), -1)
    mean = flat.mean(axis=1, keepdims=True)
    std = flat.std(axis=1, keepdims=True)
    scale = np.where(std > 0, std, 1)
    return ((flat - mean) / scale).reshape(X.shape).astype(X.dtype, copy=False)
