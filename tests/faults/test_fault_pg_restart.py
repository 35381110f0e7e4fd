"""Fault 2: PostgreSQL restarted (``pg_ctl restart -m fast``) while a tracked flow logs.

Promise: the flow's writes wait out the restart (retries with backoff, bounded by
``PREFECT_MLOPS_RETRY_DEADLINE``) and succeed after it; every point whose
``log_metric`` call returned is stored, once. When the database stays away past the
deadline, the flow fails with ``BackendUnavailable`` naming the database (password hidden).

The cluster is this test's own (``DedicatedPostgres``), not the suite's shared one.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
from faults.faults_support import DedicatedPostgres
from prefect import flow
from support import create_pg_database, reset_tracking

import tracking_plugin as mlops
from tracking_plugin.client import TrackingClient
from tracking_plugin.entities import RunStatus
from tracking_plugin.errors import BackendUnavailable
from tracking_plugin.prefect import track

pytestmark = pytest.mark.slow


@pytest.fixture
def own_pg() -> Iterator[DedicatedPostgres]:
    server = DedicatedPostgres()
    server.start()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def backend(prefect_harness: None, own_pg: DedicatedPostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh database on the dedicated cluster, configured as a user would; its URI
    carries a password (trust auth ignores it) to check that errors hide it."""
    uri = create_pg_database(own_pg.url(password="s3cret-pw"))
    monkeypatch.setenv("PREFECT_MLOPS_TRACKING_URI", uri)
    monkeypatch.setenv("PREFECT_MLOPS_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    monkeypatch.chdir(tmp_path)
    reset_tracking()
    yield uri
    reset_tracking()


def test_writes_wait_out_a_restart_and_no_acknowledged_point_is_lost(backend: str, own_pg: DedicatedPostgres) -> None:
    acknowledged: list[int] = []
    restarted = threading.Event()
    failures: list[BaseException] = []

    def restart_when_logging() -> None:
        try:
            deadline = time.monotonic() + 60
            while len(acknowledged) < 200 and time.monotonic() < deadline:
                time.sleep(0.01)
            own_pg.restart()
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            failures.append(exc)
        finally:
            restarted.set()

    @track(experiment="pg-restart")
    @flow
    def logging_flow() -> str:
        step = 0
        after_restart = 0
        while after_restart < 200:
            mlops.log_metric("x", float(step), step=step)
            acknowledged.append(step)  # log_metric returned: the point is promised
            step += 1
            if restarted.is_set():
                after_restart += 1
        return mlops.active_run().info.run_id

    restarter = threading.Thread(target=restart_when_logging)
    restarter.start()
    state = logging_flow(return_state=True)
    restarter.join(120)
    assert failures == []
    assert state.is_completed(), state.message
    run_id = state.result()

    client = TrackingClient()
    steps = [m.step for m in client.get_metric_history(run_id, "x")]
    lost = sorted(set(acknowledged) - set(steps))
    duplicated = len(steps) - len(set(steps))
    assert (lost, duplicated) == ([], 0), f"{len(lost)} acknowledged points lost, {duplicated} duplicated"
    assert len(acknowledged) >= 400
    assert client.get_run(run_id).info.status is RunStatus.FINISHED


def test_a_database_gone_past_the_deadline_fails_the_flow_naming_it(
    backend: str, own_pg: DedicatedPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFECT_MLOPS_RETRY_DEADLINE", "2")
    reset_tracking()
    acknowledged: list[int] = []

    @track(experiment="pg-gone")
    @flow
    def logging_flow() -> None:
        for step in range(100):
            mlops.log_metric("x", float(step), step=step)
            acknowledged.append(step)
        own_pg.stop()
        started = time.monotonic()
        try:
            mlops.log_metric("x", 100.0, step=100)
        finally:
            waited.append(time.monotonic() - started)
            own_pg.start()

    waited: list[float] = []
    state = logging_flow(return_state=True)
    assert state.is_failed()
    with pytest.raises(BackendUnavailable) as failure:
        state.result()
    message = str(failure.value)
    port = str(own_pg.port)
    assert port in message and "unavailable" in message and "s3cret-pw" not in message
    assert 1.5 < waited[0] < 30, f"gave up after {waited[0]:.1f} s, not after the 2 s deadline"

    client = TrackingClient()
    experiment = client.get_experiment_by_name("pg-gone")
    [run] = client.search_runs([experiment.experiment_id])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "x")] == acknowledged


def test_a_batch_whose_connection_is_cut_mid_transaction_is_replayed_once(pg_server: str, tmp_path: Path) -> None:
    """The backend serving a 100,000-point batch is terminated in the middle of its
    transaction (what a restart does to it): the batch is replayed whole, once."""
    import sqlalchemy as sa

    from tracking_plugin.entities import Metric
    from tracking_plugin.store.db import Database

    uri = create_pg_database(pg_server)
    Database(uri).upgrade()
    client = TrackingClient(uri, artifact_root=str(tmp_path / "artifacts"))
    run_id = client.create_run(client.create_experiment("cut")).info.run_id
    points = [Metric("x", float(i), 1_700_000_000_000 + i, i) for i in range(100_000)]
    terminated: list[int] = []

    def cut_the_writer() -> None:
        watcher = sa.create_engine(uri, isolation_level="AUTOCOMMIT")
        try:
            with watcher.connect() as conn:
                deadline = time.monotonic() + 60
                while not terminated and time.monotonic() < deadline:
                    pid = conn.execute(
                        sa.text(
                            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                            "AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL"
                        )
                    ).scalar()
                    if pid is not None and conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar():
                        terminated.append(pid)
        finally:
            watcher.dispose()

    cutter = threading.Thread(target=cut_the_writer)
    cutter.start()
    try:
        client.log_batch(run_id, points)
    finally:
        cutter.join(60)
    assert terminated, "the writer's transaction was never seen, so never cut"

    steps = [m.step for m in client.get_metric_history(run_id, "x")]
    assert (len(steps), len(set(steps))) == (100_000, 100_000)
    client.close()
