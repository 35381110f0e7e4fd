"""``deployments/prefect.yaml`` is accepted by a real Prefect API (``prefect deploy --all``
onto a ``process`` work pool) and reads back with its schedules and trigger; the drift
event the monitor emits starts the event-triggered retraining with the drifted batch.
``deployments/serve.py`` builds the same four deployments (the fourth: the weekly gc)."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
POOL = "mlops-process"
NAMES = ("ct-pipeline/nightly-retrain", "drift-monitor/drift-monitor", "ct-pipeline/retrain-on-drift", "gc/weekly-gc")


def _delete_deployments(client: Any) -> None:
    from prefect.exceptions import ObjectNotFound

    for name in NAMES:
        try:
            deployment = client.read_deployment_by_name(name)
        except ObjectNotFound:
            continue
        # The trigger's automation too: later tests in this session emit drift events.
        for automation in _automations_of(client, deployment.id):
            client.delete_automation(automation.id)
        client.delete_deployment(deployment.id)


@pytest.fixture
def process_pool(prefect_harness: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The ``mlops-process`` work pool on the test API; deployments removed afterwards."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    monkeypatch.chdir(REPO_ROOT)  # prefect.yaml's entrypoints are relative to the repository
    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=POOL, type="process"))
        except ObjectAlreadyExists:
            pass
        _delete_deployments(client)
        yield client
        _delete_deployments(client)
        client.delete_work_pool(POOL)


def _automations_of(client: Any, deployment_id: Any) -> list[Any]:
    return [
        a for a in client.read_automations()
        if any(str(getattr(action, "deployment_id", "")) == str(deployment_id) for action in a.actions)
    ]


def test_prefect_deploy_accepts_the_project_file_and_reads_back(process_pool: Any) -> None:
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule
    from prefect.testing.cli import invoke_and_assert

    invoke_and_assert(
        ["--no-prompt", "deploy", "--all", "--prefect-file", "deployments/prefect.yaml"],
        expected_code=0,
    )
    client = process_pool

    nightly = client.read_deployment_by_name("ct-pipeline/nightly-retrain")
    assert nightly.work_pool_name == POOL and nightly.entrypoint == "flows/ct_pipeline.py:ct_pipeline"
    [schedule] = nightly.schedules
    assert isinstance(schedule.schedule, CronSchedule) and schedule.active
    assert schedule.schedule.cron == "0 2 * * *" and schedule.schedule.timezone == "UTC"
    assert nightly.parameters["serve_port"] == 5055
    # The parameter schema comes from the flow's signature: the UI and API check runs against it.
    assert {"source", "model_name", "gate", "serve_port"} <= set(nightly.parameter_openapi_schema["properties"])
    # No absolute path of the deploying machine: a worker runs the flows from its own checkout.
    [pull] = nightly.pull_steps
    assert pull["prefect.deployments.steps.set_working_directory"]["directory"] == "."
    assert str(REPO_ROOT) not in str(nightly.model_dump())
    # Both scheduled deployments take the batch of the day they run for.
    assert nightly.parameters["source"] == "generator://churn?seed=0&date={date}"

    monitor = client.read_deployment_by_name("drift-monitor/drift-monitor")
    assert monitor.work_pool_name == POOL and monitor.entrypoint == "flows/drift_monitor.py:drift_monitor"
    [schedule] = monitor.schedules
    assert isinstance(schedule.schedule, IntervalSchedule)
    assert schedule.schedule.interval == dt.timedelta(hours=1)
    assert monitor.parameters == {"source": "generator://churn?seed=0&date={date}"}

    on_drift = client.read_deployment_by_name("ct-pipeline/retrain-on-drift")
    assert on_drift.work_pool_name == POOL and on_drift.schedules == []
    [automation] = _automations_of(client, on_drift.id)
    trigger = automation.trigger
    assert automation.enabled
    assert trigger.expect == {"mlops.drift.detected"}
    assert trigger.match.model_dump()["prefect.resource.id"] == "mlops.model.*"
    [action] = automation.actions
    assert action.parameters == {
        "source": "{{ event.payload.source }}",
        "model_name": "{{ event.resource['mlops.model.name'] }}",
    }

    weekly_gc = client.read_deployment_by_name("gc/weekly-gc")
    assert weekly_gc.work_pool_name == POOL and weekly_gc.entrypoint == "flows/gc.py:gc_flow"
    [schedule] = weekly_gc.schedules
    assert isinstance(schedule.schedule, CronSchedule) and schedule.active
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("0 3 * * 0", "UTC")
    assert weekly_gc.parameters == {"older_than": "30d"}
    assert {"older_than", "keep_last", "quarantine_older_than", "dry_run"} <= set(
        weekly_gc.parameter_openapi_schema["properties"]
    )


def test_the_drift_event_starts_retraining_on_the_drifted_batch(process_pool: Any, helpers: Any) -> None:
    """The trigger's templates render from a real event into the new flow run's parameters."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.testing.cli import invoke_and_assert

    from tracking_plugin.events import emit

    invoke_and_assert(
        ["--no-prompt", "deploy", "--all", "--prefect-file", "deployments/prefect.yaml"], expected_code=0
    )
    client = process_pool
    on_drift = client.read_deployment_by_name("ct-pipeline/retrain-on-drift")
    source = f"s3://incoming/churn/{uuid.uuid4().hex}.parquet"
    # The triggers service picks the new automation up within seconds; until then an
    # event finds no trigger, so keep sending until the run appears.
    def started() -> list[Any]:
        emit(
            "mlops.drift.detected",
            {"prefect.resource.id": "mlops.model.churn-x", "mlops.model.name": "churn-x", "mlops.model.version": "3"},
            payload={"source": source, "score": 0.9},
        )
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[on_drift.id]))
        )

    [run, *_] = helpers.poll(started, timeout=90, what="a flow run of retrain-on-drift")
    assert run.parameters["source"] == source
    assert run.parameters["model_name"] == "churn-x"


def test_serve_builds_the_same_deployments_as_the_project_file(prefect_harness: None) -> None:
    import yaml
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule

    from prefect_mlops.deployments.serve import build_deployments

    by_name = {d.name: d for d in build_deployments()}
    assert set(by_name) == {"nightly-retrain", "drift-monitor", "retrain-on-drift", "weekly-gc"}
    project = {d["name"]: d for d in yaml.safe_load((REPO_ROOT / "deployments" / "prefect.yaml").read_text())["deployments"]}
    assert set(project) == set(by_name)
    for name, declared in project.items():
        built = by_name[name]
        assert built.entrypoint == declared["entrypoint"], name
        assert built.parameters == declared.get("parameters", {}), name
        assert built.description == declared["description"], name
        declared_schedules = declared.get("schedules", [])
        assert len(built.schedules) == len(declared_schedules), name
        for schedule, spec in zip(built.schedules, declared_schedules):
            if "cron" in spec:
                assert (schedule.schedule.cron, schedule.schedule.timezone) == (spec["cron"], spec["timezone"])
            else:
                assert schedule.schedule.interval == dt.timedelta(seconds=spec["interval"])
        declared_triggers = declared.get("triggers", [])
        assert len(built.triggers) == len(declared_triggers), name
        for trigger, spec in zip(built.triggers, declared_triggers):
            assert trigger.expect == set(spec["expect"])
            assert trigger.match.model_dump() == spec["match"]
            assert trigger.parameters == spec["parameters"]
    nightly, monitor, on_drift = by_name["nightly-retrain"], by_name["drift-monitor"], by_name["retrain-on-drift"]
    assert nightly.flow_name == on_drift.flow_name == "ct-pipeline" and monitor.flow_name == "drift-monitor"
    [schedule] = nightly.schedules
    assert isinstance(schedule.schedule, CronSchedule) and schedule.schedule.cron == "0 2 * * *"
    assert schedule.schedule.timezone == "UTC"
    [schedule] = monitor.schedules
    assert isinstance(schedule.schedule, IntervalSchedule) and schedule.schedule.interval == dt.timedelta(hours=1)
    assert not on_drift.schedules
    [trigger] = on_drift.triggers
    assert trigger.expect == {"mlops.drift.detected"}
    assert trigger.match.model_dump()["prefect.resource.id"] == "mlops.model.*"
    assert trigger.parameters == {
        "source": "{{ event.payload.source }}",
        "model_name": "{{ event.resource['mlops.model.name'] }}",
    }
    assert nightly.parameters == {"source": "generator://churn?seed=0&date={date}", "serve_port": 5055}


def test_a_scheduled_run_takes_the_batch_of_its_own_date(backend: Any, helpers: Any) -> None:
    """``{date}`` in ``source`` is the flow run's scheduled UTC date: a run scheduled for
    (or started late after) 2026-03-05 trains on that day's generator batch, and the
    tag data.source names the batch actually used."""
    from prefect.client.orchestration import get_client
    from prefect.states import Scheduled

    from prefect_mlops.flows.ct_pipeline import ct_pipeline
    from prefect_mlops.flows.data import source_from_uri

    when = dt.datetime(2026, 3, 5, 2, 0, tzinfo=dt.timezone.utc)
    state = Scheduled(scheduled_time=when)
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name("ct-pipeline")
        flow_run = client.create_flow_run(ct_pipeline, parameters={"source": "x"}, state=state)
    assert flow_run.expected_start_time == when and flow_id
    # The flow reads its scheduled date from the run context; run it directly under that run.
    from prefect.flow_engine import run_flow

    final = run_flow(
        ct_pipeline, flow_run=flow_run,
        parameters={"source": "generator://churn?seed=0&n_rows=1500&date={date}", "serve_port": None, **helpers.FAST},
        return_type="state",
    )
    assert final.is_completed(), final.message
    version = backend.registry().get_version("churn", 1)
    assert version.tags["data.source"] == "generator://churn?seed=0&n_rows=1500&date=2026-03-05"
    assert source_from_uri(version.tags["data.source"]).day == 63  # 2026-01-01 + 63 days
