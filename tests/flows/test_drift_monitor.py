"""``drift_monitor`` under the session's Prefect API: scores recorded on its tracking run,
``mlops.drift.detected`` emitted (read back from the Prefect API) only for a drifted batch,
corrupted batches quarantined, and clear failures without a champion or with bad settings."""

from __future__ import annotations

from typing import Any

import pytest

from prefect_mlops.flows.ct_pipeline import DataValidationFailed, ct_pipeline
from prefect_mlops.flows.data import FEATURE_COLUMNS
from prefect_mlops.flows.drift_monitor import DRIFT_DETECTED, drift_monitor
from tracking_plugin.errors import InvalidArgument, NotFound


def _flow_run_id(state: Any) -> str:
    return str(state.state_details.flow_run_id)


def _runs(backend: Any) -> list[Any]:
    client = backend.tracking()
    experiment = client.get_experiment_by_name("churn-drift-monitor")
    return sorted(client.search_runs([experiment.experiment_id]), key=lambda r: r.info.start_time)


@pytest.mark.slow
def test_drift_is_scored_recorded_and_announced_only_when_over_threshold(backend: Any, helpers: Any) -> None:
    trained = ct_pipeline(source=helpers.source(day=0), serve_port=None, return_state=True, **helpers.FAST)
    assert trained.is_completed(), trained.message

    # The next day, same distribution: scores recorded, no event.
    calm = drift_monitor(source=helpers.source(day=1), return_state=True)
    assert calm.is_completed(), calm.message
    calm_result = calm.result()
    assert calm_result["drifted"] == 0.0 and calm_result["champion_version"] == 1
    assert calm_result["drift_score"] < 0.2

    # A drifted day: over the PSI threshold, event emitted for the retraining trigger.
    source = helpers.source(day=2, drift=1.0)
    drifted = drift_monitor(source=source, return_state=True)
    assert drifted.is_completed(), drifted.message
    result = drifted.result()
    assert result["drifted"] == 1.0 and result["drift_score"] > 0.2 and result["drifted_features"] >= 1

    [event] = helpers.events_of(_flow_run_id(drifted), DRIFT_DETECTED)
    assert event.resource["prefect.resource.id"] == "mlops.model.churn"
    assert event.resource["mlops.model.name"] == "churn"
    assert event.resource["mlops.model.version"] == "1"
    assert event.payload["source"] == source
    assert event.payload["score"] == pytest.approx(result["drift_score"])
    assert "monthly_charges" in event.payload["features"]
    assert event.payload["thresholds"]["psi"] == 0.2
    assert any(r["prefect.resource.id"] == f"mlops.data.{source}" for r in event.related)
    assert helpers.count_events(_flow_run_id(calm), DRIFT_DETECTED) == 0

    # Both runs carry every feature's score; the drifted one says which features moved.
    calm_run, drift_run = _runs(backend)
    for run in (calm_run, drift_run):
        assert {f"drift/{c}" for c in FEATURE_COLUMNS} <= set(run.data.metrics)
        assert run.data.tags["model.version"] == "1"
    assert calm_run.data.tags["drift.drifted"] == "false"
    assert drift_run.data.tags["drift.drifted"] == "true"
    assert "monthly_charges" in drift_run.data.tags["drift.features"].split(",")
    assert drift_run.data.metrics["drift/monthly_charges"] > 0.2
    assert drift_run.data.metrics["drift_score"] == pytest.approx(result["drift_score"])
    assert "Drift detected" in helpers.artifacts_of(_flow_run_id(drifted))["drift-report"]

    # Thresholds are settings: the same batch under a looser PSI threshold is not drifted.
    loose = drift_monitor(source=source, psi_threshold=50.0, return_state=True).result()
    assert loose["drifted"] == 0.0

    # KS for numeric features flags it as well.
    ks = drift_monitor(source=source, method="ks", return_state=True).result()
    assert ks["drifted"] == 1.0

    # A corrupted batch is quarantined, not scored.
    corrupted = drift_monitor(source=helpers.source(day=3, corrupt=True), return_state=True)
    assert corrupted.is_failed()
    assert isinstance(corrupted.result(raise_on_failure=False), DataValidationFailed)
    assert len(list((backend.artifact_root / "quarantine").iterdir())) == 1
    assert "score-drift" not in helpers.task_runs_of(_flow_run_id(corrupted))


def test_without_a_champion_the_monitor_fails_saying_what_to_do(backend: Any, helpers: Any) -> None:
    state = drift_monitor(source=helpers.source(day=1), return_state=True)
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, NotFound) and "Run ct_pipeline first" in str(error)
    [load] = helpers.task_runs_of(_flow_run_id(state))["load-reference"]
    assert load.run_count == 1  # not a transient error: no retries


@pytest.mark.parametrize(
    ("settings", "says"),
    [({"method": "wasserstein"}, "wasserstein"), ({"psi_threshold": -1.0}, "psi=-1.0"),
     ({"share_of_features": 2.0}, "share_of_features=2.0")],
)
def test_bad_settings_fail_before_any_work(backend: Any, helpers: Any, settings: dict[str, Any], says: str) -> None:
    state = drift_monitor(source=helpers.source(day=1), **settings, return_state=True)
    error = state.result(raise_on_failure=False)
    assert isinstance(error, InvalidArgument) and says in str(error)
    assert helpers.task_runs_of(_flow_run_id(state)) == {}
