"""Settings of the tracking server: where the state lives and how big a request may be.

Read from the environment (prefix ``PREFECT_MLOPS_SERVER_``) so that every uvicorn worker
process builds the same app; ``prefect-mlops server`` sets them from its flags::

    PREFECT_MLOPS_SERVER_BACKEND_STORE_URI=postgresql+psycopg://mlops@db/mlops
    PREFECT_MLOPS_SERVER_DEFAULT_ARTIFACT_ROOT=s3://bucket/mlops
    PREFECT_MLOPS_SERVER_SERVE_ARTIFACTS=true

S3 endpoint and credentials come from ``PREFECT_MLOPS_S3_*`` / boto3's usual chain, as for
every other part of prefect-mlops. The server keeps no state of its own: replicas pointed
at the same database and artifact store behave as one server.
"""

from __future__ import annotations

import os

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from tracking_plugin.settings import MlopsSettings, get_settings

__all__ = ["ServerSettings"]


class ServerSettings(BaseSettings):
    """What ``prefect-mlops server`` serves: one backend database and one artifact root."""

    model_config = SettingsConfigDict(env_prefix="PREFECT_MLOPS_SERVER_", extra="ignore")

    backend_store_uri: str = Field(
        default="sqlite:///mlops.db", description="SQLAlchemy URL of the tracking and registry database."
    )
    default_artifact_root: str = Field(
        default="./mlops-artifacts",
        description="Where experiments created through the server keep their artifacts (path, file:// or s3://).",
    )
    artifacts_destination: str | None = Field(
        default=None,
        description="Where proxied artifacts are stored (default: the default artifact root).",
    )
    serve_artifacts: bool = Field(
        default=True,
        description="Proxy artifact uploads and downloads (mlflow-artifacts:/ URIs), so clients need no S3 keys.",
    )
    max_json_body_bytes: int = Field(
        default=16 * 1024 * 1024, ge=1024, description="Largest JSON request body accepted (413 above)."
    )
    max_artifact_bytes: int = Field(
        default=512 * 1024 * 1024, ge=1024, description="Largest artifact upload accepted (413 above)."
    )

    @property
    def artifact_storage_root(self) -> str:
        """Where artifacts are written: the destination, else the default root; local
        paths made absolute so every worker process writes to the same folder."""
        root = self.artifacts_destination or self.default_artifact_root
        if root.startswith("file://"):
            root = root[len("file://") :]
        if "://" not in root:
            root = os.path.abspath(os.path.expanduser(root))
        return root.rstrip("/") if len(root) > 1 else root

    def backend_settings(self) -> MlopsSettings:
        """The library settings of this backend (S3 endpoint and keys from the environment)."""
        return get_settings().model_copy(
            update={"tracking_uri": self.backend_store_uri, "artifact_root": self.artifact_storage_root}
        )
