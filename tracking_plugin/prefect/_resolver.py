"""The run resolver the fluent API asks when no run is active: the current Prefect flow
or task run -> its tracking run, in the flow's backend (threads and Dask workers alike)."""

from __future__ import annotations

import logging
from typing import Any

from prefect.context import FlowRunContext, TaskRunContext

from tracking_plugin import _context
from tracking_plugin.errors import MlopsError
from tracking_plugin.client import TrackingClient
from tracking_plugin.prefect._backends import _OPEN, _RUN_IDS, _SPEC_ATTR, _client_for_run, _remember
from tracking_plugin.prefect._ui import _prefect_client

# One logger for the whole integration, as before the split (users filter on its name).
logger = logging.getLogger("tracking_plugin.prefect")


# ---------------------------------------------------------------- run resolver


def _tracked_ancestor_run_id(client: TrackingClient, parent_task_run_id: str) -> str | None:
    """For a subflow started outside its parent's context: the parent flow run's run."""
    try:
        with _prefect_client() as prefect_client:
            parent_flow_run_id = prefect_client.read_task_run(parent_task_run_id).flow_run_id
    except Exception as exc:  # noqa: BLE001 - without it the run is top-level, not lost
        logger.debug("prefect-mlops: could not read parent task run %s: %s", parent_task_run_id, exc)
        return None
    if parent_flow_run_id is None:
        return None
    run = client.get_run_by_prefect_id(flow_run_id=str(parent_flow_run_id))
    return run.info.run_id if run is not None else None


def _run_id_for_flow_run(flow_run_id: str, flow_ctx: Any, client: TrackingClient) -> str | None:
    """The tracking run of a flow run, looked up in ``client``'s backend (cached)."""
    key = f"flow:{flow_run_id}"
    if key in _RUN_IDS:
        return _RUN_IDS[key]
    flow = getattr(flow_ctx, "flow", None) if flow_ctx is not None else None
    spec = getattr(getattr(flow, "fn", None), _SPEC_ATTR, None)
    if flow is not None and spec is None:
        _remember(key, None)  # an untracked flow: nothing to attach to
        return None
    run = client.get_run_by_prefect_id(flow_run_id=flow_run_id)
    run_id = run.info.run_id if run is not None else None
    _remember(key, run_id)
    return run_id


def current_tracking_run_id() -> str | None:
    """The tracking run of the current Prefect flow run (or tracked task run), or None.

    Works in the flow, in its tasks' threads and in Dask worker processes: it reads the
    Prefect run context (not a process global) and looks the run up by its Prefect id, in
    the flow's backend (see the module's notes on backends).
    """
    resolved = _current_tracking_run()
    return resolved[0] if resolved is not None else None


def _current_tracking_run() -> tuple[str, TrackingClient] | None:
    """(run id, client of its backend) for the current Prefect run; the resolver the fluent
    API asks when no run is active."""
    task_ctx = TaskRunContext.get()
    flow_ctx = FlowRunContext.get()
    if task_ctx is None and flow_ctx is None:
        return None
    flow = getattr(flow_ctx, "flow", None) if flow_ctx is not None else None
    spec = getattr(getattr(flow, "fn", None), _SPEC_ATTR, None)
    if task_ctx is not None:
        task_run = task_ctx.task_run
        key = f"task:{task_run.id}"
        own = _RUN_IDS.get(key)
        if own:
            return own, _OPEN.get(key) or _client_for_run(None, task_run)
        flow_run_id = task_run.flow_run_id
        client = _client_for_run(spec, task_run)
    else:
        assert flow_ctx is not None
        flow_run_id = flow_ctx.flow_run.id if flow_ctx.flow_run is not None else None
        client = _client_for_run(spec, flow_ctx.flow_run)
    if flow_run_id is None:
        return None
    try:
        run_id = _run_id_for_flow_run(str(flow_run_id), flow_ctx, client)
    except MlopsError as exc:
        logger.warning("prefect-mlops: could not find the tracking run of flow run %s: %s", flow_run_id, exc)
        return None
    return (run_id, client) if run_id is not None else None


_context.register_run_resolver(_current_tracking_run)
