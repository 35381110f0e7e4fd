"""Run the scoring app under uvicorn (uvloop + httptools), in one or more processes.

``python -m serving_tasks.cli -m models:/churn@champion -p 5000`` (what ``deploy_model``
starts) takes the same options as ``prefect-mlops serve`` (see
:func:`serving_tasks.cli.serve_command`); this module sits below the command line. Backend settings
(``PREFECT_MLOPS_TRACKING_URI``, ``PREFECT_MLOPS_ARTIFACT_ROOT``, ...) come from the
environment, as everywhere else.

Connections are bounded so that slow or idle clients cannot hold the server: a request's
headers and body must arrive within ``request_timeout`` seconds of its first byte (or of
the connection, for a client that sends nothing), an idle keep-alive connection is closed
after ``keep_alive_timeout`` seconds, and past ``max_connections`` open connections new
requests get 503 at once. uvicorn itself has no deadline for reading a request; the
protocol class below adds one.

The model is loaded before uvicorn starts, so a model that cannot be loaded is reported
as one line (:class:`ServeStartupError`) instead of a lifespan traceback.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any

from tracking_plugin.errors import InvalidArgument, MlopsError

from serving_tasks._payload import DEFAULT_MAX_DECODED_BYTES, DEFAULT_MAX_ROWS

__all__ = ["INSTANCE_KEY_ENV", "ServeOptions", "ServeStartupError", "run"]

# With --workers > 1 uvicorn starts fresh processes that import the app by name; they
# read the options from here. The token itself never goes through it: each worker reads
# the variable named by token_env, which it inherits.
_OPTIONS_ENV = "PREFECT_MLOPS_SERVE_OPTIONS"
#: The secret by which ``serving_tasks.deploy`` recognises a server it started (see
#: ``create_app(instance_key=...)``); set only by deploy, never printed.
INSTANCE_KEY_ENV = "PREFECT_MLOPS_SERVE_INSTANCE_KEY"


class ServeStartupError(MlopsError):
    """The server cannot start: the model cannot be found or loaded (exit code 3)."""

    error_code = "RESOURCE_DOES_NOT_EXIST"


@dataclass(frozen=True, slots=True, kw_only=True)
class ServeOptions:
    """Everything ``serve`` needs; see :func:`serving_tasks.cli.serve_command` for meanings."""

    model_uri: str
    port: int = 5000
    host: str = "127.0.0.1"
    workers: int = 1
    token_env: str | None = None
    max_batch_size: int = 64
    max_wait_ms: float = 2.0
    max_body_bytes: int = 10 * 2**20
    max_rows: int = DEFAULT_MAX_ROWS
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES
    request_timeout: float = 30.0
    keep_alive_timeout: float = 5.0
    max_connections: int = 1024
    poll_interval: float | None = 5.0
    follow_events: bool | None = None
    allow_pickle: bool = False
    log_predictions: float | None = None
    prediction_log_uri: str | None = None
    prediction_log_queue_rows: int = 100_000

    def __post_init__(self) -> None:
        if not self.model_uri:
            raise InvalidArgument("The model URI is empty; pass e.g. -m models:/churn@champion.")
        if not 0 <= self.port <= 65535:
            raise InvalidArgument(f"Port {self.port} is out of range 0-65535.")
        if self.workers < 1:
            raise InvalidArgument(f"--workers must be at least 1, got {self.workers}.")
        if self.max_batch_size < 1:
            raise InvalidArgument(f"--max-batch-size must be at least 1 (1 turns batching off), got {self.max_batch_size}.")
        if self.max_wait_ms < 0:
            raise InvalidArgument(f"--max-wait-ms must be >= 0, got {self.max_wait_ms}.")
        if self.max_body_bytes < 1:
            raise InvalidArgument(f"The body limit must be positive, got {self.max_body_bytes} bytes.")
        if self.max_rows < 1:
            raise InvalidArgument(f"--max-rows must be at least 1, got {self.max_rows}.")
        if self.max_decoded_bytes < 1:
            raise InvalidArgument(f"The decoded-size limit must be positive, got {self.max_decoded_bytes} bytes.")
        if not self.request_timeout > 0:
            raise InvalidArgument(f"--request-timeout must be positive, got {self.request_timeout}.")
        if not self.keep_alive_timeout > 0:
            raise InvalidArgument(f"The keep-alive timeout must be positive, got {self.keep_alive_timeout}.")
        if self.max_connections < 1:
            raise InvalidArgument(f"--max-connections must be at least 1, got {self.max_connections}.")
        if self.log_predictions is not None and not 0 < self.log_predictions <= 1:
            raise InvalidArgument(
                f"--log-predictions must be a share above 0 and at most 1 (1 logs every request), "
                f"got {self.log_predictions}."
            )
        if self.prediction_log_uri is not None and self.log_predictions is None:
            raise InvalidArgument("--prediction-log-uri needs --log-predictions RATE (e.g. --log-predictions 1).")
        if self.prediction_log_queue_rows < 1:
            raise InvalidArgument(f"--prediction-log-queue-rows must be at least 1, got {self.prediction_log_queue_rows}.")

    def token(self) -> str | None:
        """The bearer token from the environment variable named by ``token_env``."""
        if self.token_env is None:
            return None
        value = os.environ.get(self.token_env)
        if not value:
            raise InvalidArgument(
                f"--token-env {self.token_env} names an environment variable that is unset or "
                f"empty; export {self.token_env}=<token> or drop --token-env to serve without auth."
            )
        return value


def _configure_logging() -> None:
    log = logging.getLogger("serving_tasks")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def build_app(options: ServeOptions) -> Any:
    from serving_tasks.app import create_app

    return create_app(
        options.model_uri,
        token=options.token(),
        max_batch_size=options.max_batch_size,
        max_wait_ms=options.max_wait_ms,
        max_body_bytes=options.max_body_bytes,
        max_rows=options.max_rows,
        max_decoded_bytes=options.max_decoded_bytes,
        poll_interval=options.poll_interval or None,
        follow_events=options.follow_events,
        allow_pickle=options.allow_pickle,
        instance_key=os.environ.get(INSTANCE_KEY_ENV) or None,
        log_predictions=options.log_predictions,
        prediction_log_uri=options.prediction_log_uri,
        prediction_log_queue_rows=options.prediction_log_queue_rows,
    )


def _app_from_env() -> Any:
    """uvicorn factory for worker processes (``--workers`` > 1)."""
    _configure_logging()
    options = ServeOptions(**json.loads(os.environ[_OPTIONS_ENV]))
    _DeadlineProtocol.request_timeout = options.request_timeout  # this worker's copy of the class
    return build_app(options)


def _protocol_base() -> type:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    return HttpToolsProtocol  # type: ignore[no-any-return]


class _DeadlineProtocol(_protocol_base()):  # type: ignore[misc]
    """uvicorn's httptools protocol plus a deadline for receiving each request.

    uvicorn only times out idle keep-alive connections; a client that sends half a header
    (or half a body) would hold its connection, and a task, forever (slowloris). The
    deadline starts at the connection (a client that sends nothing) and at the first byte
    of each request, stops when the request is complete, and closes the connection when
    it passes: a handler waiting for the body then sees a disconnect.
    """

    request_timeout: float = 30.0  # set from ServeOptions before serving (per process)

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._deadline: Any = self.loop.call_later(self.request_timeout, self._deadline_passed)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.request_timeout, self._deadline_passed)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._cancel_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _deadline_passed(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.logger.warning(
                "closing a connection whose request did not arrive within %.0f s (--request-timeout)",
                self.request_timeout,
            )
            self.transport.close()


def _check_model(options: ServeOptions) -> None:
    """Fail with one clear line when the model cannot be found, before anything starts.

    A registry or run URI against a SQLite file that does not exist is refused without
    opening it (opening would create an empty ``mlops.db`` in the working directory).
    """
    if not options.model_uri.startswith(("models:/", "runs:/")):
        return
    database = _database_display()
    path = _sqlite_path()
    if path is not None and not os.path.exists(path):
        raise ServeStartupError(
            f"Cannot serve {options.model_uri}: the tracking database {database} does not exist. "
            "Set PREFECT_MLOPS_TRACKING_URI (or PREFECT_MLOPS_BLOCK) to the database that holds "
            "the model, or run from the folder that holds its mlops.db."
        )


def _tracking_uri() -> str:
    """The tracking URI the server's registry client will use, SQLite paths made absolute."""
    from tracking_plugin.backend import resolve_settings
    from tracking_plugin.urls import absolute_sqlite_uri

    return absolute_sqlite_uri(resolve_settings().tracking_uri)


def _database_display() -> str:
    """The configured tracking URI with any password hidden."""
    from tracking_plugin.urls import redact_uri

    return redact_uri(_tracking_uri())


def _sqlite_path() -> str | None:
    """The file of a file-backed SQLite tracking URI, else None."""
    uri = _tracking_uri()
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    path = uri[len(prefix) :].partition("?")[0]
    if not path or path == ":memory:" or path.startswith("file:"):
        return None
    return path


def _load(app: Any, options: ServeOptions) -> None:
    """Load the app's model now; a failure becomes :class:`ServeStartupError`."""
    try:
        _check_model(options)
        app.state.holder.load()
    except ServeStartupError:
        raise
    except MlopsError as exc:
        where = ""
        if options.model_uri.startswith(("models:/", "runs:/")):
            where = f" (searched the tracking database {_database_display()})"
        from tracking_plugin.urls import redact_uri

        raise ServeStartupError(f"Cannot serve {options.model_uri}: {redact_uri(exc.message)}{where}") from exc


def run(options: ServeOptions) -> None:
    """Serve until interrupted.

    Raises :class:`ServeStartupError` (before listening) when the model cannot be loaded.
    """
    import uvicorn

    _configure_logging()
    token = options.token()  # fail now, not in every worker
    _DeadlineProtocol.request_timeout = options.request_timeout
    common: dict[str, Any] = dict(
        host=options.host,
        port=options.port,
        loop="uvloop",
        http=_DeadlineProtocol,
        access_log=False,  # an access log line costs about as much as a small request
        proxy_headers=False,  # nothing here reads the client address; saves work per request
        log_level="info",
        timeout_graceful_shutdown=10,
        timeout_keep_alive=options.keep_alive_timeout,
        limit_concurrency=options.max_connections,
    )
    logging.getLogger("serving_tasks").info(
        "serving %s on http://%s:%s (%d worker%s, auth %s)",
        options.model_uri,
        options.host,
        options.port,
        options.workers,
        "s" if options.workers > 1 else "",
        "on" if token else "off",
    )
    app = build_app(options)
    _load(app, options)  # once here, so a missing model is one line, not a lifespan traceback
    if options.workers == 1:
        uvicorn.run(app, **common)
        return
    del app  # each worker loads its own copy
    os.environ[_OPTIONS_ENV] = json.dumps(dataclasses.asdict(options))
    uvicorn.run("serving_tasks.server:_app_from_env", factory=True, workers=options.workers, **common)


if __name__ == "__main__":
    # `python -m serving_tasks.server`, the entry point's former name, still works: it runs
    # the command line module (which sits above this one) as if started with -m.
    import runpy

    runpy.run_module("serving_tasks.cli", run_name="__main__", alter_sys=True)
