"""The ``MlopsBackend`` block: saved on the Prefect server, loaded by name by ``@track``."""

from __future__ import annotations

import os
import uuid
from importlib import metadata

import pytest
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client

from tracking_plugin import fluent
from tracking_plugin.blocks import MlopsBackend
from tracking_plugin.client import TrackingClient
from tracking_plugin.entities import RunStatus
from tracking_plugin.errors import InvalidArgument
from tracking_plugin.prefect import track


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_block_saves_and_loads_with_secrets_masked_on_the_server(prefect_harness, tmp_path) -> None:
    name = unique("backend")
    MlopsBackend(
        tracking_uri="postgresql+psycopg://mlops@db.internal:5432/mlops",
        database_password="pg-secret",
        artifact_root="s3://bucket/mlops",
        s3_endpoint_url="http://minio:9000",
        aws_access_key_id="AKIA-TEST",
        aws_secret_access_key="s3-secret",
    ).save(name, overwrite=True)

    loaded = MlopsBackend.load(name)

    assert loaded.artifact_root == "s3://bucket/mlops"
    assert loaded.aws_secret_access_key.get_secret_value() == "s3-secret"
    settings = loaded.to_settings()
    # The password stays a SecretStr until the engine is built, never in the plain URI.
    assert settings.tracking_uri == "postgresql+psycopg://mlops@db.internal:5432/mlops"
    assert settings.database_password.get_secret_value() == "pg-secret"
    assert "pg-secret" not in repr(settings) and "pg-secret" not in repr(loaded)
    assert settings.s3_endpoint_url == "http://minio:9000"
    assert settings.aws_access_key_id.get_secret_value() == "AKIA-TEST"
    with get_client(sync_client=True) as client:
        document = client.read_block_document_by_name(name, "mlops-backend", include_secrets=False)
    assert "s3-secret" not in str(document.data) and "pg-secret" not in str(document.data)
    assert document.data["tracking_uri"] == "postgresql+psycopg://mlops@db.internal:5432/mlops"


def test_every_block_field_is_documented(prefect_harness) -> None:
    MlopsBackend.register_type_and_schema()
    with get_client(sync_client=True) as client:
        schema = client.read_block_schema_by_checksum(MlopsBackend._calculate_schema_checksum())
    properties = schema.fields["properties"]
    assert set(properties) >= {"tracking_uri", "artifact_root", "s3_endpoint_url", "aws_access_key_id", "aws_secret_access_key"}
    assert all(prop.get("description") for prop in properties.values())
    assert set(schema.fields["secret_fields"]) >= {"aws_access_key_id", "aws_secret_access_key", "database_password"}


def test_track_takes_its_backend_from_a_saved_block(tracking, tmp_path, monkeypatch, runs_in) -> None:
    block_db = tmp_path / "from-block.db"
    name = unique("team")
    MlopsBackend(tracking_uri=f"sqlite:///{block_db}", artifact_root=str(tmp_path / "block-artifacts")).save(name)

    @track(experiment="via-block", block=name)
    @flow
    def trained_on_worker(x: int = 1) -> dict[str, float]:
        return {"x": float(x)}

    trained_on_worker(x=2)

    block_client = TrackingClient(f"sqlite:///{block_db}")
    [run] = runs_in(block_client, "via-block")
    assert run.info.status is RunStatus.FINISHED and run.data.metrics == {"x": 2.0}
    assert str(tmp_path / "block-artifacts") in run.info.artifact_uri
    assert tracking.get_experiment_by_name("via-block") is None  # not in the environment's backend

    # A worker can name the block in its environment instead of in the code.
    monkeypatch.setenv("PREFECT_MLOPS_BLOCK", name)

    @track(experiment="via-env-block")
    @flow
    def env_configured() -> None:
        return None

    env_configured()
    assert [r.info.status for r in runs_in(block_client, "via-env-block")] == [RunStatus.FINISHED]


@track
@task(cache_policy=NO_CACHE)
def tracked_step(x: int) -> dict[str, float]:
    fluent.log_metric("logged_in_tracked_step", float(x))
    fluent.set_tag("step_pid", str(os.getpid()))
    return {"returned_by_tracked_step": float(x)}


@task(cache_policy=NO_CACHE)
def untracked_step(x: int) -> int:
    fluent.log_metric("logged_in_untracked_step", float(x))  # goes to the flow's run
    with fluent.start_run(run_name="nested-in-untracked-step", nested=True):
        fluent.log_param("where", "untracked step")
    return x


def block_flow_with_steps(name: str):  # type: ignore[no-untyped-def]
    @track(experiment="steps-via-block", block=name)
    @flow
    def with_steps() -> None:
        tracked_step.submit(3).result()
        untracked_step.submit(4).result()

    return with_steps


def assert_steps_in_block_backend(block_client: TrackingClient, env_client: TrackingClient, runs_in) -> list[str]:  # type: ignore[no-untyped-def]
    runs = runs_in(block_client, "steps-via-block")
    [parent] = [r for r in runs if r.info.prefect_flow_run_id]
    children = {r.info.run_name: r for r in runs if r is not parent}
    assert parent.info.status is RunStatus.FINISHED
    assert parent.data.metrics == {"logged_in_untracked_step": 4.0}
    step = next(r for n, r in children.items() if n.startswith("tracked_step"))
    assert step.info.parent_run_id == parent.info.run_id and step.info.status is RunStatus.FINISHED
    assert step.data.metrics == {"logged_in_tracked_step": 3.0, "returned_by_tracked_step": 3.0}
    assert len(runs) == 2
    # A fluent start_run goes to the active experiment, as MLflow's, in its parent's backend.
    [nested] = runs_in(block_client, "Default")
    assert nested.info.run_name == "nested-in-untracked-step" and nested.info.status is RunStatus.FINISHED
    assert nested.info.parent_run_id == parent.info.run_id and nested.data.params == {"where": "untracked step"}
    assert list(env_client.search_experiments()) == []  # nothing in the environment's backend
    return [step.data.tags["step_pid"]]


def test_tasks_and_nested_runs_of_a_block_flow_use_the_blocks_backend(tracking, tmp_path, runs_in) -> None:
    block_db = tmp_path / "steps.db"
    name = unique("steps")
    MlopsBackend(tracking_uri=f"sqlite:///{block_db}", artifact_root=str(tmp_path / "steps-artifacts")).save(name)

    block_flow_with_steps(name)()

    assert_steps_in_block_backend(TrackingClient(f"sqlite:///{block_db}"), tracking, runs_in)


@pytest.mark.slow
def test_dask_workers_of_a_block_flow_use_the_blocks_backend(tracking, tmp_path, runs_in) -> None:
    """Worker processes have no flow context: the block comes with the task runs' Prefect tag."""
    from prefect_dask import DaskTaskRunner

    block_db = tmp_path / "steps.db"
    name = unique("steps")
    MlopsBackend(tracking_uri=f"sqlite:///{block_db}", artifact_root=str(tmp_path / "steps-artifacts")).save(name)
    runner = DaskTaskRunner(cluster_kwargs={"n_workers": 1, "processes": True, "threads_per_worker": 1})

    block_flow_with_steps(name).with_options(task_runner=runner)()

    pids = assert_steps_in_block_backend(TrackingClient(f"sqlite:///{block_db}"), tracking, runs_in)
    assert str(os.getpid()) not in pids  # the steps really ran in a worker process


def test_unknown_block_name_fails_the_flow_with_a_clear_message(tracking) -> None:
    @track(block="no-such-block-xyz")
    @flow
    def misconfigured() -> None:
        return None

    state = misconfigured(return_state=True)

    with pytest.raises(InvalidArgument, match="No MlopsBackend block named 'no-such-block-xyz'"):
        state.result()


def test_block_type_is_exposed_through_the_prefect_collections_entry_point() -> None:
    dist = metadata.distribution("prefect-mlops")  # make test installs the package (-e .)
    points = [ep for ep in dist.entry_points if ep.group == "prefect.collections"]
    assert [ep.value for ep in points] == ["tracking_plugin.blocks"]
    assert points[0].load().MlopsBackend is MlopsBackend
