"""Settings: one pydantic-settings class, environment prefix ``PREFECT_MLOPS_``.

With no configuration the backend is ``sqlite:///mlops.db`` and artifacts go to
``./mlops-artifacts``, both in the current working directory::

    PREFECT_MLOPS_TRACKING_URI=postgresql+psycopg://user:pw@db/mlops
    PREFECT_MLOPS_ARTIFACT_ROOT=s3://bucket/mlops
    PREFECT_MLOPS_S3_ENDPOINT_URL=http://minio:9000   # S3-compatible stores only

S3 credentials come from boto3's usual chain (environment, profile, instance role) unless
set here or in a saved ``MlopsBackend`` block. ``PREFECT_MLOPS_BLOCK=<name>`` takes the
backend from that block instead: :func:`tracking_plugin.backend.resolve_settings` is what
every default client (fluent API, ``TrackingClient()``, ``RegistryClient()``, ``@track``)
reads. ``repr()`` of the settings never shows a password (see :mod:`tracking_plugin.urls`).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from tracking_plugin.urls import redact_uri

__all__ = ["MlopsSettings", "get_settings"]


class MlopsSettings(BaseSettings):
    """Configuration of the tracking backend, artifact store and logging behaviour."""

    model_config = SettingsConfigDict(env_prefix="PREFECT_MLOPS_", extra="ignore")

    tracking_uri: str = Field(
        default="sqlite:///mlops.db",
        description="SQLAlchemy URL of the tracking and registry database.",
    )
    database_password: SecretStr | None = Field(
        default=None,
        description=(
            "Password of the tracking database, kept out of the URI (a saved block's); it is "
            "put into the URL only when the engine is built."
        ),
    )
    artifact_root: str = Field(
        default="./mlops-artifacts",
        description="Where run and registry artifacts go: a local path, file:// URI or s3://bucket/prefix.",
    )
    tracking_username: str | None = Field(
        default=None,
        description=(
            "User name for a tracking server with --auth (HTTP Basic, with tracking_password). "
            "Takes precedence over MLFLOW_TRACKING_USERNAME."
        ),
    )
    tracking_password: SecretStr | None = Field(
        default=None, description="Password of tracking_username. Takes precedence over MLFLOW_TRACKING_PASSWORD."
    )
    tracking_token: SecretStr | None = Field(
        default=None,
        description=(
            "API token for a tracking server with --auth (Bearer; wins over a user name and "
            "password). Takes precedence over MLFLOW_TRACKING_TOKEN."
        ),
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="Endpoint of an S3-compatible store (MinIO, moto, ...)."
    )
    s3_region: str | None = Field(default=None, description="AWS region for S3.")
    aws_access_key_id: SecretStr | None = Field(default=None, description="S3 access key id.")
    aws_secret_access_key: SecretStr | None = Field(default=None, description="S3 secret key.")
    async_logging: bool = Field(
        default=False,
        description="Queue metrics and write them in batches from a background thread.",
    )
    async_batch_size: int = Field(default=5000, ge=1, description="Max points per background write.")
    async_flush_interval: float = Field(
        default=0.25, gt=0, description="Seconds between background writes."
    )
    sqlite_busy_timeout: float = Field(
        default=60.0, gt=0, description="Seconds a SQLite writer waits for the lock."
    )
    retry_deadline: float = Field(
        default=15.0,
        ge=0,
        description=(
            "Seconds a call keeps retrying, with backoff, while the PostgreSQL database or "
            "the tracking server is unreachable (a restart or failover); then it fails with "
            "BackendUnavailable naming it. 0 fails at once."
        ),
    )
    db_pool_size: int = Field(
        default=5, ge=1,
        description=(
            "Connections each process keeps open to a PostgreSQL tracking database (SQLAlchemy "
            "pool_size). `prefect-mlops server --workers N` shares 60 among its workers unless set."
        ),
    )
    db_max_overflow: int = Field(
        default=10, ge=0, description="Connections a process may open beyond db_pool_size under load."
    )
    block: str | None = Field(
        default=None, description="Name of a saved MlopsBackend Prefect block to take settings from."
    )

    def __repr_args__(self) -> Any:
        # A password written into a URI itself is hidden like the SecretStr fields.
        for name, value in super().__repr_args__():
            yield name, redact_uri(value) if isinstance(value, str) else value


def get_settings() -> MlopsSettings:
    """Read settings from the environment now (not cached: tests and workers change env)."""
    return MlopsSettings()
