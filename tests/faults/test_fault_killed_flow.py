"""Fault 7: a tracked flow's process SIGKILLed in the middle of its run.

Promise: ``prefect-mlops reconcile`` closes the orphaned tracking run (KILLED, as its
Prefect flow run crashed), and every metric point the flow's buffer had flushed before the
kill is stored.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from faults.faults_support import PROJECT_ROOT, read_until
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL
from prefect.states import Crashed

from tracking_plugin.entities import RunStatus

pytestmark = pytest.mark.slow

FLUSHED = 3_000

FLOW = """
    import time
    from prefect import flow
    import tracking_plugin as mlops
    from tracking_plugin.prefect import track

    @track(experiment="killed-flow")
    @flow
    def training(epochs: int = 10_000) -> None:
        for step in range({flushed}):
            mlops.log_metric("loss", 1.0 / (step + 1), step=step, synchronous=False)
        mlops.flush()
        print("FLUSHED", flush=True)
        for step in range({flushed}, epochs):  # buffered, never flushed: lost with the process
            mlops.log_metric("loss", 1.0 / (step + 1), step=step, synchronous=False)
        time.sleep(600)

    training()
"""


def test_reconcile_closes_a_killed_flows_run_and_flushed_points_stay(tracking, tmp_path: Path, child, runs_in) -> None:  # type: ignore[no-untyped-def]
    env = {
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "PREFECT_MLOPS_TRACKING_URI": os.environ["PREFECT_MLOPS_TRACKING_URI"],
        "PREFECT_MLOPS_ARTIFACT_ROOT": os.environ["PREFECT_MLOPS_ARTIFACT_ROOT"],
        # A long interval: nothing is written in the background before the kill but what
        # the flow flushed itself.
        "PREFECT_MLOPS_ASYNC_FLUSH_INTERVAL": "600",
        "PREFECT_MLOPS_ASYNC_BATCH_SIZE": "1000000",
    }
    process = child(FLOW.format(flushed=FLUSHED), cwd=tmp_path, **env)
    read_until(process, "FLUSHED")
    process.send_signal(signal.SIGKILL)
    process.wait(30)

    [run] = runs_in(tracking, "killed-flow")
    assert run.info.status is RunStatus.RUNNING
    # What a worker or the server's zombie detection does when the process disappears.
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run.info.prefect_flow_run_id, Crashed(message="process killed"), force=True)

    result = subprocess.run(
        [str(Path(sys.executable).parent / "prefect-mlops"), "reconcile"],
        env={**os.environ, **env, "PYTHONPATH": str(PROJECT_ROOT)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert run.info.run_id in result.stdout and "-> KILLED" in result.stdout

    closed = tracking.get_run(run.info.run_id)
    assert closed.info.status is RunStatus.KILLED and closed.info.end_time is not None
    steps = [m.step for m in tracking.get_metric_history(run.info.run_id, "loss")]
    lost = sorted(set(range(FLUSHED)) - set(steps))
    assert lost == [], f"{len(lost)} flushed points are missing (first: {lost[:5]})"
    assert steps[:FLUSHED] == list(range(FLUSHED))
