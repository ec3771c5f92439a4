"""3D CNN classifier of subtomograms trained on hard labels."""

from __future__ import annotations

import numpy as np
from sklearn.base import _fit_context
from sklearn.preprocessing import LabelEncoder

from ..utils.device import draw_seed
from ..utils.validation import check_labels, check_n_classes
from ._base import ARCH_CONSTRAINT, TRAINING_PARAMETER_CONSTRAINTS, BaseVolumeClassifier

__all__ = ["Cnn3DClassifier"]


class Cnn3DClassifier(BaseVolumeClassifier):
    """Classify subtomograms with a 3D convolutional network.

    A scikit-learn classifier around a skorch-trained PyTorch network. The defaults are the
    training setup of Guo et al. (2018): SGD with Nesterov momentum 0.9, learning rate
    0.005 with Keras-style per-iteration decay, batch 64, 20 epochs, early stopping on the
    validation loss after 5 epochs without improvement, restoring the best weights.

    Parameters
    ----------
    arch : str or callable, default="dsrf3d_v2"
        Network: a name from :func:`skdistill.architectures.list_architectures`
        (``"dsrf3d_v2"``, ``"s1"``, ``"s2"``, ``"s3"``, ``"tiny"``) or a factory
        ``(n_classes, input_shape, in_channels) -> torch.nn.Module`` returning logits.
    max_epochs : int, default=20
        Maximum number of passes over the training data.
    batch_size : int, default=64
        Volumes per training step.
    lr : float, default=0.005
        Initial learning rate.
    optimizer : {"sgd", "adam"}, default="sgd"
        ``"sgd"``: the paper's SGD with ``momentum`` and ``nesterov``; ``"adam"``: Adam
        (default betas), which leaves the deep teacher's initial loss plateau much sooner on
        small data sets (``momentum`` and ``nesterov`` are then ignored).
    momentum : float, default=0.9
        SGD momentum.
    nesterov : bool, default=True
        Use Nesterov momentum (SGD only).
    lr_decay : float, default=1e-7
        Keras-style decay: the learning rate at iteration ``i`` is ``lr / (1 + lr_decay * i)``.
    early_stopping : int, "auto" or None, default="auto"
        Stop after this many epochs without a lower validation loss and restore the best
        weights. ``"auto"``: 5 epochs when ``validation_fraction`` is set, no early stopping
        when it is None. ``None`` trains for ``max_epochs``. An int needs
        ``validation_fraction``: with ``validation_fraction=None`` fit raises ``ValueError``.
    validation_fraction : float or None, default=0.2
        Share of the training rows held out (stratified by class) for validation loss,
        accuracy and early stopping. ``None`` holds out nothing.
    device : str, default="auto"
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    precision : {"fp32", "bf16", "auto"}, default="fp32"
        Arithmetic of the training forward passes: ``"bf16"`` runs them under bfloat16
        autocast (faster where the hardware has bf16 units, see
        ``benchmarks/bench_inference.py`` for the measured speed-up and accuracy effect);
        ``"auto"`` picks bf16 only where it is native.
    inference_precision : {"auto", "fp32", "bf16"}, default="auto"
        Arithmetic of ``predict``/``predict_proba``: ``"auto"`` uses bfloat16 autocast
        where the device computes it natively (CUDA with bf16, a CPU with AVX512_BF16 or
        AMX) and float32 elsewhere; ``"fp32"`` forces float32. Can be changed after fit.
        Volumes thinner than 3 voxels (2D feature rows) always run in float32.
    random_state : int, RandomState instance or None, default=None
        Seeds weight initialisation, the validation split, shuffling and dropout. An int
        gives identical predictions on the same CPU and leaves the global torch and numpy
        random states untouched; ``None`` draws the seed from numpy's global generator.
    verbose : int, default=0
        0: silent; 1: a progress bar over epochs (tqdm, on stderr) with the latest losses;
        2 or more: skorch's per-epoch table.
    standardize : bool, default=False
        Scale each volume to zero mean and unit variance before the network, in ``fit`` and
        in every prediction batch (as :class:`~skdistill.preprocessing.VolumeNormalizer`
        does, but streamed and saved with the model, so a loaded model scales its input
        itself). Use it for volumes of arbitrary scale, such as boxes cut from tomograms.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    n_features_in_ : int
        Number of voxels times channels of one input volume.
    feature_names_in_ : ndarray of str
        Column names, when ``X`` was a 2D DataFrame with string column names.
    input_shape_ : tuple of int
        Volume shape ``(D, H, W)`` seen in fit (2D input ``(n, F)`` gives ``(F, 1, 1)``).
    n_channels_ : int
        Number of input channels.
    device_ : str
        Device the network lives on.
    precision_ : str
        Training precision used (``"fp32"`` or ``"bf16"``).
    module_ : torch.nn.Module
        The trained PyTorch network, mapping volumes ``(n, C, D, H, W)`` to logits
        ``(n, n_classes)``; the same object as ``net_.module_``.
    net_ : skorch.NeuralNet
        The skorch net that trained ``module_``. Its ``predict_proba`` returns
        probabilities (softmax over axis 1) as skorch documents; it takes 5D float32
        volumes and runs at the training ``precision``.
    history_ : skorch.history.History
        Per-epoch ``train_loss``, ``valid_loss``, ``train_acc``, ``valid_acc``, ``dur``.
    n_iter_ : int
        Number of epochs run.
    best_epoch_ : int
        Epoch (1-based) whose weights were kept.
    validation_score_ : float
        Validation accuracy of the kept weights (NaN without validation).
    n_parameters_ : int
        Number of trainable parameters of the network.
    voxel_size_ : float or None
        Voxel size in Å of the training volumes (the ``voxel_size`` fit parameter, or the
        training stack's), or None when unknown. Prediction on a stack of another voxel size
        (by more than 1 %) warns with :class:`~skdistill.exceptions.VoxelSizeWarning`.

    See Also
    --------
    DistilledClassifier : Train a small student network on this classifier's soft labels.

    Examples
    --------
    >>> from skdistill import Cnn3DClassifier
    >>> from skdistill.datasets import make_toy_volumes
    >>> X, y = make_toy_volumes(40, n_classes=2, size=8, random_state=0)
    >>> clf = Cnn3DClassifier(arch="tiny", max_epochs=2, random_state=0).fit(X, y)
    >>> clf.predict_proba(X[:3]).shape
    (3, 2)
    """

    _arch_parameter = "arch"
    _parameter_constraints: dict = {"arch": ARCH_CONSTRAINT, **TRAINING_PARAMETER_CONSTRAINTS}

    def __init__(
        self,
        arch="dsrf3d_v2",
        *,
        max_epochs=20,
        batch_size=64,
        lr=0.005,
        optimizer="sgd",
        momentum=0.9,
        nesterov=True,
        lr_decay=1e-7,
        early_stopping="auto",
        validation_fraction=0.2,
        device="auto",
        precision="fp32",
        inference_precision="auto",
        random_state=None,
        verbose=0,
        standardize=False,
    ):
        self.arch = arch
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.optimizer = optimizer
        self.momentum = momentum
        self.nesterov = nesterov
        self.lr_decay = lr_decay
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.device = device
        self.precision = precision
        self.inference_precision = inference_precision
        self.random_state = random_state
        self.verbose = verbose
        self.standardize = standardize

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, *, voxel_size=None):
        """Train the network on labeled volumes.

        Parameters
        ----------
        X : array-like of shape (n_samples, D, H, W) or (n_samples, 1, D, H, W)
            Cubic volumes (subtomograms). 2D ``(n_samples, n_features)`` is treated as
            volumes of shape ``(n_features, 1, 1)``.
        y : array-like of shape (n_samples,)
            Class labels of any type scikit-learn accepts.
        voxel_size : float or None, default=None
            Voxel size of ``X`` in Å, remembered as ``voxel_size_``. ``None`` takes it from
            ``X`` when it is a stack with a ``voxel_size``
            (:class:`~skdistill.io.SubtomogramStack`), else leaves it unknown. Must agree
            with a stack's own voxel size within 1 %.

        Returns
        -------
        self : Cnn3DClassifier
            The fitted classifier.
        """
        X = self._validate_fit_inputs(X, voxel_size)
        y = check_labels(y, len(X))
        encoder = LabelEncoder().fit(y)
        self.classes_ = encoder.classes_
        check_n_classes(self.classes_)
        labels = encoder.transform(y).astype(np.int64)
        self._train(X, labels, stratify=labels, seed=draw_seed(self.random_state))
        return self
