"""``PrunedClassifier`` and ``PrunedSegmenter``: fit, prune in rounds, fine-tune, delegate."""

from __future__ import annotations

import copy
import math
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, clone
from sklearn.frozen import FrozenEstimator
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, check_memory
from torch import nn

from ..architectures import count_parameters
from ..estimators._base import BaseVolumeEstimator, split_train_valid
from ..estimators._net import make_net
from ..estimators._teacher import _fit_teacher
from ..exceptions import IncompatibleModelError
from ..utils.device import draw_seed
from ._criteria import CRITERIA, CalibratedImportance, make_criterion
from ._data import FinetuneData, finetune_data
from ._engine import FeatureMapPruner, removal_schedule
from ._flops import count_flops
from ._shapes import resize_to_weights

__all__ = ["PrunedClassifier", "PrunedSegmenter", "rebuild_pruned"]


class _BasePruned(MetaEstimatorMixin, BaseEstimator):
    """Fit (or reuse) a base estimator, prune its network in rounds, fine-tune after each."""

    _parameter_constraints: dict = {
        "estimator": [HasMethods(["fit", "predict"])],
        "amount": [Interval(Real, 0, 1, closed="left")],
        "criterion": [StrOptions(set(CRITERIA))],
        "steps": [Interval(Integral, 1, None, closed="left")],
        "finetune_epochs": [Interval(Integral, 0, None, closed="left")],
        "finetune_labels": [StrOptions({"auto", "soft", "hard"})],
        "calibration_size": [Interval(Integral, 1, None, closed="left")],
        "scope": [StrOptions({"global", "layer"})],
        "random_state": ["random_state"],
        "memory": [None, str, HasMethods(["cache"])],
    }

    def __init__(
        self,
        estimator,
        *,
        amount=0.5,
        criterion="taylor",
        steps=5,
        finetune_epochs=2,
        finetune_labels="auto",
        calibration_size=256,
        scope="global",
        random_state=None,
        memory=None,
    ):
        self.estimator = estimator
        self.amount = amount
        self.criterion = criterion
        self.steps = steps
        self.finetune_epochs = finetune_epochs
        self.finetune_labels = finetune_labels
        self.calibration_size = calibration_size
        self.scope = scope
        self.random_state = random_state
        self.memory = memory

    def fit(self, X, y):
        """Fit the base estimator (or reuse a frozen one), then prune and fine-tune it.

        Parameters
        ----------
        X : array-like of shape (n_samples, D, H, W) or (n_samples, 1, D, H, W)
            Training volumes.
        y : array-like
            Targets, as the base estimator takes them.

        Returns
        -------
        self
        """
        self._validate_params()
        base = self._fitted_base(X, y)
        module = base.module_
        self.n_parameters_before_ = count_parameters(module)
        self.flops_before_ = count_flops(module, base.input_shape_, base.n_channels_)
        data = finetune_data(base, X, y, self.finetune_labels)
        seed = draw_seed(self.random_state)
        train, valid = split_train_valid(
            len(data.volumes), data.stratify, base.validation_fraction, seed
        )
        device = next(module.parameters()).device
        example = torch.from_numpy(data.volumes[train[:2]]).to(device)
        pruner = FeatureMapPruner(module, example, self.scope)
        criterion = make_criterion(self.criterion, seed)
        calibration = _calibration_rows(train, data.hard, self.calibration_size, seed)
        history, removed = [], 0
        for n_remove in removal_schedule(pruner.n_feature_maps, self.amount, self.steps):
            if isinstance(criterion, CalibratedImportance):
                criterion.calibrate(
                    module, _batches(data, calibration, base.batch_size, device), _taylor_loss
                )
            removed += pruner.prune(n_remove, criterion)
            before = _validation_score(base, data, valid)
            if self.finetune_epochs > 0:
                base._train(
                    data.volumes,
                    data.targets,
                    stratify=data.stratify,
                    seed=seed,
                    distillation=data.distillation,
                    class_weight=data.class_weight,
                    module=module,
                    max_epochs=self.finetune_epochs,
                )
                module = base.module_
            history.append(
                {
                    "amount": removed / pruner.n_feature_maps,
                    "n_feature_maps": pruner.n_feature_maps - removed,
                    "n_parameters": count_parameters(module),
                    "flops": count_flops(module, base.input_shape_, base.n_channels_),
                    "validation_score_before_finetuning": before,
                    "validation_score_after_finetuning": _validation_score(base, data, valid),
                }
            )
        base.n_parameters_ = count_parameters(module)
        self.pruning_history_ = history
        self.finetuned_on_soft_labels_ = data.soft_labels
        self.n_parameters_ = base.n_parameters_
        self.flops_ = count_flops(module, base.input_shape_, base.n_channels_)
        self.input_shape_ = base.input_shape_
        self.n_features_in_ = base.n_features_in_
        self.classes_ = base.classes_
        self.estimator_ = base
        return self

    def _fitted_base(self, X, y):
        """A fitted base estimator of our own: a copy of a frozen one, else a fitted clone."""
        estimator = self.estimator
        inner = estimator.estimator if isinstance(estimator, FrozenEstimator) else estimator
        self._check_base(inner)
        if isinstance(estimator, FrozenEstimator):
            check_is_fitted(inner)
            base = copy.deepcopy(inner)  # pruning changes the network in place
        else:
            base = check_memory(self.memory).cache(_fit_teacher)(estimator, X, y)
        return base

    def _check_base(self, inner) -> None:
        if not isinstance(inner, BaseVolumeEstimator):
            raise TypeError(
                f"{type(self).__name__} prunes the network of a skdistill estimator "
                f"({self._base_examples}); got {type(inner).__name__}."
            )

    # -- delegation --------------------------------------------------------------------
    @property
    def module_(self) -> nn.Module:
        """The pruned PyTorch network."""
        check_is_fitted(self, "estimator_")
        return self.estimator_.module_

    @property
    def voxel_size_(self) -> float | None:
        """Voxel size in Å of the training volumes (the base estimator's), or None."""
        check_is_fitted(self, "estimator_")
        return getattr(self.estimator_, "voxel_size_", None)

    @property
    def n_channels_(self) -> int:
        """Input channels per voxel (the base estimator's)."""
        check_is_fitted(self, "estimator_")
        return self.estimator_.n_channels_

    def predict(self, X):
        """Predictions of the pruned estimator (see the base estimator's ``predict``)."""
        check_is_fitted(self, "estimator_")
        return self.estimator_.predict(X)

    def predict_proba(self, X):
        """Probabilities of the pruned estimator (see the base's ``predict_proba``)."""
        check_is_fitted(self, "estimator_")
        return self.estimator_.predict_proba(X)

    def predict_log_proba(self, X):
        """Log-probabilities of the pruned estimator (see the base's ``predict_log_proba``)."""
        check_is_fitted(self, "estimator_")
        return self.estimator_.predict_log_proba(X)

    def score(self, X, y, sample_weight=None):
        """The pruned estimator's score: accuracy (classifier) or mean IoU (segmenter)."""
        check_is_fitted(self, "estimator_")
        return self.estimator_.score(X, y, sample_weight=sample_weight)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        return tags

    # -- pickling ------------------------------------------------------------------------
    def __getstate__(self):
        state = dict(super().__getstate__())
        inner = state["estimator"]
        if isinstance(inner, FrozenEstimator):
            inner = inner.estimator
        if "estimator_" in state:
            # Prediction needs only the pruned network: keep the base's parameters.
            state["estimator"] = clone(inner)
            fitted = state.pop("estimator_")
            state["_pruned_estimator"] = (type(fitted), fitted.__getstate__())
        return state

    def __setstate__(self, state):
        packed = state.pop("_pruned_estimator", None)
        super().__setstate__(state)
        if packed is not None:
            self.estimator_ = rebuild_pruned(*packed)


def rebuild_pruned(cls: type, state: dict) -> BaseVolumeEstimator:
    """The pruned estimator of its pickled state: full-width net resized to the weights."""
    state = dict(state)
    weights = state.pop("_module_weights")
    estimator = cls.__new__(cls)
    estimator.__setstate__(state)  # without weights: attributes only, no network
    estimator._fall_back_to_cpu()
    module = resize_to_weights(estimator._build_module(), weights)
    try:
        module.load_state_dict(weights)
    except RuntimeError as error:
        raise IncompatibleModelError(
            f"The pruned weights do not fit the network of {cls.__name__}: {error}"
        ) from error
    estimator.net_ = make_net(module, estimator._training_config()).initialize()
    return estimator


def _calibration_rows(train: np.ndarray, hard: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Up to ``size`` labeled training rows, drawn with ``seed``, for the Taylor criterion."""
    labeled = train[(hard[train] >= 0).reshape(len(train), -1).any(axis=1)]
    rng = np.random.default_rng(seed)
    return np.sort(rng.permutation(labeled)[:size])


def _batches(data: FinetuneData, rows: np.ndarray, batch_size: int, device):
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        volumes = torch.from_numpy(data.volumes[batch]).to(device)
        yield volumes, torch.from_numpy(np.asarray(data.hard[batch], dtype=np.int64)).to(device)


def _taylor_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The cross-entropy on the hard labels (``-1``: unlabeled, ignored)."""
    return nn.functional.cross_entropy(logits.float(), targets, ignore_index=-1)


def _validation_score(base, data: FinetuneData, valid: np.ndarray | None) -> float:
    """The base's own score on the labeled validation rows; NaN without a validation split."""
    if valid is None:
        return math.nan
    labeled = valid[(data.hard[valid] >= 0).reshape(len(valid), -1).any(axis=1)]
    if len(labeled) == 0:
        return math.nan
    # Already scaled; scaling standardized volumes again leaves them as they are.
    return float(base.score(data.volumes[labeled], np.asarray(data.y)[labeled]))


_PARAMETERS_DOC = """
    Parameters
    ----------
    estimator : {kind}
        The base estimator, {examples}. Fitted as a clone, or used as is (copied, never
        changed) when wrapped in :class:`sklearn.frozen.FrozenEstimator`.
    amount : float in [0, 1), default=0.5
        Fraction of the prunable feature maps (output channels of the convolutions, except
        the class-score layers) removed at the end.
    criterion : {{"taylor", "taylor_weight", "l1", "random"}}, default="taylor"
        Order of removal. ``"taylor"``: first-order Taylor estimate of the training-loss
        increase, ``|mean(a * dL/da)|`` per feature map over the calibration volumes
        (Molchanov et al. 2017), the realisation of Roels et al.'s "remove what increases
        the loss least"; ``"taylor_weight"``: ``|sum(w * dL/dw)|`` over each filter's
        weights (Molchanov et al. 2019; the kind of "Taylor" some libraries, Torch-Pruning
        among them, compute), a different quantity, for comparison; ``"l1"``: the L1 norm
        of the filter weights; ``"random"``: seeded random order. Scores are normalised per
        layer and ranked across all layers; every layer keeps at least one feature map.
    steps : int, default=5
        Rounds of pruning: round ``k`` brings the removed fraction to ``amount * k / steps``
        (of the original feature maps, not compounded).
    finetune_epochs : int, default=2
        Epochs of fine-tuning after each round (so the last round's are the final
        fine-tuning), with the base estimator's own training set-up (optimizer, learning
        rate, batch size, precision, validation split and early stopping). 0: none.
    finetune_labels : {{"auto", "soft", "hard"}}, default="auto"
        Targets of fine-tuning. ``"auto"``: a distilled base (``DistilledClassifier``,
        ``DistilledSegmenter``) on its teacher's soft labels, as it was trained, any other
        base on the hard labels; ``"hard"``: the hard labels only (a distilled base's
        unlabeled volumes are left out); ``"soft"``: the teacher's soft labels (a distilled
        base only).
    calibration_size : int, default=256
        Labeled training volumes the Taylor criteria average over.
    scope : {{"global", "layer"}}, default="global"
        ``"global"``: the feature maps are ranked across all layers (Molchanov et al. 2017,
        Roels et al. 2017), so layers lose different fractions, and with per-layer
        normalised scores the many cheap maps of the deep layers tend to go first (fewer
        parameters, less speed-up). ``"layer"``: every layer loses ``amount`` of its own
        feature maps, the lowest-scoring ones (Torch-Pruning's default), so FLOPs fall
        about as ``(1 - amount) ** 2``.
    random_state : int, RandomState instance or None, default=None
        Seeds the validation split of fine-tuning, the calibration volumes, the random
        criterion and the fine-tuning's shuffling.
    memory : str, joblib.Memory or None, default=None
        Cache of the base estimator's fits, keyed on its parameters and the data: a grid
        search over ``amount`` and ``criterion`` then fits the base once per fold.
"""

_ATTRIBUTES_DOC = """
    Attributes
    ----------
    estimator_ : estimator
        The fitted, pruned and fine-tuned base estimator; ``predict``, ``predict_proba``,
        ``predict_log_proba`` and ``score`` delegate to it.
    module_ : torch.nn.Module
        The pruned network.
    input_shape_ : tuple of int
        Volume shape ``(D, H, W)`` seen in fit.
    voxel_size_ : float or None
        Voxel size in Å of the training volumes (the base estimator's).
    n_channels_ : int
        Input channels per voxel.
    n_features_in_ : int
        Voxels times channels of one volume.
    n_parameters_, flops_ : int
        Trainable parameters and FLOPs per volume (at ``input_shape_``) of the pruned
        network.
    n_parameters_before_, flops_before_ : int
        The same of the base estimator's network before pruning.
    pruning_history_ : list of dict
        One dict per round: ``amount`` (fraction of the feature maps removed so far),
        ``n_feature_maps``, ``n_parameters``, ``flops``,
        ``validation_score_before_finetuning`` and ``validation_score_after_finetuning``
        (the base's own score on its validation split; NaN without one).
    finetuned_on_soft_labels_ : bool
        Whether fine-tuning used the teacher's soft labels (a distilled base) rather than
        the hard labels.
"""


class PrunedClassifier(ClassifierMixin, _BasePruned):
    __doc__ = (
        """Prune a trained volume classifier's feature maps, with retraining (Roels et al. 2017).

    Whole output channels of the convolutions are removed, and every layer that depends on
    them resized (the next convolution, batch-norms, the ``Flatten → Linear`` input), so
    parameters, FLOPs and time fall for real. A ``DistilledClassifier`` base is fine-tuned
    on its teacher's soft labels, as it was trained (the teacher is refitted unless it is
    frozen or cached by the base's ``memory``).
"""
        + _PARAMETERS_DOC.format(
            kind="classifier", examples="a Cnn3DClassifier or DistilledClassifier"
        )
        + _ATTRIBUTES_DOC
        + """    classes_ : ndarray of shape (n_classes,)
        Class labels.

    Examples
    --------
    >>> from skdistill import Cnn3DClassifier, PrunedClassifier
    >>> from skdistill.datasets import make_toy_volumes
    >>> X, y = make_toy_volumes(40, n_classes=2, size=8, random_state=0)
    >>> base = Cnn3DClassifier(arch="tiny", max_epochs=2, random_state=0)
    >>> pruned = PrunedClassifier(base, amount=0.5, steps=2, finetune_epochs=1,
    ...                           random_state=0).fit(X, y)
    >>> pruned.n_parameters_ < pruned.n_parameters_before_
    True
    """
    )

    _base_examples = "Cnn3DClassifier or DistilledClassifier"
    # The pruned estimator's own score (and docstring), not ClassifierMixin's.
    score = _BasePruned.score

    def _check_base(self, inner) -> None:
        super()._check_base(inner)
        if getattr(inner, "_segments_volumes", False):
            raise TypeError(
                f"PrunedClassifier prunes classifiers; {type(inner).__name__} is a "
                "segmenter. Use PrunedSegmenter."
            )


class PrunedSegmenter(_BasePruned):
    __doc__ = (
        """Prune a trained volume segmenter's feature maps, with retraining (Roels et al. 2017).

    As :class:`PrunedClassifier`, for segmenters: U-Net skip concatenations, transposed
    convolutions and the SSN3D heads are resized together; the class-score convolutions
    keep one output per class. A ``DistilledSegmenter`` base is fine-tuned on its teacher's
    soft labels.
"""
        + _PARAMETERS_DOC.format(
            kind="segmenter", examples="a Cnn3DSegmenter or DistilledSegmenter"
        )
        + _ATTRIBUTES_DOC
        + """    classes_ : ndarray of shape (n_classes,)
        ``arange(n_classes)``.
    """
    )

    _base_examples = "Cnn3DSegmenter or DistilledSegmenter"

    def _check_base(self, inner) -> None:
        super()._check_base(inner)
        if not getattr(inner, "_segments_volumes", False):
            raise TypeError(
                f"PrunedSegmenter prunes segmenters; {type(inner).__name__} is a "
                "classifier. Use PrunedClassifier."
            )

    @property
    def n_classes_(self) -> int:
        """Number of classes."""
        check_is_fitted(self, "estimator_")
        return self.estimator_.n_classes_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.estimator_type = None
        tags.target_tags.required = True
        tags.target_tags.single_output = False
        tags.target_tags.multi_output = True
        return tags
