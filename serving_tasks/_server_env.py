"""The environment of a scoring server started by :mod:`serving_tasks.deploy`.

The server must resolve the same backend as its caller (absolute SQLite paths and artifact
roots, the block's secrets passed as variables) and, against an authenticated tracking
server, hold an API token rather than the caller's password.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx

from tracking_plugin.errors import BackendUnavailable, InvalidArgument
from tracking_plugin.settings import MlopsSettings, get_settings
from tracking_plugin.urls import absolute_sqlite_uri, redact_uri

_PROJECT_ROOT = str(Path(__file__).resolve().parents[1])


def _server_env(extra: dict[str, str] | None, settings: MlopsSettings | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if settings is not None:
        # Exactly this backend (e.g. a flow's block): the server must not resolve another.
        env["PREFECT_MLOPS_BLOCK"] = ""
        for name in ("database_password", "s3_region", "aws_access_key_id", "aws_secret_access_key"):
            value = getattr(settings, name)
            if value is not None:
                env[f"PREFECT_MLOPS_{name.upper()}"] = value if isinstance(value, str) else value.get_secret_value()
    else:
        settings = get_settings()
    # The server must see the same backend as the caller, even when the caller's settings
    # came from defaults resolved against its working directory.
    env["PREFECT_MLOPS_TRACKING_URI"] = absolute_sqlite_uri(settings.tracking_uri)
    env["PREFECT_MLOPS_ARTIFACT_ROOT"] = _absolute_path(settings.artifact_root)
    if settings.s3_endpoint_url:
        env["PREFECT_MLOPS_S3_ENDPOINT_URL"] = settings.s3_endpoint_url
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if _PROJECT_ROOT not in paths:
        env["PYTHONPATH"] = os.pathsep.join([_PROJECT_ROOT, *paths])
    # Tracking-server credentials of the settings (a block's, or PREFECT_MLOPS_TRACKING_*)
    # travel as MLflow's variables, which _token_not_password turns into a token: the
    # server never gets a password.
    for name in ("TRACKING_USERNAME", "TRACKING_PASSWORD", "TRACKING_TOKEN"):
        env.pop(f"PREFECT_MLOPS_{name}", None)
    if settings.tracking_token is not None:
        env[_TOKEN_ENV] = settings.tracking_token.get_secret_value()
        env.pop(_USERNAME_ENV, None)
        env.pop(_PASSWORD_ENV, None)
    elif settings.tracking_username is not None:
        env.pop(_TOKEN_ENV, None)
        env[_USERNAME_ENV] = settings.tracking_username
        env[_PASSWORD_ENV] = settings.tracking_password.get_secret_value() if settings.tracking_password else ""
    env.update(extra or {})
    return env


_TOKEN_ENV, _USERNAME_ENV, _PASSWORD_ENV = "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"


def _token_not_password(env: dict[str, str], host: str, port: int) -> dict[str, str]:
    """A scoring server holds an API token, never a password: for a caller with only a
    username and password, a token of that user named for this server is created and
    given to it as ``MLFLOW_TRACKING_TOKEN`` (only in its environment: never logged nor in
    the state file, which keeps a digest of the options); the password is not passed on."""
    uri = env.get("PREFECT_MLOPS_TRACKING_URI", "")
    username, password = env.get(_USERNAME_ENV), env.get(_PASSWORD_ENV)
    env = {k: v for k, v in env.items() if k not in (_USERNAME_ENV, _PASSWORD_ENV)}
    if env.get(_TOKEN_ENV) or not uri.startswith(("http://", "https://")) or not username:
        return env
    try:
        response = httpx.post(
            f"{uri.rstrip('/')}/api/2.0/mlops/tokens/create",
            json={"name": f"scoring-server {host}:{port}"},
            auth=httpx.BasicAuth(username, password or ""),
            timeout=30.0,
        )
    except httpx.HTTPError as exc:
        raise BackendUnavailable(f"Could not reach {redact_uri(uri)} to create the scoring server's API token: {exc}") from None
    if response.status_code != 200:
        raise InvalidArgument(
            f"The tracking server refused to create an API token for the scoring server (HTTP "
            f"{response.status_code}): check MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, or set "
            "MLFLOW_TRACKING_TOKEN to a token of a user with READ on the model."
        )
    env[_TOKEN_ENV] = response.json()["token"]
    return env


def _absolute_path(root: str) -> str:
    if "://" in root:
        return root
    return str(Path(root).expanduser().resolve())


def _absolute_model_uri(model_uri: str) -> str:
    # A relative model path must mean the same to a server started in this directory
    # and to a later call made from another one.
    if "://" in model_uri or model_uri.startswith(("runs:/", "models:/")):
        return model_uri
    return str(Path(model_uri).expanduser().resolve())

