"""Run the pipeline's deployments locally, on their schedules, without a work pool.

    .venv/bin/python -m prefect_mlops.deployments.serve          # from the repository root; Ctrl-C to stop

The same four deployments as ``deployments/prefect.yaml`` (a test keeps them equal):
nightly retraining (cron, 02:00 UTC) and the hourly drift monitor, both on the batch of
the day they run for (``{date}`` in ``source``), and retraining triggered by
``mlops.drift.detected`` with the drifted batch as ``source``, and the weekly
``prefect-mlops gc`` (Sundays 03:00 UTC).
``prefect.serve`` registers them with the configured Prefect API and runs their flow
runs in subprocesses of this process, so the backend comes from this process's
``PREFECT_MLOPS_*`` environment. Schedules need a Prefect server with its scheduler
(``prefect server start`` and ``PREFECT_API_URL`` pointing at it, or Prefect Cloud);
Prefect's ephemeral API does not run one.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DAILY_SOURCE", "DRIFT_TRIGGER_PARAMETERS", "SERVE_PORT", "build_deployments", "main"]

#: The batch of the day a run is scheduled for (the flows fill in ``{date}``).
DAILY_SOURCE = "generator://churn?seed=0&date={date}"
#: Where the nightly retraining serves the champion (a parameter: override it per run).
SERVE_PORT = 5055

#: How the event-triggered retraining fills its parameters from the drift event.
DRIFT_TRIGGER_PARAMETERS = {
    "source": "{{ event.payload.source }}",
    "model_name": "{{ event.resource['mlops.model.name'] }}",
}


def build_deployments() -> list[Any]:
    """The ``RunnerDeployment`` objects :func:`main` serves (also used by the tests)."""
    from prefect.events import DeploymentEventTrigger
    from prefect.schedules import Cron, Interval

    from prefect_mlops.flows.ct_pipeline import ct_pipeline
    from prefect_mlops.flows.drift_monitor import DRIFT_DETECTED, drift_monitor
    from prefect_mlops.flows.gc import gc_flow

    return [
        ct_pipeline.to_deployment(
            name="nightly-retrain",
            description="Retrain on the day's batch every night; promote only through the gate.",
            schedules=[Cron("0 2 * * *", timezone="UTC")],
            parameters={"source": DAILY_SOURCE, "serve_port": SERVE_PORT},
        ),
        drift_monitor.to_deployment(
            name="drift-monitor",
            description="Compare the day's batch with the champion's training data every hour.",
            schedules=[Interval(3600)],
            parameters={"source": DAILY_SOURCE},
        ),
        ct_pipeline.to_deployment(
            name="retrain-on-drift",
            description="Retrain as soon as the drift monitor emits mlops.drift.detected.",
            triggers=[
                DeploymentEventTrigger(
                    expect={DRIFT_DETECTED},
                    match={"prefect.resource.id": "mlops.model.*"},
                    parameters=dict(DRIFT_TRIGGER_PARAMETERS),
                )
            ],
        ),
        gc_flow.to_deployment(
            name="weekly-gc",
            description="Permanently remove runs and experiments deleted over 30 days ago; registered models are kept.",
            schedules=[Cron("0 3 * * 0", timezone="UTC")],
            parameters={"older_than": "30d"},
        ),
    ]


def main() -> None:  # pragma: no cover - long-running
    """Serve the four deployments until interrupted."""
    from prefect import serve
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        print(
            "No PREFECT_API_URL: the ephemeral API has no scheduler, so only the drift trigger and "
            "manual runs will start. For the schedules run `prefect server start` and "
            "`prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api` first."
        )
    serve(*build_deployments())


if __name__ == "__main__":  # pragma: no cover
    main()
