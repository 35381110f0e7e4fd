"""What a tracked flow run shows in the Prefect UI: the params/metrics table and the
markdown note naming the tracking run (posted in the background), and the run events."""

from __future__ import annotations

import functools
import logging
import re
from typing import Any

from prefect.context import FlowRunContext

from tracking_plugin import _background
from tracking_plugin.entities import Run, RunStatus
from tracking_plugin.events import RUN_FAILED, RUN_FINISHED, emit, flow_run_resource, run_resource
from tracking_plugin.client import TrackingClient
from tracking_plugin.urls import redact_uri
from tracking_plugin.prefect._backends import _EXPERIMENT_NAMES

# One logger for the whole integration, as before the split (users filter on its name).
logger = logging.getLogger("tracking_plugin.prefect")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "flow"


def _create_artifacts(client: TrackingClient, run: Run, flow_run_id: str, flow_name: str | None) -> None:
    """A table of params and final metrics, and a markdown note naming the tracking run.

    Built here, posted by the background thread (``_background``: the flow does not wait
    for two API calls to show what the run already holds; ``flush()`` waits for them).
    Written through a new API client with the flow-run id given explicitly: the flow's own
    client may be closed by then, and crash and cancellation hooks may run outside any
    flow-run context (e.g. in a runner process).
    """
    try:
        from prefect.artifacts import Artifact, LinkArtifact, MarkdownArtifact, TableArtifact
        from prefect.client.schemas.actions import ArtifactCreate

        info = run.info
        # Metrics first: what the run achieved, before the (often dozens of autologged) params.
        rows: list[dict[str, Any]] = [
            {"kind": "metric", "name": k, "value": float(v)} for k, v in sorted(run.data.metrics.items())
        ]
        rows += [{"kind": "param", "name": k, "value": v} for k, v in sorted(run.data.params.items())]
        slug = _slug(flow_name or "flow")
        experiment_name = _EXPERIMENT_NAMES.get((client.tracking_uri, info.experiment_id))
        if experiment_name is None:
            experiment_name = client.get_experiment(info.experiment_id).name
        markdown = "\n".join(
            [
                f"### Tracking run `{info.run_id}`",
                "",
                "| | |",
                "|---|---|",
                f"| Run name | {info.run_name} |",
                f"| Experiment | {experiment_name} (id {info.experiment_id}) |",
                f"| Status | {info.status.value} |",
                f"| Parent run | {info.parent_run_id or '-'} |",
                f"| Artifact URI | `{info.artifact_uri}` |",
                f"| Tracking URI | `{redact_uri(client.tracking_uri)}` |",
                f"| Model URI prefix | `runs:/{info.run_id}/` |",
                "",
                "```python",
                "from tracking_plugin import TrackingClient",
                f'TrackingClient().get_run_by_prefect_id(flow_run_id="{flow_run_id}")',
                "```",
            ]
        )
        artifacts: list[Artifact] = [
            TableArtifact(
                key=f"{slug}-mlops-params-metrics",
                table=rows or [{"kind": "", "name": "", "value": ""}],
                description=f"Final metrics and params of tracking run `{info.run_id}`",
            ),
            MarkdownArtifact(
                key=f"{slug}-mlops-run",
                markdown=markdown,
                description=f"Tracking run {info.run_id} of this flow run",
            ),
        ]
        if client.tracking_uri.startswith(("http://", "https://")):
            artifacts.append(
                LinkArtifact(
                    key=f"{slug}-mlops-link",
                    link=f"{client.tracking_uri.rstrip('/')}/#/experiments/{info.experiment_id}/runs/{info.run_id}",
                    link_text=f"Tracking run {info.run_id}",
                )
            )
        creates = [
            ArtifactCreate(
                type=artifact.type,
                key=artifact.key,
                description=artifact.description,
                flow_run_id=flow_run_id,  # type: ignore[arg-type]
                data=artifact.format(_sync=True),  # type: ignore[call-arg]
            )
            for artifact in artifacts
        ]
    except Exception as exc:  # noqa: BLE001 - the UI view is a convenience, the run is recorded
        logger.warning("prefect-mlops: could not create the Prefect artifacts of run %s: %s", run.info.run_id, exc)
        return
    _background.submit(functools.partial(_post_artifacts, creates, run.info.run_id))


def _post_artifacts(creates: list[Any], run_id: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.context import SyncClientContext

    # This runs in a copy of the flow's context, whose API client is closed by now:
    # get_client() would hand it back. Only this copy changes.
    SyncClientContext.__var__.set(None)  # type: ignore[arg-type]
    try:
        with get_client(sync_client=True) as prefect_client:
            for create in creates:
                prefect_client.create_artifact(artifact=create)
    except Exception as exc:  # noqa: BLE001 - the UI view is a convenience, the run is recorded
        logger.warning("prefect-mlops: could not create the Prefect artifacts of run %s: %s", run_id, exc)


def _prefect_client() -> Any:
    """The running flow's sync API client if there is one (no new connection), else a new one."""
    import contextlib

    from prefect.client.orchestration import SyncPrefectClient, get_client

    running = getattr(FlowRunContext.get(), "client", None)
    if isinstance(running, SyncPrefectClient):
        return contextlib.nullcontext(running)
    return get_client(sync_client=True)


def _emit_run_event(
    client: TrackingClient,
    run: Run,
    flow_run_id: str,
    flow_run_name: str | None,
    flow_name: str | None,
    message: str | None,
) -> None:
    info = run.info
    event = RUN_FINISHED if info.status is RunStatus.FINISHED else RUN_FAILED
    emit(
        event,
        flow_run_resource(flow_run_id, name=flow_run_name),
        related=[
            {**run_resource(info.run_id, name=info.run_name, role="tracking-run"), "mlops.run.status": info.status.value},
            {
                "prefect.resource.id": f"mlops.experiment.{info.experiment_id}",
                "prefect.resource.role": "experiment",
            },
        ],
        payload={
            "run_id": info.run_id,
            "experiment_id": info.experiment_id,
            "status": info.status.value,
            "flow_name": flow_name,
            "message": message,
            "metrics": {k: float(v) for k, v in run.data.metrics.items()},
        },
    )
