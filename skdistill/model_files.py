"""Model files: a fitted estimator as safetensors weights and a JSON description, no pickle.

A model file is one safetensors file (https://github.com/huggingface/safetensors): the
network's weights as named tensors, and under the metadata key ``"skdistill"`` a JSON
object describing the estimator: its class, parameters and fitted attributes, the library
versions that saved it and a ``format_version``. Reading it parses JSON and copies tensors;
nothing in the file is executed or imported, so, unlike a pickle, a model file from an
unknown source is safe to open. Classes are looked up in :data:`MODEL_CLASSES`, a fixed
allow-list, never by importing a name from the file.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from sklearn.base import BaseEstimator
from sklearn.frozen import FrozenEstimator
from sklearn.utils.validation import check_is_fitted
from skorch.history import History

from .estimators import Cnn3DClassifier, Cnn3DSegmenter, DistilledClassifier, DistilledSegmenter
from .estimators._base import VERSIONS_KEY, current_versions
from .exceptions import ModelFileError
from .io.atomic import write_atomically
from .pruning import PrunedClassifier, PrunedSegmenter
from .pruning._estimators import rebuild_pruned
from .utils.device import resolve_device

__all__ = [
    "FORMAT_VERSION",
    "METADATA_KEY",
    "MODEL_CLASSES",
    "SUFFIX",
    "check_model_path",
    "load_model",
    "save_model",
]

#: Version of the file layout written by :func:`save_model`; files of a newer version are
#: refused by :func:`load_model`, older ones are read.
FORMAT_VERSION = 1

#: Metadata key of the estimator's JSON description.
METADATA_KEY = "skdistill"

#: The file name suffix of model files.
SUFFIX = ".safetensors"
#: Names of pickle files, refused for model files so that nobody unpickles one by mistake.
_PICKLE_SUFFIXES = frozenset({".joblib", ".pkl", ".pickle", ".pt", ".pth"})

#: The estimator classes a model file may name: the only classes :func:`load_model` builds.
MODEL_CLASSES: dict[str, type[BaseEstimator]] = {
    cls.__name__: cls
    for cls in (Cnn3DClassifier, DistilledClassifier, Cnn3DSegmenter, DistilledSegmenter)
}

#: The pruning meta-estimators a model file may wrap around one of :data:`MODEL_CLASSES`.
PRUNED_CLASSES: dict[str, type[BaseEstimator]] = {
    cls.__name__: cls for cls in (PrunedClassifier, PrunedSegmenter)
}

#: Fitted attributes that are rebuilt from the weights rather than stored.
_REBUILT = frozenset({"net_", "module_"})
_FITTED_NAME = re.compile(r"[a-z][a-z0-9_]*_")
_REQUIRED = ("classes_", "input_shape_", "n_channels_", "device_", "precision_")
_DEVICE = re.compile(r"cpu|cuda(:\d+)?|mps")
_DTYPE_KINDS = frozenset("biufUO")
#: How deeply teachers may nest (a distilled teacher of a distilled student...).
_MAX_TEACHER_DEPTH = 4


# -- saving ------------------------------------------------------------------------------
def save_model(estimator, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Save a fitted skdistill estimator as a safetensors model file.

    The file holds the network's weights (float32 tensors, named as in the network's
    ``state_dict``) and, as JSON under the metadata key ``"skdistill"``:

    - ``format_version`` (int, :data:`FORMAT_VERSION`), ``class`` (the estimator's class
      name) and ``versions`` (the skdistill and torch versions that saved it);
    - ``params``: ``get_params(deep=False)``, with a ``teacher`` estimator stored as its
      class and parameters (see Notes);
    - ``fitted``: the fitted attributes (``classes_``, ``input_shape_``, ``n_channels_``,
      ``voxel_size_``, ``device_``, ``history_``, ...), except the network itself;
    - a summary for people and tools that read the description without loading the model:
      ``architecture``, ``classes``, ``input_shape``, ``n_channels``, ``voxel_size``.

    A :class:`~skdistill.PrunedClassifier` or :class:`~skdistill.PrunedSegmenter` is stored
    as its pruned estimator (``estimator_``: the description above, with the pruned
    weights, whose shapes are the recipe to rebuild the network) plus ``pruned``: the
    wrapper's class, parameters and fitted attributes (``n_parameters_``, ``flops_``,
    ``pruning_history_``, ...). Loading builds the full-width network and resizes each
    layer to the stored weights.

    Parameters
    ----------
    estimator : Cnn3DClassifier, DistilledClassifier, Cnn3DSegmenter or DistilledSegmenter
        A fitted estimator whose architecture is given by name (``arch="s1"``, not a
        callable: a callable could only be restored by running code).
    path : str or path-like
        The file to write, best named ``*.safetensors`` (names of pickles such as
        ``.joblib`` or ``.pt`` are refused). Its folder must exist.
    overwrite : bool, default=False
        Replace an existing file. The file is written atomically in either case: a reader
        sees the old file or the complete new one, never a part.

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    TypeError
        If ``estimator`` is not one of skdistill's four estimators (a ``Pipeline`` or a
        ``GridSearchCV`` is not: save its fitted estimator, or use joblib).
    sklearn.exceptions.NotFittedError
        If the estimator is not fitted.
    ValueError
        If ``path`` is named like a pickle (``.joblib``, ``.pt``, ...), or a parameter cannot
        be stored
        (a callable architecture).
    FileExistsError
        If ``path`` exists and ``overwrite`` is false.
    FileNotFoundError
        If the folder of ``path`` does not exist.

    See Also
    --------
    load_model : Read the estimator back.

    Notes
    -----
    Only what prediction needs is stored. A distilled estimator's ``teacher`` is stored
    unfitted, as its class and parameters, as joblib pickles store it: the student predicts
    alone, and a teacher's weights (DSRF3D-v2: ~60 times a student's) would dominate the
    file. A teacher wrapped in ``FrozenEstimator`` is stored as the estimator it wraps. A
    teacher that is not a skdistill estimator, or whose parameters cannot be stored, is
    recorded by class name only and loads as ``teacher=None`` with a warning.

    ``random_state`` given as a ``RandomState`` instance is stored as ``None``; a
    ``joblib.Memory`` given as ``memory`` is stored as its location. Neither affects
    predictions.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from skdistill import Cnn3DClassifier, load_model, save_model
    >>> from skdistill.datasets import make_toy_volumes
    >>> X, y = make_toy_volumes(20, n_classes=2, size=8, random_state=0)
    >>> clf = Cnn3DClassifier("tiny", max_epochs=1, random_state=0).fit(X, y)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = save_model(clf, Path(folder) / "model.safetensors")
    ...     loaded = load_model(path)
    >>> bool((loaded.predict_proba(X) == clf.predict_proba(X)).all())
    True
    """
    name = type(estimator).__name__
    pruned = None
    if PRUNED_CLASSES.get(name) is type(estimator):
        check_is_fitted(estimator, "estimator_")
        pruned = _describe_pruned(estimator)
        estimator = estimator.estimator_
    elif MODEL_CLASSES.get(name) is not type(estimator):
        raise TypeError(
            f"save_model saves skdistill's estimators "
            f"({', '.join([*MODEL_CLASSES, *PRUNED_CLASSES])}), got {name}. Save the fitted "
            "estimator itself (e.g. pipeline[-1] or search.best_estimator_), or pickle other "
            "objects with joblib.dump."
        )
    check_is_fitted(estimator, "net_")
    path = check_model_path(path, overwrite=overwrite)
    description = _describe(estimator)
    if pruned is not None:
        description["pruned"] = pruned
    metadata = {METADATA_KEY: json.dumps(description), "format": "pt"}
    tensors = {
        key: tensor.detach().cpu().clone().contiguous()
        for key, tensor in estimator.net_.module_.state_dict().items()
    }
    write_atomically(
        [(path, lambda temporary: save_file(tensors, str(temporary), metadata=metadata))],
        overwrite=overwrite,
    )
    return path


def check_model_path(path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Check that :func:`save_model` can write a model file at ``path``; write nothing.

    :func:`save_model` runs the same checks; call this before a long fit so that a bad
    output path fails before the work, not after it.

    Parameters
    ----------
    path : str or path-like
        The model file to be written.
    overwrite : bool, default=False
        Whether an existing file may be replaced.

    Returns
    -------
    Path
        ``path`` as a :class:`~pathlib.Path`.

    Raises
    ------
    ValueError
        If the name ends like a pickle's (``.joblib``, ``.pkl``, ``.pickle``, ``.pt``,
        ``.pth``); ``.safetensors`` (:data:`SUFFIX`) is recommended.
    FileNotFoundError
        If the folder does not exist.
    FileExistsError
        If the file exists and ``overwrite`` is false.
    """
    path = Path(path)
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        raise ValueError(
            f"{str(path)!r} is named like a pickle ({path.suffix}), but model files are "
            f"safetensors files, safe to open; name them *{SUFFIX} so that people and tools "
            f"know that, e.g. {str(path.with_name(path.stem + SUFFIX))!r}. (joblib.dump "
            "writes pickles.)"
        )
    if not path.parent.is_dir():
        raise FileNotFoundError(
            f"The folder {path.parent} does not exist; create it before saving {path.name}."
        )
    if not overwrite and (path.exists() or path.is_symlink()):
        raise FileExistsError(
            f"{path} already exists. Pass overwrite=True (--overwrite on the command line) to "
            "replace it, or choose another file."
        )
    return path


def _describe(estimator) -> dict:
    """The JSON-safe description of a fitted estimator stored in its model file."""
    fitted = {
        key: _encode_value(value, f"fitted attribute {key}")
        for key, value in vars(estimator).items()
        if _FITTED_NAME.fullmatch(key) and key not in _REBUILT
    }
    arch = getattr(estimator, estimator._arch_parameter)
    return {
        "format_version": FORMAT_VERSION,
        "class": type(estimator).__name__,
        "versions": current_versions(),
        "params": _encode_params(estimator),
        "fitted": fitted,
        "architecture": arch,
        "classes": _encode_value(estimator.classes_.tolist(), "classes"),
        "input_shape": list(estimator.input_shape_),
        "n_channels": estimator.n_channels_,
        "voxel_size": getattr(estimator, "voxel_size_", None),
    }


def _describe_pruned(pruned) -> dict:
    """The wrapper of a pruned model: its class, parameters and fitted attributes.

    Its ``estimator`` parameter is not stored: it is an unfitted copy of the pruned
    estimator, whose description is the file's main one.
    """
    fitted = {
        key: _encode_value(value, f"fitted attribute {key}")
        for key, value in vars(pruned).items()
        if _FITTED_NAME.fullmatch(key) and key != "estimator_"
    }
    params = _encode_params(pruned, skip=("estimator",))
    return {"class": type(pruned).__name__, "params": params, "fitted": fitted}


def _encode_params(estimator, skip: tuple[str, ...] = ()) -> dict:
    params = {}
    for key, value in estimator.get_params(deep=False).items():
        if key in skip:
            continue
        if key == "teacher":
            params[key] = _encode_teacher(value)
        elif key == "random_state" and isinstance(value, np.random.RandomState):
            params[key] = None
        elif key == "memory" and hasattr(value, "location"):
            params[key] = None if value.location is None else str(value.location)
        elif callable(value):
            raise ValueError(
                f"The parameter {key}={value!r} of this {type(estimator).__name__} is a "
                "callable, which a model file cannot store: loading it would mean running "
                f"code. Fit with a named architecture ({key}='s1', ...) to save a model "
                "file, or pickle this estimator with joblib.dump."
            )
        else:
            params[key] = _encode_value(value, f"parameter {key}")
    return params


def _encode_teacher(teacher) -> dict | None:
    if teacher is None:
        return None
    if isinstance(teacher, FrozenEstimator):
        teacher = teacher.estimator
    cls = type(teacher)
    if MODEL_CLASSES.get(cls.__name__) is cls:
        try:
            return {"class": cls.__name__, "params": _encode_params(teacher)}
        except ValueError:
            pass
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "params": None}


def _encode_value(value, what: str):
    """``value`` as JSON: numbers, strings, lists; arrays, tuples and histories tagged."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, torch.device):
        return str(value)
    if isinstance(value, History):
        return {"__history__": [_encode_value(dict(row), what) for row in value]}
    if isinstance(value, np.ndarray) and value.dtype.kind in _DTYPE_KINDS:
        items = [_encode_value(item, what) for item in value.ravel().tolist()]
        return {"__ndarray__": items, "dtype": value.dtype.str, "shape": list(value.shape)}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode_value(item, what) for item in value]}
    if isinstance(value, list):
        return [_encode_value(item, what) for item in value]
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return {key: _encode_value(item, what) for key, item in value.items()}
    raise ValueError(
        f"The {what} is a {type(value).__name__}, which a model file cannot store; pickle "
        "this estimator with joblib.dump instead."
    )


# -- loading -----------------------------------------------------------------------------
def load_model(path: str | os.PathLike, *, device: str | None = None):
    """Load an estimator saved by :func:`save_model`, without executing anything from the file.

    The description is parsed as JSON, the class looked up in :data:`MODEL_CLASSES`, its
    parameters validated as in ``fit``, the network rebuilt from the architecture name and
    the weights copied into it. The estimator comes back fitted, on its saved device when
    that is available here, else on the CPU with a
    :class:`~skdistill.exceptions.DeviceFallbackWarning` (a model trained on a GPU loads
    on a CPU-only machine), and predicts exactly as the saved one on the same device.

    Parameters
    ----------
    path : str or path-like
        A model file written by :func:`save_model` (any file name is read; its contents
        decide).
    device : str, default=None
        Where to put the model: ``"auto"`` (a GPU when there is one), ``"cpu"``, ``"cuda"``
        or ``"cuda:N"``; None keeps the saved device (or the CPU, as above).

    Returns
    -------
    Cnn3DClassifier, DistilledClassifier, Cnn3DSegmenter or DistilledSegmenter
        The fitted estimator, with the parameters and fitted attributes it was saved with
        (``voxel_size_``, ``input_shape_``, ``classes_``, ...). A distilled estimator's
        ``teacher`` is unfitted (see :func:`save_model`).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ModelFileError
        If the file is not a safetensors file, holds no valid ``"skdistill"`` description,
        names a class that is not one of skdistill's estimators, holds parameters those
        reject, or was written in a newer ``format_version`` than this skdistill reads.
    IncompatibleModelError
        If the weights do not fit the network this version builds from the description.

    Warns
    -----
    InconsistentVersionWarning
        If another skdistill version saved the file.
    DeviceFallbackWarning
        If the saved device is not available here and the model was loaded on the CPU.
    UserWarning
        If the stored teacher cannot be rebuilt (``teacher`` is then None).

    See Also
    --------
    save_model : Write a model file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No model file at {path}.")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as file:
            metadata = file.metadata() or {}
            description = _parse_description(path, metadata)
            weights = {key: file.get_tensor(key) for key in file.keys()}
    except SafetensorError as error:
        raise ModelFileError(
            f"{path} is not a safetensors file ({error}). skdistill model files are written "
            "by skdistill.save_model; a joblib pickle is read with joblib.load, which runs "
            "code from the file: only do that for files from a trusted source."
        ) from error
    if device is not None:
        description["fitted"]["device_"] = resolve_device(device)
    return _rebuild(path, description, weights)


def _parse_description(path: Path, metadata: dict) -> dict:
    text = metadata.get(METADATA_KEY)
    if text is None:
        raise ModelFileError(
            f"{path} is a safetensors file but not a skdistill model file: its metadata has "
            f"no {METADATA_KEY!r} entry (keys: {sorted(metadata)}). Model files are written by "
            "skdistill.save_model."
        )
    try:
        description = json.loads(text)
    except ValueError as error:
        raise ModelFileError(
            f"The {METADATA_KEY!r} metadata of {path} is not valid JSON ({error}); the file is "
            "damaged or was not written by skdistill.save_model."
        ) from error
    if not isinstance(description, dict):
        raise ModelFileError(f"The {METADATA_KEY!r} metadata of {path} is not a JSON object.")
    version = description.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ModelFileError(
            f"The model description in {path} has no valid format_version (got {version!r})."
        )
    if version > FORMAT_VERSION:
        saved_by = description.get("versions", {}).get("skdistill", "a newer version")
        raise ModelFileError(
            f"{path} is a model file of format version {version}, written by skdistill "
            f"{saved_by}; this skdistill reads format versions up to {FORMAT_VERSION}. "
            "Upgrade skdistill (pip install -U skdistill) to load it."
        )
    for key, kind in (("class", str), ("params", dict), ("fitted", dict)):
        if not isinstance(description.get(key), kind):
            raise ModelFileError(
                f"The model description in {path} has no valid {key!r} entry; the file is "
                "damaged or was not written by skdistill.save_model."
            )
    return description


def _model_class(name: str, path: Path) -> type[BaseEstimator]:
    if name not in MODEL_CLASSES:
        raise ModelFileError(
            f"{path} names the class {name!r}, which is not one of skdistill's estimators "
            f"({', '.join(MODEL_CLASSES)}); refusing to build it. The file was not written "
            "by skdistill.save_model, or was altered."
        )
    return MODEL_CLASSES[name]


def _rebuild(path: Path, description: dict, weights: dict[str, torch.Tensor]):
    estimator = _build_unfitted(path, description["class"], description["params"], depth=0)
    fitted = _decode_fitted(path, description["fitted"], estimator)
    versions = description.get("versions")
    if not (isinstance(versions, dict) and all(isinstance(v, str) for v in versions.values())):
        versions = {}
    state = {**vars(estimator), **fitted, "_module_weights": weights, VERSIONS_KEY: versions}
    pruned = description.get("pruned")
    # The unpickling path: it warns about other versions, falls back to the CPU and
    # rebuilds the network from the architecture name before loading the weights (a pruned
    # network: full width first, then every layer resized to its stored weights).
    try:
        if pruned is None:
            estimator.__setstate__(state)
        else:
            estimator = rebuild_pruned(type(estimator), state)
    except (ValueError, TypeError) as error:
        raise ModelFileError(f"The network described in {path} cannot be built: {error}") from error
    return estimator if pruned is None else _pruned_wrapper(path, pruned, description, estimator)


def _pruned_wrapper(path: Path, pruned, description: dict, estimator):
    """The pruning meta-estimator around ``estimator``, the rebuilt pruned network's."""
    if not isinstance(pruned, dict) or not all(
        isinstance(pruned.get(key), kind)
        for key, kind in (("class", str), ("params", dict), ("fitted", dict))
    ):
        raise ModelFileError(f"The 'pruned' entry of {path} is not a class and parameters.")
    cls = PRUNED_CLASSES.get(pruned["class"])
    if cls is None:
        raise ModelFileError(
            f"{path} names the pruning class {pruned['class']!r}, which is not one of "
            f"skdistill's ({', '.join(PRUNED_CLASSES)}); refusing to build it."
        )
    params = {key: _decode_value(path, value) for key, value in pruned["params"].items()}
    base = _build_unfitted(path, description["class"], description["params"], depth=0)
    try:
        wrapper = cls(base, **params)
        wrapper._validate_params()
    except (TypeError, ValueError) as error:
        raise ModelFileError(
            f"{path} holds invalid parameters for {cls.__name__}: {error}"
        ) from error
    for key, value in pruned["fitted"].items():
        if not _FITTED_NAME.fullmatch(key) or key in ("estimator_", "module_"):
            raise ModelFileError(
                f"{path} stores the fitted attribute {key!r}, which is not one a fitted "
                f"{cls.__name__} has."
            )
        setattr(wrapper, key, _decode_value(path, value))
    wrapper.estimator_ = estimator
    return wrapper


def _build_unfitted(path: Path, name: str, params: dict, depth: int) -> BaseEstimator:
    cls = _model_class(name, path)
    params = dict(params)
    teacher = params.pop("teacher", None)
    params = {key: _decode_value(path, value) for key, value in params.items()}
    if teacher is not None:
        params["teacher"] = _decode_teacher(path, teacher, depth)
    try:
        estimator = cls(**params)
    except TypeError as error:
        raise ModelFileError(
            f"{path} gives {name} parameters it does not take ({error}); the file was written "
            "by another skdistill version or altered."
        ) from error
    try:
        estimator._validate_params()
    except ValueError as error:
        raise ModelFileError(f"{path} holds invalid parameters for {name}: {error}") from error
    return estimator


def _decode_teacher(path: Path, teacher, depth: int):
    if teacher is None:
        return None
    if not isinstance(teacher, dict) or not isinstance(teacher.get("class"), str):
        raise ModelFileError(f"The teacher stored in {path} is not a class and parameters.")
    params = teacher.get("params")
    if teacher["class"] in MODEL_CLASSES and isinstance(params, dict):
        if depth >= _MAX_TEACHER_DEPTH:
            raise ModelFileError(f"{path} nests teachers more than {_MAX_TEACHER_DEPTH} deep.")
        return _build_unfitted(path, teacher["class"], params, depth + 1)
    warnings.warn(
        f"The model in {path} was distilled from a teacher of class {teacher['class']!r}, "
        "which a model file does not rebuild; it was loaded with teacher=None. Predictions "
        "are unaffected; set the teacher (set_params(teacher=...)) before refitting.",
        UserWarning,
        stacklevel=5,
    )
    return None


def _decode_fitted(path: Path, fitted: dict, estimator) -> dict:
    for key in fitted:
        if not _FITTED_NAME.fullmatch(key) or key in _REBUILT or hasattr(estimator, key):
            raise ModelFileError(
                f"{path} stores the fitted attribute {key!r}, which is not one a fitted "
                f"{type(estimator).__name__} has."
            )
    required = (*_REQUIRED, "n_classes_") if hasattr(estimator, "_segments_volumes") else _REQUIRED
    missing = [key for key in required if key not in fitted]
    if missing:
        raise ModelFileError(f"{path} lacks the fitted attributes {missing}; it is incomplete.")
    decoded = {key: _decode_value(path, value) for key, value in fitted.items()}
    shape = decoded["input_shape_"]
    if not (
        isinstance(shape, tuple)
        and len(shape) == 3
        and all(isinstance(s, int) and s > 0 for s in shape)
    ):
        raise ModelFileError(f"{path} gives an invalid input shape {shape!r}.")
    channels = decoded["n_channels_"]
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ModelFileError(f"{path} gives an invalid number of channels {channels!r}.")
    device = decoded["device_"]
    if not (isinstance(device, str) and _DEVICE.fullmatch(device)):
        raise ModelFileError(f"{path} gives an invalid device {device!r}.")
    voxel_size = decoded.get("voxel_size_")
    if voxel_size is not None and not (
        isinstance(voxel_size, (int, float))
        and not isinstance(voxel_size, bool)
        and math.isfinite(voxel_size)
        and voxel_size > 0
    ):
        raise ModelFileError(f"{path} gives an invalid voxel size {voxel_size!r}.")
    if not isinstance(decoded["classes_"], np.ndarray) or decoded["classes_"].ndim != 1:
        raise ModelFileError(f"{path} gives classes_ that are not a list of labels.")
    return decoded


def _decode_value(path: Path, value):
    """The inverse of :func:`_encode_value`: only JSON values, arrays, tuples, histories."""
    if isinstance(value, list):
        return [_decode_value(path, item) for item in value]
    if not isinstance(value, dict):
        return value
    if "__tuple__" in value:
        return tuple(_decode_value(path, item) for item in _list(path, value, "__tuple__"))
    if "__history__" in value:
        return History([_decode_value(path, row) for row in _list(path, value, "__history__")])
    if "__ndarray__" in value:
        return _decode_array(path, value)
    return {key: _decode_value(path, item) for key, item in value.items()}


def _list(path: Path, value: dict, key: str) -> list:
    if not isinstance(value[key], list):
        raise ModelFileError(f"{path} holds an invalid {key} entry.")
    return value[key]


def _decode_array(path: Path, value: dict) -> np.ndarray:
    items, shape, dtype = _list(path, value, "__ndarray__"), value.get("shape"), value.get("dtype")
    if not isinstance(dtype, str):
        raise ModelFileError(f"{path} holds an array without a dtype.")
    try:
        dtype = np.dtype(dtype)
    except TypeError as error:
        raise ModelFileError(f"{path} holds an array of unknown dtype {dtype!r}.") from error
    valid_shape = isinstance(shape, list) and all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape
    )
    if (
        dtype.kind not in _DTYPE_KINDS
        or not valid_shape
        or math.prod(shape) != len(items)
        or not all(item is None or isinstance(item, (bool, int, float, str)) for item in items)
    ):
        raise ModelFileError(f"{path} holds an invalid array ({value.get('dtype')!r}).")
    array = np.empty(len(items), dtype=dtype)
    try:
        array[:] = items
    except (TypeError, ValueError) as error:
        raise ModelFileError(f"{path} holds an array whose values do not fit its dtype.") from error
    return array.reshape(shape)
