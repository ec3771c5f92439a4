"""Model files: safetensors weights and a JSON description, loaded without running code."""

import json
import subprocess
import sys

import joblib
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

import skdistill
from skdistill import (
    Cnn3DClassifier,
    Cnn3DSegmenter,
    DistilledClassifier,
    DistilledSegmenter,
    load_model,
    save_model,
)
from skdistill.architectures import build_network
from skdistill.exceptions import (
    DeviceFallbackWarning,
    IncompatibleModelError,
    InconsistentVersionWarning,
    ModelFileError,
)
from skdistill.model_files import FORMAT_VERSION, METADATA_KEY, check_model_path

from .conftest import FAST

TINY = {**FAST, "max_epochs": 2, "random_state": 0}
SMALL_UNET = {"base_filters": 4, "levels": 2, "last_filters": 4}


@pytest.fixture(scope="module")
def data():
    X, y = skdistill.datasets.make_toy_volumes(30, n_classes=3, size=8, noise=0.3, random_state=0)
    return X, np.array(["ribosome", "proteasome", "empty"])[y], (X > 0.5).astype(np.int8)


def _fit(name, data):
    X, labels, masks = data
    if name == "Cnn3DClassifier":
        return Cnn3DClassifier("tiny", **TINY).fit(X, labels, voxel_size=9.2)
    if name == "DistilledClassifier":
        teacher = Cnn3DClassifier("tiny", **TINY)
        return DistilledClassifier(teacher, "tiny", **TINY).fit(X, labels)
    if name == "Cnn3DSegmenter":
        return Cnn3DSegmenter("unet", **SMALL_UNET, **TINY).fit(X, masks, voxel_size=4.6)
    teacher = Cnn3DSegmenter("unet", **SMALL_UNET, **TINY)
    return DistilledSegmenter(teacher, **SMALL_UNET, **TINY).fit(X, masks)


NAMES = ["Cnn3DClassifier", "DistilledClassifier", "Cnn3DSegmenter", "DistilledSegmenter"]


@pytest.fixture(scope="module")
def fitted(data):
    return {name: _fit(name, data) for name in NAMES}


@pytest.fixture(scope="module")
def saved(fitted, tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    return {
        name: save_model(model, folder / f"{name}.safetensors") for name, model in fitted.items()
    }


def _description(path) -> dict:
    with safe_open(str(path), framework="pt") as file:
        return json.loads(file.metadata()[METADATA_KEY])


def _rewritten(path, out, edit) -> str:
    """A copy of the model file ``path`` at ``out`` with its description changed by ``edit``."""
    with safe_open(str(path), framework="pt") as file:
        tensors = {key: file.get_tensor(key) for key in file.keys()}
        description = json.loads(file.metadata()[METADATA_KEY])
    edit(description)
    save_file(tensors, str(out), metadata={METADATA_KEY: json.dumps(description)})
    return out


@pytest.mark.parametrize("name", NAMES)
def test_loaded_model_predicts_exactly_as_the_original(name, fitted, saved, data):
    X = data[0]
    original, loaded = fitted[name], load_model(saved[name])
    assert type(loaded) is type(original)
    np.testing.assert_array_equal(loaded.predict_proba(X), original.predict_proba(X))
    np.testing.assert_array_equal(loaded.predict(X), original.predict(X))
    for attribute in ("input_shape_", "n_channels_", "voxel_size_", "n_features_in_", "n_iter_"):
        assert getattr(loaded, attribute) == getattr(original, attribute), attribute
    assert isinstance(loaded.input_shape_, tuple)
    np.testing.assert_array_equal(loaded.classes_, original.classes_)
    assert loaded.classes_.dtype == original.classes_.dtype
    assert loaded.history_[:, "train_loss"] == original.history_[:, "train_loss"]
    params, loaded_params = original.get_params(deep=False), loaded.get_params(deep=False)
    teacher = params.pop("teacher", None)
    loaded_teacher = loaded_params.pop("teacher", None)
    assert loaded_params == params
    if teacher is not None:  # stored unfitted, by class and parameters
        assert type(loaded_teacher) is type(teacher)
        assert loaded_teacher.get_params() == teacher.get_params()
        assert not hasattr(loaded_teacher, "net_")


def test_description_summarises_the_model(fitted, saved):
    description = _description(saved["Cnn3DClassifier"])
    assert description["format_version"] == FORMAT_VERSION == 1
    assert description["class"] == "Cnn3DClassifier"
    assert description["architecture"] == "tiny"
    assert description["classes"] == ["empty", "proteasome", "ribosome"]
    assert description["input_shape"] == [8, 8, 8]
    assert description["n_channels"] == 1
    assert description["voxel_size"] == 9.2
    assert description["versions"] == {
        "skdistill": skdistill.__version__,
        "torch": torch.__version__,
    }


def test_model_file_holds_only_the_student(fitted, saved):
    student = fitted["DistilledClassifier"]
    with safe_open(str(saved["DistilledClassifier"]), framework="pt") as file:
        names = set(file.keys())
    assert names == set(student.module_.state_dict())
    weight_bytes = 4 * student.n_parameters_
    assert saved["DistilledClassifier"].stat().st_size < weight_bytes + 20_000


def test_frozen_teacher_is_stored_as_the_estimator_it_wraps(fitted, data, tmp_path):
    X, labels, _ = data
    teacher = fitted["Cnn3DClassifier"]
    student = DistilledClassifier(FrozenEstimator(teacher), "tiny", **{**TINY, "max_epochs": 1})
    path = save_model(student.fit(X, labels), tmp_path / "student.safetensors")
    loaded = load_model(path)
    assert type(loaded.teacher) is Cnn3DClassifier
    assert loaded.teacher.get_params() == teacher.get_params()
    np.testing.assert_array_equal(loaded.predict_proba(X), student.predict_proba(X))


LOAD_AND_PREDICT = """
import sys, numpy as np
from skdistill import load_model
np.save(sys.argv[3], load_model(sys.argv[1]).predict_proba(np.load(sys.argv[2])))
"""


def test_loads_in_a_fresh_process_bit_for_bit(fitted, saved, data, tmp_path):
    X = data[0]
    inputs, out = tmp_path / "X.npy", tmp_path / "proba.npy"
    np.save(inputs, X)
    model = saved["DistilledClassifier"]
    subprocess.run([sys.executable, "-c", LOAD_AND_PREDICT, model, inputs, out], check=True)
    np.testing.assert_array_equal(np.load(out), fitted["DistilledClassifier"].predict_proba(X))


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the CPU-only fallback")
def test_model_saved_on_cuda_loads_on_cpu(fitted, saved, data, tmp_path):
    model = fitted["Cnn3DSegmenter"]
    model.device_, original = "cuda", model.device_
    try:
        path = save_model(model, tmp_path / "cuda.safetensors")
    finally:
        model.device_ = original
    assert _description(path)["fitted"]["device_"] == "cuda"
    with pytest.warns(DeviceFallbackWarning, match="not available here"):
        loaded = load_model(path)
    assert loaded.device_ == "cpu"
    np.testing.assert_array_equal(loaded.predict_proba(data[0]), model.predict_proba(data[0]))


@pytest.mark.gpu
def test_cuda_model_loads_on_cuda(data, tmp_path):
    X, labels, _ = data
    model = Cnn3DClassifier("tiny", device="cuda", **TINY).fit(X, labels)
    loaded = load_model(save_model(model, tmp_path / "cuda.safetensors"))
    assert loaded.device_ == model.device_
    assert next(loaded.module_.parameters()).device.type == "cuda"
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))


def test_joblib_pickles_keep_the_voxel_size(fitted, tmp_path):
    path = tmp_path / "model.joblib"
    joblib.dump(fitted["Cnn3DClassifier"], path)
    assert joblib.load(path).voxel_size_ == 9.2


# -- saving: refusals ----------------------------------------------------------------------
def test_existing_file_is_kept_unless_overwrite(fitted, tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_model(fitted["Cnn3DClassifier"], path)
    assert path.read_bytes() == b"precious"
    save_model(fitted["Cnn3DClassifier"], path, overwrite=True)
    assert load_model(path).voxel_size_ == 9.2
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no temporaries


@pytest.mark.parametrize("name", ["model.joblib", "model.pt", "model.PKL"])
def test_pickle_names_are_refused(fitted, tmp_path, name):
    with pytest.raises(ValueError, match=r"named like a pickle.*model\.safetensors"):
        save_model(fitted["Cnn3DClassifier"], tmp_path / name)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["model", "model.skdistill"])
def test_other_names_are_written_as_given(fitted, tmp_path, name):
    path = save_model(fitted["Cnn3DClassifier"], tmp_path / name)
    assert path == tmp_path / name
    original = fitted["Cnn3DClassifier"]
    assert load_model(path).classes_.tolist() == original.classes_.tolist()


def test_missing_folder_is_named(fitted, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        save_model(fitted["Cnn3DClassifier"], tmp_path / "missing" / "model.safetensors")


def test_output_path_can_be_checked_before_fitting(tmp_path):
    path = tmp_path / "model.safetensors"
    assert check_model_path(str(path)) == path
    assert not path.exists()
    path.touch()
    with pytest.raises(FileExistsError, match="already exists"):
        check_model_path(path)
    assert check_model_path(path, overwrite=True) == path
    with pytest.raises(ValueError, match="safetensors"):
        check_model_path(tmp_path / "model.pkl")


def test_unfitted_and_foreign_estimators_are_refused(fitted, tmp_path):
    path = tmp_path / "model.safetensors"
    with pytest.raises(NotFittedError):
        save_model(Cnn3DClassifier("tiny"), path)
    pipeline = make_pipeline(FunctionTransformer(), fitted["Cnn3DClassifier"])
    with pytest.raises(TypeError, match=r"pipeline\[-1\]"):
        save_model(pipeline, path)
    assert not path.exists()


def test_callable_architecture_cannot_be_saved(data, tmp_path):
    X, labels, _ = data

    def factory(n_classes, input_shape, in_channels):
        return build_network("tiny", n_classes, input_shape, in_channels)

    model = Cnn3DClassifier(factory, **{**TINY, "max_epochs": 1}).fit(X, labels)
    with pytest.raises(ValueError, match=r"callable.*joblib"):
        save_model(model, tmp_path / "model.safetensors")


# -- loading: files that are not (valid) model files ---------------------------------------
def test_not_a_safetensors_file(fitted, tmp_path):
    path = tmp_path / "model.joblib"
    joblib.dump(fitted["Cnn3DClassifier"], path)
    with pytest.raises(ModelFileError, match=r"not a safetensors file.*trusted source"):
        load_model(path)


def test_safetensors_file_without_skdistill_metadata(tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file({"weight": torch.zeros(2)}, str(path), metadata={"format": "pt"})
    with pytest.raises(ModelFileError, match="not a skdistill model file"):
        load_model(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="No model file"):
        load_model(tmp_path / "absent.safetensors")


def test_invalid_json(saved, tmp_path):
    with safe_open(str(saved["Cnn3DClassifier"]), framework="pt") as file:
        tensors = {key: file.get_tensor(key) for key in file.keys()}
    path = tmp_path / "broken.safetensors"
    save_file(tensors, str(path), metadata={METADATA_KEY: "{not json"})
    with pytest.raises(ModelFileError, match="not valid JSON"):
        load_model(path)


def test_newer_format_version_asks_for_an_upgrade(saved, tmp_path):
    def newer(description):
        description["format_version"] = FORMAT_VERSION + 1

    path = _rewritten(saved["Cnn3DClassifier"], tmp_path / "new.safetensors", newer)
    with pytest.raises(ModelFileError, match=r"format version 2.*Upgrade skdistill"):
        load_model(path)


def test_unknown_class_is_refused_and_nothing_runs(saved, tmp_path, monkeypatch):
    marker = tmp_path / "executed"
    calls = []
    monkeypatch.setattr("os.system", lambda *args: calls.append(args))

    def hostile(description):
        description["class"] = "os.system"
        description["params"] = {"command": f"touch {marker}"}

    path = _rewritten(saved["Cnn3DClassifier"], tmp_path / "hostile.safetensors", hostile)
    with pytest.raises(ModelFileError, match=r"'os\.system', which is not one of skdistill"):
        load_model(path)
    assert not calls and not marker.exists()


def test_unknown_teacher_class_is_not_built(saved, tmp_path, data):
    def foreign(description):
        description["params"]["teacher"] = {
            "class": "subprocess.Popen",
            "params": {"args": ["touch", str(tmp_path / "executed")]},
        }

    path = _rewritten(saved["DistilledClassifier"], tmp_path / "foreign.safetensors", foreign)
    with pytest.warns(UserWarning, match="'subprocess.Popen'.*teacher=None"):
        loaded = load_model(path)
    assert loaded.teacher is None
    assert not (tmp_path / "executed").exists()
    assert loaded.predict(data[0]).shape == (len(data[0]),)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d["params"].update(arch="os.system"), "invalid parameters.*arch"),
        (lambda d: d["params"].update(command="rm"), "parameters it does not take"),
        (lambda d: d["fitted"].update(__class__="x"), "'__class__'"),
        (lambda d: d["fitted"].update(net_="x"), "'net_'"),
        (lambda d: d["fitted"].pop("input_shape_"), "lacks the fitted attributes"),
        (lambda d: d["fitted"].update(input_shape_=[8, 8, 8]), "invalid input shape"),
        (lambda d: d["fitted"].update(device_="cuda; rm"), "invalid device"),
        (lambda d: d["fitted"].update(voxel_size_=-1), "invalid voxel size"),
        (lambda d: d["fitted"]["classes_"].update(dtype="V8"), "invalid array"),
        (lambda d: d.pop("params"), "no valid 'params'"),
    ],
)
def test_tampered_descriptions_fail_clearly(saved, tmp_path, edit, match):
    path = _rewritten(saved["Cnn3DClassifier"], tmp_path / "tampered.safetensors", edit)
    with pytest.raises(ModelFileError, match=match):
        load_model(path)


def test_weights_of_another_network_are_refused(saved, tmp_path):
    def more_classes(description):
        description["fitted"]["classes_"] = {"__ndarray__": [0, 1], "dtype": "<i8", "shape": [2]}

    path = _rewritten(saved["Cnn3DClassifier"], tmp_path / "two.safetensors", more_classes)
    with pytest.raises(IncompatibleModelError, match="do not fit the network"):
        load_model(path)


def test_file_from_another_version_loads_with_a_warning(saved, tmp_path, data):
    def older(description):
        description["versions"] = {"skdistill": "0.0.1", "torch": "1.13.0"}

    path = _rewritten(saved["Cnn3DSegmenter"], tmp_path / "old.safetensors", older)
    with pytest.warns(InconsistentVersionWarning, match="skdistill version 0.0.1"):
        loaded = load_model(path)
    assert loaded.predict(data[0][:2]).shape == (2, 8, 8, 8)


def test_load_model_puts_the_model_on_the_device_asked_for(tmp_path, recwarn):
    from skdistill.datasets import make_toy_volumes

    X, y = make_toy_volumes(12, n_classes=2, size=8, noise=0.3, random_state=0)
    model = Cnn3DClassifier(arch="tiny", max_epochs=1, device="cpu", random_state=0).fit(X, y)
    path = save_model(model, tmp_path / "m.safetensors")
    assert load_model(path, device="cpu").device_ == "cpu"
    assert load_model(path, device="auto").device_ == (
        "cuda" if torch.cuda.is_available() else "cpu"
    )
    with pytest.raises(ValueError, match="not a valid torch device"):
        load_model(path, device="gpu please")
