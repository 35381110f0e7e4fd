"""``/api/2.0/mlops/store/*``: the parts of our Store protocol MLflow's API cannot carry.

Our own client over HTTP (:mod:`tracking_plugin.store.rest`) uses MLflow's endpoints
wherever they carry everything our entities hold, and these where they do not:

- ``POST runs/create``: a run keyed by a Prefect flow-run or task-run id, under a parent;
- ``POST runs/update``: MLflow's ``runs/update``, answering with the whole run info;
- ``POST runs/search``: MLflow's search, each run with its Prefect ids and parent;
- ``GET metrics/history``: a metric's history in columns (100,000 points in one answer);
- registry reads and writes whose model versions carry ``storage_location`` (the
  registry-owned copy of the files) and ``gate_decision_id``: ``registered-models/get``,
  ``registered-models/search``, ``registered-models/get-latest-versions``,
  ``registered-models/alias`` (GET, POST, DELETE, with actor, reason and Prefect flow run
  for the audit log), ``model-versions/get``, ``model-versions/search``,
  ``model-versions/create`` (PENDING_REGISTRATION, files copied by the client),
  ``model-versions/finish``, ``model-versions/transition-stage``, ``promote``, ``rollback``;
- ``POST gate-decisions/record`` and ``GET gate-decisions/get?id=``.

Artifact locations go out as ``mlflow-artifacts:/`` URIs when the server proxies artifacts,
and ``mlflow-artifacts:/`` locations coming in are stored as the real location, exactly
as on MLflow's endpoints (:class:`~serving_tasks.tracking_server.wire.ArtifactUris`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict

from tracking_plugin.entities import (
    ModelVersion,
    ModelVersionStatus,
    RegisteredModel,
    Run,
    RunStatus,
    RunTag,
    StoredGateDecision,
)
from tracking_plugin.errors import InvalidArgument
from tracking_plugin.store.sql import SqlStore

from serving_tasks.tracking_server import schemas, wire
from serving_tasks.tracking_server.deps import get_claimed_actor, get_store, get_uris
from serving_tasks.tracking_server.routes import mlops
from serving_tasks.tracking_server.routes.experiments import ok, view_type
from serving_tasks.tracking_server.routes.registry import stage, version_number

__all__ = ["decision_json", "registered_full", "router", "run_full", "version_full"]

router = APIRouter(prefix="/api/2.0/mlops/store", tags=["mlops extensions"])
Store = Annotated[SqlStore, Depends(get_store)]
Uris = Annotated[wire.ArtifactUris, Depends(get_uris)]
Claimed = Annotated["str | None", Depends(get_claimed_actor)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateRun(_Body):
    experiment_id: str
    user_id: str
    start_time: schemas.Int64
    run_name: str | None = None
    tags: list[schemas.KeyValue] = []
    parent_run_id: str | None = None
    prefect_flow_run_id: str | None = None
    prefect_task_run_id: str | None = None


class UpdateRun(_Body):
    run_id: str
    status: RunStatus | None = None
    end_time: schemas.Int64 | None = None
    run_name: str | None = None


class Audit(_Body):
    actor: str | None = None
    reason: str | None = None
    prefect_flow_run_id: str | None = None
    gate_decision_id: str | None = None


class SetAlias(Audit):
    name: str
    alias: str
    version: str


class DeleteAlias(_Body):
    name: str
    alias: str
    actor: str | None = None
    reason: str | None = None


class CreateModelVersion(_Body):
    name: str
    source: str
    run_id: str | None = None
    tags: dict[str, str] | None = None
    description: str | None = None
    user_id: str | None = None


class FinishModelVersion(_Body):
    name: str
    version: str
    status: ModelVersionStatus
    storage_location: str | None = None
    status_message: str | None = None


class TransitionStage(Audit):
    name: str
    version: str
    stage: str
    archive_existing_versions: bool = False


class Promote(mlops.Promote):
    prefect_flow_run_id: str | None = None


class Rollback(_Body):
    name: str
    alias: str = "champion"
    actor: str | None = None
    reason: str | None = None
    prefect_flow_run_id: str | None = None


class RecordGateDecision(_Body):
    name: str
    version: str
    passed: bool
    reason: str
    details: dict[str, Any]
    prefect_flow_run_id: str | None = None


# ------------------------------------------------------------------ rendering


def run_full(run: Run, uris: wire.ArtifactUris) -> dict[str, Any]:
    """MLflow's run JSON plus the Prefect ids and parent of our ``RunInfo``."""
    out = wire.run(run, uris)
    info = run.info
    out["info"].update(
        parent_run_id=info.parent_run_id,
        prefect_flow_run_id=info.prefect_flow_run_id,
        prefect_task_run_id=info.prefect_task_run_id,
    )
    return out


def version_full(mv: ModelVersion, uris: wire.ArtifactUris) -> dict[str, Any]:
    """MLflow's model-version JSON plus where the registry's copy is and its gate decision."""
    out = wire.model_version(mv, uris)
    out["storage_location"] = uris.to_wire(mv.storage_location)
    out["gate_decision_id"] = mv.gate_decision_id
    return out


def registered_full(rm: RegisteredModel, uris: wire.ArtifactUris) -> dict[str, Any]:
    out = wire.registered_model(rm, uris)
    out["latest_versions"] = [version_full(v, uris) for v in rm.latest_versions]
    return out


def decision_json(d: StoredGateDecision) -> dict[str, Any]:
    return {
        "id": d.id, "name": d.name, "version": str(d.version), "passed": d.passed, "reason": d.reason,
        "details": d.details, "created_time": d.created_time, "prefect_flow_run_id": d.prefect_flow_run_id,
    }


def _version(mv: ModelVersion, uris: wire.ArtifactUris) -> Response:
    return wire.json_response({"model_version": version_full(mv, uris)})


def _paged(key: str, items: list[Any], token: str | None) -> Response:
    out: dict[str, Any] = {key: items}
    if token:
        out["next_page_token"] = token
    return wire.json_response(out)


# ------------------------------------------------------------------ runs


@router.post("/runs/create")
def create_run(body: CreateRun, store: Store, uris: Uris) -> Response:
    run = store.create_run(
        body.experiment_id,
        user_id=body.user_id,
        start_time=body.start_time,
        run_name=body.run_name,
        tags=[RunTag(t.key, t.value) for t in body.tags],
        parent_run_id=body.parent_run_id,
        prefect_flow_run_id=body.prefect_flow_run_id,
        prefect_task_run_id=body.prefect_task_run_id,
    )
    return wire.json_response({"run": run_full(run, uris)})


@router.post("/runs/update")
def update_run(body: UpdateRun, store: Store, uris: Uris) -> Response:
    """MLflow's ``runs/update``, answering with the whole ``run_info`` (Prefect ids, parent)."""
    info = store.update_run_info(body.run_id, status=body.status, end_time=body.end_time, run_name=body.run_name)
    out = wire.run_info(info, uris)
    out.update(
        parent_run_id=info.parent_run_id,
        prefect_flow_run_id=info.prefect_flow_run_id,
        prefect_task_run_id=info.prefect_task_run_id,
    )
    return wire.json_response({"run_info": out})


@router.post("/runs/search")
def search_runs(body: schemas.SearchRuns, store: Store, uris: Uris) -> Response:
    page = store.search_runs(
        body.experiment_ids,
        filter_string=body.filter or "",
        run_view_type=view_type(body.run_view_type, "run_view_type"),
        max_results=body.max_results,
        order_by=body.order_by or None,
        page_token=body.page_token or None,
    )
    return _paged("runs", [run_full(r, uris) for r in page], page.token)


@router.get("/metrics/history")
def get_metric_history(
    store: Store,
    run_id: Annotated[str, Query()],
    metric_key: Annotated[str, Query()],
    max_results: Annotated[int | None, Query(ge=1)] = None,
    page_token: str | None = None,
) -> Response:
    """MLflow's ``metrics/get-history`` in columns (``steps``, ``timestamps``, ``values``):
    a third of the bytes, and no object per point to build and parse on either side."""
    page = store.get_metric_history(run_id, metric_key, max_results=max_results, page_token=page_token or None)
    out: dict[str, Any] = {
        "key": metric_key,
        "steps": [m.step for m in page],
        "timestamps": [m.timestamp for m in page],
        "values": [wire.float_out(m.value) for m in page],
    }
    if page.token:
        out["next_page_token"] = page.token
    return wire.json_response(out)


# ------------------------------------------------------------------ registry reads


@router.get("/registered-models/get")
def get_registered_model(name: Annotated[str, Query()], store: Store, uris: Uris) -> Response:
    return wire.json_response({"registered_model": registered_full(store.get_registered_model(name), uris)})


@router.get("/registered-models/search")
def search_registered_models(
    store: Store,
    uris: Uris,
    filter: str | None = None,
    max_results: Annotated[int, Query(ge=1)] = 100,
    order_by: Annotated[list[str] | None, Query()] = None,
    page_token: str | None = None,
) -> Response:
    page = store.search_registered_models(
        filter_string=filter or None, max_results=max_results, order_by=order_by or None, page_token=page_token or None
    )
    return _paged("registered_models", [registered_full(rm, uris) for rm in page], page.token)


@router.get("/registered-models/get-latest-versions")
def get_latest_versions(
    name: Annotated[str, Query()], store: Store, uris: Uris, stages: Annotated[list[str] | None, Query()] = None
) -> Response:
    versions = store.get_latest_versions(name, [stage(s) for s in stages] if stages is not None else None)
    return wire.json_response({"model_versions": [version_full(v, uris) for v in versions]})


@router.get("/registered-models/alias")
def get_model_version_by_alias(
    name: Annotated[str, Query()], alias: Annotated[str, Query()], store: Store, uris: Uris
) -> Response:
    return _version(store.get_model_version_by_alias(name, alias), uris)


@router.get("/model-versions/get")
def get_model_version(
    name: Annotated[str, Query()], version: Annotated[str, Query()], store: Store, uris: Uris
) -> Response:
    return _version(store.get_model_version(name, version_number(version)), uris)


@router.get("/model-versions/search")
def search_model_versions(
    store: Store,
    uris: Uris,
    filter: str | None = None,
    max_results: Annotated[int, Query(ge=1)] = 1000,
    order_by: Annotated[list[str] | None, Query()] = None,
    page_token: str | None = None,
) -> Response:
    page = store.search_model_versions(
        filter_string=filter or None, max_results=max_results, order_by=order_by or None, page_token=page_token or None
    )
    return _paged("model_versions", [version_full(v, uris) for v in page], page.token)


# ------------------------------------------------------------------ registry writes


@router.post("/model-versions/create")
def create_model_version(body: CreateModelVersion, store: Store, uris: Uris) -> Response:
    """A PENDING_REGISTRATION version; the client copies the files, then calls ``finish``."""
    mv = store.create_model_version(
        body.name,
        uris.from_wire(body.source),
        run_id=body.run_id,
        tags=body.tags,
        description=body.description,
        user_id=body.user_id,
    )
    return _version(mv, uris)


@router.post("/model-versions/finish")
def finish_model_version(body: FinishModelVersion, store: Store, uris: Uris) -> Response:
    mv = store.finish_model_version(
        body.name,
        version_number(body.version),
        status=body.status,
        storage_location=uris.from_wire(body.storage_location) if body.storage_location else None,
        status_message=body.status_message,
    )
    return _version(mv, uris)


@router.post("/model-versions/transition-stage")
def transition_model_version_stage(body: TransitionStage, store: Store, uris: Uris, claimed: Claimed) -> Response:
    mv = store.transition_model_version_stage(
        body.name,
        version_number(body.version),
        stage(body.stage),
        archive_existing_versions=body.archive_existing_versions,
        actor=body.actor,
        reason=body.reason,
        prefect_flow_run_id=body.prefect_flow_run_id,
        gate_decision_id=body.gate_decision_id,
        claimed_actor=claimed,
    )
    return _version(mv, uris)


@router.post("/registered-models/alias")
def set_registered_model_alias(body: SetAlias, store: Store, claimed: Claimed) -> Response:
    store.set_registered_model_alias(
        body.name,
        body.alias,
        version_number(body.version),
        actor=body.actor,
        reason=body.reason,
        prefect_flow_run_id=body.prefect_flow_run_id,
        gate_decision_id=body.gate_decision_id,
        claimed_actor=claimed,
    )
    return ok()


@router.delete("/registered-models/alias")
def delete_registered_model_alias(body: DeleteAlias, store: Store, claimed: Claimed) -> Response:
    store.delete_registered_model_alias(
        body.name, body.alias, actor=body.actor, reason=body.reason, claimed_actor=claimed
    )
    return ok()


@router.post("/registered-models/promote")
def promote(body: Promote, store: Store, uris: Uris, claimed: Claimed) -> Response:
    mv = mlops.promote_version(store, body, prefect_flow_run_id=body.prefect_flow_run_id, claimed_actor=claimed)
    return _version(mv, uris)


@router.post("/registered-models/rollback")
def rollback_alias(body: Rollback, store: Store, uris: Uris, claimed: Claimed) -> Response:
    mv = store.rollback_alias(
        body.name, body.alias, actor=body.actor, reason=body.reason, prefect_flow_run_id=body.prefect_flow_run_id,
        claimed_actor=claimed,
    )
    return _version(mv, uris)


# ------------------------------------------------------------------ gate decisions


@router.post("/gate-decisions/record")
def record_gate_decision(body: RecordGateDecision, store: Store) -> Response:
    decision = store.record_gate_decision(
        body.name,
        version_number(body.version),
        passed=body.passed,
        reason=body.reason,
        details=body.details,
        prefect_flow_run_id=body.prefect_flow_run_id,
    )
    return wire.json_response({"gate_decision": decision_json(decision)})


@router.get("/gate-decisions/get")
def get_gate_decision(id: Annotated[str, Query()], store: Store) -> Response:
    return wire.json_response({"gate_decision": decision_json(store.get_gate_decision(id))})

