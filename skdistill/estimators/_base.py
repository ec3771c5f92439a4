"""Behaviour shared by the volume classifiers: training, prediction, pickling, tags."""

from __future__ import annotations

import dataclasses
import math
import warnings
from abc import ABCMeta, abstractmethod
from collections.abc import Iterator
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from skorch.dataset import Dataset
from torch.utils.data import Subset

from ..architectures import build_network, count_parameters, list_architectures
from ..exceptions import (
    DeviceFallbackWarning,
    IncompatibleModelError,
    InconsistentVersionWarning,
    NonFiniteOutputError,
)
from ..preprocessing import standardize_volumes
from ..utils.device import local_torch_seed, resolve_device
from ..utils.precision import PRECISIONS, autocast, resolve_precision, to_channels_last
from ..utils.validation import validate_volumes
from ._fit_memory import check_fit_memory
from ._net import (
    TrainingConfig,
    best_epoch_index,
    close_progress_bars,
    epoch_summary,
    make_net,
)
from ._voxel_size import fit_voxel_size, warn_if_voxel_size_differs

#: Volumes per forward pass at prediction time, by device type: independent of the training
#: batch size; large on GPUs, cache-sized on CPUs.
INFERENCE_BATCH_SIZE = {"cpu": 64, "cuda": 1024}

TRAINING_PARAMETER_CONSTRAINTS: dict = {
    "max_epochs": [Interval(Integral, 1, None, closed="left")],
    "batch_size": [Interval(Integral, 1, None, closed="left")],
    "lr": [Interval(Real, 0, None, closed="neither")],
    "optimizer": [StrOptions({"sgd", "adam"})],
    "momentum": [Interval(Real, 0, 1, closed="left")],
    "nesterov": ["boolean"],
    "lr_decay": [Interval(Real, 0, None, closed="left")],
    "early_stopping": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"}), None],
    "validation_fraction": [Interval(Real, 0, 1, closed="neither"), None],
    "device": [str, torch.device],
    "precision": [StrOptions(set(PRECISIONS))],
    "inference_precision": [StrOptions(set(PRECISIONS))],
    "random_state": ["random_state"],
    "verbose": ["verbose"],
    "standardize": ["boolean"],
}

ARCH_CONSTRAINT = [StrOptions(set(list_architectures())), callable]


class BaseVolumeEstimator(BaseEstimator, metaclass=ABCMeta):
    """Base class of the volume estimators (classifiers and segmenters); not for direct use.

    Subclasses define ``__init__`` (storing parameters only), ``fit``, ``_make_network``
    and ``_arch_parameter``, the name of the parameter that holds the network's architecture.
    This class trains the network with skorch, predicts in batches without gradients, and
    pickles only the weights (no optimizer state).
    """

    _arch_parameter: str
    #: Volume-sized float32 arrays that fit holds at its peak, for the memory check of fits
    #: on lazy stacks (see ``check_fit_memory``). Measured with tracemalloc on 96 volumes
    #: of 16³ read from MRC files, rounded up: 1.26 for Cnn3DClassifier.
    _fit_volume_copies: float = 1.5
    #: Early-stopping patience that ``early_stopping="auto"`` means with a validation split.
    _auto_patience: int = 5

    def _training_config(self) -> TrainingConfig:
        if self.optimizer == "sgd" and self.nesterov and self.momentum == 0:
            raise ValueError(
                "nesterov=True requires momentum > 0; set momentum (e.g. 0.9) or nesterov=False."
            )
        return TrainingConfig(
            max_epochs=self.max_epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            optimizer=self.optimizer,
            momentum=self.momentum,
            nesterov=self.nesterov,
            lr_decay=self.lr_decay,
            early_stopping=self._patience(),
            device=self.device_,
            verbose=self.verbose,
            precision=self.precision_,
            description=self._description(),
        )

    def _patience(self) -> int | None:
        """Early-stopping patience: ``"auto"`` stops early only with a validation split."""
        if self.early_stopping == "auto":
            return None if self.validation_fraction is None else self._auto_patience
        return self.early_stopping

    def _check_early_stopping(self) -> None:
        """Raise if an early-stopping patience is given without a validation split."""
        if self.validation_fraction is None and self.early_stopping not in ("auto", None):
            raise ValueError(
                f"early_stopping={self.early_stopping} monitors the validation loss, but "
                "validation_fraction=None holds out no validation data. Set "
                "validation_fraction (e.g. 0.2), or early_stopping=None to train for "
                "max_epochs."
            )

    def _description(self) -> str:
        """Short name of the network being trained, for progress bars."""
        arch = getattr(self, self._arch_parameter)
        return arch if isinstance(arch, str) else getattr(arch, "__name__", type(arch).__name__)

    def _validate_fit_inputs(self, X, voxel_size=None) -> np.ndarray:
        """Validate X at fit time; store shape, channels, voxel size and the resolved device.

        A lazy stack is read into memory here, after a check that it fits.
        """
        self._check_early_stopping()
        trained_voxel_size = fit_voxel_size(X, voxel_size)
        check_fit_memory(self, X)
        X = self._scaled(validate_volumes(self, X, reset=True))
        self.voxel_size_ = trained_voxel_size
        self.input_shape_ = tuple(int(s) for s in X.shape[2:])
        self.n_channels_ = int(X.shape[1])
        self.device_ = resolve_device(self.device)
        self.precision_ = self._resolve_precision(self.precision)
        return X

    def _resolve_precision(self, precision: str) -> str:
        # oneDNN's bf16 3D convolution returns NaN on degenerate volumes such as the (F, 1, 1)
        # ones that 2D feature rows become (seen with torch 2.13 on CPU): keep those in fp32.
        if min(self.input_shape_) < 3:
            return "fp32"
        return resolve_precision(precision, self.device_)

    def _build_module(self, seed: int = 0) -> torch.nn.Module:
        # Initialise under a local seed: reproducible, and the global RNG stays untouched.
        with local_torch_seed(seed):
            return self._make_network()

    @abstractmethod
    def _make_network(self) -> torch.nn.Module:
        """The untrained network for the fitted input shape and classes."""

    def _train(
        self,
        X: np.ndarray,
        targets: np.ndarray,
        stratify: np.ndarray,
        seed: int,
        distillation: tuple[float, float] | None = None,
        class_weight: np.ndarray | None = None,
        module: torch.nn.Module | None = None,
        max_epochs: int | None = None,
    ) -> None:
        """Train a network on ``X`` and ``targets``; set the fitted attributes.

        A fresh network, or ``module`` (e.g. a pruned one, fine-tuned for ``max_epochs``
        instead of the estimator's own ``max_epochs``).
        """
        config = self._training_config()
        if max_epochs is not None:
            config = dataclasses.replace(config, max_epochs=max_epochs)
        if module is None:
            module = self._build_module(seed)
        train_idx, valid_idx = split_train_valid(len(X), stratify, self.validation_fraction, seed)
        # Index views of one dataset rather than copies of the rows: the loaders read the
        # same samples in the same order, without a second copy of X and the targets.
        data = Dataset(X, targets)
        train = data if valid_idx is None else Subset(data, train_idx)
        valid = None if valid_idx is None else Subset(data, valid_idx)
        with local_torch_seed(seed):
            net = make_net(
                module,
                config,
                distillation=distillation,
                valid_data=valid,
                seed=seed,
                class_weight=class_weight,
            )
            try:
                net.fit(train, None)
            finally:
                close_progress_bars(net)
        best = best_epoch_index(net)
        self.history_ = epoch_summary(net.history)
        self.n_iter_ = len(self.history_)
        self.best_epoch_ = int(self.history_[best, "epoch"])
        self.validation_score_ = float(self.history_[best].get("valid_acc", math.nan))
        self.n_parameters_ = count_parameters(net.module_)
        net.train_split = None  # the validation data need not outlive fit
        self.net_ = net

    @property
    def module_(self) -> torch.nn.Module:
        """The trained PyTorch network, mapping volumes ``(n, C, D, H, W)`` to logits."""
        check_is_fitted(self, "net_")
        return self.net_.module_

    # -- prediction ------------------------------------------------------------------
    def _predict_batches(self, X, reduce=None) -> np.ndarray:
        """Network outputs for ``X``, batch by batch, optionally reduced on the device.

        ``reduce`` maps a batch of float32 logits to what is kept (the argmax over classes
        for ``predict``, the softmax for ``predict_proba``), so only that accumulates, in
        one array allocated at the first batch: the peak is the result plus a batch.

        Raises
        ------
        NonFiniteOutputError
            If the logits of a batch hold NaN or infinite values: no label or probability
            is made from them.
        """
        check_is_fitted(self, "net_")
        warn_if_voxel_size_differs(self, X)
        n_volumes, batches = self._inference_batches(X)
        output, start = None, 0
        for kept in self._forward_batches(batches, reduce):
            if output is None:
                output = np.empty((n_volumes, *kept.shape[1:]), dtype=kept.dtype)
            output[start : start + len(kept)] = kept
            start += len(kept)
        return output

    def _forward_batches(self, batches, reduce=None) -> Iterator[np.ndarray]:
        """Network outputs of validated float32 batches ``(k, C, D, H, W)``, one at a time.

        The inference core of :meth:`_predict_batches`, shared with the whole-tomogram tiler
        (:func:`skdistill.segment_tomogram`), whose tiles may be larger than the training
        volumes: on the fitted device, at the inference precision, each batch's logits
        checked for NaN and infinite values before ``reduce`` maps them to what is kept.
        """
        check_is_fitted(self, "net_")
        precision = self._resolve_precision(self.inference_precision)
        cuda = torch.device(self.device_).type == "cuda"
        module = self.net_.module_.to(memory_format=torch.channels_last_3d)
        module.eval()
        start = 0
        for batch in batches:
            # The modes are entered per batch: a generator must not leave them on for its
            # caller between batches.
            with torch.inference_mode(), autocast(self.device_, precision):
                batch = torch.from_numpy(batch)
                if cuda:
                    batch = batch.pin_memory().to(self.device_, non_blocking=True)
                logits = module(to_channels_last(batch)).float()
                check_finite_logits(logits, batch, start)
                kept = (logits if reduce is None else reduce(logits)).cpu().numpy()
            start += len(kept)
            yield kept

    def _inference_batches(self, X) -> tuple[int, Iterator[np.ndarray]]:
        """The number of volumes in ``X`` and its validated float32 batches ``(k, C, D, H, W)``.

        A lazy source (anything with ``iter_batches(batch_size)``, such as
        :class:`~skdistill.io.SubtomogramStack`) is read and validated one batch at a time,
        so prediction memory does not grow with the number of volumes.
        """
        batch_size = self._inference_batch_size()
        if hasattr(X, "iter_batches"):
            if len(X) == 0:
                raise ValueError(f"{type(X).__name__} holds no volumes; nothing to predict.")
            batches = (
                self._scaled(validate_volumes(self, batch, reset=False))
                for batch in X.iter_batches(batch_size)
            )
            return len(X), batches
        X = validate_volumes(self, X, reset=False)
        return len(X), (
            self._scaled(X[start : start + batch_size]) for start in range(0, len(X), batch_size)
        )

    def _scaled(self, X: np.ndarray) -> np.ndarray:
        """``X`` with each volume standardized when ``standardize=True``, else ``X`` itself."""
        return standardize_volumes(X) if self.standardize else X

    def _inference_batch_size(self) -> int:
        """Volumes per forward pass at prediction time on the fitted device."""
        return INFERENCE_BATCH_SIZE.get(torch.device(self.device_).type, 64)

    # -- scikit-learn tags and pickling ------------------------------------------------
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        return tags

    def __getstate__(self):
        # object.__getstate__ returns the live __dict__: copy before removing anything.
        state = dict(super().__getstate__())
        state[VERSIONS_KEY] = current_versions()
        net = state.pop("net_", None)
        if net is not None:
            state["_module_weights"] = {
                name: tensor.detach().cpu().clone()
                for name, tensor in net.module_.state_dict().items()
            }
        return state

    def _fall_back_to_cpu(self) -> None:
        """Move a loaded model trained on an unavailable GPU to the CPU, with a warning."""
        if torch.device(self.device_).type == "cuda" and not torch.cuda.is_available():
            warnings.warn(
                f"This model was trained on {self.device_!r}, which is not available here; "
                "it was loaded on the CPU.",
                DeviceFallbackWarning,
                stacklevel=3,
            )
            self.device_ = "cpu"

    def __setstate__(self, state):
        weights = state.pop("_module_weights", None)
        saved = state.pop(VERSIONS_KEY, None) or {}
        current = current_versions()
        if saved.get("skdistill") != current["skdistill"]:
            warnings.warn(
                InconsistentVersionWarning(
                    estimator_name=type(self).__name__,
                    current_version=current["skdistill"],
                    original_version=saved.get("skdistill", "unknown"),
                ),
                stacklevel=2,
            )
        super().__setstate__(state)
        if weights is None:
            return
        # Fitted before models remembered their voxel size: unknown.
        self.__dict__.setdefault("voxel_size_", None)
        self._fall_back_to_cpu()
        module = self._build_module()
        try:
            module.load_state_dict(weights)
        except RuntimeError as error:
            raise IncompatibleModelError(
                _incompatible_weights_message(type(self).__name__, saved, current, error)
            ) from error
        config = self._training_config()
        self.net_ = make_net(module, config).initialize()


#: Key of the library versions in the pickled state.
VERSIONS_KEY = "_skdistill_versions"


def current_versions() -> dict[str, str]:
    """The skdistill and torch versions stored in pickles."""
    from .. import __version__  # at call time: the package imports this module first

    return {"skdistill": __version__, "torch": torch.__version__}


def _incompatible_weights_message(name: str, saved: dict, current: dict, error) -> str:
    """Why pickled weights do not load, naming the versions that saved and load them."""
    saved_with = (
        f"skdistill {saved['skdistill']} (torch {saved.get('torch', 'unknown')})"
        if "skdistill" in saved
        else "an unknown skdistill version"
    )
    reason = str(error).strip().splitlines()
    hint = (
        f"install the version it was saved with (pip install skdistill=={saved['skdistill']})"
        if "skdistill" in saved
        else "load it with the skdistill version it was saved with"
    )
    return (
        f"The weights of this saved {name} do not fit the network that skdistill "
        f"{current['skdistill']} (torch {current['torch']}) builds for it; it was saved with "
        f"{saved_with}. Refit the model with this version, or {hint} to use it. "
        f"torch: {' '.join(line.strip() for line in reason[:3])}"
    )


class BaseVolumeClassifier(ClassifierMixin, BaseVolumeEstimator):
    """Base class of the volume classifiers: labels through ``classes_``; not for direct use."""

    def _make_network(self) -> torch.nn.Module:
        return build_network(
            getattr(self, self._arch_parameter),
            len(self.classes_),
            self.input_shape_,
            self.n_channels_,
        )

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (softmax at temperature 1).

        Parameters
        ----------
        X : array-like of shape (n_samples, D, H, W) or (n_samples, 1, D, H, W)
            Volumes of the shape seen in fit, or a lazy
            :class:`~skdistill.io.SubtomogramStack`, read in batches.

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
            Rows sum to 1; columns follow ``classes_``.
        """
        return self._predict_batches(X, reduce=softmax_over_classes)

    def predict_log_proba(self, X) -> np.ndarray:
        """Logarithm of :meth:`predict_proba`, computed stably from the logits.

        Parameters
        ----------
        X : array-like of shape (n_samples, D, H, W) or (n_samples, 1, D, H, W)
            Volumes of the shape seen in fit, or a lazy
            :class:`~skdistill.io.SubtomogramStack`, read in batches.

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
        """
        return self._predict_batches(X, reduce=log_softmax_over_classes)

    def predict(self, X) -> np.ndarray:
        """Predicted class labels.

        Parameters
        ----------
        X : array-like of shape (n_samples, D, H, W) or (n_samples, 1, D, H, W)
            Volumes of the shape seen in fit, or a lazy
            :class:`~skdistill.io.SubtomogramStack`, read in batches.

        Returns
        -------
        ndarray of shape (n_samples,)
            Labels from ``classes_``.
        """
        indices = self._predict_batches(X, reduce=_argmax_over_classes)
        return self.classes_[indices]

    def score(self, X, y, sample_weight=None) -> float:
        """Accuracy of :meth:`predict` on ``X`` against ``y``.

        The fraction of correctly classified volumes
        (:func:`sklearn.metrics.accuracy_score`), weighted by ``sample_weight`` if given;
        what ``GridSearchCV`` ranks candidates by with ``scoring=None``.

        Parameters
        ----------
        X : array-like of shape (n_samples, D, H, W) or (n_samples, 1, D, H, W)
            Volumes of the shape seen in fit, or a lazy
            :class:`~skdistill.io.SubtomogramStack`, read in batches.
        y : array-like of shape (n_samples,)
            True labels.
        sample_weight : array-like of shape (n_samples,), default=None
            Sample weights.

        Returns
        -------
        float
            Accuracy in [0, 1].
        """
        return float(accuracy_score(y, self.predict(X), sample_weight=sample_weight))


def _argmax_over_classes(logits: torch.Tensor) -> torch.Tensor:
    return logits.argmax(dim=1)


def softmax_over_classes(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities of a batch of logits (axis 1), in float32.

    The network computes its logits in float32 (or bfloat16), so a float64 softmax would
    only add digits below their precision while doubling the memory of the result, which
    for segmentation is ``n_classes`` values per voxel. Probabilities below float32's
    smallest normal number (about 1e-38) round to 0; :meth:`predict_log_proba` keeps them.
    """
    return torch.softmax(logits.float(), dim=1)


def log_softmax_over_classes(logits: torch.Tensor) -> torch.Tensor:
    """Log-probabilities of a batch of logits (axis 1), in float32 (stable, no underflow)."""
    return torch.log_softmax(logits.float(), dim=1)


def check_finite_logits(logits: torch.Tensor, batch: torch.Tensor, start: int) -> None:
    """Raise :class:`NonFiniteOutputError` if a batch of logits holds NaN or infinity.

    One reduction on the device per batch; the details of the message are only computed
    when it fails.

    Parameters
    ----------
    logits : torch.Tensor of shape (k, n_classes, ...)
        The network's outputs for the batch.
    batch : torch.Tensor of shape (k, C, D, H, W)
        The batch's input volumes.
    start : int
        Index of the batch's first volume in the data passed to the estimator.
    """
    if bool(torch.isfinite(logits).all()):
        return
    bad = (~torch.isfinite(logits)).flatten(start_dim=1).any(dim=1).nonzero().flatten()
    rows = [start + int(i) for i in bad[:5]]
    more = f" and {len(bad) - len(rows)} more" if len(bad) > len(rows) else ""
    largest = float(batch.abs().max())
    raise NonFiniteOutputError(
        f"The network's outputs are NaN or infinite for volume(s) {rows}{more} (batch of "
        f"volumes {start}..{start + len(logits) - 1}, largest |value| in it {largest:.3g}), "
        "so no prediction can be made from them. The input values are probably far outside "
        "the range the network was trained on: check the input scale, e.g. normalise the "
        "volumes as in training (skdistill.preprocessing.VolumeNormalizer)."
    )


def split_train_valid(
    n_samples: int, stratify: np.ndarray, validation_fraction: float | None, seed: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Indices of the training and validation rows (stratified when possible).

    Parameters
    ----------
    n_samples : int
        Number of rows.
    stratify : ndarray of shape (n_samples,)
        Group of each row (class index; ``-1`` for unlabeled rows).
    validation_fraction : float or None
        Share of rows held out; ``None`` holds out nothing.
    seed : int
        Seed of the shuffle.
    """
    indices = np.arange(n_samples)
    if validation_fraction is None:
        return indices, None
    n_valid = math.ceil(validation_fraction * n_samples)
    if n_valid >= n_samples:
        raise ValueError(
            f"validation_fraction={validation_fraction} of {n_samples} samples leaves no "
            "training data; pass more samples or validation_fraction=None."
        )
    counts = np.unique(stratify, return_counts=True)[1]
    can_stratify = counts.min() >= 2 and min(n_valid, n_samples - n_valid) >= len(counts)
    train, valid = train_test_split(
        indices,
        test_size=n_valid,
        random_state=seed,
        stratify=stratify if can_stratify else None,
    )
    return np.sort(train), np.sort(valid)
