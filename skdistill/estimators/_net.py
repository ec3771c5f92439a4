"""Private skorch nets owned by the estimators (``net_``), and their training callbacks.

Estimators compose a skorch :class:`~skorch.NeuralNet` rather than subclass it: skorch owns
the training loop, callbacks and history; scikit-learn's parameter rules stay with the
estimator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from skorch import NeuralNet
from skorch.callbacks import Callback, EarlyStopping, LRScheduler
from skorch.dataset import Dataset
from skorch.helper import predefined_split
from skorch.history import History
from skorch.utils import to_tensor
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from ..exceptions import TrainingDivergedError
from ..losses import DistillationLoss
from ..utils.precision import autocast, to_channels_last

__all__ = [
    "DistillationNet",
    "TrainingConfig",
    "TrainingNet",
    "close_progress_bars",
    "epoch_summary",
    "make_net",
    "softmax_over_class_axis",
]


class TrainingNet(NeuralNet):
    """skorch net that runs forward passes on channels-last volumes, in bf16 if asked.

    Parameters
    ----------
    precision : {"fp32", "bf16"}, default="fp32"
        ``"bf16"`` runs forward passes under :func:`torch.autocast` with bfloat16; the loss
        is computed from float32 logits either way.
    """

    def __init__(self, *args, precision: str = "fp32", **kwargs):
        super().__init__(*args, **kwargs)
        self.precision = precision

    def initialize_module(self):
        super().initialize_module()
        self.module_ = self.module_.to(memory_format=torch.channels_last_3d)
        return self

    def infer(self, x, **fit_params):
        x = to_tensor(x, device=self.device)
        if isinstance(x, torch.Tensor) and x.ndim == 4:
            # volumes (n, D, H, W) as the estimators take them: add the channel axis, so that
            # ``est.net_.predict_proba(X)`` works on the same X as ``est.predict_proba(X)``
            x = x.unsqueeze(1)
        x = to_channels_last(x)
        with autocast(self.device, self.precision):
            return super().infer(x, **fit_params).float()


class DistillationNet(TrainingNet):
    """skorch net whose targets pack teacher probabilities and hard labels.

    ``y`` has shape ``(n, n_classes + 1)``: the teacher's softmax at temperature ``T`` in
    the first ``n_classes`` columns and the hard class index (``-1``: unlabeled) in the
    last. Packing keeps skorch's datasets, splits and scoring unchanged.
    """

    def get_loss(self, y_pred, y_true, X=None, training=False):
        y_true = to_tensor(y_true, device=self.device)
        return self.criterion_(y_pred, y_true[:, :-1], y_true[:, -1].long())


class KerasDecay:
    """Keras' per-iteration learning-rate decay factor ``1 / (1 + decay * iteration)``."""

    def __init__(self, decay: float) -> None:
        self.decay = decay

    def __call__(self, iteration: int) -> float:
        return 1.0 / (1.0 + self.decay * iteration)


class BatchAccuracy(Callback):
    """An epoch's accuracy over the labeled rows (or voxels), counted batch by batch.

    Rows for classifiers, voxels for segmenters; with packed distillation targets the hard
    labels are the last channel, and ``-1`` marks unlabeled rows. Counting on the device as
    batches pass keeps no predictions (skorch's cached ``EpochScoring`` holds every batch's
    output until the epoch ends, which for voxel logits is most of the data set again).

    Parameters
    ----------
    name : str
        History key, e.g. ``"train_acc"``.
    on_train : bool
        Count training batches (True) or validation batches (False).
    """

    def __init__(self, name: str, on_train: bool) -> None:
        self.name = name
        self.on_train = on_train

    def on_epoch_begin(self, net, **kwargs):
        self.correct_, self.total_ = 0, 0

    def on_batch_end(self, net, batch=None, training=None, y_pred=None, **kwargs):
        if training != self.on_train:
            return
        y = to_tensor(batch[1], device=y_pred.device)
        labels = (y[:, -1] if y.dim() == y_pred.dim() else y).long()
        labeled = labels >= 0
        self.correct_ += int((y_pred.argmax(dim=1)[labeled] == labels[labeled]).sum())
        self.total_ += int(labeled.sum())

    def on_epoch_end(self, net, **kwargs):
        accuracy = self.correct_ / self.total_ if self.total_ else float("nan")
        net.history.record(self.name, accuracy)


class EpochProgressBar(Callback):
    """A tqdm bar over epochs (on stderr) showing the latest losses and accuracies."""

    def __init__(self, description: str = "fit") -> None:
        self.description = description

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        from tqdm.auto import tqdm

        self.bar_ = tqdm(total=net.max_epochs, desc=self.description, unit="epoch", leave=True)

    def on_epoch_end(self, net, **kwargs):
        row = net.history[-1]
        self.bar_.set_postfix(
            {key: f"{row[key]:.3f}" for key in _PROGRESS_KEYS if key in row}, refresh=False
        )
        self.bar_.update(1)

    def on_train_end(self, net, X=None, y=None, **kwargs):
        self.close()

    def close(self) -> None:
        """Close the bar (skorch skips ``on_train_end`` when training raises)."""
        bar = getattr(self, "bar_", None)
        if bar is not None:
            bar.close()


def close_progress_bars(net: NeuralNet) -> None:
    """Close the progress bars of ``net``'s callbacks, e.g. after training raised."""
    for _, callback in getattr(net, "callbacks_", []):
        if isinstance(callback, EpochProgressBar):
            callback.close()


_PROGRESS_KEYS = ("train_loss", "valid_loss", "valid_acc")


class StopOnNonFiniteLoss(Callback):
    """Raise :class:`TrainingDivergedError` as soon as an epoch's training loss is not finite."""

    def on_epoch_end(self, net, **kwargs):
        loss = net.history[-1, "train_loss"]
        if not np.isfinite(loss):
            raise TrainingDivergedError(
                f"Training diverged: the training loss is {loss} at epoch "
                f"{net.history[-1, 'epoch']} (lr={net.lr}). Lower lr, or normalise the "
                "volumes (skdistill.preprocessing.VolumeNormalizer)."
            )


@dataclass(frozen=True)
class TrainingConfig:
    """Training settings shared by all estimators (the paper's SGD setup by default)."""

    max_epochs: int
    batch_size: int
    lr: float
    optimizer: str
    momentum: float
    nesterov: bool
    lr_decay: float
    early_stopping: int | None
    device: str
    verbose: int
    precision: str = "fp32"
    description: str = "fit"


def make_net(
    module: nn.Module,
    config: TrainingConfig,
    *,
    distillation: tuple[float, float] | None = None,
    valid_data: tuple[np.ndarray, np.ndarray] | torch.utils.data.Dataset | None = None,
    seed: int = 0,
    class_weight: np.ndarray | None = None,
) -> NeuralNet:
    """Assemble the skorch net that trains ``module``.

    Parameters
    ----------
    module : torch.nn.Module
        Network mapping volumes to logits.
    config : TrainingConfig
        Optimiser, schedule and stopping settings.
    distillation : (temperature, alpha), default=None
        Train with :class:`~skdistill.losses.DistillationLoss` on packed soft targets
        instead of cross-entropy on class indices.
    valid_data : (X, y) or torch Dataset, default=None
        Held-out data for validation loss, accuracy and early stopping.
    seed : int, default=0
        Seed of the training data loader's shuffling.
    class_weight : ndarray of shape (n_classes,), default=None
        Per-class weights of the rows (voxels) by their hard label, in the cross-entropy or
        the distillation loss.
    """
    callbacks: list = [
        ("stop_on_non_finite_loss", StopOnNonFiniteLoss()),
        ("train_acc", BatchAccuracy("train_acc", on_train=True)),
    ]
    if valid_data is not None:
        callbacks.append(("valid_acc", BatchAccuracy("valid_acc", on_train=False)))
        if config.early_stopping is not None:
            callbacks.append(
                (
                    "early_stopping",
                    EarlyStopping(
                        monitor="valid_loss",
                        patience=config.early_stopping,
                        threshold=0.0,
                        load_best=True,
                    ),
                )
            )
    if config.verbose == 1:
        callbacks.append(("progress", EpochProgressBar(config.description)))
    if config.lr_decay > 0:
        callbacks.append(
            (
                "lr_decay",
                LRScheduler(
                    policy=LambdaLR, lr_lambda=KerasDecay(config.lr_decay), step_every="batch"
                ),
            )
        )
    if distillation is None:
        net_class, criterion, criterion_params = TrainingNet, nn.CrossEntropyLoss, {}
        weight_parameter = "criterion__weight"
    else:
        temperature, alpha = distillation
        net_class, criterion = DistillationNet, DistillationLoss
        criterion_params = {"criterion__temperature": temperature, "criterion__alpha": alpha}
        weight_parameter = "criterion__class_weight"
    if class_weight is not None:
        criterion_params[weight_parameter] = torch.as_tensor(class_weight, dtype=torch.float32)
    return net_class(
        module=module,
        criterion=criterion,
        lr=config.lr,
        **_optimizer_params(config),
        max_epochs=config.max_epochs,
        batch_size=config.batch_size,
        train_split=None if valid_data is None else predefined_split(_as_dataset(valid_data)),
        callbacks=callbacks,
        iterator_train__shuffle=True,
        iterator_train__generator=torch.Generator().manual_seed(seed),
        device=config.device,
        verbose=int(config.verbose >= 2),
        precision=config.precision,
        # skorch's "auto" softmax runs over the last axis, wrong for voxel logits
        # (n, K, D, H, W): net.predict_proba takes the softmax over the class axis instead.
        predict_nonlinearity=softmax_over_class_axis,
        **criterion_params,
    )


def softmax_over_class_axis(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over axis 1, the class axis of ``(n, K)`` and ``(n, K, D, H, W)`` logits.

    The nets' ``predict_nonlinearity``: ``net.predict_proba`` then returns probabilities,
    as skorch documents, for classifiers and segmenters alike.
    """
    return torch.softmax(logits, dim=1)


def _as_dataset(data) -> torch.utils.data.Dataset:
    """A torch dataset of ``data``: as is, or a skorch ``Dataset`` of an ``(X, y)`` pair."""
    return data if isinstance(data, torch.utils.data.Dataset) else Dataset(*data)


def _optimizer_params(config: TrainingConfig) -> dict:
    """skorch arguments of the optimizer: SGD (the paper's) or Adam."""
    if config.optimizer == "adam":
        return {"optimizer": torch.optim.Adam}
    return {
        "optimizer": torch.optim.SGD,
        "optimizer__momentum": config.momentum,
        "optimizer__nesterov": config.nesterov,
    }


def epoch_summary(history: History) -> History:
    """Per-epoch history without the per-batch records (small enough to pickle)."""
    return History([{k: v for k, v in row.items() if k != "batches"} for row in history])


def best_epoch_index(net: NeuralNet) -> int:
    """Index into ``net.history`` of the epoch whose weights the net holds after fit."""
    callbacks = dict(net.callbacks_)
    stopper = callbacks.get("early_stopping")
    if stopper is None or stopper.best_epoch_ is None:
        return len(net.history) - 1
    epochs = net.history[:, "epoch"]
    return epochs.index(stopper.best_epoch_)
