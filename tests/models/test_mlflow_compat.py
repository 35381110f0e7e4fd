"""Cross-loading with MLflow 3, both ways (MLflow is imported only by these tests)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from tracking_plugin.errors import ModelLoadRefused
from tracking_plugin.models import load_model, save_model

mlflow = pytest.importorskip("mlflow")
import mlflow.pyfunc  # noqa: E402
import mlflow.sklearn  # noqa: E402


# Given requirements, MLflow skips its slow pip inference (a subprocess per save).
REQS = ["scikit-learn", "skops"]


@pytest.fixture(autouse=True)
def _quiet_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    # MLflow's own default; set explicitly so a user's environment cannot change the outcome.
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
    warnings.filterwarnings("ignore", module="mlflow")


def test_our_classifier_loads_in_mlflow_pyfunc_with_identical_predictions(tmp_path, classifier, numeric_frame):
    X, _, _ = numeric_frame
    save_model(classifier, tmp_path / "m", input_example=X.head(3))
    theirs = mlflow.pyfunc.load_model(str(tmp_path / "m"))
    ours = load_model(tmp_path / "m")
    np.testing.assert_array_equal(theirs.predict(X), ours.predict(X))
    np.testing.assert_array_equal(theirs.predict(X), classifier.predict(X))
    # MLflow parsed our signature and input example
    assert theirs.metadata.get_input_schema().input_names() == ["a", "b", "c"]
    assert theirs.metadata.signature.outputs.to_dict() == [{"type": "long", "required": True}]
    pd.testing.assert_frame_equal(theirs.input_example, X.head(3).reset_index(drop=True))
    # mlflow.sklearn gives back the same estimator type
    assert type(mlflow.sklearn.load_model(str(tmp_path / "m"))).__name__ == "RandomForestClassifier"


def test_our_pipeline_loads_in_mlflow_pyfunc(tmp_path, pipeline, mixed_frame):
    X, _ = mixed_frame
    save_model(pipeline, tmp_path / "m", input_example=X.head(3))
    theirs = mlflow.pyfunc.load_model(str(tmp_path / "m"))
    np.testing.assert_array_equal(theirs.predict(X), load_model(tmp_path / "m").predict(X))


def test_our_custom_model_loads_in_mlflow_pyfunc(tmp_path, regressor, numeric_frame):
    from pyfunc_test_models import ScaledRegressor

    X, _, _ = numeric_frame
    save_model(ScaledRegressor(regressor, offset=2.0), tmp_path / "m", input_example=X.head(2))
    theirs = mlflow.pyfunc.load_model(str(tmp_path / "m"))
    np.testing.assert_allclose(theirs.predict(X), regressor.predict(X) + 2.0)
    np.testing.assert_allclose(theirs.predict(X), load_model(tmp_path / "m").predict(X))


def test_mlflow_skops_model_loads_in_ours(tmp_path, classifier, numeric_frame):
    X, _, _ = numeric_frame
    path = tmp_path / "mlflow-skops"
    mlflow.sklearn.save_model(
        classifier,
        str(path),
        serialization_format="skops",
        skops_trusted_types=["sklearn.tree._tree.Tree"],
        input_example=X.head(3),
        pip_requirements=REQS,
    )
    ours = load_model(path)
    np.testing.assert_array_equal(ours.predict(X), classifier.predict(X))
    assert ours.metadata.verified is False  # MLflow writes no manifest
    assert ours.metadata.mlflow_version == mlflow.__version__
    assert ours.signature.inputs.input_names() == ["a", "b", "c"]
    pd.testing.assert_frame_equal(ours.input_example, X.head(3).reset_index(drop=True))


def test_mlflow_cloudpickle_model_needs_opt_in_in_ours(tmp_path, pipeline, mixed_frame):
    X, _ = mixed_frame
    path = tmp_path / "mlflow-cloudpickle"
    mlflow.sklearn.save_model(pipeline, str(path), serialization_format="cloudpickle", input_example=X.head(2), pip_requirements=REQS)
    with pytest.raises(ModelLoadRefused, match="cloudpickle.*allow_pickle=True"):
        load_model(path)
    ours = load_model(path, allow_pickle=True)
    np.testing.assert_array_equal(ours.predict(X), pipeline.predict(X))


def test_mlflow_model_asking_to_trust_foreign_types_is_refused(tmp_path, regressor):
    path = tmp_path / "mlflow-skops"
    mlflow.sklearn.save_model(regressor, str(path), serialization_format="skops", pip_requirements=REQS)
    text = (path / "MLmodel").read_text().replace("skops_trusted_types: null", "skops_trusted_types:\n    - builtins.exec")
    (path / "MLmodel").write_text(text)
    with pytest.raises(ModelLoadRefused, match="no sha256 manifest.*'builtins.exec'"):
        load_model(path)


def test_truncated_mlflow_model_without_manifest_is_refused(tmp_path, classifier):
    path = tmp_path / "mlflow-skops"
    mlflow.sklearn.save_model(classifier, str(path), serialization_format="skops", skops_trusted_types=["sklearn.tree._tree.Tree"], pip_requirements=REQS)
    data = (path / "model.skops").read_bytes()
    (path / "model.skops").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadRefused, match="corrupt or truncated"):
        load_model(path)
