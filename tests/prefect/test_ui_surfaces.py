"""What a tracked flow run shows in Prefect: artifacts naming the tracking run, and events
that deployment triggers can react to. Read back through the Prefect client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from support import prefect_artifacts
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

from tracking_plugin import fluent
from tracking_plugin.entities import RunStatus
from tracking_plugin.prefect import track


@track(experiment="ui-surfaces")
@flow
def scored(alpha: float = 0.5, fail: bool = False) -> dict[str, float]:
    fluent.log_metric("explicit", 1.5)
    if fail:
        raise RuntimeError("model diverged")
    return {"rmse": 0.25}


def artifacts_of(flow_run_id: str) -> dict[str, object]:
    """type -> the flow run's artifact of that type."""
    return {a.type: a for a in prefect_artifacts(flow_run_id)}


def events_named(name: str, flow_run_id: str) -> list[object]:
    with get_client(sync_client=True) as client:
        page = client.read_events(
            filter=EventFilter(
                event=EventNameFilter(name=[name]),
                resource=EventResourceFilter(id=[f"prefect.flow-run.{flow_run_id}"]),
            ),
            limit=10,
        )
    return list(page.events)


def test_flow_run_gets_a_params_metrics_table_and_a_note_naming_the_run(tracking, runs_in) -> None:
    state = scored(alpha=0.1, return_state=True)
    flow_run_id = str(state.state_details.flow_run_id)
    [run] = runs_in(tracking, "ui-surfaces")

    artifacts = artifacts_of(flow_run_id)

    table = artifacts["table"]
    rows = table.data if isinstance(table.data, list) else json.loads(table.data)
    assert {"kind": "param", "name": "alpha", "value": "0.1"} in rows
    assert {"kind": "metric", "name": "rmse", "value": 0.25} in rows
    assert {"kind": "metric", "name": "explicit", "value": 1.5} in rows
    # Metrics first, then params: what the run achieved is not buried under estimator params.
    kinds = [row["kind"] for row in rows]
    assert kinds == sorted(kinds, key=["metric", "param"].index) and kinds[0] == "metric"
    assert table.key == "scored-mlops-params-metrics"
    note = artifacts["markdown"]
    # ... and back: the Prefect flow run names its tracking run.
    assert run.info.run_id in note.data and "FINISHED" in note.data and flow_run_id in note.data


_EXITS_RIGHT_AFTER = """
import json, sys
from prefect import flow
from tracking_plugin.prefect import track

@track(experiment="exits-right-after")
@flow
def quick() -> dict[str, float]:
    return {"rmse": 0.5}

state = quick(return_state=True)
print(json.dumps({"flow_run_id": str(state.state_details.flow_run_id)}))
"""  # no flush(): the process ends as soon as the flow returns


def test_artifacts_are_posted_after_the_flow_returns_and_before_the_process_exits(
    tracking, runs_in, tmp_path
) -> None:
    """The flow does not wait for its two artifact API calls: a background thread posts
    them. ``flush()`` waits for them, and a process that ends right after the flow still
    posts them (an exit hook waits) to the same API."""
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    done = subprocess.run(
        [sys.executable, "-c", _EXITS_RIGHT_AFTER], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    flow_run_id = json.loads(done.stdout.strip().splitlines()[-1])["flow_run_id"]
    [run] = runs_in(tracking, "exits-right-after")
    with get_client(sync_client=True) as client:  # read without flush(): this process posted nothing
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    assert {a.key for a in found} == {"quick-mlops-params-metrics", "quick-mlops-run"}
    assert any(run.info.run_id in str(a.data) for a in found)
    assert "could not create" not in done.stderr


def test_finished_and_failed_events_carry_the_tracking_run(tracking, runs_in, wait_until) -> None:
    ok = scored(return_state=True)
    failed = scored(fail=True, return_state=True)
    assert failed.is_failed()
    ok_id, failed_id = str(ok.state_details.flow_run_id), str(failed.state_details.flow_run_id)
    runs = {r.info.prefect_flow_run_id: r for r in runs_in(tracking, "ui-surfaces")}
    assert runs[failed_id].info.status is RunStatus.FAILED

    [finished_event] = wait_until(lambda: events_named("mlops.run.finished", ok_id))
    [failed_event] = wait_until(lambda: events_named("mlops.run.failed", failed_id))

    for event, flow_run_id in ((finished_event, ok_id), (failed_event, failed_id)):
        run = runs[flow_run_id]
        related = {r.id: r for r in event.related}
        tracking_run = related[f"mlops.run.{run.info.run_id}"]
        assert tracking_run.role == "tracking-run"
        assert event.payload["run_id"] == run.info.run_id
    assert failed_event.payload["status"] == "FAILED"
    assert "model diverged" in failed_event.payload["message"]
    assert finished_event.payload["metrics"] == {"rmse": 0.25, "explicit": 1.5}


@pytest.fixture
def wait_until():  # type: ignore[no-untyped-def]
    """Poll until the predicate is truthy: events reach the API asynchronously."""

    def poll(predicate, timeout: float = 30.0):  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while not (value := predicate()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no matching event within {timeout} s")
            time.sleep(0.2)
        return value

    return poll
