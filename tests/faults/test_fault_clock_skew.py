"""Fault 8: a worker whose clock is one hour behind logs into the shared backend.

Promise: metric history stays ordered by step (the skewed worker's points carry earlier
timestamps but later steps), the run's latest value is the one of the greatest step, and
audit rows of registry changes carry the database's time, not the worker's.

The worker is a child process whose ``time.time`` / ``time.time_ns`` run one hour behind
(patched in that process only, before anything is imported); everything else is real.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from faults.faults_support import read_until

from tracking_plugin.client import TrackingClient
from tracking_plugin.models._manifest import write_manifest
from tracking_plugin.store.db import Database
from tracking_plugin.store.sql import SqlStore

pytestmark = pytest.mark.slow

HOUR_MS = 3_600_000

SKEWED_WORKER = """
    import time
    _real_time, _real_ns = time.time, time.time_ns
    time.time = lambda: _real_time() - 3600
    time.time_ns = lambda: _real_ns() - 3600 * 10**9

    import os
    from tracking_plugin.client import TrackingClient

    client = TrackingClient(os.environ["FAULT_URI"], artifact_root=os.environ["FAULT_ARTIFACTS"])
    run_id = os.environ["FAULT_RUN"]
    for step in range(10, 20):
        client.log_metric(run_id, "loss", 1.0 / (step + 1), step=step)
    client.set_registered_model_alias("m", "champion", 2)
    client.transition_model_version_stage("m", 2, "Production")
    print("SKEWED_CLOCK_MS", int(time.time() * 1000), flush=True)
"""

MLMODEL = "artifact_path: model\nflavors:\n  python_function:\n    loader_module: tests.fake\n    python_version: 3.11.0\n"


def _model_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "MLmodel").write_text(MLMODEL)
    (path / "weights.bin").write_bytes(b"\1" * 64)
    write_manifest(path)
    return path


def test_a_worker_one_hour_behind_keeps_order_and_audit_time(db_uri: str, tmp_path: Path, child) -> None:  # type: ignore[no-untyped-def]
    Database(db_uri).upgrade()
    artifacts = str(tmp_path / "artifacts")
    client = TrackingClient(db_uri, artifact_root=artifacts)
    run_id = client.create_run(client.create_experiment("skew")).info.run_id
    for version in (1, 2):
        client.create_model_version("m", str(_model_dir(tmp_path / f"model{version}")))

    started_ms = int(time.time() * 1000)
    for step in range(10):
        client.log_metric(run_id, "loss", 1.0 / (step + 1), step=step)
    client.set_registered_model_alias("m", "champion", 1)

    worker = child(SKEWED_WORKER, cwd=tmp_path, FAULT_URI=db_uri, FAULT_RUN=run_id, FAULT_ARTIFACTS=artifacts)
    [line] = read_until(worker, "SKEWED_CLOCK_MS")
    assert worker.wait(60) == 0
    assert int(line.split()[1]) < started_ms - HOUR_MS + 60_000, "the worker's clock was not behind"

    for step in range(20, 30):
        client.log_metric(run_id, "loss", 1.0 / (step + 1), step=step)
    finished_ms = int(time.time() * 1000)

    history = client.get_metric_history(run_id, "loss")
    assert [m.step for m in history] == list(range(30))
    skewed = [m.timestamp for m in history if 10 <= m.step < 20]
    assert all(t < started_ms - HOUR_MS + 60_000 for t in skewed)  # the worker's own clock, as logged
    assert client.get_run(run_id).data.metrics["loss"] == pytest.approx(1.0 / 30)

    store = SqlStore(Database(db_uri))
    try:
        audit = store.get_model_history("m")
    finally:
        store.close()
    moves = [(r.kind, r.timestamp) for r in audit]
    assert len(audit) == 3, audit  # champion -> 1, champion -> 2, stage None -> Production
    misdated = [r for r in audit if not started_ms - 1000 <= r.timestamp <= finished_ms + 1000]
    assert misdated == [], f"audit rows not in database time: {misdated} (window {started_ms}..{finished_ms})"
    assert [r.timestamp for r in audit] == sorted(r.timestamp for r in audit), moves
