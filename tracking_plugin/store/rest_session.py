"""``RestSession``: the HTTP transport of :class:`~tracking_plugin.store.rest.RestStore`
and the proxied artifact repository (:mod:`tracking_plugin.artifacts.http`).

One keep-alive ``httpx.Client`` per session, retries with exponential backoff (for at
least ``retries`` attempts and up to ``retry_deadline`` seconds, so a restarting server is
waited for) on connection errors, 503 and 429 (a call that is not idempotent only when nothing was
sent), and every error answer translated once, here, into ``tracking_plugin.errors``
with the server's message. Credentials come from ``MLFLOW_TRACKING_TOKEN`` (Bearer) or
``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` (Basic) and are never printed.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable, Mapping

import httpx
import orjson
from pydantic import SecretStr

from tracking_plugin.errors import (
    AlreadyExists,
    BackendUnavailable,
    Conflict,
    InvalidArgument,
    MlopsError,
    NotFound,
)
from tracking_plugin.urls import redact_uri

__all__ = ["RestSession"]

_ERRORS: dict[str, type[MlopsError]] = {
    "RESOURCE_DOES_NOT_EXIST": NotFound,
    "RESOURCE_ALREADY_EXISTS": AlreadyExists,
    "INVALID_STATE": Conflict,
    "INVALID_PARAMETER_VALUE": InvalidArgument,
    "TEMPORARILY_UNAVAILABLE": BackendUnavailable,
}
_RETRY_STATUS = (429, 503)


class RestSession:
    """One keep-alive HTTP connection pool to a server, with retries and typed errors.

    Args:
        base_url: the server's URL (``http://host:5000``, a path prefix allowed).
        retries: attempts after the first one for a retryable failure, at least.
        backoff: seconds before the first retry, doubled for each next one (at most 2 s).
        retry_deadline: seconds after the first attempt during which retries go on past
            ``retries`` (``PREFECT_MLOPS_RETRY_DEADLINE``): a server restart is waited out.
        timeout: seconds for connecting and for each read.
    """

    def __init__(
        self,
        base_url: str,
        *,
        retries: int = 4,
        backoff: float = 0.1,
        timeout: float = 120.0,
        retry_deadline: float = 0.0,
        username: str | None = None,
        password: SecretStr | None = None,
        token: SecretStr | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        # Credentials given here (settings: PREFECT_MLOPS_TRACKING_* or a block) win over
        # MLFLOW_TRACKING_TOKEN / _USERNAME / _PASSWORD, which are read when none is given.
        self._credentials = (username, password, token)
        self.retries = retries
        self.retry_deadline = retry_deadline
        self.backoff = backoff
        self.timeout = timeout
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RestSession({redact_uri(self.base_url)!r})"

    @property
    def client(self) -> httpx.Client:
        client = self._client
        if client is None:
            with self._lock:
                client = self._client
                if client is None:
                    client = self._client = httpx.Client(
                        base_url=self.base_url,
                        timeout=self.timeout,
                        headers=_auth_headers(*self._credentials),
                        auth=_basic_auth(*self._credentials),
                        follow_redirects=False,
                    )
        return client

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    # ------------------------------------------------------------------ requests

    def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Any = None,
        idempotent: bool | None = None,
    ) -> Any:
        """Send one JSON call; return the decoded JSON answer (``{}`` for an empty one)."""
        content = orjson.dumps(json) if json is not None else None
        headers = {"Content-Type": "application/json"} if content is not None else None
        response = self.send(
            method, path, content=lambda: content, params=params, headers=headers,
            idempotent=method == "GET" if idempotent is None else idempotent,
        )
        body = response.content
        return orjson.loads(body) if body else {}

    def send(
        self,
        method: str,
        path: str,
        *,
        content: Callable[[], Any] | None = None,
        params: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool,
        stream: bool = False,
    ) -> httpx.Response:
        """Send a request, retrying as the module says; raise our errors for non-2xx.

        ``content`` is called for every attempt (a file is opened again for a retry).
        With ``stream`` the answer's body is not read: the caller iterates and closes it.
        """
        attempt = 0
        deadline = time.monotonic() + self.retry_deadline
        while True:
            try:
                request = self.client.build_request(
                    method, path, content=content() if content is not None else None, params=params, headers=headers
                )
                response = self.client.send(request, stream=stream)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # nothing was sent: safe to repeat
                failure: Exception = exc
            except httpx.TransportError as exc:
                if not idempotent:
                    raise self._unavailable(path, exc) from exc
                failure = exc
            else:
                if response.status_code < 400:
                    return response
                if stream:
                    response.read()
                error = self._error(response)
                if not (response.status_code in _RETRY_STATUS and idempotent):
                    raise error
                if self._give_up(attempt, deadline):
                    raise BackendUnavailable(
                        f"{error.message} (HTTP {response.status_code} from {redact_uri(self.base_url)} "
                        f"{1 + attempt} times; try again later)"
                    ) from None
                failure = error
            if self._give_up(attempt, deadline):
                raise self._unavailable(path, failure) from failure
            time.sleep(self._delay(attempt))
            attempt += 1

    def _delay(self, attempt: int) -> float:
        return float(min(self.backoff * (2**attempt), 2.0))

    def _give_up(self, attempt: int, deadline: float) -> bool:
        if attempt < self.retries:
            return False
        return time.monotonic() + self._delay(attempt) > deadline

    def _unavailable(self, path: str, exc: Exception) -> BackendUnavailable:
        return BackendUnavailable(
            f"Cannot reach the tracking server at {redact_uri(self.base_url)} ({path}): "
            f"{type(exc).__name__}: {exc}. Check that `prefect-mlops server` is running there "
            "and that this machine can reach it (tracking URI, proxy, firewall)."
        )

    def _error(self, response: httpx.Response) -> MlopsError:
        try:
            payload = orjson.loads(response.content)
            code, message = str(payload.get("error_code", "")), str(payload.get("message", ""))
        except (orjson.JSONDecodeError, AttributeError):
            code, message = "", response.text[:500]
        status = response.status_code
        where = f"{response.request.method} {redact_uri(str(response.request.url))}"
        if not message:
            message = f"HTTP {status} from {where}"
        if code == "ENDPOINT_NOT_FOUND" or (status == 404 and not code):
            return InvalidArgument(
                f"{message} ({where}): the server at {redact_uri(self.base_url)} does not answer this "
                "call. Point the tracking URI at a `prefect-mlops server` of this version."
            )
        if status in (401, 403):
            return InvalidArgument(
                f"{message} (HTTP {status}): set MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD, to credentials the server accepts."
            )
        cls = _ERRORS.get(code)
        if cls is None:
            cls = BackendUnavailable if status >= 500 else InvalidArgument
        return cls(message)


def _resolve(username: str | None, password: SecretStr | None, token: SecretStr | None) -> tuple[str | None, str, str | None]:
    """(user, password, token): the given credentials, else MLflow's variables."""
    if token is not None or username is not None:
        return (
            username,
            password.get_secret_value() if password is not None else "",
            token.get_secret_value() if token is not None else None,
        )
    return (
        os.environ.get("MLFLOW_TRACKING_USERNAME"),
        os.environ.get("MLFLOW_TRACKING_PASSWORD") or "",
        os.environ.get("MLFLOW_TRACKING_TOKEN"),
    )


def _auth_headers(
    username: str | None = None, password: SecretStr | None = None, token: SecretStr | None = None
) -> dict[str, str]:
    bearer = _resolve(username, password, token)[2]
    return {"Authorization": f"Bearer {bearer}"} if bearer else {}


def _basic_auth(
    username: str | None = None, password: SecretStr | None = None, token: SecretStr | None = None
) -> httpx.BasicAuth | None:
    user, secret, bearer = _resolve(username, password, token)
    if bearer:
        return None
    return httpx.BasicAuth(user, secret) if user else None
