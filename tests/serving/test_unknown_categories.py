"""A category the churn model never saw is a 400 naming the column and the allowed values,
not a prediction made as if the row had none of the known categories."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from prefect_mlops.flows.data import CATEGORY_VALUES, FEATURE_COLUMNS, LABEL_COLUMN, ChurnGenerator
from prefect_mlops.flows.training import TrainingConfig, build_pipeline, known_categories
from tracking_plugin.errors import InvalidArgument
from tracking_plugin.models import ALLOWED_VALUES_KEY, load_model, save_model


@pytest.fixture(scope="module")
def churn_pipeline_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Any]:
    """The pipeline's model saved as ct_pipeline logs it: with the categories it knows."""
    batch = ChurnGenerator(seed=0, n_rows=600).load()
    X = batch[list(FEATURE_COLUMNS)]
    model = build_pipeline(TrainingConfig(n_estimators=5)).fit(X, batch[LABEL_COLUMN])
    path = tmp_path_factory.mktemp("models") / "churn"
    save_model(model, path, input_example=X.head(3), metadata={ALLOWED_VALUES_KEY: known_categories(model)})
    return str(path), X


def test_the_pipeline_knows_the_generator_categories(churn_pipeline_dir: tuple[str, Any]) -> None:
    path, _ = churn_pipeline_dir
    allowed = load_model(path).metadata.metadata[ALLOWED_VALUES_KEY]
    assert {k: sorted(v) for k, v in allowed.items()} == {k: sorted(v) for k, v in CATEGORY_VALUES.items()}


def test_an_unknown_category_is_refused_naming_column_and_allowed_values(churn_pipeline_dir: tuple[str, Any]) -> None:
    path, X = churn_pipeline_dir
    model = load_model(path)
    rows = X.head(2).copy()
    assert len(model.predict(rows)) == 2
    rows.loc[rows.index[1], "payment_method"] = "electronic_check"  # underscore: not the data's spelling
    with pytest.raises(InvalidArgument) as err:
        model.predict(rows)
    message = str(err.value)
    assert "'payment_method'" in message and "'electronic_check'" in message
    assert "allowed values: " in message and "'electronic-check'" in message
    missing = X.head(1).astype(object)
    missing.loc[missing.index[0], "contract"] = None  # missing values are the signature's business
    model.predict(missing.astype({c: X[c].dtype for c in X.columns if c != "contract"}))


def test_the_server_answers_400_for_an_unknown_category(
    churn_pipeline_dir: tuple[str, Any], start_scoring_server: Callable[..., Any], server_workdir: Path
) -> None:
    path, X = churn_pipeline_dir
    server = start_scoring_server(path, server_workdir)
    try:
        good = X.head(2).astype(object).values.tolist()
        bad = [row[:] for row in good]
        bad[1][list(X.columns).index("contract")] = "nonsense"
        with server.client() as http:
            ok = http.post("/invocations", json={"dataframe_split": {"columns": list(X.columns), "data": good}})
            refused = http.post("/invocations", json={"dataframe_split": {"columns": list(X.columns), "data": bad}})
        assert ok.status_code == 200, ok.text
        assert refused.status_code == 400, refused.text
        body = refused.json()
        assert body["error_code"] == "INVALID_PARAMETER_VALUE"
        assert "'contract'" in body["message"] and "'nonsense'" in body["message"]
        assert "'month-to-month'" in body["message"]
    finally:
        server.stop()


def test_mlflow_still_loads_a_model_that_lists_its_categories(
    churn_pipeline_dir: tuple[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The allowed values live in MLmodel's free-form ``metadata`` (MLflow's signature JSON
    refuses unknown keys), so MLflow loads the model and keeps them."""
    pytest.importorskip("mlflow")
    import mlflow.pyfunc

    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")  # as tests/models/test_mlflow_compat.py
    path, X = churn_pipeline_dir
    theirs = mlflow.pyfunc.load_model(path)
    assert sorted(theirs.metadata.metadata[ALLOWED_VALUES_KEY]["contract"]) == sorted(CATEGORY_VALUES["contract"])
    assert theirs.predict(X.head(3)).tolist() == load_model(path).predict(X.head(3)).tolist()
