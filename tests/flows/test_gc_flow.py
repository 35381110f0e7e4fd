"""``gc_flow``: prefect-mlops gc as a Prefect flow run (the weekly ``gc/weekly-gc``
deployment), on a batch the pipeline really quarantined: kept within the policy, removed
past it, with a ``gc-report`` table artifact on the flow run."""

from __future__ import annotations

import time
from typing import Any

from prefect_mlops.flows.ct_pipeline import ct_pipeline
from prefect_mlops.flows.gc import gc_flow
from tracking_plugin.entities import RunStatus


def test_gc_flow_removes_deleted_runs_and_keeps_quarantine_within_its_policy(backend: Any, helpers: Any) -> None:
    rejected = ct_pipeline(source=helpers.source(day=3, corrupt=True), serve_port=None, **helpers.FAST, return_state=True)
    assert rejected.is_failed()
    [folder] = list((backend.artifact_root / "quarantine").iterdir())
    quarantined = sorted(p.name for p in folder.iterdir())
    client = backend.tracking()
    exp = client.create_experiment("gc-flow")
    run_id = client.create_run(exp).info.run_id
    client.log_text(run_id, "z" * 300, "z.txt")
    client.set_terminated(run_id, RunStatus.FINISHED)
    client.delete_run(run_id)
    time.sleep(1.1)  # quarantine folders are stamped to the second

    state = gc_flow(older_than="0s", quarantine_older_than="7d", return_state=True)
    summary = state.result()
    assert (summary["runs_removed"], summary["quarantine_removed"]) == (1, 0)
    assert summary["bytes_removed"] == 300
    assert sorted(p.name for p in folder.iterdir()) == quarantined  # within the policy: kept
    report = helpers.artifacts_of(str(state.state_details.flow_run_id))["gc-report"]
    assert run_id in report and "keep" not in report

    later = gc_flow(older_than="0s", quarantine_older_than="1s")
    assert later["quarantine_removed"] == 1 and later["removed"][0]["id"] == str(folder)
    assert not folder.exists() or not any(folder.iterdir())
