"""``/api/2.0/mlflow/metrics/*``: a metric's full history (paged) and sampled histories."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from tracking_plugin.errors import InvalidArgument
from tracking_plugin.store.sql import SqlStore

from serving_tasks.tracking_server import wire
from serving_tasks.tracking_server.deps import get_store
from serving_tasks.tracking_server.routing import OrjsonRoute

router = APIRouter(prefix="/api/2.0/mlflow/metrics", tags=["metrics"], route_class=OrjsonRoute)
Store = Annotated[SqlStore, Depends(get_store)]

MAX_BULK_RUNS = 100
MAX_BULK_RESULTS = 1000
DEFAULT_BULK_RESULTS = 320


@router.get("/get-history")
def get_metric_history(
    store: Store,
    metric_key: Annotated[str, Query()],
    run_id: str | None = None,
    run_uuid: str | None = None,
    max_results: Annotated[int | None, Query(ge=1)] = None,
    page_token: str | None = None,
) -> Response:
    target = run_id or run_uuid
    if not target:
        raise InvalidArgument("Missing value for required parameter 'run_id'.")
    steps, timestamps, values, token = store.get_metric_history_columns(
        target, metric_key, max_results=max_results, page_token=page_token or None
    )
    out: dict[str, Any] = {
        "metrics": [
            {"key": metric_key, "value": v, "timestamp": t, "step": s}
            for v, t, s in zip(wire.floats_out(values), timestamps, steps)
        ]
    }
    if token:
        out["next_page_token"] = token
    return wire.json_response(out)


@router.get("/get-history-bulk-interval")
def get_metric_history_bulk_interval(
    store: Store,
    run_ids: Annotated[list[str], Query()],
    metric_key: Annotated[str, Query()],
    start_step: int | None = None,
    end_step: int | None = None,
    max_results: Annotated[int, Query(ge=1, le=MAX_BULK_RESULTS)] = DEFAULT_BULK_RESULTS,
) -> Response:
    """Up to ``max_results`` points per run, evenly spread over the steps in
    ``[start_step, end_step]`` (the first and last step always included), as MLflow's UI asks."""
    if len(run_ids) > MAX_BULK_RUNS:
        raise InvalidArgument(
            f"Invalid value for parameter 'run_ids': at most {MAX_BULK_RUNS} runs per call, got {len(run_ids)}."
        )
    if (start_step is None) != (end_step is None):
        raise InvalidArgument("Pass both 'start_step' and 'end_step', or neither.")
    if start_step is not None and end_step is not None and start_step > end_step:
        raise InvalidArgument(f"'start_step' ({start_step}) must not exceed 'end_step' ({end_step}).")
    out = []
    for run_id in sorted(set(run_ids)):
        points = [
            m
            for m in store.get_metric_history(run_id, metric_key)
            if start_step is None or start_step <= m.step <= (end_step if end_step is not None else m.step)
        ]
        for m in _sample(points, max_results):
            out.append({**wire.metric(m), "run_id": run_id})
    return wire.json_response({"metrics": out})


def _sample(points: list[Any], limit: int) -> list[Any]:
    steps = sorted({p.step for p in points})
    if len(steps) <= limit:
        return points
    stride = (len(steps) - 1) / (limit - 1) if limit > 1 else len(steps)
    keep = {steps[round(i * stride)] for i in range(limit)} | {steps[0], steps[-1]}
    return [p for p in points if p.step in keep]
