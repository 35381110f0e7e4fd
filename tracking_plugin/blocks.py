"""``MlopsBackend``: a Prefect block holding where prefect-mlops records.

Save it once on the Prefect server; flows running on workers elsewhere load it by name,
so every machine writes to the same database and artifact store::

    from tracking_plugin.blocks import MlopsBackend

    MlopsBackend(
        tracking_uri="postgresql+psycopg://mlops@db:5432/mlops",
        database_password="...",
        artifact_root="s3://ml-artifacts/mlops",
        s3_endpoint_url="http://minio:9000",
        aws_access_key_id="...",
        aws_secret_access_key="...",
    ).save("prod", overwrite=True)

    @track(block="prod")      # or PREFECT_MLOPS_BLOCK=prod in the worker's environment
    @flow
    def train(): ...

The block type is registered with the server through the ``prefect.collections`` entry
point (``prefect block register -m tracking_plugin.blocks`` does it explicitly).
"""

from __future__ import annotations

from typing import Any

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from tracking_plugin.client import TrackingClient
from tracking_plugin.errors import InvalidArgument
from tracking_plugin.settings import MlopsSettings, get_settings
from tracking_plugin.urls import redact_uri

__all__ = ["MlopsBackend"]


class MlopsBackend(Block):
    """Tracking database, artifact store and S3 credentials shared by flows and workers.

    Example:
        Load a saved block and log to its backend:

        ```python
        from tracking_plugin.blocks import MlopsBackend

        backend = MlopsBackend.load("prod")
        client = backend.get_client()
        ```

        A worker that holds only a tracking server's URL (no database password, no S3 keys):

        ```python
        MlopsBackend(tracking_uri="http://mlops.internal:5000").save("team")
        ```
    """

    _block_type_name = "MLOps Backend"
    _block_type_slug = "mlops-backend"
    _description = (
        "Where prefect-mlops records experiments, runs, models and artifacts: the tracking "
        "database URI, the artifact root and the S3 credentials."
    )
    _logo_url = "https://raw.githubusercontent.com/mlflow/mlflow/master/assets/icon.svg"  # type: ignore[assignment]
    _documentation_url = "https://mlflow.org/docs/latest/tracking.html"  # type: ignore[assignment]

    tracking_uri: str = Field(
        default="sqlite:///mlops.db",
        title="Tracking URI",
        description=(
            "SQLAlchemy URL of the tracking and registry database, e.g. "
            "postgresql+psycopg://user@host:5432/mlops or sqlite:///mlops.db, or a tracking "
            "server's URL, e.g. http://mlops.internal:5000 (workers then hold only the URL). "
            "Put the password in 'Database password', not here."
        ),
    )
    database_password: SecretStr | None = Field(
        default=None,
        title="Database password",
        description="Password for the tracking database; it is added to the tracking URI at use.",
    )
    artifact_root: str = Field(
        default="./mlops-artifacts",
        title="Artifact root",
        description=(
            "Where run and model artifacts go: a local path, file:// URI or s3://bucket/prefix. "
            "With a tracking server's URL, keep the default: files go through the server."
        ),
    )
    tracking_username: str | None = Field(
        default=None,
        title="Tracking server user",
        description="With a tracking server's URL and --auth: the user name (or use an API token).",
    )
    tracking_password: SecretStr | None = Field(
        default=None, title="Tracking server password", description="Password of that user."
    )
    tracking_token: SecretStr | None = Field(
        default=None,
        title="Tracking server API token",
        description="With a tracking server's URL and --auth: an API token (prefect-mlops tokens create).",
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        title="S3 endpoint URL",
        description="Endpoint of an S3-compatible store (MinIO, Ceph, ...); empty for AWS S3.",
    )
    s3_region: str | None = Field(default=None, title="S3 region", description="AWS region of the bucket.")
    aws_access_key_id: SecretStr | None = Field(
        default=None,
        title="AWS access key id",
        description="S3 access key id; empty to use boto3's default credential chain.",
    )
    aws_secret_access_key: SecretStr | None = Field(
        default=None,
        title="AWS secret access key",
        description="S3 secret access key; empty to use boto3's default credential chain.",
    )

    def resolved_tracking_uri(self) -> str:
        """The tracking URI with ``database_password`` filled in (keep it out of logs)."""
        if self.database_password is None:
            return self.tracking_uri
        from sqlalchemy.engine import make_url

        url = make_url(self.tracking_uri).set(password=self.database_password.get_secret_value())
        return url.render_as_string(hide_password=False)

    def to_settings(self, **overrides: Any) -> MlopsSettings:
        """Settings for this backend; logging options (async, batch sizes) come from the
        environment as usual, the backend location from the block."""
        values: dict[str, Any] = {
            # The password stays a SecretStr until the engine is built (store.db.Database).
            "tracking_uri": self.tracking_uri,
            "database_password": self.database_password,
            "artifact_root": self.artifact_root,
            "s3_endpoint_url": self.s3_endpoint_url,
            "s3_region": self.s3_region,
            "aws_access_key_id": self.aws_access_key_id,
            "aws_secret_access_key": self.aws_secret_access_key,
            "tracking_username": self.tracking_username,
            "tracking_password": self.tracking_password,
            "tracking_token": self.tracking_token,
        }
        base = get_settings()
        return base.model_copy(update={**values, **overrides})

    def get_client(self) -> TrackingClient:
        """A :class:`~tracking_plugin.client.TrackingClient` writing to this backend."""
        return TrackingClient.from_settings(self.to_settings())

    def __repr_args__(self) -> Any:
        # A password written into the URI itself is hidden like the SecretStr fields.
        for name, value in super().__repr_args__():
            yield name, redact_uri(value) if isinstance(value, str) else value


def settings_of_block(name: str) -> MlopsSettings:
    """The settings of the saved ``MlopsBackend`` block ``name``, read from the Prefect API.

    :mod:`tracking_plugin.backend` calls this once per name and process (a block edited on
    the server applies to new processes) and keeps the result.
    """
    try:
        loaded = MlopsBackend.load(name, _sync=True)  # type: ignore[call-arg]
    except ValueError as exc:
        raise InvalidArgument(
            f"No MlopsBackend block named {name!r} on the Prefect server ({exc}). Save one "
            "with MlopsBackend(...).save(name), or name another block (@track(block=...) or "
            "PREFECT_MLOPS_BLOCK)."
        ) from exc
    return loaded.to_settings()  # type: ignore[no-any-return]
