"""Prefect events emitted by prefect-mlops, and the one helper that sends them.

Event names (deployment triggers match on them)::

    mlops.run.finished      a tracked flow run's tracking run ended FINISHED
    mlops.run.failed        ... ended FAILED or KILLED
    mlops.model.registered  a model version was registered        (registry_tasks)
    mlops.model.promoted    an alias/stage moved to a version       (registry_tasks)
    mlops.model.rolled_back an alias moved back                     (registry_tasks)
    mlops.drift.detected    data drift crossed its threshold        (flows)

Resources follow Prefect's convention: a dict with ``prefect.resource.id`` (here
``mlops.run.<run_id>``, ``mlops.model.<name>``, ...) and optional ``prefect.resource.name``
and ``prefect.resource.role`` (for related resources). Sending an event never fails the
caller: telemetry must not break a training flow, so errors become a logged warning.

>>> from tracking_plugin.events import emit, run_resource
>>> emit("mlops.run.finished", run_resource("0123abcd", name="my-run"))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = [
    "DRIFT_DETECTED",
    "MODEL_PROMOTED",
    "MODEL_REGISTERED",
    "MODEL_ROLLED_BACK",
    "PERFORMANCE_DEGRADED",
    "RUN_FAILED",
    "RUN_FINISHED",
    "emit",
    "flow_run_resource",
    "run_resource",
]

logger = logging.getLogger(__name__)

# Every event we emit; deployment triggers (deployments/prefect.yaml) match these names.
RUN_FINISHED = "mlops.run.finished"
RUN_FAILED = "mlops.run.failed"
MODEL_REGISTERED = "mlops.model.registered"
MODEL_PROMOTED = "mlops.model.promoted"
MODEL_ROLLED_BACK = "mlops.model.rolled_back"
DRIFT_DETECTED = "mlops.drift.detected"
PERFORMANCE_DEGRADED = "mlops.performance.degraded"


def run_resource(run_id: str, *, name: str | None = None, role: str | None = None) -> dict[str, str]:
    """The resource dict naming a tracking run (``mlops.run.<run_id>``)."""
    resource = {"prefect.resource.id": f"mlops.run.{run_id}"}
    if name:
        resource["prefect.resource.name"] = name
    if role:
        resource["prefect.resource.role"] = role
    return resource


def flow_run_resource(flow_run_id: str, *, name: str | None = None, role: str = "flow-run") -> dict[str, str]:
    """The resource dict of a Prefect flow run, as Prefect itself names it."""
    resource = {"prefect.resource.id": f"prefect.flow-run.{flow_run_id}", "prefect.resource.role": role}
    if name:
        resource["prefect.resource.name"] = name
    return resource


def _as_strings(resource: dict[str, Any]) -> dict[str, str]:
    # Prefect resources are string -> string; a stray int/UUID would fail validation.
    return {str(k): str(v) for k, v in resource.items() if v is not None}


def emit(
    event: str,
    resource: dict[str, Any],
    related: list[dict[str, Any]] | None = None,
    payload: dict[str, Any] | None = None,
) -> Any:
    """Send a Prefect event; return the emitted ``Event`` or None if it was not sent.

    Never raises: a missing Prefect API, a bad resource or an unserializable payload is
    logged as a warning and the caller carries on.
    """
    try:
        from prefect.events import emit_event

        return emit_event(
            event=event,
            resource=_as_strings(resource),
            related=[_as_strings(r) for r in related] if related else None,
            payload=payload,
        )
    except Exception as exc:  # noqa: BLE001 - events are best effort by contract
        logger.warning("Could not emit Prefect event %r: %s", event, exc)
        return None
