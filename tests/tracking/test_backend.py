"""The one backend resolver: which database a default client uses, clients that own their
connections, and secrets that never reach a repr, a log line, a tag, an artifact or the CLI."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from support import create_pg_database, reset_tracking
from typer.testing import CliRunner

import tracking_plugin as mlops
from prefect_mlops.deployments.cli import app
from registry_tasks import RegistryClient
from tracking_plugin.blocks import MlopsBackend
from tracking_plugin.errors import BackendUnavailable, InvalidArgument
from tracking_plugin.prefect import track

PG_PASSWORD = "pw-Zq9-never-shown"
AWS_SECRET = "aws-Kx7-never-shown"


def test_set_tracking_uri_is_followed_by_tracking_and_registry_clients(no_config_env: Path, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'a.db'}"
    mlops.set_tracking_uri(uri)
    with mlops.start_run() as run:
        mlops.log_metric("auc", 0.9)

    # As MlflowClient() follows mlflow.set_tracking_uri(): no ./mlops.db is created.
    assert mlops.TrackingClient().tracking_uri == uri
    assert mlops.TrackingClient().get_run(run.info.run_id).data.metrics == {"auc": 0.9}
    assert RegistryClient().tracking_uri == uri
    assert RegistryClient().store.get_run(run.info.run_id).info.run_id == run.info.run_id
    assert not (no_config_env / "mlops.db").exists()

    mlops.set_tracking_uri(None)
    assert mlops.TrackingClient().tracking_uri.endswith("mlops.db")
    assert mlops.TrackingClient().tracking_uri != uri


def test_relative_sqlite_uri_gives_registry_and_tracking_clients_one_engine(no_config_env: Path) -> None:
    tracking = mlops.TrackingClient("sqlite:///rel.db")
    registry = RegistryClient("sqlite:///rel.db")
    assert tracking.store is registry.store
    assert tracking.tracking_uri == f"sqlite:///{no_config_env / 'rel.db'}"


def test_unknown_scheme_names_the_supported_ones(no_config_env: Path) -> None:
    with pytest.raises(InvalidArgument) as caught:
        mlops.TrackingClient(f"mysql://ana:{PG_PASSWORD}@db/mlops").search_experiments()
    message = str(caught.value)
    assert "sqlite://" in message and "postgresql://" in message and "mysql" in message
    assert PG_PASSWORD not in message


def test_clients_close_their_connections_and_work_as_context_managers(no_config_env: Path, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'owned.db'}"
    with mlops.TrackingClient(uri) as client:
        experiment_id = client.create_experiment("owned")
        store = client.store
        with RegistryClient(uri) as registry:
            assert registry.store is store  # one store per database, shared
        # The tracking client still uses it: not closed by the registry client leaving.
        assert store.db.engine.pool.checkedin() >= 1  # type: ignore[attr-defined]
    # The last client out closed the pool; a new client opens the same data again.
    assert store.db.engine.pool.checkedin() == 0  # type: ignore[attr-defined]
    with mlops.TrackingClient(uri) as again:
        assert again.get_experiment(experiment_id).name == "owned"
        assert again.store is not store
    # A closed client reconnects when used again instead of failing.
    assert again.get_experiment(experiment_id).name == "owned"
    again.close()


@track(experiment="secrets")
@flow
def tracked_with_secrets(alpha: float = 0.5) -> dict[str, float]:
    mlops.log_param("note", "nothing secret")
    return {"rmse": 0.25}


def _artifacts_text(flow_run_id: str) -> str:
    mlops.flush(timeout=60)  # a tracked flow's artifacts are posted in the background
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    assert found, "the tracked flow posted no artifact"
    return "\n".join(f"{a.key} {a.description} {a.data}" for a in found)


@pytest.mark.postgres
def test_no_output_shows_the_database_password_or_the_aws_secret(
    prefect_harness: None,
    pg_server: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The suite's PostgreSQL trusts local connections: any password connects, so the
    # password below really goes to the server, and must never come back out.
    url = create_pg_database(pg_server).replace("postgres@", f"postgres:{PG_PASSWORD}@")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREFECT_MLOPS_TRACKING_URI", url)
    monkeypatch.setenv("PREFECT_MLOPS_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    monkeypatch.setenv("PREFECT_MLOPS_AWS_ACCESS_KEY_ID", "AKIA-visible")
    monkeypatch.setenv("PREFECT_MLOPS_AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    monkeypatch.delenv("PREFECT_MLOPS_BLOCK", raising=False)
    reset_tracking(dispose_stores=False)
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    try:
        client = mlops.TrackingClient()
        registry = RegistryClient()
        seen += [repr(client), str(client), repr(client.settings), str(client.settings), repr(registry)]
        seen += [mlops.get_tracking_uri().replace(PG_PASSWORD, "<set by the test>")]

        # A tracked flow run: its tags, params and Prefect artifacts.
        state = tracked_with_secrets(return_state=True)
        flow_run_id = str(state.state_details.flow_run_id)
        run = client.get_run_by_prefect_id(flow_run_id=flow_run_id)
        assert run is not None
        seen += [repr(run.data.tags), repr(run.data.params), _artifacts_text(flow_run_id)]

        # A saved block keeps the password a SecretStr, and its backend connects with it.
        block = MlopsBackend(
            tracking_uri=url.replace(f":{PG_PASSWORD}@", "@"),
            database_password=PG_PASSWORD,
            aws_secret_access_key=AWS_SECRET,
            artifact_root=str(tmp_path / "artifacts"),
        )
        block_client = block.get_client()
        assert block_client.get_run(run.info.run_id).info.run_id == run.info.run_id
        seen += [repr(block), repr(block.to_settings()), repr(block_client), str(block.to_settings().model_dump())]

        # Errors: an unreachable server and an unsupported URI, both carrying the password.
        down = url.rsplit("@", 1)[0] + "@127.0.0.1:1/nowhere"
        with pytest.raises(BackendUnavailable) as unavailable:
            mlops.TrackingClient(down).search_experiments()
        with pytest.raises(InvalidArgument) as unsupported:
            mlops.TrackingClient(f"oracle://scott:{PG_PASSWORD}@db/orcl").search_experiments()
        seen += [str(unavailable.value), repr(unavailable.value), str(unsupported.value)]

        # The CLI: `db upgrade` on the database and on the unreachable one.
        runner = CliRunner()
        for args in (["db", "upgrade"], ["db", "upgrade", "--tracking-uri", down]):
            result = runner.invoke(app, args)
            seen.append(result.output)
        assert "schema at revision" in seen[-2]
    finally:
        reset_tracking(dispose_stores=True)
    captured = capsys.readouterr()
    seen += [caplog.text, captured.out, captured.err]

    everything = "\n".join(seen)
    assert "postgres:***@" in everything  # the URI is shown, its password is not
    assert PG_PASSWORD not in everything
    assert AWS_SECRET not in everything
