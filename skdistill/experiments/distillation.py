"""Teacher versus students, hard versus soft labels: Tables 1-2 of Guo et al. (2018).

One run simulates a data set, fits the DSRF3D-v2 teacher, then each student (s1, s2, s3)
twice on the same split: with hard labels (:class:`~skdistill.Cnn3DClassifier`) and
distilled from the fitted teacher (:class:`~skdistill.DistilledClassifier` with the teacher
wrapped in :class:`~sklearn.frozen.FrozenEstimator`, so it is not refitted). It measures
test accuracy, parameter counts and test time, from which the paper's compression rate,
accuracy ratio and speedup follow.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import Pipeline
from tqdm.auto import tqdm

from ..datasets.simulation import SimulationPlan, chunk_indices
from ..estimators import Cnn3DClassifier, DistilledClassifier
from ..preprocessing import VolumeNormalizer

__all__ = [
    "CPU_SETTING",
    "PAPER_SETTING",
    "DistillationResult",
    "DistillationSetting",
    "ModelResult",
    "run_distillation_experiment",
]

STUDENTS = ("s1", "s2", "s3")


@dataclass(frozen=True)
class DistillationSetting:
    """Every choice of one run: data, split, training and distillation.

    The split is ``n_train`` training, ``n_valid`` validation (early stopping, held out inside
    each estimator with the same seed, so every model sees the same split) and ``n_test``
    test volumes, simulated with :func:`~skdistill.datasets.make_subtomograms`.
    """

    n_classes: int
    size: int
    snr: float
    n_train: int
    n_valid: int
    n_test: int
    batch_size: int
    max_epochs: int
    early_stopping: int | None
    optimizer: str
    lr: float
    temperature: float = 5.0
    teacher_lr: float | None = None
    teacher_max_epochs: int | None = None
    precision: str = "fp32"
    students: tuple[str, ...] = STUDENTS
    tilt_range: tuple[float, float] = (-60.0, 60.0)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_train", "n_valid"):
            if getattr(self, name) < self.n_classes:
                raise ValueError(
                    f"{name}={getattr(self, name)} is smaller than n_classes={self.n_classes}: "
                    f"some classes would have no {name[2:]} volume (classes are simulated in "
                    f"turn). Use at least {self.n_classes} {name[2:]} volumes, or fewer "
                    "classes."
                )

    def memory_estimate(self, *, on_gpu: bool = False) -> int:
        """Rough peak host memory of a run, in bytes, for a check before it starts.

        The volumes are held about three times over at the peak (simulated, normalised, and
        the training/validation split inside each estimator). Training adds an allowance of
        256 float32 activations per input voxel of a batch (DSRF3D-v2's full-resolution
        layers and their gradients), on the host unless ``on_gpu``.
        """
        voxels = self.size**3
        data = 3 * 4 * voxels * (self.n_train + self.n_valid + self.n_test)
        activations = 0 if on_gpu else 256 * 4 * voxels * self.batch_size
        return data + activations

    def replace(self, **changes) -> DistillationSetting:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def teacher_parameters(self) -> dict:
        """Estimator parameters of the teacher (``teacher_lr`` and ``teacher_max_epochs``
        replace ``lr`` and ``max_epochs`` where set)."""
        parameters = self.training_parameters()
        if self.teacher_lr is not None:
            parameters["lr"] = self.teacher_lr
        if self.teacher_max_epochs is not None:
            parameters["max_epochs"] = self.teacher_max_epochs
        return parameters

    def training_parameters(self) -> dict:
        """Estimator parameters of the students (and of the teacher unless overridden)."""
        return {
            "max_epochs": self.max_epochs,
            "batch_size": self.batch_size,
            "optimizer": self.optimizer,
            "lr": self.lr,
            "early_stopping": self.early_stopping,
            "validation_fraction": self.n_valid / (self.n_train + self.n_valid),
            "precision": self.precision,
            "random_state": self.seed,
        }


#: The paper's setting (GPU work): 23 classes, 40³, SNR 0.05, ±60°, 14,720 / 3,680 / 4,600,
#: SGD + Nesterov, lr 0.005, batch 64, 20 epochs, patience 5, T = 5.
PAPER_SETTING = DistillationSetting(
    n_classes=23,
    size=40,
    snr=0.05,
    n_train=14_720,
    n_valid=3_680,
    n_test=4_600,
    batch_size=64,
    max_epochs=20,
    early_stopping=5,
    optimizer="sgd",
    lr=0.005,
)

#: A setting that runs in under 10 minutes on 2 CPU cores: fewer, easier classes (8 classes
#: at SNR 0.5), 28³ volumes (the students need >= 27³), 1,600 volumes, bf16 training where
#: the CPU has native bf16, and Adam instead of SGD: with SGD (and with Adam at lr 1e-3) the
#: deep teacher stayed on its initial loss plateau for longer than this budget allows, while
#: at lr 3e-4 it left it after 3-4 epochs. Students train for at most 6 epochs at lr 1e-3.
CPU_SETTING = DistillationSetting(
    n_classes=8,
    size=28,
    snr=0.5,
    n_train=960,
    n_valid=240,
    n_test=400,
    batch_size=16,
    max_epochs=6,
    early_stopping=3,
    optimizer="adam",
    lr=1e-3,
    teacher_lr=3e-4,
    teacher_max_epochs=12,
    precision="auto",
)


@dataclass
class ModelResult:
    """Measurements of one network: the teacher, or one student trained both ways."""

    name: str
    n_parameters: int
    accuracy_hard: float
    accuracy_soft: float | None
    test_seconds: float
    fit_seconds: dict = field(default_factory=dict)
    epochs: dict = field(default_factory=dict)


@dataclass
class DistillationResult:
    """A run's setting, per-model measurements and the fitted models.

    ``teacher`` is ``models[0]``; compression rate, accuracy ratio and speedup follow the
    paper's definitions: teacher parameters / student parameters, student soft-label
    accuracy / teacher accuracy, and teacher test time / student test time.
    """

    setting: DistillationSetting
    models: list[ModelResult]
    estimators: dict = field(default_factory=dict, repr=False)
    fit_seconds: dict = field(default_factory=dict)
    simulate_seconds: float = 0.0
    normalizer: VolumeNormalizer | None = field(default=None, repr=False)

    @property
    def teacher(self) -> ModelResult:
        """The teacher's measurements."""
        return self.models[0]

    def derived(self, model: ModelResult) -> dict:
        """Compression rate, accuracy ratio and speedup of ``model`` against the teacher."""
        teacher = self.teacher
        soft = model.accuracy_soft
        return {
            "compression_rate": teacher.n_parameters / model.n_parameters,
            "accuracy_ratio": None if soft is None else soft / teacher.accuracy_hard,
            "speedup": teacher.test_seconds / model.test_seconds,
        }

    def best_student(self) -> tuple[str, str]:
        """(student, "hard" or "soft") with the best *validation* accuracy (not test)."""
        scores = {
            key: estimator.validation_score_
            for key, estimator in self.estimators.items()
            if key[0] != "teacher"
        }
        return max(scores, key=lambda key: np.nan_to_num(scores[key], nan=-1.0))

    def deployable(self, key: tuple[str, str]) -> Pipeline:
        """The fitted model ``key`` behind the per-volume normaliser the data went through."""
        return Pipeline([("normalize", self.normalizer), ("classify", self.estimators[key])])


def simulate_split(setting: DistillationSetting, *, progress: bool = True):
    """Simulate ``n_train + n_valid + n_test`` volumes, normalised per volume.

    Returns
    -------
    X_fit, y_fit, X_test, y_test : ndarray
    normalizer : VolumeNormalizer
        The fitted (stateless) per-volume normaliser, for the deployed pipeline.
    """
    n = setting.n_train + setting.n_valid + setting.n_test
    plan = SimulationPlan(
        n_classes=setting.n_classes,
        size=setting.size,
        voxel_size=9.2,
        snr=setting.snr,
        tilt_range=setting.tilt_range,
        defocus=-5.0,
        voltage=300.0,
        cs=2.0,
        max_shift=0.05,
        templates=None,
        entropy=setting.seed,
    )
    X = np.empty((n, setting.size, setting.size, setting.size), dtype=np.float32)
    y = np.empty(n, dtype=np.int64)
    with tqdm(total=n, desc="simulate", unit="vol", disable=not progress) as bar:
        for chunk in chunk_indices(n):
            X[chunk], y[chunk], _, _ = plan.simulate(chunk)
            bar.update(len(chunk))
    normalizer = VolumeNormalizer().fit(X[:1])
    X = normalizer.transform(X)
    n_fit = setting.n_train + setting.n_valid
    return X[:n_fit], y[:n_fit], X[n_fit:], y[n_fit:], normalizer


def run_distillation_experiment(
    setting: DistillationSetting,
    *,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> DistillationResult:
    """Run the teacher / students, hard / soft comparison once.

    Parameters
    ----------
    setting : DistillationSetting
        Data, split and training choices (e.g. :data:`CPU_SETTING`, :data:`PAPER_SETTING`).
    progress : bool, default=True
        Progress bars for the simulation and every fit.
    log : callable, default=print
        Receives one line per finished step.

    Returns
    -------
    DistillationResult
    """
    start = time.perf_counter()
    X, y, X_test, y_test, normalizer = simulate_split(setting, progress=progress)
    result = DistillationResult(
        setting, [], simulate_seconds=time.perf_counter() - start, normalizer=normalizer
    )
    common = {**setting.training_parameters(), "verbose": int(progress)}
    teacher_parameters = {**setting.teacher_parameters(), "verbose": int(progress)}

    teacher = _fit(("teacher", "hard"), Cnn3DClassifier(arch="dsrf3d_v2", **teacher_parameters),
                   X, y, result, log)  # fmt: skip
    result.models.append(
        _measure("dsrf3d_v2", "teacher", {"hard": teacher}, X_test, y_test, result)
    )
    frozen = FrozenEstimator(teacher)
    for student in setting.students:
        fitted = {
            "hard": _fit((student, "hard"), Cnn3DClassifier(arch=student, **common), X, y,
                         result, log),
            "soft": _fit((student, "soft"), DistilledClassifier(
                frozen, student_arch=student, temperature=setting.temperature, **common,
            ), X, y, result, log),
        }  # fmt: skip
        result.models.append(_measure(student, student, fitted, X_test, y_test, result))
    return result


def _fit(key: tuple[str, str], estimator, X, y, result: DistillationResult, log):
    start = time.perf_counter()
    estimator.fit(X, y)
    result.fit_seconds[key] = time.perf_counter() - start
    result.estimators[key] = estimator
    log(
        f"fitted {key[0]} ({key[1]} labels): {estimator.n_iter_} epochs in "
        f"{result.fit_seconds[key]:.0f} s, validation accuracy {estimator.validation_score_:.3f}"
    )
    return estimator


def _measure(
    name: str, key: str, fitted: dict, X_test, y_test, result: DistillationResult
) -> ModelResult:
    """Test accuracy of each fitted variant; size and test time of the network (``name``),
    whose fits are recorded under ``(key, "hard" | "soft")``."""
    accuracy = {how: float(model.score(X_test, y_test)) for how, model in fitted.items()}
    model = next(iter(fitted.values()))
    model.predict(X_test[:8])  # warm-up: first calls pay one-off allocation costs
    start = time.perf_counter()
    model.predict(X_test)
    seconds = time.perf_counter() - start
    return ModelResult(
        name=name,
        n_parameters=model.n_parameters_,
        accuracy_hard=accuracy["hard"],
        accuracy_soft=accuracy.get("soft"),
        test_seconds=seconds,
        fit_seconds={how: result.fit_seconds[(key, how)] for how in fitted},
        epochs={how: model.n_iter_ for how, model in fitted.items()},
    )
