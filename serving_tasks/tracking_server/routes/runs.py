"""``/api/2.0/mlflow/runs/*``: the run lifecycle, logging, search, inputs and outputs.

Every logging call is one ``log_batch`` of the store (one transaction), with
``skip_logged_points`` so a client retrying a call whose response it lost leaves the
metric history unchanged.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from tracking_plugin.entities import DatasetInput, Metric, Param, RunStatus, RunTag
from tracking_plugin.errors import InvalidArgument
from tracking_plugin.store._metric_batch import MetricColumns
from tracking_plugin.store.sql import SqlStore

from serving_tasks.tracking_server import schemas, wire
from serving_tasks.tracking_server.deps import get_store, get_uris
from serving_tasks.tracking_server.routes.experiments import ok, resolve_experiment_id, view_type
from serving_tasks.tracking_server.routing import OrjsonRoute

router = APIRouter(prefix="/api/2.0/mlflow/runs", tags=["runs"], route_class=OrjsonRoute)
Store = Annotated[SqlStore, Depends(get_store)]
Uris = Annotated[wire.ArtifactUris, Depends(get_uris)]

# MLflow's REST limits for one log-batch call (the store itself accepts more).
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_TAGS_PER_BATCH = 100
TAG_PARENT_RUN_ID = "mlflow.parentRunId"


def _status(value: str | None) -> RunStatus | None:
    if value is None or value == "":
        return None
    by_number = {1: RunStatus.RUNNING, 2: RunStatus.SCHEDULED, 3: RunStatus.FINISHED, 4: RunStatus.FAILED, 5: RunStatus.KILLED}
    try:
        return by_number[int(value)] if str(value).isdigit() else RunStatus(str(value).upper())
    except (KeyError, ValueError):
        raise InvalidArgument(
            f"Invalid value {value!r} for parameter 'status': use one of "
            f"{', '.join(s.value for s in RunStatus)}."
        ) from None


def _run_id(body: schemas.RunId) -> str:
    assert body.run_id is not None  # the schema's validator fills it from run_uuid
    return body.run_id


@router.post("/create")
def create_run(body: schemas.CreateRun, store: Store, uris: Uris) -> Response:
    tags = [RunTag(t.key, t.value) for t in body.tags]
    parent = next((t.value for t in tags if t.key == TAG_PARENT_RUN_ID), None)
    run = store.create_run(
        resolve_experiment_id(store, uris, body.experiment_id),
        user_id=body.user_id or "unknown",
        start_time=body.start_time if body.start_time is not None else int(time.time() * 1000),
        run_name=body.run_name or None,
        tags=[t for t in tags if t.key != TAG_PARENT_RUN_ID],
        parent_run_id=parent,
    )
    return wire.json_response({"run": wire.run(run, uris)})


@router.get("/get")
def get_run(
    store: Store, uris: Uris, run_id: str | None = None, run_uuid: str | None = None
) -> Response:
    target = run_id or run_uuid
    if not target:
        raise InvalidArgument("Missing value for required parameter 'run_id'.")
    run = store.get_run(target)
    inputs, outputs = store.get_run_inputs_outputs(target)
    return wire.json_response({"run": wire.run(run, uris, inputs, outputs)})


@router.post("/update")
def update_run(body: schemas.UpdateRun, store: Store, uris: Uris) -> Response:
    info = store.update_run_info(
        _run_id(body), status=_status(body.status), end_time=body.end_time, run_name=body.run_name or None
    )
    return wire.json_response({"run_info": wire.run_info(info, uris)})


@router.post("/delete")
def delete_run(body: schemas.RunId, store: Store) -> Response:
    store.delete_run(_run_id(body))
    return ok()


@router.post("/restore")
def restore_run(body: schemas.RunId, store: Store) -> Response:
    store.restore_run(_run_id(body))
    return ok()


@router.post("/log-metric")
def log_metric(body: schemas.LogMetric, store: Store) -> Response:
    store.log_batch(
        _run_id(body), metrics=[Metric(body.key, body.value, body.timestamp, body.step)], skip_logged_points=True
    )
    return ok()


@router.post("/log-parameter")
def log_param(body: schemas.LogParam, store: Store) -> Response:
    store.log_batch(_run_id(body), params=[Param(body.key, body.value)])
    return ok()


@router.post("/set-tag")
def set_tag(body: schemas.SetTag, store: Store) -> Response:
    store.log_batch(_run_id(body), tags=[RunTag(body.key, body.value)])
    return ok()


@router.post("/delete-tag")
def delete_tag(body: schemas.DeleteTag, store: Store) -> Response:
    store.delete_tag(_run_id(body), body.key)
    return ok()


@router.post("/log-batch")
def log_batch(body: schemas.LogBatch, store: Store) -> Response:
    return log_batch_items(
        store,
        _run_id(body),
        [Metric(m.key, m.value, m.timestamp, m.step) for m in body.metrics],
        [Param(p.key, p.value) for p in body.params],
        [RunTag(t.key, t.value) for t in body.tags],
    )


def log_batch_items(
    store: SqlStore, run_id: str, metrics: list[Metric] | MetricColumns, params: list[Param], tags: list[RunTag]
) -> Response:
    """``runs/log-batch`` after parsing (also ``fast.FastRoutes``'s): MLflow's limits, then
    one store call."""
    if len(metrics) > MAX_METRICS_PER_BATCH:
        raise InvalidArgument(
            f"A batch logging request can contain at most {MAX_METRICS_PER_BATCH} metrics; got "
            f"{len(metrics)} in 'metrics'. Split it into several log-batch calls."
        )
    if len(params) + len(tags) > MAX_PARAMS_TAGS_PER_BATCH:
        raise InvalidArgument(
            f"A batch logging request can contain at most {MAX_PARAMS_TAGS_PER_BATCH} params and tags "
            f"together; got {len(params)} in 'params' and {len(tags)} in 'tags'. Split it."
        )
    store.log_batch(run_id, metrics=metrics, params=params, tags=tags, skip_logged_points=True)
    return ok()


@router.post("/log-inputs")
def log_inputs(body: schemas.LogInputs, store: Store) -> Response:
    datasets = [
        DatasetInput(
            name=d.dataset.name, digest=d.dataset.digest, source_type=d.dataset.source_type,
            source=d.dataset.source, schema=d.dataset.schema_, profile=d.dataset.profile,
            tags={t.key: t.value for t in d.tags},
        )
        for d in body.datasets
    ]
    store.log_run_inputs(_run_id(body), datasets, [m.model_id for m in body.models])
    return ok()


@router.post("/outputs")
def log_outputs(body: schemas.LogOutputs, store: Store) -> Response:
    store.log_run_outputs(_run_id(body), [(m.model_id, m.step) for m in body.models])
    return ok()


@router.post("/search")
def search_runs(body: schemas.SearchRuns, store: Store, uris: Uris) -> Response:
    page = store.search_runs(
        [resolve_experiment_id(store, uris, e) for e in body.experiment_ids],
        filter_string=body.filter or "",
        run_view_type=view_type(body.run_view_type, "run_view_type"),
        max_results=body.max_results,
        order_by=body.order_by or None,
        page_token=body.page_token or None,
    )
    out: dict[str, Any] = {"runs": [wire.run(r, uris) for r in page]}
    if page.token:
        out["next_page_token"] = page.token
    return wire.json_response(out)


