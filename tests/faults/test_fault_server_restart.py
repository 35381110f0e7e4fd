"""Fault 4: the tracking server is SIGKILLed and started again on the same port while four
client processes log through it with our HTTP client (``http://`` tracking URI).

Promise: the clients wait the restart out (retries with backoff, bounded by
``PREFECT_MLOPS_RETRY_DEADLINE``), none of their calls fails, and the metric histories
hold every point once: 0 lost, 0 duplicated. A ``log-batch`` whose answer was lost with
the server is sent again; the server skips the points already stored (identical key,
value, timestamp and step), which is what makes the replay harmless.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from faults.faults_support import read_until
from support import free_port

from tracking_plugin.client import TrackingClient

pytestmark = pytest.mark.slow

CONSOLE_SCRIPT = str(Path(sys.executable).with_name("prefect-mlops"))
CLIENTS = 4
BATCHES = 120
POINTS_PER_BATCH = 50

CLIENT = """
    import os, sys, time
    from tracking_plugin.client import TrackingClient
    from tracking_plugin.entities import Metric

    client = TrackingClient(os.environ["FAULT_URL"])
    run_id = os.environ["FAULT_RUN"]
    base = 1_700_000_000_000
    print("STARTED", flush=True)
    for batch in range({batches}):
        steps = range(batch * {points}, (batch + 1) * {points})
        client.log_batch(run_id, [Metric("x", float(s), base + s, s) for s in steps])
        time.sleep(0.02)
    print("DONE", flush=True)
"""


class RestartableServer:
    """``prefect-mlops server`` on a fixed port, which the test kills and starts again."""

    def __init__(self, db_uri: str, artifact_root: str, log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [CONSOLE_SCRIPT, "server", "--backend-store-uri", db_uri,
                     "--default-artifact-root", artifact_root, "--port", str(self.port)]
        self.log_dir = log_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = self.log_dir / f"server-{self.starts}.log"
        with log.open("wb") as out:
            self.process = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while True:
            assert self.process.poll() is None, log.read_text()
            try:
                if httpx.get(self.url + "/health", timeout=1).text == "OK":
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"server not healthy in 90 s:\n{log.read_text()}"
            time.sleep(0.1)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@pytest.fixture(params=["sqlite", "postgres"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RestartableServer]:
    if request.param == "sqlite":
        db_uri = f"sqlite:///{tmp_path / 'mlops.db'}"
    else:
        from support import create_pg_database

        db_uri = create_pg_database(request.getfixturevalue("pg_server"))
    srv = RestartableServer(db_uri, str(tmp_path / "artifacts"), tmp_path)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def test_clients_ride_out_a_server_restart_with_nothing_lost_or_doubled(server: RestartableServer, tmp_path: Path, child) -> None:  # type: ignore[no-untyped-def]
    client = TrackingClient(server.url)
    experiment_id = client.create_experiment("server-restart")
    run_ids = [client.create_run(experiment_id).info.run_id for _ in range(CLIENTS)]
    client.close()

    code = CLIENT.format(batches=BATCHES, points=POINTS_PER_BATCH)
    workers = [
        child(code, cwd=tmp_path, FAULT_URL=server.url, FAULT_RUN=run_id, PREFECT_MLOPS_RETRY_DEADLINE="90")
        for run_id in run_ids
    ]
    for worker in workers:
        read_until(worker, "STARTED")
    time.sleep(0.8)  # mid-way through their batches
    assert all(w.poll() is None for w in workers), "the clients finished before the kill"
    server.kill()
    time.sleep(0.5)
    server.start()

    outcomes = []
    for worker in workers:
        out, err = worker.communicate(timeout=180)
        outcomes.append((worker.returncode, out.strip().splitlines()[-1:], err[-2000:]))
    assert [o[:2] for o in outcomes] == [(0, ["DONE"])] * CLIENTS, outcomes

    total = BATCHES * POINTS_PER_BATCH
    reader = TrackingClient(server.url)
    for run_id in run_ids:
        steps = [m.step for m in reader.get_metric_history(run_id, "x")]
        lost = sorted(set(range(total)) - set(steps))
        duplicated = len(steps) - len(set(steps))
        assert (len(lost), duplicated) == (0, 0), f"run {run_id}: {len(lost)} lost, {duplicated} duplicated"
    assert server.starts == 2
