"""``TrackingClient``: entity-level calls with MlflowClient's names, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tracking_plugin import TrackingClient
from tracking_plugin.entities import (
    LifecycleStage,
    Metric,
    ModelVersionStatus,
    Param,
    RunStatus,
    RunTag,
    Stage,
    ViewType,
)
from tracking_plugin.errors import AlreadyExists, Conflict, InvalidArgument, NotFound


@pytest.fixture
def client(tracking_env) -> TrackingClient:
    return TrackingClient()


def test_client_defaults_come_from_settings(tracking_env) -> None:
    client = TrackingClient()
    assert client.tracking_uri == tracking_env.tracking_uri
    assert client.artifact_root == tracking_env.artifact_root
    explicit = TrackingClient("sqlite:///relative.db", artifact_root="rel-artifacts")
    # A relative SQLite path is pinned to the directory the client was made in.
    assert explicit.tracking_uri == f"sqlite:///{tracking_env.cwd / 'relative.db'}"


def test_experiment_lifecycle(client: TrackingClient, tracking_env) -> None:
    experiment_id = client.create_experiment("churn", tags={"team": "risk", "version": 2})
    experiment = client.get_experiment(experiment_id)
    assert experiment.name == "churn" and experiment.tags == {"team": "risk", "version": "2"}
    assert experiment.lifecycle_stage is LifecycleStage.ACTIVE
    assert Path(experiment.artifact_location).parent == Path(tracking_env.artifact_root)
    assert client.get_experiment_by_name("churn").experiment_id == experiment_id
    assert client.get_experiment_by_name("nope") is None
    with pytest.raises(AlreadyExists, match="churn"):
        client.create_experiment("churn")

    other_id = client.create_experiment("fraud", artifact_location="s3://bucket/fraud")
    assert client.get_experiment(other_id).artifact_location == "s3://bucket/fraud"
    # Each experiment has its own artifact folder.
    assert client.get_experiment(other_id).artifact_location != experiment.artifact_location

    client.rename_experiment(experiment_id, "churn-v2")
    client.set_experiment_tag(experiment_id, "stage", "prod")
    renamed = client.get_experiment(experiment_id)
    assert renamed.name == "churn-v2" and renamed.tags["stage"] == "prod"
    assert renamed.artifact_location == experiment.artifact_location  # the folder stays

    client.delete_experiment(experiment_id)
    assert [e.name for e in client.search_experiments()] == ["fraud"]
    assert [e.name for e in client.search_experiments(view_type=ViewType.DELETED_ONLY)] == ["churn-v2"]
    assert len(client.search_experiments(view_type=3)) == 2  # MLflow's ViewType.ALL constant
    client.restore_experiment(experiment_id)
    assert [e.name for e in client.search_experiments(filter_string="name LIKE 'churn%'")] == ["churn-v2"]
    with pytest.raises(InvalidArgument, match="view type"):
        client.search_experiments(view_type="SOME")


def test_relative_artifact_location_is_made_absolute(client: TrackingClient, tracking_env, tmp_path: Path) -> None:
    experiment_id = client.create_experiment("rel", artifact_location="my-artifacts")
    assert client.get_experiment(experiment_id).artifact_location == str(tracking_env.cwd / "my-artifacts")
    run = client.create_run(experiment_id)
    os.chdir(tmp_path)  # a later chdir does not move the artifacts
    (tmp_path / "f.txt").write_text("x")
    client.log_artifact(run.info.run_id, tmp_path / "f.txt")
    assert (tracking_env.cwd / "my-artifacts" / run.info.run_id / "artifacts" / "f.txt").read_text() == "x"


def test_run_lifecycle(client: TrackingClient) -> None:
    experiment_id = client.create_experiment("runs")
    run = client.create_run(experiment_id, start_time=1_700_000_000_000, tags={"k": "v"}, run_name="first")
    run_id = run.info.run_id
    assert run.info.status is RunStatus.RUNNING and run.info.start_time == 1_700_000_000_000
    assert run.data.tags["mlflow.runName"] == "first" and run.data.tags["k"] == "v"
    assert client.get_run(run_id).info.run_name == "first"

    client.update_run(run_id, name="renamed")
    assert client.get_run(run_id).data.tags["mlflow.runName"] == "renamed"
    client.set_terminated(run_id, "KILLED", end_time=1_700_000_009_000)
    ended = client.get_run(run_id)
    assert ended.info.status is RunStatus.KILLED and ended.info.end_time == 1_700_000_009_000
    with pytest.raises(InvalidArgument, match="'ENDED'"):
        client.set_terminated(run_id, "ENDED")

    client.delete_run(run_id)
    assert client.get_run(run_id).info.lifecycle_stage is LifecycleStage.DELETED
    with pytest.raises(Conflict):
        client.log_metric(run_id, "m", 1.0)
    client.restore_run(run_id)
    client.log_metric(run_id, "m", 1.0)
    with pytest.raises(NotFound):
        client.get_run("0" * 32)
    with pytest.raises(InvalidArgument, match="run id"):
        client.get_run("not a run id!")


def test_nested_and_prefect_keyed_runs(client: TrackingClient) -> None:
    experiment_id = client.create_experiment("prefect")
    parent = client.create_run(experiment_id, prefect_flow_run_id="flow-run-1")
    child = client.create_run(experiment_id, parent_run_id=parent.info.run_id, prefect_task_run_id="task-run-1")
    assert child.info.parent_run_id == parent.info.run_id
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert client.get_run_by_prefect_id(flow_run_id="flow-run-1").info.run_id == parent.info.run_id
    assert client.get_run_by_prefect_id(task_run_id="task-run-1").info.run_id == child.info.run_id
    assert client.get_run_by_prefect_id(flow_run_id="unknown") is None
    with pytest.raises(AlreadyExists):
        client.create_run(experiment_id, prefect_flow_run_id="flow-run-1")


def test_log_batch_is_all_or_nothing(client: TrackingClient) -> None:
    run_id = client.create_run(client.create_experiment("batch")).info.run_id
    client.log_batch(
        run_id,
        metrics=[Metric("a", 1.0, 1_700_000_000_000, 0), Metric("a", 2.0, 1_700_000_000_001, 1)],
        params=[Param("p", "1")],
        tags=[RunTag("t", "x")],
    )
    with pytest.raises(InvalidArgument):
        client.log_batch(
            run_id, metrics=[Metric("b", 1.0, 1, 0), Metric("bad key!", 1.0, 1, 0)], params=[Param("q", "2")]
        )
    with pytest.raises(Conflict, match="'p'"):
        client.log_batch(run_id, metrics=[Metric("c", 1.0, 1, 0)], params=[Param("p", "changed")])
    run = client.get_run(run_id)
    assert run.data.metrics == {"a": 2.0}
    assert run.data.params == {"p": "1"}
    assert run.data.tags["t"] == "x"
    client.set_tag(run_id, "t", "y")
    client.delete_tag(run_id, "t")
    assert "t" not in client.get_run(run_id).data.tags
    with pytest.raises(NotFound):
        client.delete_tag(run_id, "t")


def test_metric_history(client: TrackingClient) -> None:
    run_id = client.create_run(client.create_experiment("history")).info.run_id
    client.log_batch(run_id, metrics=[Metric("loss", 1.0 / (s + 1), 1_700_000_000_000 + s, s) for s in range(2_500)])
    client.log_metric(run_id, "loss", 5.0, timestamp=1_600_000_000_000, step=0)  # a second point at step 0
    history = client.get_metric_history(run_id, "loss")
    assert len(history) == 2_501
    assert [(m.step, m.timestamp) for m in history[:2]] == [(0, 1_600_000_000_000), (0, 1_700_000_000_000)]
    assert history[-1] == Metric("loss", 1.0 / 2_500, 1_700_000_000_000 + 2_499, 2_499)
    assert client.get_metric_history(run_id, "absent") == []


def test_search_runs_pages(client: TrackingClient) -> None:
    experiment_id = client.create_experiment("pages")
    run_ids = []
    for i in range(7):
        run = client.create_run(experiment_id, start_time=1_700_000_000_000 + i)
        client.log_metric(run.info.run_id, "i", i)
        run_ids.append(run.info.run_id)
    seen, token = [], None
    while True:
        page = client.search_runs(experiment_id, "metrics.i >= 2", max_results=2, page_token=token)
        seen.extend(r.info.run_id for r in page)
        token = page.token
        if token is None:
            break
    assert seen == list(reversed(run_ids[2:]))  # default order: newest first
    ordered = client.search_runs([experiment_id], order_by=["metrics.i ASC"])
    assert [r.data.metrics["i"] for r in ordered] == list(range(7))
    with pytest.raises(InvalidArgument):
        client.search_runs([experiment_id], "metrics.i >>> 2")


def _model_dir(tmp_path: Path) -> Path:
    model = tmp_path / "model-src"
    model.mkdir()
    (model / "MLmodel").write_text("flavors:\n  python_function: {}\n")
    (model / "weights.bin").write_bytes(b"\x00\x01\x02")
    return model


def test_registry_pass_throughs(client: TrackingClient, tmp_path: Path) -> None:
    run = client.create_run(client.create_experiment("models"))
    run_id = run.info.run_id
    client.log_artifacts(run_id, _model_dir(tmp_path), "model")

    registered = client.create_registered_model("churn", tags={"team": "risk"}, description="churn model")
    assert registered.name == "churn" and registered.tags == {"team": "risk"}
    v1 = client.create_model_version("churn", f"runs:/{run_id}/model")
    assert (v1.version, v1.status, v1.run_id) == (1, ModelVersionStatus.READY, run_id)
    # MLflow's classic form: the run's artifact URI plus run_id keeps the run link.
    v2 = client.create_model_version("churn", f"{run.info.artifact_uri}/model", run_id=run_id, tags={"k": 1})
    assert v2.version == 2 and v2.run_id == run_id and v2.tags == {"k": "1"}
    download = client.get_model_version_download_uri("churn", 2)
    assert download == v2.storage_location and download != v1.storage_location

    client.transition_model_version_stage("churn", 1, "production")
    client.transition_model_version_stage("churn", "2", "Production", archive_existing_versions=True)
    assert client.get_model_version("churn", 1).current_stage is Stage.ARCHIVED
    assert [v.version for v in client.get_latest_versions("churn", ["Production"])] == [2]
    with pytest.raises(InvalidArgument, match="'Prod'"):
        client.transition_model_version_stage("churn", 1, "Prod")

    client.set_registered_model_alias("churn", "champion", 2)
    assert client.get_model_version_by_alias("churn", "champion").version == 2
    client.delete_registered_model_alias("churn", "champion")
    with pytest.raises(NotFound):
        client.get_model_version_by_alias("churn", "champion")

    client.set_model_version_tag("churn", 1, "validated", True)
    assert client.get_model_version("churn", 1).tags["validated"] == "True"
    client.update_model_version("churn", 1, description="first")
    assert client.get_model_version("churn", 1).description == "first"
    assert {v.version for v in client.search_model_versions("name = 'churn'")} == {1, 2}
    client.set_registered_model_tag("churn", "owner", "ana")
    client.delete_registered_model_tag("churn", "team")
    client.update_registered_model("churn", description="updated")
    model = client.get_registered_model("churn")
    assert model.tags == {"owner": "ana"} and model.description == "updated"
    client.rename_registered_model("churn", "churn-v2")
    assert [m.name for m in client.search_registered_models()] == ["churn-v2"]
    client.delete_model_version("churn-v2", 1)
    with pytest.raises(NotFound):
        client.get_model_version("churn-v2", 1)
    with pytest.raises(InvalidArgument, match="version"):
        client.get_model_version("churn-v2", 0)
    client.delete_registered_model("churn-v2")
    with pytest.raises(NotFound):
        client.get_registered_model("churn-v2")


def test_registering_a_non_model_records_nothing(client: TrackingClient, tmp_path: Path) -> None:
    run_id = client.create_run(client.create_experiment("not-a-model")).info.run_id
    (tmp_path / "notes.txt").write_text("x")
    client.log_artifact(run_id, tmp_path / "notes.txt", "model")
    with pytest.raises(InvalidArgument, match="MLmodel"):
        client.create_model_version("churn", f"runs:/{run_id}/model")
    assert list(client.search_model_versions()) == []
