"""Close tracking runs left RUNNING by a Prefect flow run that ended without telling us.

A flow process killed with SIGKILL (OOM killer, node loss, ``kill -9``) never runs its
``finally`` blocks or Prefect hooks, so its tracking run would stay RUNNING forever.
:func:`reconcile_runs` compares every RUNNING run that carries a Prefect flow-run or
task-run id with the Prefect API and sets the status the final Prefect state implies:

==========================  ==========
Prefect state               run status
==========================  ==========
Completed                   FINISHED
Failed                      FAILED
Crashed, Cancelled          KILLED
flow run no longer exists   KILLED
task run not final, but
its flow run is final       KILLED
anything else (Running...)  unchanged
==========================  ==========

Run it on a schedule (``prefect-mlops reconcile``, or as a small Prefect deployment)::

    from tracking_plugin.reconcile import reconcile_runs

    for change in reconcile_runs(older_than_seconds=300):
        print(change.run_id, change.prefect_state, "->", change.new_status)
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any, Iterable, Iterator
from uuid import UUID

from tracking_plugin.entities import Run, RunStatus, RunTag, ViewType
from tracking_plugin.errors import BackendUnavailable
from tracking_plugin.tags import TAG_PREFECT_STATE, TAG_STATE_MESSAGE

if TYPE_CHECKING:
    from tracking_plugin.client import TrackingClient

__all__ = ["ReconciledRun", "reconcile_runs"]

logger = logging.getLogger(__name__)

_CHUNK = 200  # ids per Prefect API filter request
_MISSING = "Missing"
_STATE_TO_STATUS = {
    "COMPLETED": RunStatus.FINISHED,
    "FAILED": RunStatus.FAILED,
    "CRASHED": RunStatus.KILLED,
    "CANCELLED": RunStatus.KILLED,
}


@dataclasses.dataclass(frozen=True)
class ReconciledRun:
    """One run whose status was (or, with ``dry_run``, would be) changed."""

    run_id: str
    prefect_id: str  # the flow-run id, or the task-run id for a tracked task's child run
    prefect_state: str  # e.g. "Crashed", "Completed", "Missing"
    new_status: RunStatus


def _running_prefect_runs(client: TrackingClient, started_before_ms: int) -> Iterator[Run]:
    experiment_ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL, max_results=50_000)]
    if not experiment_ids:
        return
    token: str | None = None
    while True:
        page = client.search_runs(
            experiment_ids,
            filter_string=f"status = 'RUNNING' and start_time <= {started_before_ms}",
            run_view_type=ViewType.ALL,
            max_results=1000,
            page_token=token,
        )
        for run in page:
            if run.info.prefect_flow_run_id or run.info.prefect_task_run_id:
                yield run
        token = page.token
        if not token:
            return


def _chunks(ids: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]


def _valid_uuids(ids: Iterable[str]) -> list[str]:
    valid = []
    for value in ids:
        try:
            UUID(value)
        except ValueError:
            continue
        valid.append(value)
    return valid


def _flow_run_states(prefect_client: Any, ids: list[str]) -> dict[str, Any]:
    """flow-run id -> its current state (ids Prefect does not know are absent)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    states: dict[str, Any] = {}
    for chunk in _chunks(_valid_uuids(ids)):
        flow_runs = prefect_client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(i) for i in chunk])), limit=len(chunk)
        )
        states.update({str(fr.id): fr.state for fr in flow_runs})
    return states


def _task_runs(prefect_client: Any, ids: list[str]) -> dict[str, Any]:
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterId

    found: dict[str, Any] = {}
    for chunk in _chunks(_valid_uuids(ids)):
        task_runs = prefect_client.read_task_runs(
            task_run_filter=TaskRunFilter(id=TaskRunFilterId(any_=[UUID(i) for i in chunk])), limit=len(chunk)
        )
        found.update({str(tr.id): tr for tr in task_runs})
    return found


def _final(state: Any) -> bool:
    return state is not None and state.type.value in _STATE_TO_STATUS


def reconcile_runs(
    *,
    older_than_seconds: float = 0.0,
    dry_run: bool = False,
    client: TrackingClient | None = None,
) -> list[ReconciledRun]:
    """Close RUNNING tracking runs whose Prefect flow (or task) run has ended.

    Args:
        older_than_seconds: only look at runs started at least this long ago (leave a
            margin for runs whose flow is just starting).
        dry_run: report what would change without writing.
        client: the tracking backend (default: from settings / ``PREFECT_MLOPS_*``).

    Returns:
        The runs changed (or that would be), oldest first.

    Raises:
        BackendUnavailable: the Prefect API cannot be reached (nothing is changed: a run
            whose flow state is unknown is never closed).
    """
    if client is None:
        from tracking_plugin.client import TrackingClient

        client = TrackingClient()
    from prefect.client.orchestration import get_client

    cutoff = int((time.time() - older_than_seconds) * 1000)
    runs = sorted(_running_prefect_runs(client, cutoff), key=lambda r: r.info.start_time)
    if not runs:
        return []
    flow_ids = [r.info.prefect_flow_run_id for r in runs if r.info.prefect_flow_run_id]
    task_ids = [r.info.prefect_task_run_id for r in runs if r.info.prefect_task_run_id and not r.info.prefect_flow_run_id]

    try:
        with get_client(sync_client=True) as prefect_client:
            tasks = _task_runs(prefect_client, task_ids)
            task_flow_ids = [str(t.flow_run_id) for t in tasks.values() if t.flow_run_id is not None]
            flow_states = _flow_run_states(prefect_client, sorted(set(flow_ids) | set(task_flow_ids)))
    except Exception as exc:
        raise BackendUnavailable(
            f"Could not read flow runs from the Prefect API ({type(exc).__name__}: {exc}). Check "
            "PREFECT_API_URL; no tracking run was changed."
        ) from exc

    changes: list[ReconciledRun] = []
    for run in runs:
        info = run.info
        decision = _decide(info.prefect_flow_run_id, info.prefect_task_run_id, flow_states, tasks)
        if decision is None:
            continue
        prefect_id, state_name, status = decision
        change = ReconciledRun(info.run_id, prefect_id, state_name, status)
        changes.append(change)
        if dry_run:
            continue
        client.log_batch(
            info.run_id,
            tags=[
                RunTag(TAG_PREFECT_STATE, state_name),
                RunTag(TAG_STATE_MESSAGE, f"Reconciled: the Prefect run is {state_name}."),
            ],
        )
        client.set_terminated(info.run_id, status)
        logger.info("Reconciled run %s: Prefect %s -> %s", info.run_id, state_name, status.value)
    return changes


def _decide(
    flow_run_id: str | None,
    task_run_id: str | None,
    flow_states: dict[str, Any],
    tasks: dict[str, Any],
) -> tuple[str, str, RunStatus] | None:
    if flow_run_id:
        if flow_run_id not in flow_states:
            return flow_run_id, _MISSING, RunStatus.KILLED
        state = flow_states[flow_run_id]
        if _final(state):
            return flow_run_id, state.name, _STATE_TO_STATUS[state.type.value]
        return None
    assert task_run_id is not None
    task_run = tasks.get(task_run_id)
    if task_run is None:
        return task_run_id, _MISSING, RunStatus.KILLED
    if _final(task_run.state):
        return task_run_id, task_run.state.name, _STATE_TO_STATUS[task_run.state.type.value]
    parent_state = flow_states.get(str(task_run.flow_run_id)) if task_run.flow_run_id else None
    if task_run.flow_run_id is not None and str(task_run.flow_run_id) not in flow_states:
        return task_run_id, f"flow run {_MISSING}", RunStatus.KILLED
    if parent_state is not None and _final(parent_state):
        return task_run_id, f"flow run {parent_state.name}", RunStatus.KILLED
    return None
