"""The unmodified mlflow client against ``prefect-mlops server``, on SQLite + a local folder
and on PostgreSQL + S3: the seed's usage pattern, every endpoint the client calls, its
errors, and our own client reading the same backend directly (and the other way round)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402


@pytest.fixture
def client(server: Any) -> MlflowClient:
    # The registry follows the tracking URI (set_registry_uri would also export
    # MLFLOW_REGISTRY_URI, pointing later tests at this module's server).
    mlflow.set_tracking_uri(server.url)
    yield MlflowClient(server.url)
    while mlflow.active_run() is not None:
        mlflow.end_run("KILLED")


@pytest.fixture
def direct(server: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Our TrackingClient on the server's database and artifact store, without the server."""
    from support import reset_tracking

    from tracking_plugin import TrackingClient

    for key, value in server.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PREFECT_MLOPS_TRACKING_URI", server.db_uri)
    monkeypatch.setenv("PREFECT_MLOPS_ARTIFACT_ROOT", server.artifact_root)
    reset_tracking()
    yield TrackingClient(server.db_uri, artifact_root=server.artifact_root)
    reset_tracking()


def _data(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    X = rng.normal(size=(60, 4))
    return X, (X[:, 0] + X[:, 1] > 0).astype(int)


def test_seed_usage_pattern(client: MlflowClient, tmp_path: Path) -> None:
    experiment = mlflow.set_experiment("seed-pattern")
    assert mlflow.set_experiment("seed-pattern").experiment_id == experiment.experiment_id  # get-by-name
    notes = tmp_path / "notes.txt"
    notes.write_text("trained on the March extract")
    with mlflow.start_run(run_name="sweep") as parent:
        mlflow.log_param("model", "logreg")
        mlflow.log_params({"C": 0.5, "penalty": "l2"})
        for step in range(5):
            mlflow.log_metric("loss", 1 / (step + 1), step=step)
        mlflow.log_metric("unstable", float("nan"))
        mlflow.log_metrics({"auc": 0.91, "f1": 0.84})
        mlflow.set_tag("team", "risk")
        mlflow.log_artifact(str(notes), artifact_path="docs")
        mlflow.log_dict({"features": ["tenure", "plan"]}, "config/features.json")
        for C in (0.1, 1.0):
            with mlflow.start_run(run_name=f"C={C}", nested=True):
                mlflow.log_param("C", C)
                mlflow.log_metric("auc", 0.8 + C / 10)

    run = client.get_run(parent.info.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "sweep"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    assert run.data.params == {"model": "logreg", "C": "0.5", "penalty": "l2"}
    assert run.data.metrics["loss"] == pytest.approx(0.2) and math.isnan(run.data.metrics["unstable"])
    assert run.data.tags["team"] == "risk"
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(s, pytest.approx(1 / (s + 1))) for s in range(5)]

    children = mlflow.search_runs(
        [experiment.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
        order_by=["metrics.auc DESC"],
    )
    assert list(children["params.C"]) == ["1.0", "0.1"]
    best = mlflow.search_runs([experiment.experiment_id], filter_string="metrics.auc > 0.85", order_by=["metrics.auc ASC"])
    assert list(best["tags.mlflow.runName"]) == ["C=1.0", "sweep"]

    top = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert top == {"docs", "config"}
    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=str(tmp_path / "dl"))
    assert Path(local, "docs", "notes.txt").read_text() == "trained on the March extract"
    assert mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/config/features.json") == {"features": ["tenure", "plan"]}

    client.delete_run(run.info.run_id)
    assert client.get_run(run.info.run_id).info.lifecycle_stage == "deleted"
    assert run.info.run_id not in {r.info.run_id for r in client.search_runs([experiment.experiment_id])}
    deleted = client.search_runs([experiment.experiment_id], run_view_type=2)  # DELETED_ONLY
    assert [r.info.run_id for r in deleted] == [run.info.run_id]
    client.restore_run(run.info.run_id)
    assert run.info.run_id in {r.info.run_id for r in client.search_runs([experiment.experiment_id])}


def test_search_runs_pages_with_tokens(client: MlflowClient) -> None:
    experiment_id = client.create_experiment("paging")
    created = {client.create_run(experiment_id).info.run_id for _ in range(7)}
    seen, token, pages = [], None, 0
    while True:
        page = client.search_runs([experiment_id], max_results=3, page_token=token)
        seen.extend(r.info.run_id for r in page)
        pages += 1
        token = page.token
        if not token:
            break
    assert pages == 3 and len(seen) == 7 and set(seen) == created


def test_run_answers_carry_the_latest_metric_time_and_step(client: MlflowClient) -> None:
    """``run.data`` of search_runs and get_run holds each latest metric as MLflow's server
    answers it: value, timestamp and step of the greatest step (not 0 and 0)."""
    from mlflow.entities import Metric

    experiment_id = client.create_experiment("latest-points")
    run_id = client.create_run(experiment_id).info.run_id
    client.log_batch(run_id, metrics=[Metric("loss", 1.0 / (s + 1), 1_700_000_000_000 + 10 * s, s) for s in range(5)])
    client.log_metric(run_id, "acc", 0.75, timestamp=1_700_000_123_456, step=42)
    client.log_metric(run_id, "acc", 0.5, timestamp=1_700_000_999_999, step=3)  # older step: not the latest

    expected = {("loss", 0.2, 1_700_000_000_040, 4), ("acc", 0.75, 1_700_000_123_456, 42)}
    [found] = client.search_runs([experiment_id], "metrics.acc > 0.7")
    assert {(m.key, m.value, m.timestamp, m.step) for m in found.data._metric_objs} == expected
    got = client.get_run(run_id)
    assert {(m.key, m.value, m.timestamp, m.step) for m in got.data._metric_objs} == expected


def test_experiment_endpoints(client: MlflowClient) -> None:
    experiment_id = client.create_experiment("exp-a", tags={"owner": "ana"})
    assert client.get_experiment(experiment_id).tags == {"owner": "ana"}
    client.set_experiment_tag(experiment_id, "stage", "dev")
    client.delete_experiment_tag(experiment_id, "owner")
    assert client.get_experiment(experiment_id).tags == {"stage": "dev"}
    client.rename_experiment(experiment_id, "exp-b")
    assert client.get_experiment_by_name("exp-b").experiment_id == experiment_id
    assert client.get_experiment_by_name("exp-a") is None
    found = client.search_experiments(filter_string="name = 'exp-b'")
    assert [e.experiment_id for e in found] == [experiment_id]
    client.delete_experiment(experiment_id)
    assert client.get_experiment(experiment_id).lifecycle_stage == "deleted"
    assert experiment_id not in {e.experiment_id for e in client.search_experiments()}
    client.restore_experiment(experiment_id)
    assert client.get_experiment(experiment_id).lifecycle_stage == "active"


def test_run_endpoints(client: MlflowClient, direct: Any) -> None:
    from mlflow.entities import Metric, Param, RunTag

    experiment_id = client.create_experiment("runs-endpoints")
    run = client.create_run(experiment_id, run_name="r", tags={"k": "v"})
    run_id = run.info.run_id
    client.log_batch(
        run_id,
        metrics=[Metric("m", float(i), 1_700_000_000_000 + i, i) for i in range(1000)],
        params=[Param(f"p{i}", str(i)) for i in range(50)],
        tags=[RunTag(f"t{i}", "x") for i in range(50)],
    )
    client.set_tag(run_id, "gone", "soon")
    client.delete_tag(run_id, "gone")
    client.update_run(run_id, status="KILLED", name="renamed")
    got = client.get_run(run_id)
    assert got.info.status == "KILLED" and got.info.run_name == "renamed" and "gone" not in got.data.tags
    assert len(got.data.params) == 50 and got.data.metrics["m"] == 999.0
    assert len(client.get_metric_history(run_id, "m")) == 1000

    # mlflow.log_input -> log-inputs; what was logged is on the run.
    dataset = mlflow.data.from_numpy(np.arange(6.0).reshape(3, 2), name="train", source="s3://data/train.npy")
    mlflow.set_experiment(experiment_id=experiment_id)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_input(dataset, context="training")
    inputs = client.get_run(run_id).inputs
    assert [d.dataset.name for d in inputs.dataset_inputs] == ["train"]
    assert {t.key: t.value for t in inputs.dataset_inputs[0].tags} == {"mlflow.data.context": "training"}

    # Our client reads the same run from the database directly.
    ours = direct.get_run(run_id)
    assert ours.data.params["p7"] == "7" and ours.data.tags["t3"] == "x" and ours.info.run_name == "renamed"
    assert [m.value for m in direct.get_metric_history(run_id, "m")][:3] == [0.0, 1.0, 2.0]


def test_metric_history_paging_and_bulk_interval(client: MlflowClient, server: Any) -> None:
    experiment_id = client.create_experiment("history")
    run_id = client.create_run(experiment_id).info.run_id
    for step in range(30):
        client.log_metric(run_id, "acc", step / 30, step=step)
    url = server.url + "/api/2.0/mlflow/metrics/get-history"
    points, token = [], None
    while True:
        params = {"run_id": run_id, "metric_key": "acc", "max_results": 8, **({"page_token": token} if token else {})}
        body = httpx.get(url, params=params).json()
        points.extend(body["metrics"])
        token = body.get("next_page_token")
        if not token:
            break
    assert [p["step"] for p in points] == list(range(30))
    sampled = httpx.get(
        server.url + "/api/2.0/mlflow/metrics/get-history-bulk-interval",
        params={"run_ids": [run_id], "metric_key": "acc", "max_results": 5},
    )
    assert sampled.status_code == 200, sampled.text
    steps = [p["step"] for p in sampled.json()["metrics"]]
    assert steps[0] == 0 and steps[-1] == 29 and 5 <= len(steps) <= 6
    assert {p["run_id"] for p in sampled.json()["metrics"]} == {run_id}


def test_metric_history_with_nan_and_infinities_reads_the_same_through_both_clients(
    client: MlflowClient, server: Any
) -> None:
    from tracking_plugin.client import TrackingClient

    run_id = client.create_run(client.create_experiment("history-special")).info.run_id
    values = [0.1 + 0.2, float("nan"), float("inf"), float("-inf"), 1e-300, -2.5]
    for step, value in enumerate(values):
        client.log_metric(run_id, "odd", value, timestamp=1_700_000_000_000 + step, step=step)
    expected = [repr(v) for v in values]
    # The mlflow client reads MLflow's route (metrics/get-history), ours the columnar one.
    theirs = client.get_metric_history(run_id, "odd")
    assert [(m.step, repr(m.value)) for m in theirs] == list(enumerate(expected))
    ours = TrackingClient(server.url).get_metric_history(run_id, "odd")
    assert [(m.step, m.timestamp, repr(m.value)) for m in ours] == [
        (step, 1_700_000_000_000 + step, v) for step, v in enumerate(expected)
    ]


def test_sklearn_autolog_log_model_registry_and_loading(client: MlflowClient, direct: Any) -> None:
    from sklearn.linear_model import LogisticRegression

    X, y = _data(np.random.default_rng(0))
    name = "churn-" + client.create_experiment("registry-flow")
    mlflow.set_experiment("registry-flow")
    mlflow.sklearn.autolog(log_models=False)
    try:
        with mlflow.start_run() as auto:
            LogisticRegression(C=0.5).fit(X, y)
    finally:
        mlflow.sklearn.autolog(disable=True)
    auto_run = client.get_run(auto.info.run_id)
    assert auto_run.data.params["C"] == "0.5" and "training_accuracy_score" in auto_run.data.metrics

    with mlflow.start_run() as first:
        model = LogisticRegression().fit(X, y)
        info = mlflow.sklearn.log_model(
            model, name="model", registered_model_name=name, input_example=X[:2], pip_requirements=["scikit-learn"]
        )
    assert str(info.registered_model_version) == "1"
    logged = client.get_logged_model(info.model_id)
    assert logged.status.to_proto() == 2 and logged.source_run_id == first.info.run_id  # READY

    with mlflow.start_run() as second:
        mlflow.sklearn.log_model(LogisticRegression(C=0.1).fit(X, y), name="model", pip_requirements=["scikit-learn"])
    v2 = mlflow.register_model(f"runs:/{second.info.run_id}/model", name)
    assert v2.version == "2"

    client.transition_model_version_stage(name, 1, "Production")
    client.transition_model_version_stage(name, 2, "Staging")
    client.set_registered_model_alias(name, "champion", 2)
    assert client.get_model_version_by_alias(name, "champion").version == "2"
    latest = {v.current_stage: v.version for v in client.get_latest_versions(name)}
    assert latest == {"Production": "1", "Staging": "2"}
    assert sorted(v.version for v in client.search_model_versions(f"name = '{name}'")) == ["1", "2"]

    expected = {1: model.predict(X[:5]), 2: LogisticRegression(C=0.1).fit(X, y).predict(X[:5])}
    for uri, version in ((f"models:/{name}/1", 1), (f"models:/{name}@champion", 2), (f"models:/{name}/Production", 1)):
        assert list(mlflow.pyfunc.load_model(uri).predict(X[:5])) == list(expected[version]), uri

    # Our client reads the registry the mlflow client wrote, and loads the model itself.
    from tracking_plugin.models import load_model

    ours = direct.get_model_version_by_alias(name, "champion")
    assert ours.version == 2 and ours.run_id == second.info.run_id
    assert list(load_model(f"models:/{name}@champion").predict(X[:5])) == list(expected[2])


def test_registry_endpoints(client: MlflowClient) -> None:
    name = "reg-" + client.create_experiment("registry-endpoints")
    client.create_registered_model(name, tags={"team": "risk"}, description="first")
    with pytest.raises(MlflowException) as taken:
        client.create_registered_model(name)
    assert taken.value.error_code == "RESOURCE_ALREADY_EXISTS"
    run_id = client.create_run(client.get_experiment_by_name("registry-endpoints").experiment_id).info.run_id
    version = client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id, tags={"a": "1"})
    assert version.version == "1" and version.status == "READY"
    assert client.get_model_version_download_uri(name, 1).startswith("mlflow-artifacts:/")
    client.update_registered_model(name, description="second")
    client.set_registered_model_tag(name, "tier", "gold")
    client.delete_registered_model_tag(name, "team")
    client.update_model_version(name, 1, description="v1")
    client.set_model_version_tag(name, 1, "b", "2")
    client.delete_model_version_tag(name, 1, "a")
    client.set_registered_model_alias(name, "candidate", 1)
    client.delete_registered_model_alias(name, "candidate")
    got = client.get_registered_model(name)
    assert got.description == "second" and got.tags == {"tier": "gold"} and got.aliases == {}
    mv = client.get_model_version(name, 1)
    assert mv.description == "v1" and mv.tags == {"b": "2"}
    client.rename_registered_model(name, name + "-renamed")
    assert [m.name for m in client.search_registered_models(f"name = '{name}-renamed'")] == [name + "-renamed"]
    client.delete_model_version(name + "-renamed", 1)
    client.delete_registered_model(name + "-renamed")
    with pytest.raises(MlflowException) as gone:
        client.get_registered_model(name + "-renamed")
    assert gone.value.error_code == "RESOURCE_DOES_NOT_EXIST"


def test_logged_model_endpoints(client: MlflowClient) -> None:
    experiment_id = client.create_experiment("logged-models")
    model = client.create_logged_model(experiment_id, name="candidate", tags={"a": "1"}, params={"lr": "0.1"})
    assert model.model_id.startswith("m-") and model.params == {"lr": "0.1"}
    client.set_logged_model_tags(model.model_id, {"b": "2"})
    client.delete_logged_model_tag(model.model_id, "a")
    client.finalize_logged_model(model.model_id, "READY")
    got = client.get_logged_model(model.model_id)
    assert got.tags == {"b": "2"} and got.name == "candidate"
    found = client.search_logged_models([experiment_id], filter_string="name = 'candidate'")
    assert [m.model_id for m in found] == [model.model_id]
    client.delete_logged_model(model.model_id)
    assert client.search_logged_models([experiment_id]) == []


def test_errors_for_unknown_runs_and_models(client: MlflowClient) -> None:
    cases = [
        lambda: client.get_run("0" * 32),
        lambda: client.log_metric("0" * 32, "m", 1.0),
        lambda: client.get_registered_model("no-such-model"),
        lambda: client.get_model_version("no-such-model", 1),
        lambda: client.get_logged_model("m-" + "0" * 32),
        lambda: client.get_experiment("999999"),
    ]
    for case in cases:
        with pytest.raises(MlflowException) as caught:
            case()
        assert caught.value.error_code == "RESOURCE_DOES_NOT_EXIST", caught.value
    with pytest.raises(MlflowException) as bad:
        mlflow.pyfunc.load_model("models:/no-such-model/1")
    assert bad.value.error_code == "RESOURCE_DOES_NOT_EXIST"


def test_mlflow_client_reads_what_our_client_logged(client: MlflowClient, direct: Any) -> None:
    experiment_id = direct.create_experiment("ours-first")
    run = direct.create_run(experiment_id, run_name="ours")
    direct.log_param(run.info.run_id, "depth", 4)
    for step in range(3):
        direct.log_metric(run.info.run_id, "rmse", 1.0 - step / 10, step=step)
    direct.log_text(run.info.run_id, "hello", "notes/readme.txt")
    direct.set_terminated(run.info.run_id)
    seen = client.get_run(run.info.run_id)
    assert seen.data.params == {"depth": "4"} and seen.info.status == "FINISHED"
    assert [m.value for m in client.get_metric_history(run.info.run_id, "rmse")] == [1.0, 0.9, 0.8]
    # Its artifacts are under the same root, so the proxy serves them too.
    assert seen.info.artifact_uri.startswith("mlflow-artifacts:/")
    assert mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/notes/readme.txt") == "hello"


def test_runs_without_an_experiment_go_to_default(client: MlflowClient) -> None:
    # The mlflow client uses experiment "0" (MLflow's default) when none is set.
    run = client.create_run("0")
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "Default" and run.info.artifact_uri.startswith("mlflow-artifacts:/")
    assert client.get_experiment("0").experiment_id == experiment.experiment_id
    assert run.info.run_id in {r.info.run_id for r in client.search_runs(["0"])}
