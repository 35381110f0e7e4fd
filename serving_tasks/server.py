"""Run the scoring app under uvicorn (uvloop + httptools), in one or more processes.

``python -m serving_tasks.server -m models:/churn@champion -p 5000`` takes the same options
as ``prefect-mlops serve`` (see :func:`serving_tasks.cli.serve_command`). Backend settings
(``PREFECT_MLOPS_TRACKING_URI``, ``PREFECT_MLOPS_ARTIFACT_ROOT``, ...) come from the
environment, as everywhere else.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any

from tracking_plugin.errors import InvalidArgument

__all__ = ["ServeOptions", "main", "run"]

# With --workers > 1 uvicorn starts fresh processes that import the app by name; they
# read the options from here. The token itself never goes through it: each worker reads
# the variable named by token_env, which it inherits.
_OPTIONS_ENV = "PREFECT_MLOPS_SERVE_OPTIONS"


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
    poll_interval: float | None = 5.0
    follow_events: bool | None = None
    allow_pickle: bool = False

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
        poll_interval=options.poll_interval or None,
        follow_events=options.follow_events,
        allow_pickle=options.allow_pickle,
    )


def _app_from_env() -> Any:
    """uvicorn factory for worker processes (``--workers`` > 1)."""
    _configure_logging()
    return build_app(ServeOptions(**json.loads(os.environ[_OPTIONS_ENV])))


def run(options: ServeOptions) -> None:
    """Serve until interrupted. A model that cannot be loaded stops startup (exit code 3)."""
    import uvicorn

    _configure_logging()
    token = options.token()  # fail now, not in every worker
    common: dict[str, Any] = dict(
        host=options.host,
        port=options.port,
        loop="uvloop",
        http="httptools",
        access_log=False,  # an access log line costs about as much as a small request
        proxy_headers=False,  # nothing here reads the client address; saves work per request
        log_level="info",
        timeout_graceful_shutdown=10,
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
    if options.workers == 1:
        uvicorn.run(build_app(options), **common)
        return
    os.environ[_OPTIONS_ENV] = json.dumps(dataclasses.asdict(options))
    uvicorn.run("serving_tasks.server:_app_from_env", factory=True, workers=options.workers, **common)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m serving_tasks.server``."""
    import typer

    from serving_tasks.cli import serve_command

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(serve_command)
    app(args=argv, prog_name="python -m serving_tasks.server")


if __name__ == "__main__":
    main()
