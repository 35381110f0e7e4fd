"""save_model / load_model: the files written, round trips, custom models, refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tracking_plugin.errors import AlreadyExists, InvalidArgument, ModelLoadRefused, NotFound
from tracking_plugin.models import (
    ColSpec,
    ModelSignature,
    PyFuncModel,
    Schema,
    clear_cache,
    load_model,
    save_model,
)


def _mlmodel(path: Path) -> dict:
    return yaml.safe_load((path / "MLmodel").read_text())


# ---------------------------------------------------------------------------- layout


def test_sklearn_model_directory_has_mlflow_layout(tmp_path, classifier, numeric_frame):
    X, _, _ = numeric_frame
    path = tmp_path / "model"
    meta = save_model(classifier, path, input_example=X.head(3), metadata={"team": "churn"}, run_id="abc123")

    assert sorted(p.name for p in path.iterdir()) == [
        "MLmodel",
        "conda.yaml",
        "input_example.json",
        "manifest.json",
        "model.skops",
        "python_env.yaml",
        "requirements.txt",
        "serving_input_example.json",
    ]
    doc = _mlmodel(path)
    assert doc["flavors"]["python_function"]["loader_module"] == "mlflow.sklearn"
    assert doc["flavors"]["python_function"]["model_path"] == "model.skops"
    assert doc["flavors"]["python_function"]["env"] == {"conda": "conda.yaml", "virtualenv": "python_env.yaml"}
    sk = doc["flavors"]["sklearn"]
    assert sk["pickled_model"] == "model.skops"
    assert sk["serialization_format"] == "skops"
    assert sk["skops_trusted_types"] == ["sklearn.tree._tree.Tree"]
    assert doc["run_id"] == "abc123" and doc["metadata"] == {"team": "churn"}
    assert doc["model_uuid"] == meta.model_uuid and len(meta.model_uuid) == 32
    assert json.loads(doc["signature"]["inputs"]) == [
        {"type": "double", "name": "a", "required": True},
        {"type": "double", "name": "b", "required": True},
        {"type": "long", "name": "c", "required": True},
    ]
    assert json.loads(doc["signature"]["outputs"]) == [{"type": "long", "required": True}]
    assert doc["saved_input_example_info"] == {
        "artifact_path": "input_example.json",
        "type": "dataframe",
        "pandas_orient": "split",
        "serving_input_path": "serving_input_example.json",
    }
    example = json.loads((path / "input_example.json").read_text())
    assert example["columns"] == ["a", "b", "c"] and len(example["data"]) == 3
    serving = json.loads((path / "serving_input_example.json").read_text())
    assert serving == {"dataframe_split": example}


def test_requirements_are_pinned_from_installed_versions(tmp_path, classifier):
    import importlib.metadata as md

    save_model(classifier, tmp_path / "m")
    reqs = (tmp_path / "m" / "requirements.txt").read_text().split()
    for dist in ("scikit-learn", "numpy", "scipy", "pandas", "skops"):
        assert f"{dist}=={md.version(dist)}" in reqs
    assert not any(r.startswith("cloudpickle") for r in reqs)
    env = yaml.safe_load((tmp_path / "m" / "python_env.yaml").read_text())
    assert env["dependencies"] == ["-r requirements.txt"]
    assert env["python"].count(".") == 2
    conda = yaml.safe_load((tmp_path / "m" / "conda.yaml").read_text())
    assert {"pip": reqs} in conda["dependencies"]


def test_explicit_pip_requirements_replace_the_defaults(tmp_path, regressor):
    save_model(regressor, tmp_path / "m", pip_requirements=["scikit-learn>=1.5", "mylib==2.0"])
    assert (tmp_path / "m" / "requirements.txt").read_text().split() == ["scikit-learn>=1.5", "mylib==2.0"]


def test_existing_non_empty_path_is_refused_and_left_alone(tmp_path, regressor):
    target = tmp_path / "m"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(AlreadyExists, match="already exists"):
        save_model(regressor, target)
    assert [p.name for p in target.iterdir()] == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    save_model(regressor, empty)  # an empty directory is fine
    assert (empty / "MLmodel").is_file()


def test_failed_save_leaves_nothing_behind(tmp_path):
    class Broken:
        def predict(self, X):  # noqa: ANN001
            return X

    with pytest.raises(InvalidArgument, match="cloudpickle"):
        save_model(Broken(), tmp_path / "m")  # a class defined in a function: skops cannot store it
    assert list(tmp_path.iterdir()) == []


def test_unfitted_and_non_models_are_refused(tmp_path):
    from sklearn.linear_model import LogisticRegression

    with pytest.raises(InvalidArgument, match="not fitted"):
        save_model(LogisticRegression(), tmp_path / "a")
    with pytest.raises(InvalidArgument, match="no predict"):
        save_model({"weights": [1, 2]}, tmp_path / "b")
    with pytest.raises(InvalidArgument, match="serialization_format"):
        save_model(LogisticRegression(), tmp_path / "c", serialization_format="joblib")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- round trips


def test_classifier_round_trip_predicts_the_same(tmp_path, classifier, numeric_frame):
    X, _, _ = numeric_frame
    save_model(classifier, tmp_path / "m", input_example=X.head(5))
    loaded = load_model(str(tmp_path / "m"))
    assert isinstance(loaded, PyFuncModel)
    np.testing.assert_array_equal(loaded.predict(X), classifier.predict(X))
    assert loaded.metadata.verified is True
    assert loaded.local_path == str(tmp_path / "m")
    assert type(loaded.get_raw_model()).__name__ == "RandomForestClassifier"
    pd.testing.assert_frame_equal(loaded.input_example, X.head(5).reset_index(drop=True))


def test_regressor_round_trip_from_file_uri(tmp_path, regressor, numeric_frame):
    X, _, _ = numeric_frame
    save_model(regressor, tmp_path / "m", input_example=X.head(2))
    loaded = load_model((tmp_path / "m").as_uri())
    np.testing.assert_allclose(loaded.predict(X), regressor.predict(X), rtol=0, atol=0)


def test_pipeline_with_column_transformer_round_trip(tmp_path, pipeline, mixed_frame):
    X, _ = mixed_frame
    meta = save_model(pipeline, tmp_path / "m", input_example=X.head(4))
    assert [c.to_dict() for c in meta.signature.inputs] == [
        {"type": "long", "name": "age", "required": True},
        {"type": "double", "name": "income", "required": True},
        {"type": "string", "name": "city", "required": True},
        {"type": "string", "name": "plan", "required": True},
    ]
    clear_cache()  # load through skops, not the in-process cache
    loaded = load_model(tmp_path / "m")
    np.testing.assert_array_equal(loaded.predict(X), pipeline.predict(X))
    # columns in another order plus an unknown one: reordered and dropped, as MLflow does
    shuffled = X[["plan", "city", "income", "age"]].assign(extra=1)
    np.testing.assert_array_equal(loaded.predict(shuffled), pipeline.predict(X))
    # records (as from JSON) work too
    records = X.head(3).to_dict(orient="records")
    np.testing.assert_array_equal(loaded.predict(records), pipeline.predict(X.head(3)))


def test_each_load_gets_its_own_estimator(tmp_path, regressor):
    save_model(regressor, tmp_path / "m")
    first, second = load_model(tmp_path / "m"), load_model(tmp_path / "m")
    assert first.get_raw_model() is not second.get_raw_model()
    first.get_raw_model().coef_[:] = 0
    assert np.any(second.get_raw_model().coef_ != 0)


def test_predict_proba_as_pyfunc_predict_fn(tmp_path, classifier, numeric_frame):
    X, _, _ = numeric_frame
    save_model(classifier, tmp_path / "m", input_example=X.head(2), pyfunc_predict_fn="predict_proba")
    loaded = load_model(tmp_path / "m")
    np.testing.assert_allclose(loaded.predict(X.head(7)), classifier.predict_proba(X.head(7)))
    assert loaded.signature.outputs.is_tensor_spec()


def test_numpy_input_example_gives_a_tensor_signature(tmp_path, numeric_frame):
    from sklearn.linear_model import LinearRegression

    X, _, y = numeric_frame
    arr = X.to_numpy(dtype=np.float64)
    model = LinearRegression().fit(arr, y)
    meta = save_model(model, tmp_path / "m", input_example=arr[:3])
    assert meta.signature.inputs.to_dict() == [{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1, 3]}}]
    loaded = load_model(tmp_path / "m")
    np.testing.assert_allclose(loaded.predict(arr), model.predict(arr))
    with pytest.raises(InvalidArgument, match=r"shape \[2, 2\]"):
        loaded.predict(arr[:2, :2])
    np.testing.assert_array_equal(loaded.input_example, arr[:3])


def test_signature_given_explicitly_is_kept_and_checked_against_the_example(tmp_path, regressor, numeric_frame):
    X, _, _ = numeric_frame
    sig = ModelSignature(Schema([ColSpec("double", "a"), ColSpec("double", "b"), ColSpec("double", "c")]))
    meta = save_model(regressor, tmp_path / "m", signature=sig, input_example=X.head(2))
    assert meta.signature == sig
    wrong = ModelSignature(Schema([ColSpec("double", "a"), ColSpec("string", "zzz")]))
    with pytest.raises(InvalidArgument, match="input_example does not match.*'zzz'"):
        save_model(regressor, tmp_path / "n", signature=wrong, input_example=X.head(2))


def test_signature_violations_name_the_column(tmp_path, pipeline, mixed_frame):
    X, _ = mixed_frame
    save_model(pipeline, tmp_path / "m", input_example=X.head(4))
    loaded = load_model(tmp_path / "m")
    with pytest.raises(InvalidArgument, match="missing required column.*'city'"):
        loaded.predict(X.drop(columns=["city"]))
    bad = X.head(2).assign(income=["lots", "more"])
    with pytest.raises(InvalidArgument, match="'income'.*expects double"):
        loaded.predict(bad)
    with pytest.raises(InvalidArgument, match="'age'.*expects long"):
        loaded.predict(X.head(2).assign(age=[30.5, 40.0]))
    # a safe cast: int32 ages and integer incomes are accepted
    ok = X.head(2).astype({"age": "int32"}).assign(income=[50_000, 60_000])
    assert loaded.predict(ok).shape == (2,)


# ---------------------------------------------------------------------------- custom models


def test_custom_python_model_round_trip_with_skops(tmp_path):
    from pyfunc_test_models import AddN

    frame = pd.DataFrame({"x": [1.0, 2.0], "y": [10.0, 20.0]})
    meta = save_model(AddN(5), tmp_path / "m", input_example=frame)
    conf = meta.flavors["python_function"]
    assert conf["loader_module"] == "tracking_plugin.models.loader"
    assert conf["python_model_class"] == "pyfunc_test_models:AddN"
    assert conf["python_model"] == "python_model.skops"
    assert "sklearn" not in meta.flavors
    loaded = load_model(tmp_path / "m")
    pd.testing.assert_frame_equal(loaded.predict(frame), frame + 5)
    assert isinstance(loaded.unwrap_python_model(), AddN)
    assert loaded.unwrap_python_model().n == 5
    reqs = (tmp_path / "m" / "requirements.txt").read_text()
    assert "skops==" in reqs


def test_custom_model_wrapping_an_estimator_with_params(tmp_path, regressor, numeric_frame):
    from pyfunc_test_models import ScaledRegressor

    X, _, _ = numeric_frame
    save_model(ScaledRegressor(regressor, offset=1.0), tmp_path / "m", input_example=X.head(3))
    loaded = load_model(tmp_path / "m")
    expected = (regressor.predict(X) + 1.0) * 2
    np.testing.assert_allclose(loaded.predict(X, params={"scale": 2}), expected)
    np.testing.assert_allclose(loaded.predict(X), regressor.predict(X) + 1.0)
    inner = loaded.unwrap_python_model().estimator
    assert type(inner) is type(regressor) and inner is not regressor
    np.testing.assert_array_equal(inner.coef_, regressor.coef_)


def test_custom_model_holding_a_forest_records_its_trusted_types(tmp_path, classifier, numeric_frame):
    from pyfunc_test_models import ScaledRegressor

    X, _, _ = numeric_frame
    meta = save_model(ScaledRegressor(classifier, offset=0.0), tmp_path / "m")
    assert meta.flavors["python_function"]["skops_trusted_types"] == ["sklearn.tree._tree.Tree"]
    clear_cache()
    np.testing.assert_array_equal(load_model(tmp_path / "m").predict(X), classifier.predict(X))


def test_custom_model_artifacts_reach_load_context(tmp_path):
    from pyfunc_test_models import VocabularyLookup

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("apple banana cherry")
    save_model(VocabularyLookup(), tmp_path / "m", artifacts={"vocabulary": vocab}, input_example=pd.DataFrame({"word": ["apple", "kiwi"]}))
    vocab.unlink()  # the model keeps its own copy
    loaded = load_model(tmp_path / "m")
    assert loaded.predict(pd.DataFrame({"word": ["banana", "plum"]})).tolist() == [True, False]
    assert (tmp_path / "m" / "artifacts" / "vocabulary" / "vocab.txt").is_file()


def test_custom_model_without_context_argument(tmp_path):
    from pyfunc_test_models import WithoutContext

    save_model(WithoutContext(), tmp_path / "m")
    assert load_model(tmp_path / "m").predict(pd.DataFrame({"q": [1, 2, 3]})).tolist() == [0, 1, 2]


def test_unwrap_python_model_is_for_custom_models_only(tmp_path, regressor):
    save_model(regressor, tmp_path / "m")
    with pytest.raises(InvalidArgument, match="get_raw_model"):
        load_model(tmp_path / "m").unwrap_python_model()


def test_custom_class_defined_in_a_function_needs_cloudpickle(tmp_path):
    from tracking_plugin.models import PythonModel

    class Local(PythonModel):
        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
            return model_input * 2

    with pytest.raises(InvalidArgument, match="serialization_format='cloudpickle'"):
        save_model(Local(), tmp_path / "m")
    save_model(Local(), tmp_path / "m", serialization_format="cloudpickle")
    with pytest.raises(ModelLoadRefused, match="allow_pickle=True"):
        load_model(tmp_path / "m")
    frame = pd.DataFrame({"v": [1, 2]})
    pd.testing.assert_frame_equal(load_model(tmp_path / "m", allow_pickle=True).predict(frame), frame * 2)


# ---------------------------------------------------------------------------- pickle opt-in


@pytest.mark.parametrize("fmt", ["cloudpickle", "pickle"])
def test_pickle_formats_need_opt_in_to_load(tmp_path, classifier, numeric_frame, fmt):
    X, _, _ = numeric_frame
    meta = save_model(classifier, tmp_path / "m", serialization_format=fmt, input_example=X.head(2))
    assert meta.flavors["sklearn"]["serialization_format"] == fmt
    assert meta.flavors["sklearn"]["pickled_model"] == "model.pkl"
    with pytest.raises(ModelLoadRefused) as refused:
        load_model(tmp_path / "m")
    assert fmt in refused.value.message and "allow_pickle=True" in refused.value.message
    loaded = load_model(tmp_path / "m", allow_pickle=True)
    np.testing.assert_array_equal(loaded.predict(X), classifier.predict(X))
    if fmt == "cloudpickle":
        assert "cloudpickle==" in (tmp_path / "m" / "requirements.txt").read_text()


# ---------------------------------------------------------------------------- tampering


@pytest.fixture
def saved(tmp_path, classifier, numeric_frame) -> Path:
    X, _, _ = numeric_frame
    path = tmp_path / "m"
    save_model(classifier, path, input_example=X.head(2))
    return path


def test_a_changed_byte_is_refused(saved):
    model_file = saved / "model.skops"
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0x01
    model_file.write_bytes(bytes(data))
    with pytest.raises(ModelLoadRefused, match="'model.skops'.*changed after it was saved"):
        load_model(saved)


def test_a_truncated_file_is_refused(saved):
    model_file = saved / "model.skops"
    model_file.write_bytes(model_file.read_bytes()[:1000])
    with pytest.raises(ModelLoadRefused, match="'model.skops'.*truncated"):
        load_model(saved)


def test_a_deleted_file_is_refused(saved):
    (saved / "requirements.txt").unlink()
    with pytest.raises(ModelLoadRefused, match="'requirements.txt'.*missing"):
        load_model(saved)


def test_an_added_file_is_refused(saved):
    (saved / "evil.py").write_text("import os")
    with pytest.raises(ModelLoadRefused, match="'evil.py'.*not in its manifest"):
        load_model(saved)


def test_an_edited_mlmodel_is_refused(saved):
    text = (saved / "MLmodel").read_text().replace("sklearn.tree._tree.Tree", "os.system")
    (saved / "MLmodel").write_text(text)
    with pytest.raises(ModelLoadRefused, match="'MLmodel'"):
        load_model(saved)


def test_a_deleted_manifest_is_refused_for_our_models(saved):
    (saved / "manifest.json").unlink()
    with pytest.raises(ModelLoadRefused, match="manifest.json is missing"):
        load_model(saved)


def test_missing_directory_and_non_model_directory(tmp_path):
    with pytest.raises(NotFound, match="No model directory"):
        load_model(tmp_path / "nope")
    (tmp_path / "d").mkdir()
    with pytest.raises(NotFound, match="No MLmodel file"):
        load_model(tmp_path / "d")


def test_copied_model_directory_still_verifies(tmp_path, saved, classifier, numeric_frame):
    X, _, _ = numeric_frame
    copy = tmp_path / "copy"
    shutil.copytree(saved, copy)
    np.testing.assert_array_equal(load_model(copy).predict(X.head(4)), classifier.predict(X.head(4)))


def test_other_input_containers_are_turned_into_frames(tmp_path, regressor, numeric_frame):
    X, _, _ = numeric_frame
    save_model(regressor, tmp_path / "m", input_example=X.head(2))
    loaded = load_model(tmp_path / "m")
    expected = regressor.predict(X.head(3))
    # A float array cannot feed the integer column 'c' (MLflow refuses it too) ...
    with pytest.raises(InvalidArgument, match="'c'.*expects long"):
        loaded.predict(X.head(3).to_numpy())
    # ... rows as lists keep each value's type
    np.testing.assert_allclose(loaded.predict(X.head(3).to_numpy(dtype=object).tolist()), expected)
    np.testing.assert_allclose(loaded.predict(X.head(3).to_dict(orient="list")), expected)  # dict of columns
    one = {"a": float(X["a"][0]), "b": float(X["b"][0]), "c": int(X["c"][0])}
    np.testing.assert_allclose(loaded.predict(one), expected[:1])  # dict of scalars: one row
    with pytest.raises(InvalidArgument, match=r"shape \[1, 2\].*expects 3 column"):
        loaded.predict(np.zeros((1, 2)))


def test_metadata_must_be_plain_values(tmp_path, regressor):
    with pytest.raises(InvalidArgument, match="metadata must be a dict of plain values"):
        save_model(regressor, tmp_path / "m", metadata={"threshold": np.float32(0.5)})
    assert list(tmp_path.iterdir()) == []
