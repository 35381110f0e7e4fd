"""Fault 1: a process SIGKILLed in the middle of a 100,000-point ``log_batch``.

Promise: the batch is all or nothing (here: nothing, it was cut before its commit), the
database passes its integrity check, later writes work, and the points the process's
metric buffer had already flushed are all there.
"""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from faults.faults_support import read_until

from tracking_plugin.client import TrackingClient
from tracking_plugin.entities import Metric
from tracking_plugin.store.db import Database

pytestmark = pytest.mark.slow

FLUSHED_POINTS = 2_000
BATCH_POINTS = 100_000

CHILD = """
    import os
    from tracking_plugin.client import TrackingClient
    from tracking_plugin.entities import Metric

    client = TrackingClient(os.environ["FAULT_URI"], artifact_root=os.environ["FAULT_ARTIFACTS"])
    run_id = os.environ["FAULT_RUN"]
    buffered = [Metric("buffered", float(i), 1_700_000_000_000 + i, i) for i in range({flushed})]
    client.log_batch(run_id, buffered, synchronous=False)
    client.flush()
    print("FLUSHED", flush=True)
    big = [Metric(f"big{{i % 10}}", float(i), 1_700_000_000_000 + i, i) for i in range({batch})]
    print("BATCH", flush=True)
    client.log_batch(run_id, big)
    print("DONE", flush=True)
"""


def _writer_in_transaction(db_uri: str) -> bool:
    """Whether another connection is inside a write transaction right now."""
    if db_uri.startswith("sqlite"):
        probe = sqlite3.connect(db_uri.removeprefix("sqlite:///"), timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return False
        except sqlite3.OperationalError as exc:
            assert "locked" in str(exc), exc
            return True
        finally:
            probe.close()
    engine = sa.create_engine(db_uri)
    try:
        with engine.connect() as conn:
            busy = conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL"
                )
            ).scalar_one()
        return bool(busy)
    finally:
        engine.dispose()


def _count(db_uri: str, run_id: str, key_like: str) -> int:
    engine = sa.create_engine(db_uri)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    sa.text("SELECT count(*) FROM metrics WHERE run_uuid = :r AND key LIKE :k"),
                    {"r": run_id, "k": key_like},
                ).scalar_one()
            )
    finally:
        engine.dispose()


def test_a_batch_cut_by_sigkill_is_all_or_nothing(db_uri: str, tmp_path: Path, child) -> None:  # type: ignore[no-untyped-def]
    Database(db_uri).upgrade()
    client = TrackingClient(db_uri, artifact_root=str(tmp_path / "artifacts"))
    run_id = client.create_run(client.create_experiment("killed-batch")).info.run_id

    process = child(
        CHILD.format(flushed=FLUSHED_POINTS, batch=BATCH_POINTS),
        cwd=tmp_path,
        FAULT_URI=db_uri,
        FAULT_RUN=run_id,
        FAULT_ARTIFACTS=str(tmp_path / "artifacts"),
    )
    read_until(process, "BATCH")
    deadline = time.monotonic() + 30
    while not _writer_in_transaction(db_uri):
        assert process.poll() is None, "the batch finished before it could be cut; the test proves nothing"
        assert time.monotonic() < deadline, "the child never started its write transaction"
    process.send_signal(signal.SIGKILL)
    process.wait(30)

    # What the kill cost: nothing that was flushed, and no part of the batch.
    big_points = _count(db_uri, run_id, "big%")
    # Usually none (cut before its commit); all of it if the kill landed after the commit.
    assert big_points in (0, BATCH_POINTS), f"part of a batch is stored: {big_points} points"
    lost = FLUSHED_POINTS - len(client.get_metric_history(run_id, "buffered"))
    assert lost == 0, f"{lost} flushed points are missing"

    if db_uri.startswith("sqlite"):
        with sqlite3.connect(db_uri.removeprefix("sqlite:///")) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]

    # Later writes work, from another client, and from this one.
    client.log_batch(run_id, [Metric("after", float(i), 1_700_000_100_000 + i, i) for i in range(1000)])
    client.log_metric(run_id, "after", 1000.0, step=1000)
    assert [m.step for m in client.get_metric_history(run_id, "after")] == list(range(1001))
    assert client.get_run(run_id).data.metrics["buffered"] == FLUSHED_POINTS - 1
