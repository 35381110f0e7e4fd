"""Suite-wide fixtures: real PostgreSQL, a real S3 endpoint over HTTP, real Prefect.

- ``pg_server``: a PostgreSQL 15 cluster started once per session (as the ``postgres``
  user when running as root) on a free port in a temp dir. ``make test`` installs the
  server when absent. Set ``PREFECT_MLOPS_TEST_PG_URL`` to use an existing server instead.
- ``db_uri``: parametrized over ``sqlite`` and ``postgres``; a fresh, empty database per
  test (migrations not applied: call ``Database(uri).upgrade()`` or use ``store``).
- ``s3_server`` / ``s3_env``: moto's ``ThreadedMotoServer`` on a free port; ``s3_env``
  sets AWS_* and ``PREFECT_MLOPS_S3_ENDPOINT_URL`` so boto3 talks to it over HTTP.
- ``store`` (both databases) / ``sqlite_store``: a migrated, empty ``SqlStore``, closed after.
- ``artifact_root``: parametrized over a local folder and ``s3://`` on the moto server.
- ``prefect_harness``: one ``prefect_test_harness()`` for the whole session;
  ``prefect_events``: read a flow run's events back from its API.
- ``tracking`` (SQLite) / ``tracking_any_db`` (both databases): the harness plus a fresh
  backend configured through ``PREFECT_MLOPS_*`` as a user would, as a ``TrackingClient``;
  ``runs_in(client, experiment)``: its runs, oldest first.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import pytest
from support import create_pg_database, events_of, free_port, poll, reset_tracking  # noqa: F401 - re-exported to fixtures

if TYPE_CHECKING:
    from tracking_plugin.client import TrackingClient
    from tracking_plugin.entities import Run
    from tracking_plugin.store.sql import SqlStore

PG_BIN_CANDIDATES = ["/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/17/bin"]

# Quieter, faster Prefect in tests (see FACTS.md): no telemetry, no heartbeat joins.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_API_SERVICES_TELEMETRY_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def _pg_bin() -> Path:
    for candidate in PG_BIN_CANDIDATES:
        if Path(candidate, "pg_ctl").exists():
            return Path(candidate)
    raise RuntimeError(
        "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin; "
        "run `make test` (it installs them) or `apt-get install -y postgresql`."
    )


class PgServer:
    def __init__(self) -> None:
        self.bin = _pg_bin()
        self.tmp = Path(tempfile.mkdtemp(prefix="mlops-pg-"))
        self.data = self.tmp / "data"
        self.port = free_port()
        self.as_root = os.geteuid() == 0

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=True, capture_output=True, text=True)

    def start(self) -> None:
        if self.as_root:
            shutil.chown(self.tmp, "postgres")
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")
        opts = (
            f"-p {self.port} -k {self.tmp} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        )
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", opts, "-l", str(self.tmp / "log"), "-w", "start")

    def stop(self) -> None:
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{dbname}"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """URL of an admin database on a running PostgreSQL server."""
    external = os.environ.get("PREFECT_MLOPS_TEST_PG_URL")
    if external:
        yield external
        return
    server = PgServer()
    server.start()
    try:
        yield server.url()
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def db_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database: SQLite file or a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'mlops.db'}"
    admin = request.getfixturevalue("pg_server")
    return create_pg_database(admin)


@pytest.fixture
def store(db_uri: str) -> Iterator["SqlStore"]:
    """A migrated, empty store on a fresh database (SQLite file or PostgreSQL database),
    closed after the test."""
    from tracking_plugin.store.db import Database
    from tracking_plugin.store.sql import SqlStore

    db = Database(db_uri)
    db.upgrade()
    with SqlStore(db) as store:
        yield store


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator["SqlStore"]:
    """The same on SQLite only: for behaviour that does not depend on the database."""
    from tracking_plugin.store.db import Database
    from tracking_plugin.store.sql import SqlStore

    db = Database(f"sqlite:///{tmp_path / 'mlops.db'}")
    db.upgrade()
    with SqlStore(db) as store:
        yield store


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """Endpoint URL of a moto S3 server spoken to over HTTP."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point boto3 (and our settings) at the moto server; returns the endpoint URL."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("PREFECT_MLOPS_S3_ENDPOINT_URL", s3_server)
    return s3_server


@pytest.fixture
def s3_bucket(s3_env: str) -> str:
    """A new, empty bucket on the moto server; returns its name."""
    import boto3

    name = "b-" + uuid.uuid4().hex[:12]
    boto3.client("s3", endpoint_url=s3_env, region_name="us-east-1").create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["local", "s3"])
def artifact_root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty artifact root: a local folder, or s3://<fresh bucket>/root on moto."""
    if request.param == "local":
        root = tmp_path / "artifacts"
        root.mkdir()
        return str(root)
    bucket = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/root"


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One Prefect test server (ephemeral database) for the whole session."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            yield


@pytest.fixture(scope="session")
def readme_section():  # type: ignore[no-untyped-def]
    """``readme_section("Tracking API")``: the README's text under that ``## `` heading."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()

    def section(heading: str) -> str:
        start = readme.index(f"\n## {heading}")
        end = readme.find("\n## ", start + 1)
        return readme[start : end if end != -1 else len(readme)]

    return section


@pytest.fixture(scope="session")
def prefect_events():  # type: ignore[no-untyped-def]
    """:func:`events_of`: read a flow run's Prefect events back, waiting for them."""
    return events_of


# ---------------------------------------------- a tracking backend for Prefect flow tests


def configure(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, uri: str) -> "TrackingClient":
    from tracking_plugin import fluent
    from tracking_plugin.client import TrackingClient

    for name in fluent._ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PREFECT_MLOPS_TRACKING_URI", uri)
    monkeypatch.setenv("PREFECT_MLOPS_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    monkeypatch.chdir(tmp_path)
    reset_tracking(dispose_stores=False)
    return TrackingClient()


@pytest.fixture
def tracking(prefect_harness: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator["TrackingClient"]:
    """A fresh SQLite backend (``PREFECT_MLOPS_*`` set) and a client on it."""
    yield configure(monkeypatch, tmp_path, f"sqlite:///{tmp_path / 'mlops.db'}")
    reset_tracking()


@pytest.fixture
def tracking_any_db(prefect_harness: None, db_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator["TrackingClient"]:
    """The same over SQLite and PostgreSQL."""
    yield configure(monkeypatch, tmp_path, db_uri)
    reset_tracking()


def _runs_in(client: "TrackingClient", experiment: str) -> list["Run"]:
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"experiment {experiment!r} was not created"
    return sorted(client.search_runs([found.experiment_id], max_results=1000), key=lambda r: r.info.start_time)


@pytest.fixture
def runs_in():  # type: ignore[no-untyped-def]
    """``runs_in(client, experiment_name)``: every run of the experiment, oldest first."""
    return _runs_in

