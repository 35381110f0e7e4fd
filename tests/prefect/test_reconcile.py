"""``reconcile_runs``: RUNNING tracking runs whose Prefect run ended without closing them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL
from prefect.states import Completed, Crashed, Running
from typer.testing import CliRunner

from tracking_plugin.entities import RunStatus
from tracking_plugin.reconcile import reconcile_runs

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@flow
def placeholder() -> None:
    """Only used to create flow runs through the client."""


def new_flow_run(state) -> str:  # type: ignore[no-untyped-def]
    with get_client(sync_client=True) as client:
        return str(client.create_flow_run(placeholder, state=state).id)


def running_run(client, experiment_id: str, **prefect_ids: str) -> str:  # type: ignore[no-untyped-def]
    return client.create_run(experiment_id, **prefect_ids).info.run_id


def test_runs_follow_their_prefect_flow_runs_final_state(tracking) -> None:
    exp = tracking.create_experiment("reconcile")
    crashed = running_run(tracking, exp, prefect_flow_run_id=new_flow_run(Crashed(message="OOM")))
    completed = running_run(tracking, exp, prefect_flow_run_id=new_flow_run(Completed()))
    still_running = running_run(tracking, exp, prefect_flow_run_id=new_flow_run(Running()))
    vanished = running_run(tracking, exp, prefect_flow_run_id=str(uuid.uuid4()))
    not_prefect = running_run(tracking, exp)

    changes = reconcile_runs()

    assert {c.run_id: (c.prefect_state, c.new_status) for c in changes} == {
        crashed: ("Crashed", RunStatus.KILLED),
        completed: ("Completed", RunStatus.FINISHED),
        vanished: ("Missing", RunStatus.KILLED),
    }
    status = {r: tracking.get_run(r).info.status for r in (crashed, completed, still_running, vanished, not_prefect)}
    assert status == {
        crashed: RunStatus.KILLED,
        completed: RunStatus.FINISHED,
        still_running: RunStatus.RUNNING,
        vanished: RunStatus.KILLED,
        not_prefect: RunStatus.RUNNING,
    }
    assert tracking.get_run(crashed).data.tags["prefect.state"] == "Crashed"
    assert tracking.get_run(crashed).info.end_time is not None
    assert reconcile_runs() == []  # idempotent


def test_dry_run_and_age_limit_change_nothing(tracking) -> None:
    exp = tracking.create_experiment("reconcile-dry")
    run_id = running_run(tracking, exp, prefect_flow_run_id=str(uuid.uuid4()))

    assert reconcile_runs(older_than_seconds=3600) == []  # too recent to touch
    [change] = reconcile_runs(dry_run=True)

    assert change.run_id == run_id and change.new_status is RunStatus.KILLED
    assert tracking.get_run(run_id).info.status is RunStatus.RUNNING


def test_cli_reconcile_command(tracking) -> None:
    exp = tracking.create_experiment("reconcile-cli")
    run_id = running_run(tracking, exp, prefect_flow_run_id=str(uuid.uuid4()))
    from prefect_mlops.deployments.cli import app

    result = CliRunner().invoke(app, ["reconcile"])

    assert result.exit_code == 0, result.output
    assert run_id in result.output and "1 run(s) reconciled" in result.output
    assert "-> KILLED" in result.output and "RunStatus" not in result.output
    assert tracking.get_run(run_id).info.status is RunStatus.KILLED


FLOW_SCRIPT = textwrap.dedent(
    """
    import time
    from prefect import flow, task
    from tracking_plugin.prefect import track

    @track
    @task
    def slow_step(i: int) -> dict:
        time.sleep(600)
        return {"i": i}

    @track(experiment="sigkilled")
    @flow
    def long_training(epochs: int = 100) -> None:
        slow_step(1)

    long_training()
    """
)


@pytest.mark.slow
def test_reconcile_after_the_flow_process_is_killed(tracking, tmp_path, runs_in) -> None:
    script = tmp_path / "long_flow.py"
    script.write_text(FLOW_SCRIPT)
    env = {
        **os.environ,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    process = subprocess.Popen([sys.executable, str(script)], env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while True:
            experiment = tracking.get_experiment_by_name("sigkilled")
            runs = tracking.search_runs([experiment.experiment_id]) if experiment else []
            if len(runs) == 2:  # the flow's run and the task's child run
                break
            assert process.poll() is None, "the flow process exited early"
            assert time.monotonic() < deadline, "the tracked flow did not start in time"
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(30)

    [flow_run, task_run] = sorted(runs_in(tracking, "sigkilled"), key=lambda r: r.info.parent_run_id or "")
    assert flow_run.info.status is RunStatus.RUNNING and task_run.info.status is RunStatus.RUNNING
    # What a worker or the server's zombie detection does when the process disappears.
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run.info.prefect_flow_run_id, Crashed(message="process killed"), force=True)

    changes = reconcile_runs()

    assert {c.run_id: c.new_status for c in changes} == {
        flow_run.info.run_id: RunStatus.KILLED,
        task_run.info.run_id: RunStatus.KILLED,  # its task run stays Running, its flow crashed
    }
    assert tracking.get_run(flow_run.info.run_id).info.status is RunStatus.KILLED
    assert tracking.get_run(task_run.info.run_id).info.status is RunStatus.KILLED
