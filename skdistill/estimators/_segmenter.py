"""Voxel-wise segmentation of subtomograms: ``Cnn3DSegmenter`` and ``DistilledSegmenter``."""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import _fit_context
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.validation import check_array, check_is_fitted

from ..architectures.segmentation import (
    build_segmentation_network,
    check_segmentation_input_size,
    list_segmentation_architectures,
)
from ..metrics import mean_iou
from ..utils.device import draw_seed
from ..utils.validation import (
    MAX_SEGMENTATION_CLASSES,
    check_label_volumes,
    check_segmentation_labels,
    input_ndim,
)
from ._base import (
    TRAINING_PARAMETER_CONSTRAINTS,
    BaseVolumeEstimator,
    _argmax_over_classes,
    log_softmax_over_classes,
    softmax_over_classes,
)
from ._teacher import TeacherMixin, distillation_targets, teacher_log_proba

__all__ = ["Cnn3DSegmenter", "DistilledSegmenter"]

#: The light U-Net's size knobs (estimator parameters; ``None``: the builder's default).
UNET_KNOBS = ("base_filters", "filter_multiplier", "levels", "last_filters")

SEGMENTER_CONSTRAINTS: dict = {
    **TRAINING_PARAMETER_CONSTRAINTS,
    "n_classes": [Interval(Integral, 2, MAX_SEGMENTATION_CLASSES, closed="both"), None],
    "base_filters": [Interval(Integral, 1, None, closed="left"), None],
    "filter_multiplier": [Interval(Real, 0, None, closed="neither"), None],
    "levels": [Interval(Integral, 2, None, closed="left"), None],
    "last_filters": [Interval(Integral, 1, None, closed="left"), None],
    "class_weight": [StrOptions({"balanced"}), None],
}

#: Voxels per forward pass at prediction time, by device type. Segmentation nets keep
#: full-resolution feature maps up to their last layer, so their batches are counted in
#: voxels: on CPU 4 volumes of 40³, where small batches stay in cache and run faster than the
#: classifiers' 64 (``benchmarks/bench_segmentation_inference.py``, results in
#: ``docs/benchmarks/segmentation_inference.md``); on CUDA a conservative setting for 16 GB
#: cards, not measured here.
SEGMENTATION_INFERENCE_VOXELS = {"cpu": 4 * 40**3, "cuda": 128 * 40**3}

SEGMENTATION_ARCH = [StrOptions(set(list_segmentation_architectures())), callable]


class _BaseSegmenter(BaseVolumeEstimator):
    """Label volumes in, label volumes out; score is the mean IoU."""

    #: Marks segmenters for the distilled estimators' teacher checks.
    _segments_volumes = True
    #: The SSN3D paper's early-stopping patience, used by ``early_stopping="auto"``.
    _auto_patience = 20
    #: The volumes and their int64 label volumes (3.51 measured; see BaseVolumeEstimator).
    _fit_volume_copies = 4.0

    def _knobs(self) -> dict:
        return {k: getattr(self, k) for k in UNET_KNOBS if getattr(self, k) is not None}

    def _make_network(self):
        return build_segmentation_network(
            getattr(self, self._arch_parameter),
            self.n_classes_,
            self.input_shape_,
            self.n_channels_,
            **self._knobs(),
        )

    def _validate_segmentation_inputs(self, X, y, voxel_size=None) -> tuple[np.ndarray, np.ndarray]:
        """Validate volumes and label masks; set ``n_classes_``, ``classes_``, ``voxel_size_``."""
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None. "
                "Pass one label volume (n_samples, D, H, W) per volume."
            )
        if input_ndim(X) == 2:
            # The generic array checks first (sparse, complex, non-finite, empty input).
            check_array(X, dtype=np.float32, input_name="X", estimator=self)
            raise ValueError(
                "Segmentation needs volumes (n_samples, D, H, W) or (n_samples, 1, D, H, W), "
                "not 2D feature rows."
            )
        X = self._validate_fit_inputs(X, voxel_size)
        masks, largest = check_masks(y, len(X), self.input_shape_)
        n_classes = self.n_classes if self.n_classes is not None else max(2, largest + 1)
        if largest >= n_classes:
            raise ValueError(
                f"y holds label {largest} but n_classes={n_classes}; labels must be in "
                f"0..{n_classes - 1}. Raise n_classes or relabel the masks."
            )
        self.n_classes_ = int(n_classes)
        self.classes_ = np.arange(self.n_classes_)
        arch = getattr(self, self._arch_parameter)
        if isinstance(arch, str):
            check_segmentation_input_size(arch, self.input_shape_, **self._knobs())
        return X, masks

    def _class_weights(self, masks: np.ndarray) -> np.ndarray | None:
        if self.class_weight is None:
            return None
        present = np.unique(masks)
        weights = np.ones(self.n_classes_)
        weights[present] = compute_class_weight("balanced", classes=present, y=masks.ravel())
        return weights

    def _inference_batch_size(self) -> int:
        device_type = torch.device(self.device_).type
        voxels = SEGMENTATION_INFERENCE_VOXELS.get(
            device_type, SEGMENTATION_INFERENCE_VOXELS["cpu"]
        )
        return max(1, voxels // math.prod(self.input_shape_))

    def predict_proba(self, X) -> np.ndarray:
        """Per-voxel class probabilities.

        Parameters
        ----------
        X : array-like of shape (n_samples, D, H, W) or (n_samples, 1, D, H, W)
            Volumes of the shape seen in fit, or a lazy
            :class:`~skdistill.io.SubtomogramStack`, read in batches.

        Returns
        -------
        ndarray of shape (n_samples, n_classes, D, H, W)
            Probabilities summing to 1 over axis 1.
        """
        return self._predict_batches(X, reduce=softmax_over_classes)

    def predict_log_proba(self, X) -> np.ndarray:
        """Logarithm of :meth:`predict_proba`.

        Parameters
        ----------
        X : array-like of shape (n_samples, D, H, W) or (n_samples, 1, D, H, W)
            Volumes of the shape seen in fit.

        Returns
        -------
        ndarray of shape (n_samples, n_classes, D, H, W)
        """
        return self._predict_batches(X, reduce=log_softmax_over_classes)

    def predict(self, X) -> np.ndarray:
        """Label volumes: the most probable class of every voxel.

        Parameters
        ----------
        X : array-like of shape (n_samples, D, H, W) or (n_samples, 1, D, H, W)
            Volumes of the shape seen in fit.

        Returns
        -------
        ndarray of shape (n_samples, D, H, W), dtype int8
            Labels ``0..n_classes_ - 1``; int8 like the simulator's masks and the MRC label
            volumes, a byte per voxel; int16 above 128 classes (:func:`label_dtype`).
        """
        check_is_fitted(self, "net_")
        label_type = getattr(torch, label_dtype(self.n_classes_).name)

        def labels(logits: torch.Tensor) -> torch.Tensor:
            # Reduced on the device, batch by batch: only labels reach host memory.
            return _argmax_over_classes(logits).to(label_type)

        return self._predict_batches(X, reduce=labels)

    def score(self, X, y, sample_weight=None) -> float:
        """Mean IoU of :meth:`predict` against the label volumes ``y``.

        The mean over the classes present in ``y`` or in the prediction, computed with
        :func:`skdistill.metrics.mean_iou`; ``sample_weight`` is not supported.

        Parameters
        ----------
        X : array-like of shape (n_samples, D, H, W) or (n_samples, 1, D, H, W)
            Volumes.
        y : array-like of shape (n_samples, D, H, W)
            True label volumes.
        sample_weight : None
            Must be None.

        Returns
        -------
        float
        """
        if sample_weight is not None:
            raise ValueError("sample_weight is not supported by the mean IoU score.")
        check_is_fitted(self, "net_")
        masks, largest = check_masks(y, len(X), self.input_shape_, keep_integer_dtype=True)
        if largest >= self.n_classes_:
            raise ValueError(
                f"y holds label {largest}, but this segmenter was fitted on "
                f"{self.n_classes_} classes (labels 0..{self.n_classes_ - 1})."
            )
        return mean_iou(masks, self.predict(X))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.estimator_type = None
        tags.target_tags.required = True
        tags.target_tags.single_output = False
        tags.target_tags.multi_output = True
        return tags


def label_dtype(n_classes: int) -> np.dtype:
    """The smallest signed integer type holding the labels ``0..n_classes - 1``.

    int8 up to 128 classes, int16 up to ``MAX_SEGMENTATION_CLASSES`` (and beyond, wider
    types, so that predicted labels can never wrap around).
    """
    for dtype in (np.int8, np.int16, np.int32):
        if n_classes - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


def check_masks(
    y, n_samples: int, input_shape: tuple[int, ...], *, keep_integer_dtype: bool = False
) -> tuple[np.ndarray, int]:
    """Check label volumes against the volumes they label; return them as integers.

    Parameters
    ----------
    y : array-like of shape (n_samples, D, H, W) or (n_samples, 1, D, H, W)
        Integer labels: class ids ``0`` (background) to ``MAX_SEGMENTATION_CLASSES - 1``
        (255); floats must be whole numbers.
    n_samples : int
        Number of volumes.
    input_shape : tuple of int
        Shape ``(D, H, W)`` of the volumes.
    keep_integer_dtype : bool, default=False
        Return integer (or boolean) masks in their own dtype, without an int64 copy
        (scoring needs no more; training targets must be int64).

    Returns
    -------
    masks : ndarray of shape (n_samples, D, H, W)
    largest : int
        The largest label.
    """
    masks = check_label_volumes(y, (n_samples, *input_shape), name="y")
    largest = check_segmentation_labels(masks, name="y")  # before any cast can wrap
    if not (keep_integer_dtype and masks.dtype.kind in "biu"):
        masks = masks.astype(np.int64)
    return masks, largest


class Cnn3DSegmenter(_BaseSegmenter):
    """Segment subtomograms voxel by voxel with an encoder-decoder 3D CNN.

    A scikit-learn estimator around a skorch-trained network mapping a volume to per-voxel
    class logits: the SSN3D nets of Liu, Zeng et al. (ICIP 2018) or a light U-Net whose size
    is set by four knobs (Matuszewski & Sintorn 2019). Defaults follow the SSN3D paper's
    training: Adam, lr 1e-3, batch 128, at most 150 epochs, early stopping patience 20.

    Label volumes hold class ids ``0`` (background) to ``n_classes - 1``, at most 255 (256
    classes, :data:`skdistill.utils.validation.MAX_SEGMENTATION_CLASSES`): the network has
    one output per class id, so larger ids (instance ids, sparse label values) are refused
    with a ``ValueError`` before any network is built; relabel them to consecutive ids.

    Parameters
    ----------
    arch : str or callable, default="ssn3d"
        ``"ssn3d"`` (the encoder-decoder FCN of the authors' training script),
        ``"ssn3d_fcn8"``, ``"ssn3d_fcn1"``, ``"ssn3d_aspp"``, ``"unet"``, or a factory
        ``(n_classes, input_shape, in_channels, **knobs) -> torch.nn.Module``.
    n_classes : int or None, default=None
        Number of classes (background included), 2 to 256; ``None``: ``max(y) + 1`` (at
        least 2).
    base_filters, filter_multiplier, levels, last_filters : int, float or None, default=None
        The light U-Net's size knobs (feature maps of the first level, growth per level,
        number of levels, feature maps of the last two convolutions); ``None`` keeps the
        builder's default. Flat parameters, so a grid search reads
        ``{"base_filters": [4, 8, 16], "levels": [2, 3]}``. Only for ``arch="unet"``.
    class_weight : "balanced" or None, default=None
        ``"balanced"`` weights the voxel cross-entropy by inverse class frequency, computed
        on each fit's masks (scikit-learn's ``compute_class_weight``).
    max_epochs, batch_size, lr, optimizer, momentum, nesterov, lr_decay, early_stopping, \
validation_fraction, device, precision, inference_precision, random_state, verbose, \
standardize
        Training and prediction settings as in :class:`~skdistill.Cnn3DClassifier`, with
        the defaults listed in the signature; ``early_stopping="auto"`` means a patience of
        20 epochs with a validation split and none without.

    Attributes
    ----------
    n_classes_ : int
        Number of classes.
    classes_ : ndarray of shape (n_classes,)
        ``arange(n_classes_)``: the label values.
    class_weight_ : ndarray or None
        Class weights used in the loss.
    input_shape_, n_channels_, device_, precision_, module_, net_, history_, n_iter_, \
best_epoch_, validation_score_, n_parameters_, voxel_size_
        As in :class:`~skdistill.Cnn3DClassifier` (accuracies are voxel accuracies;
        ``module_`` maps volumes to voxel logits ``(n, n_classes, D, H, W)``).

    Examples
    --------
    >>> import numpy as np
    >>> from skdistill import Cnn3DSegmenter
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(8, 8, 8, 8)).astype("float32")
    >>> y = (X > 0.5).astype(int)
    >>> seg = Cnn3DSegmenter("unet", levels=2, base_filters=4, last_filters=4,
    ...                      max_epochs=2, batch_size=4, random_state=0).fit(X, y)
    >>> seg.predict(X[:2]).shape, seg.predict_proba(X[:2]).shape
    ((2, 8, 8, 8), (2, 2, 8, 8, 8))
    """

    _arch_parameter = "arch"
    _parameter_constraints: dict = {"arch": SEGMENTATION_ARCH, **SEGMENTER_CONSTRAINTS}

    def __init__(
        self,
        arch="ssn3d",
        *,
        n_classes=None,
        base_filters=None,
        filter_multiplier=None,
        levels=None,
        last_filters=None,
        class_weight=None,
        max_epochs=150,
        batch_size=128,
        lr=1e-3,
        optimizer="adam",
        momentum=0.9,
        nesterov=True,
        lr_decay=0.0,
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
        self.n_classes = n_classes
        self.base_filters = base_filters
        self.filter_multiplier = filter_multiplier
        self.levels = levels
        self.last_filters = last_filters
        self.class_weight = class_weight
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
        """Train the network on volumes and their label volumes.

        Parameters
        ----------
        X : array-like of shape (n_samples, D, H, W) or (n_samples, 1, D, H, W)
            Cubic volumes.
        y : array-like of shape (n_samples, D, H, W)
            Integer label volumes (0 = background).
        voxel_size : float or None, default=None
            Voxel size of ``X`` in Å, remembered as ``voxel_size_``; see
            :meth:`Cnn3DClassifier.fit <skdistill.Cnn3DClassifier.fit>`.

        Returns
        -------
        self : Cnn3DSegmenter
        """
        X, masks = self._validate_segmentation_inputs(X, y, voxel_size)
        self.class_weight_ = self._class_weights(masks)
        self._train(
            X,
            masks,
            stratify=np.zeros(len(X)),
            seed=draw_seed(self.random_state),
            class_weight=self.class_weight_,
        )
        return self


class DistilledSegmenter(TeacherMixin, _BaseSegmenter):
    """Train a small segmenter on a teacher segmenter's per-voxel soft labels.

    As :class:`~skdistill.DistilledClassifier`, voxel by voxel: the teacher (fitted on the
    masks, or reused as is when wrapped in :class:`sklearn.frozen.FrozenEstimator`; fits can
    be cached with ``memory=``) gives per-voxel probabilities at temperature ``T``; the
    student minimises ``T**2 * KL(teacher || student)`` summed over classes and averaged over
    volumes *and voxels*, plus ``alpha`` times the voxel cross-entropy on the masks.

    Parameters
    ----------
    teacher : segmenter or None, default=None
        Estimator with ``fit`` and ``predict_proba`` returning ``(n, n_classes, D, H, W)``.
        ``None`` means ``Cnn3DSegmenter()`` (SSN3D) with this estimator's device, precision,
        verbosity and ``standardize`` settings.
    student_arch : str or callable, default="unet"
        Student network (see :class:`Cnn3DSegmenter`'s ``arch``); the U-Net knobs apply to it.
    temperature : float, default=5.0
        Softmax temperature ``T``.
    alpha : float, default=0.0
        Weight of the hard-mask cross-entropy term.
    memory : str, joblib.Memory or None, default=None
        Cache of teacher fits.
    n_classes, base_filters, filter_multiplier, levels, last_filters, max_epochs, \
batch_size, lr, optimizer, momentum, nesterov, lr_decay, early_stopping, \
validation_fraction, device, precision, inference_precision, random_state, verbose, \
standardize
        As in :class:`Cnn3DSegmenter`.
    class_weight : "balanced" or None, default=None
        ``"balanced"`` weights every voxel's KL (and cross-entropy) term by the inverse
        frequency of its true class, computed on each fit's masks: without it a small student
        can minimise the voxel-averaged loss by predicting background everywhere when the
        target fills a small share of the box. A default teacher is trained with the same
        setting.

    Attributes
    ----------
    n_classes_, classes_, class_weight_, module_, net_, history_, n_parameters_, voxel_size_
        As in :class:`Cnn3DSegmenter` (of the student).
    teacher_n_parameters_ : int or None
        Parameters of the teacher.
    compression_rate_ : float or None
        ``teacher_n_parameters_ / n_parameters_``.
    teacher_score_ : float
        The teacher's validation voxel accuracy (NaN if unknown).
    """

    _arch_parameter = "student_arch"
    _teacher_segments = True
    _parameter_constraints: dict = {
        "teacher": [HasMethods(["fit", "predict_proba"]), None],
        "student_arch": SEGMENTATION_ARCH,
        "temperature": [Interval(Real, 0, None, closed="neither")],
        "alpha": [Interval(Real, 0, 1, closed="both")],
        "memory": [None, str, HasMethods(["cache"])],
        **SEGMENTER_CONSTRAINTS,
    }

    def __init__(
        self,
        teacher=None,
        student_arch="unet",
        temperature=5.0,
        alpha=0.0,
        memory=None,
        *,
        n_classes=None,
        base_filters=None,
        filter_multiplier=None,
        levels=None,
        last_filters=None,
        class_weight=None,
        max_epochs=150,
        batch_size=128,
        lr=1e-3,
        optimizer="adam",
        momentum=0.9,
        nesterov=True,
        lr_decay=0.0,
        early_stopping="auto",
        validation_fraction=0.2,
        device="auto",
        precision="fp32",
        inference_precision="auto",
        random_state=None,
        verbose=0,
        standardize=False,
    ):
        self.teacher = teacher
        self.student_arch = student_arch
        self.temperature = temperature
        self.alpha = alpha
        self.memory = memory
        self.n_classes = n_classes
        self.base_filters = base_filters
        self.filter_multiplier = filter_multiplier
        self.levels = levels
        self.last_filters = last_filters
        self.class_weight = class_weight
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

    def _description(self) -> str:
        return f"{super()._description()} (T={self.temperature:g})"

    @property
    def _fit_volume_copies(self) -> float:
        # The volumes, the masks (int64), the teacher's copies of both, its log-probabilities
        # and the soft targets, per class: 9.11 measured with 2 classes, 13.11 with 4. Without
        # n_classes the classes are not known before the masks are read: at least 2.
        n_classes = 2 if self.n_classes is None else self.n_classes
        return 2.0 * n_classes + 6.0

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y, *, voxel_size=None):
        """Fit (or reuse) the teacher, then train the student on its per-voxel soft labels.

        Parameters
        ----------
        X : array-like of shape (n_samples, D, H, W) or (n_samples, 1, D, H, W)
            Cubic volumes.
        y : array-like of shape (n_samples, D, H, W)
            Integer label volumes.
        voxel_size : float or None, default=None
            Voxel size of ``X`` in Å, remembered as ``voxel_size_``; see
            :meth:`Cnn3DClassifier.fit <skdistill.Cnn3DClassifier.fit>`.

        Returns
        -------
        self : DistilledSegmenter
        """
        X, masks = self._validate_segmentation_inputs(X, y, voxel_size)
        teacher = self._fitted_teacher(X, masks, np.arange(len(X)))
        log_proba = teacher_log_proba(teacher, X)
        if log_proba.shape[1:] != (self.n_classes_, *self.input_shape_):
            raise ValueError(
                f"The teacher's predict_proba gives shape {log_proba.shape[1:]} per volume, but "
                f"the student segments {self.n_classes_} classes of volumes "
                f"{self.input_shape_}; fit the teacher on the same classes or pass n_classes."
            )
        targets = distillation_targets(log_proba, masks, self.temperature)
        self.class_weight_ = self._class_weights(masks)
        del log_proba, masks  # the targets hold both: free them before training
        self._train(
            X,
            targets,
            stratify=np.zeros(len(X)),
            seed=draw_seed(self.random_state),
            distillation=(float(self.temperature), float(self.alpha)),
            class_weight=self.class_weight_,
        )
        self._record_teacher(teacher)
        return self

    def _default_teacher(self, **params) -> Cnn3DSegmenter:
        return Cnn3DSegmenter(n_classes=self.n_classes, class_weight=self.class_weight, **params)
