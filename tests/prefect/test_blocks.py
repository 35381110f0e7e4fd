"""The ``MlopsBackend`` block: saved on the Prefect server, loaded by name by ``@track``."""

from __future__ import annotations

import uuid
from importlib import metadata

import pytest
from prefect import flow
from prefect.client.orchestration import get_client

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
    assert settings.tracking_uri == "postgresql+psycopg://mlops:pg-secret@db.internal:5432/mlops"
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
