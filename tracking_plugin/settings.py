"""Settings: one pydantic-settings class, environment prefix ``PREFECT_MLOPS_``.

With no configuration the backend is ``sqlite:///mlops.db`` and artifacts go to
``./mlops-artifacts``, both in the current working directory::

    PREFECT_MLOPS_TRACKING_URI=postgresql+psycopg://user:pw@db/mlops
    PREFECT_MLOPS_ARTIFACT_ROOT=s3://bucket/mlops
    PREFECT_MLOPS_S3_ENDPOINT_URL=http://minio:9000   # S3-compatible stores only

S3 credentials come from boto3's usual chain (environment, profile, instance role) unless
set here or in a saved ``MlopsBackend`` block. ``PREFECT_MLOPS_BLOCK=<name>`` takes the
backend from that block instead: :func:`resolve_settings` is what every default client
(fluent API, ``TrackingClient()``, ``RegistryClient()``, ``@track``) reads.
"""

from __future__ import annotations

import os

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "MlopsSettings",
    "client_settings",
    "get_settings",
    "resolve_settings",
    "set_tracking_uri_override",
    "tracking_uri_override",
]

# The URI given to ``tracking_plugin.set_tracking_uri()``: process-wide, as in MLflow, and
# kept here (the lowest layer that needs it) so that clients built without a URI follow it.
_TRACKING_URI_OVERRIDE: list[str | None] = [None]


def set_tracking_uri_override(uri: str | None) -> None:
    """Record the URI ``set_tracking_uri()`` chose (None: back to the configuration)."""
    _TRACKING_URI_OVERRIDE[0] = uri


def tracking_uri_override() -> str | None:
    """The URI set with ``set_tracking_uri()``, if any."""
    return _TRACKING_URI_OVERRIDE[0]


class MlopsSettings(BaseSettings):
    """Configuration of the tracking backend, artifact store and logging behaviour."""

    model_config = SettingsConfigDict(env_prefix="PREFECT_MLOPS_", extra="ignore")

    tracking_uri: str = Field(
        default="sqlite:///mlops.db",
        description="SQLAlchemy URL of the tracking and registry database.",
    )
    artifact_root: str = Field(
        default="./mlops-artifacts",
        description="Where run and registry artifacts go: a local path, file:// URI or s3://bucket/prefix.",
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
    block: str | None = Field(
        default=None, description="Name of a saved MlopsBackend Prefect block to take settings from."
    )


def get_settings() -> MlopsSettings:
    """Read settings from the environment now (not cached: tests and workers change env)."""
    return MlopsSettings()


def resolve_settings() -> MlopsSettings:
    """The configured backend: the environment's settings, or, when ``PREFECT_MLOPS_BLOCK``
    names a saved ``MlopsBackend`` block, that block's (loaded from the Prefect API once
    per process; an unknown name raises ``InvalidArgument``)."""
    settings = get_settings()
    if not settings.block:
        return settings
    from tracking_plugin.blocks import settings_of_block  # imports Prefect: only when needed

    return settings_of_block(settings.block)


def client_settings(
    tracking_uri: str | os.PathLike[str] | None = None,
    artifact_root: str | os.PathLike[str] | None = None,
    settings: MlopsSettings | None = None,
) -> MlopsSettings:
    """What a client constructed with these arguments uses: ``settings`` (default: the
    configured backend, or the environment when ``tracking_uri`` is given: an explicit URI
    is the backend, only the default follows ``PREFECT_MLOPS_BLOCK``), with the given URI
    and artifact root in place of its own. With neither a URI nor settings, a URI set with
    ``set_tracking_uri()`` applies, as it does for ``MlflowClient()``."""
    if tracking_uri is None and settings is None:
        tracking_uri = tracking_uri_override()
        if tracking_uri is not None:
            settings = resolve_settings()  # what the fluent API uses with that URI
    if settings is None:
        settings = resolve_settings() if tracking_uri is None else get_settings()
    updates = {}
    if tracking_uri is not None:
        updates["tracking_uri"] = os.fspath(tracking_uri)
    if artifact_root is not None:
        updates["artifact_root"] = os.fspath(artifact_root)
    return settings.model_copy(update=updates) if updates else settings
