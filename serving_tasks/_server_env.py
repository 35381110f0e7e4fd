"""The environment of a scoring server started by :mod:`serving_tasks.deploy`.

The server must resolve the same backend as its caller (absolute SQLite paths and artifact
roots, the block's secrets passed as variables) and, against an authenticated tracking
server, hold an API token rather than the caller's password.

A token created here for one server (:class:`ServerToken`: its id, never the secret, is
recorded with the deployment) is revoked by :func:`_revoke_server_token` when deploy
replaces or stops that server, or when it fails to start. A token the caller supplied is
never recorded, so never revoked.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import httpx

from tracking_plugin.errors import BackendUnavailable, InvalidArgument, MlopsError
from tracking_plugin.settings import MlopsSettings, get_settings
from tracking_plugin.urls import absolute_sqlite_uri, redact_uri

logger = logging.getLogger("serving_tasks.deploy")

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


@dataclass(frozen=True)
class ServerToken:
    """The API token :func:`_token_not_password` created for one scoring server: its id
    (not a secret; the token itself is never recorded) and the tracking server it is valid
    on (password redacted)."""

    token_id: str
    tracking_uri: str

    def to_json(self) -> dict[str, str]:
        return {"token_id": self.token_id, "tracking_uri": self.tracking_uri}

    @classmethod
    def from_json(cls, data: object) -> ServerToken | None:
        if not isinstance(data, dict):
            return None
        token_id, uri = data.get("token_id"), data.get("tracking_uri")
        return cls(token_id, uri) if isinstance(token_id, str) and isinstance(uri, str) and token_id else None


def _token_not_password(env: dict[str, str], host: str, port: int) -> tuple[dict[str, str], ServerToken | None]:
    """A scoring server holds an API token, never a password: for a caller with only a
    username and password, a token of that user named for this server is created and
    given to it as ``MLFLOW_TRACKING_TOKEN`` (only in its environment: never logged nor in
    the state file, which keeps a digest of the options); the password is not passed on.

    Returns the server's environment and, when a token was created here, its
    :class:`ServerToken` (for deploy to record and revoke later); None when the caller
    supplied a token or the backend needs none."""
    uri = env.get("PREFECT_MLOPS_TRACKING_URI", "")
    username, password = env.get(_USERNAME_ENV), env.get(_PASSWORD_ENV)
    env = {k: v for k, v in env.items() if k not in (_USERNAME_ENV, _PASSWORD_ENV)}
    if env.get(_TOKEN_ENV) or not uri.startswith(("http://", "https://")) or not username:
        return env, None
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
    created = response.json()
    env[_TOKEN_ENV] = created["token"]
    return env, ServerToken(str(created["token_info"]["token_id"]), redact_uri(uri))


def _revoke_server_token(
    token: ServerToken, what: str, *, own: dict[str, str] | None, caller: Callable[[], dict[str, str]] | None
) -> bool:
    """Revoke ``token`` (of ``what``, e.g. "the scoring server replaced on 127.0.0.1:5000")
    on its tracking server; True when it is no longer valid there.

    Tried with the token itself, read from the server's environment ``own`` (a token may
    revoke itself: no other credentials needed), then with the caller's credentials
    (``caller()``: an environment as :func:`_server_env` builds it), each only when it is
    for that same tracking server. When neither works (the server is down, no credentials)
    a warning names the token id and how to revoke it; nothing is raised, so a redeploy or
    a stop never fails for it.
    """
    reasons: list[str] = []
    for source in ("own", "caller"):
        try:
            env = own if source == "own" else caller() if caller is not None else None
        except Exception as exc:  # noqa: BLE001 - best effort: the server is stopped already
            message = exc.message if isinstance(exc, MlopsError) else f"{type(exc).__name__}: {exc}"
            reasons.append(f"the caller's settings do not resolve ({redact_uri(message)})")
            continue
        if env is None:
            continue
        uri = env.get("PREFECT_MLOPS_TRACKING_URI", "")
        if redact_uri(uri).rstrip("/") != token.tracking_uri.rstrip("/"):
            continue
        bearer, auth = env.get(_TOKEN_ENV) or "", None
        if source == "own" and not bearer.startswith(f"mlops_{token.token_id}_"):
            continue  # not the token recorded (e.g. a state file from another deployment)
        if not bearer:
            if not env.get(_USERNAME_ENV):
                continue
            auth = httpx.BasicAuth(env[_USERNAME_ENV], env.get(_PASSWORD_ENV) or "")
        try:
            response = httpx.post(
                f"{uri.rstrip('/')}/api/2.0/mlops/tokens/revoke", json={"token_id": token.token_id}, auth=auth,
                headers={"Authorization": f"Bearer {bearer}"} if bearer else None, timeout=10.0,
            )
        except httpx.HTTPError as exc:
            reasons.append(f"{redact_uri(uri)} could not be reached ({type(exc).__name__}: {redact_uri(str(exc))})")
            break  # the other credentials would not reach it either
        # 404: the token no longer exists (its user was deleted); 401 to the token itself:
        # it is already revoked or expired. Either way nothing is left valid.
        if response.status_code == 200 or response.status_code == 404 or (source == "own" and response.status_code == 401):
            return True
        reasons.append(f"the tracking server answered HTTP {response.status_code} to the "
                       f"{'token itself' if source == 'own' else 'caller'}: {_error_message(response)}")
    if not reasons:
        reasons.append("no credentials for that tracking server here (neither the server's own token nor "
                       "MLFLOW_TRACKING_TOKEN / MLFLOW_TRACKING_USERNAME and _PASSWORD)")
    logger.warning(
        "Could not revoke API token %s of %s on %s: %s. It stays valid until revoked: as its owner or an "
        "admin, POST %s/api/2.0/mlops/tokens/revoke with {\"token_id\": \"%s\"}, or run `prefect-mlops tokens "
        "revoke %s --backend-store-uri <that server's database>`.",
        token.token_id, what, token.tracking_uri, "; ".join(reasons), token.tracking_uri.rstrip("/"),
        token.token_id, token.token_id,
    )
    return False


def _environ(pid: int) -> dict[str, str] | None:
    """The environment a scoring server of ours was started with (it holds the API token
    created for it), or None where there is no procfs."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    pairs = (item.decode(errors="replace").split("=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {name: value for name, value in pairs}


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("message") or response.text[:200])
    except (ValueError, AttributeError):
        return response.text[:200]


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

