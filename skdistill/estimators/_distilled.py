"""Knowledge distillation: a small student network trained on a teacher's soft labels."""

from __future__ import annotations

from numbers import Real

import numpy as np
from sklearn.base import _fit_context
from sklearn.preprocessing import LabelEncoder
from sklearn.utils._param_validation import HasMethods, Interval

from ..architectures import check_input_size
from ..utils.device import draw_seed
from ..utils.validation import check_labels, check_n_classes, input_ndim, unlabeled_mask
from ._base import ARCH_CONSTRAINT, TRAINING_PARAMETER_CONSTRAINTS, BaseVolumeClassifier
from ._classifier import Cnn3DClassifier
from ._teacher import TeacherMixin, distillation_targets, teacher_log_proba

__all__ = ["DistilledClassifier"]


class DistilledClassifier(TeacherMixin, BaseVolumeClassifier):
    """Train a compact student network on a teacher's soft labels (Guo et al. 2018).

    Fitting (1) fits a clone of ``teacher`` on the labeled rows, or uses it as is when it is
    wrapped in :class:`sklearn.frozen.FrozenEstimator`; (2) computes the teacher's log-
    probabilities (logits up to a per-row constant) for all rows; (3) trains the student on
    ``softmax(logits / T)`` with loss ``T**2 * KL(teacher || student)`` (batch mean)
    ``+ alpha * CE(student, y)`` on the labeled rows. Rows with ``y == -1`` are unlabeled
    transfer data: used for distillation, never for the hard term or the teacher fit.

    Parameters
    ----------
    teacher : classifier or None, default=None
        Estimator with ``fit`` and ``predict_proba`` (``predict_log_proba`` is used when
        present). ``None`` means ``Cnn3DClassifier()`` (DSRF3D-v2) with this estimator's
        ``device``, ``precision``, ``inference_precision``, ``verbose``, ``standardize`` and
        (integer) ``random_state``. Wrap a fitted teacher in ``FrozenEstimator`` to reuse it
        without refitting; note that a teacher fitted on all data has seen every
        cross-validation test fold. To avoid that leak in a search, pass
        ``memory`` instead.
    student_arch : str or callable, default="s1"
        Student network (see :class:`Cnn3DClassifier`'s ``arch``).
    temperature : float, default=5.0
        Softmax temperature ``T`` of the soft labels (> 0).
    alpha : float, default=0.0
        Weight of the hard-label cross-entropy term, in [0, 1]. The paper uses 0.
    memory : str, joblib.Memory or None, default=None
        Cache of teacher fits, keyed on the teacher's parameters and the data: a grid search
        over ``temperature`` and ``student_arch`` then fits the teacher once per fold.
    max_epochs, batch_size, lr, optimizer, momentum, nesterov, lr_decay, early_stopping, \
validation_fraction, device, precision, inference_precision, random_state, verbose, \
standardize
        Student training and prediction settings, as in :class:`Cnn3DClassifier`.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels (from the labeled rows).
    n_features_in_ : int
        Number of voxels times channels of one input volume.
    input_shape_ : tuple of int
        Volume shape ``(D, H, W)`` seen in fit.
    n_channels_ : int
        Number of input channels.
    device_ : str
        Device the student lives on.
    precision_ : str
        Student training precision used (``"fp32"`` or ``"bf16"``).
    module_ : torch.nn.Module
        The trained student network (logits); the same object as ``net_.module_``.
    net_ : skorch.NeuralNet
        The skorch net that trained the student (see :class:`Cnn3DClassifier`).
    history_ : skorch.history.History
        Student's per-epoch ``train_loss``, ``valid_loss`` (distillation loss),
        ``train_acc``, ``valid_acc`` (accuracy on labeled rows), ``dur``.
    n_iter_ : int
        Number of student epochs run.
    best_epoch_ : int
        Student epoch whose weights were kept.
    validation_score_ : float
        Student's validation accuracy on labeled rows.
    n_parameters_ : int
        Number of trainable parameters of the student.
    voxel_size_ : float or None
        Voxel size in Å of the training volumes, or None (see :class:`Cnn3DClassifier`).
    teacher_n_parameters_ : int or None
        Number of trainable parameters of the teacher (None if it has no ``n_parameters_``).
    compression_rate_ : float or None
        ``teacher_n_parameters_ / n_parameters_``.
    teacher_score_ : float
        Teacher's accuracy on its own validation split (NaN if unknown).
    n_labeled_ : int
        Number of labeled rows (used for the teacher and the hard term).

    See Also
    --------
    Cnn3DClassifier : The teacher, and the hard-label baseline for the same student.

    Examples
    --------
    >>> from skdistill import Cnn3DClassifier, DistilledClassifier
    >>> from skdistill.datasets import make_toy_volumes
    >>> X, y = make_toy_volumes(40, n_classes=2, size=8, random_state=0)
    >>> teacher = Cnn3DClassifier(arch="tiny", max_epochs=2, random_state=0)
    >>> student = DistilledClassifier(teacher, student_arch="tiny", max_epochs=2,
    ...                               random_state=0).fit(X, y)
    >>> student.predict(X[:3]).shape
    (3,)
    """

    _arch_parameter = "student_arch"
    #: The volumes and the teacher's copy of its training rows (2.06 measured).
    _fit_volume_copies = 2.5
    _parameter_constraints: dict = {
        "teacher": [HasMethods(["fit", "predict_proba"]), None],
        "student_arch": ARCH_CONSTRAINT,
        "temperature": [Interval(Real, 0, None, closed="neither")],
        "alpha": [Interval(Real, 0, 1, closed="both")],
        "memory": [None, str, HasMethods(["cache"])],
        **TRAINING_PARAMETER_CONSTRAINTS,
    }

    def __init__(
        self,
        teacher=None,
        student_arch="s1",
        temperature=5.0,
        alpha=0.0,
        memory=None,
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
        self.teacher = teacher
        self.student_arch = student_arch
        self.temperature = temperature
        self.alpha = alpha
        self.memory = memory
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

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y, *, voxel_size=None):
        """Fit (or reuse) the teacher, then train the student on its soft labels.

        Parameters
        ----------
        X : array-like of shape (n_samples, D, H, W) or (n_samples, 1, D, H, W)
            Cubic volumes. 2D ``(n_samples, n_features)`` is treated as volumes of shape
            ``(n_features, 1, 1)``.
        y : array-like of shape (n_samples,)
            Class labels; ``-1`` marks unlabeled rows (transfer data).
        voxel_size : float or None, default=None
            Voxel size of ``X`` in Å, remembered as ``voxel_size_``. ``None`` takes it from
            ``X`` when it is a stack with a ``voxel_size``
            (:class:`~skdistill.io.SubtomogramStack`), else leaves it unknown. Must agree
            with a stack's own voxel size within 1 %.

        Returns
        -------
        self : DistilledClassifier
            The fitted student.
        """
        X_checked = self._validate_fit_inputs(X, voxel_size)
        y = check_labels(y, len(X_checked), allow_unlabeled=True)
        unlabeled = unlabeled_mask(y)
        if unlabeled.all():
            raise ValueError(
                "All rows of y are unlabeled (-1); the teacher and the hard-label term need "
                "labeled rows. Label at least two classes."
            )
        encoder = LabelEncoder().fit(y[~unlabeled])
        self.classes_ = encoder.classes_
        check_n_classes(self.classes_)
        if isinstance(self.student_arch, str):
            check_input_size(self.student_arch, self.input_shape_)
        # Feature rows go to the teacher as rows, so any scikit-learn classifier can teach.
        X_teacher = X_checked.reshape(len(X_checked), -1) if input_ndim(X) == 2 else X_checked
        teacher = self._fitted_teacher(X_teacher, y, np.flatnonzero(~unlabeled))
        hard = np.full(len(y), -1, dtype=np.float32)
        hard[~unlabeled] = encoder.transform(y[~unlabeled])
        targets = distillation_targets(
            teacher_log_proba(teacher, X_teacher), hard, self.temperature
        )
        self._train(
            X_checked,
            targets,
            stratify=hard,
            seed=draw_seed(self.random_state),
            distillation=(float(self.temperature), float(self.alpha)),
        )
        self.n_labeled_ = int((~unlabeled).sum())
        self._record_teacher(teacher)
        return self

    def _default_teacher(self, **params) -> Cnn3DClassifier:
        return Cnn3DClassifier(**params)

    def _check_frozen_teacher(self, teacher) -> None:
        teacher_classes = np.asarray(teacher.classes_)
        if not np.array_equal(teacher_classes, self.classes_):
            raise ValueError(
                f"The frozen teacher was fitted on classes {teacher_classes.tolist()}, "
                f"but the labeled rows of y have classes {self.classes_.tolist()}. Fit "
                "the teacher on the same classes, or pass an unfitted teacher."
            )
