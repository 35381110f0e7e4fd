"""log_model into a run's artifacts, registration, and loading back through runs:/ and models:/."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from tracking_plugin import fluent
from tracking_plugin.client import TrackingClient
from tracking_plugin.entities import Stage
from tracking_plugin.errors import InvalidArgument, NotFound
from tracking_plugin.models import load_model, log_model


@pytest.fixture
def tracking(tmp_path: Path, artifact_root: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A fresh SQLite backend and artifact root (local folder or S3 on moto), set as a user would."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREFECT_MLOPS_TRACKING_URI", f"sqlite:///{tmp_path / 'mlops.db'}")
    monkeypatch.setenv("PREFECT_MLOPS_ARTIFACT_ROOT", artifact_root)
    fluent.set_tracking_uri(None)
    yield TrackingClient()
    while fluent.active_run() is not None:
        with contextlib.suppress(Exception):
            fluent.end_run()


def test_log_model_starts_a_run_and_loads_back_from_runs_uri(tracking, classifier, numeric_frame):
    X, _, _ = numeric_frame
    assert fluent.active_run() is None
    info = log_model(classifier, "model", input_example=X.head(3), metadata={"owner": "ds-team"})

    active = fluent.active_run()
    assert active is not None and active.run_id == info.run_id  # left active, as MLflow does
    assert info.model_uri == f"runs:/{info.run_id}/model"
    assert info.artifact_path == "model" and info.registered_model_version is None
    assert info.signature.inputs.input_names() == ["a", "b", "c"]
    assert set(info.flavors) == {"python_function", "sklearn"}
    assert info.metadata == {"owner": "ds-team"}

    listed = sorted(f.path for f in tracking.list_artifacts(info.run_id, "model"))
    assert "model/MLmodel" in listed and "model/manifest.json" in listed and "model/model.skops" in listed

    loaded = load_model(info.model_uri)
    np.testing.assert_array_equal(loaded.predict(X), classifier.predict(X))
    assert loaded.metadata.run_id == info.run_id
    assert loaded.metadata.artifact_path == "model"
    assert loaded.metadata.model_uuid == info.model_uuid
    assert loaded.metadata.verified is True


def test_log_model_into_an_active_run_and_nested_path(tracking, regressor, numeric_frame):
    X, _, _ = numeric_frame
    with fluent.start_run() as run:
        info = log_model(regressor, "models/ridge")
        assert info.run_id == run.run_id
    local = tracking.download_artifacts(info.run_id, "models/ridge")
    assert yaml.safe_load(Path(local, "MLmodel").read_text())["artifact_path"] == "models/ridge"
    np.testing.assert_allclose(load_model(info.model_uri).predict(X), regressor.predict(X))


def test_registered_model_loads_by_version_latest_stage_and_alias(tracking, classifier, numeric_frame):
    X, _, _ = numeric_frame
    first = log_model(classifier, "model", registered_model_name="churn", input_example=X.head(2))
    assert first.registered_model_version == 1
    fluent.end_run()
    second = log_model(classifier, "model", registered_model_name="churn")
    assert second.registered_model_version == 2

    expected = classifier.predict(X)
    for uri in ("models:/churn/1", "models:/churn/2", "models:/churn/latest"):
        np.testing.assert_array_equal(load_model(uri).predict(X), expected)
    assert load_model("models:/churn/latest").metadata.run_id == second.run_id

    tracking.transition_model_version_stage("churn", 1, Stage.PRODUCTION)
    tracking.set_registered_model_alias("churn", "champion", 1)
    assert load_model("models:/churn/Production").metadata.run_id == first.run_id
    assert load_model("models:/churn@champion").metadata.run_id == first.run_id
    with pytest.raises(NotFound, match="Staging"):
        load_model("models:/churn/Staging")


def test_bad_names_log_nothing(tracking, regressor):
    with pytest.raises(InvalidArgument):
        log_model(regressor, "../escape")
    with pytest.raises(InvalidArgument):
        log_model(regressor, "model", registered_model_name="bad/name")
    assert fluent.active_run() is None  # refused before a run was started
