"""Fixtures: ``prefect-mlops server`` as a real subprocess on a free port.

- ``start_server(db_uri, artifact_root, *extra_args, env=...)``: start one (the console
  script, as a user would), wait for ``/health``, stop it at teardown; returns a
  :class:`ServerProcess` with ``url``.
- ``backend``: module-scoped, parametrized over ``sqlite`` (file + local folder) and
  ``postgres`` (a fresh database + ``s3://`` on the moto server); a dict with ``db_uri``,
  ``artifact_root`` and ``env`` (the S3 endpoint and keys the server needs).
- ``server``: one server on ``backend`` for the whole module.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import httpx
import pytest
from support import free_port

CONSOLE_SCRIPT = str(Path(sys.executable).with_name("prefect-mlops"))

# The mlflow client in this process: no retries (a 5xx from our server fails the test at
# once instead of being retried for minutes) and no progress bars in the output.
os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "60"
os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"


@dataclass
class ServerProcess:
    url: str
    process: subprocess.Popen  # type: ignore[type-arg]
    db_uri: str
    artifact_root: str
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def alive(self) -> bool:
        return self.process.poll() is None


def launch(db_uri: str, artifact_root: str, *extra: str, env: dict[str, str] | None = None, log_dir: Path) -> ServerProcess:
    port = free_port()
    log = log_dir / f"server-{port}.log"
    full_env = {**os.environ, **(env or {})}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [CONSOLE_SCRIPT, "server", "--backend-store-uri", db_uri, "--default-artifact-root", artifact_root,
             "--port", str(port), *extra],
            env=full_env, stdout=out, stderr=subprocess.STDOUT,
        )
    server = ServerProcess(f"http://127.0.0.1:{port}", process, db_uri, artifact_root, log, env or {})
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(server.url + "/health", timeout=1).text == "OK":
                return server
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise AssertionError(f"server not healthy within 60 s:\n{log.read_text()}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def start_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []
    log_dir = tmp_path_factory.mktemp("server-logs")

    def start(db_uri: str, artifact_root: str, *extra: str, env: dict[str, str] | None = None) -> ServerProcess:
        server = launch(db_uri, artifact_root, *extra, env=env, log_dir=log_dir)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def s3_server_env(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "PREFECT_MLOPS_S3_ENDPOINT_URL": endpoint,
    }


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A fresh backend: SQLite + local folder, or PostgreSQL + S3 (moto over HTTP)."""
    if request.param == "sqlite":
        base = tmp_path_factory.mktemp("backend")
        return {"name": "sqlite", "db_uri": f"sqlite:///{base / 'mlops.db'}", "artifact_root": str(base / "artifacts"), "env": {}}
    import boto3
    from support import create_pg_database

    admin = request.getfixturevalue("pg_server")
    endpoint = request.getfixturevalue("s3_server")
    bucket = "srv-" + uuid.uuid4().hex[:12]
    boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    ).create_bucket(Bucket=bucket)
    return {
        "name": "postgres",
        "db_uri": create_pg_database(admin),
        "artifact_root": f"s3://{bucket}/mlops",
        "env": s3_server_env(endpoint),
    }


@pytest.fixture(scope="module")
def server(backend: dict[str, object], start_server: Callable[..., ServerProcess]) -> ServerProcess:
    return start_server(backend["db_uri"], backend["artifact_root"], env=backend["env"])
