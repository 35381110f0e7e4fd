"""``/api/2.0/mlops/*``: what prefect-mlops adds to MLflow's API.

- ``GET  model-versions/gate-decision?name=&version=``: the evaluation-gate decision linked
  to a version (passed?, reason, per-rule details);
- ``GET  registered-models/history?name=[&version=]``: the audit log of stage changes and
  alias moves (who, when, why, gate decision, Prefect flow run);
- ``POST registered-models/promote``: move an alias and/or stage to a version whose gate
  passed (one transaction, audited);
- ``POST registered-models/rollback``: move an alias back to the version that held it before;
- ``GET  runs/get?run_id=``: a run with its Prefect flow-run/task-run ids and parent;
- ``GET  runs/by-prefect-id?flow_run_id=`` (or ``task_run_id=``): the run of a Prefect run;
- ``POST gc``: ``prefect-mlops gc`` on the server's backend (admins only with ``--auth``):
  the same options, the report as JSON.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from tracking_plugin.entities import ModelVersion, Run, StoredGateDecision, TransitionRecord
from tracking_plugin.errors import InvalidArgument, NotFound
from tracking_plugin.gc import collect_garbage, parse_duration
from tracking_plugin.store.sql import SqlStore

from serving_tasks.tracking_server import wire
from serving_tasks.tracking_server.deps import get_claimed_actor, get_server_settings, get_store, get_uris
from serving_tasks.tracking_server.routes.registry import stage, version_number
from serving_tasks.tracking_server.routing import OrjsonRoute
from serving_tasks.tracking_server.settings import ServerSettings

router = APIRouter(prefix="/api/2.0/mlops", tags=["mlops extensions"], route_class=OrjsonRoute)
Store = Annotated[SqlStore, Depends(get_store)]
Uris = Annotated[wire.ArtifactUris, Depends(get_uris)]
Claimed = Annotated["str | None", Depends(get_claimed_actor)]


class Promote(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    version: str
    alias: str | None = "champion"
    stage: str | None = None
    archive_existing_versions: bool = True
    require_passed_gate: bool = True
    actor: str | None = None
    reason: str | None = None


class GarbageCollect(BaseModel):
    """The options of ``prefect-mlops gc`` (durations as ``30d``, ``12h``)."""

    model_config = ConfigDict(extra="forbid")
    older_than: str = "30d"
    experiment_ids: list[str] | None = None
    run_ids: list[str] | None = None
    keep_last: int | None = Field(default=None, ge=0)
    quarantine_older_than: str | None = None
    dry_run: bool = False


class Rollback(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    alias: str = "champion"
    actor: str | None = None
    reason: str | None = None


def _decision(d: StoredGateDecision) -> dict[str, Any]:
    return {
        "id": d.id, "name": d.name, "version": str(d.version), "passed": d.passed, "reason": d.reason,
        "details": d.details, "created_time": d.created_time, "prefect_flow_run_id": d.prefect_flow_run_id,
    }


def _transition(t: TransitionRecord) -> dict[str, Any]:
    return {
        "id": t.id, "name": t.name, "version": None if t.version is None else str(t.version), "kind": t.kind,
        "subject": t.subject, "from_value": t.from_value, "to_value": t.to_value, "timestamp": t.timestamp,
        "actor": t.actor, "claimed_actor": t.claimed_actor, "reason": t.reason, "prefect_flow_run_id": t.prefect_flow_run_id,
        "gate_decision_id": t.gate_decision_id,
    }


def _run(run: Run, uris: wire.ArtifactUris) -> dict[str, Any]:
    out = wire.run(run, uris)
    out["info"].update(
        parent_run_id=run.info.parent_run_id,
        prefect_flow_run_id=run.info.prefect_flow_run_id,
        prefect_task_run_id=run.info.prefect_task_run_id,
    )
    return out


@router.get("/model-versions/gate-decision")
def get_gate_decision(
    name: Annotated[str, Query()], version: Annotated[str, Query()], store: Store
) -> Response:
    mv = store.get_model_version(name, version_number(version))
    if mv.gate_decision_id is None:
        raise NotFound(f"Version {mv.version} of {name!r} has no gate decision; evaluate it with the gate first.")
    return wire.json_response({"gate_decision": _decision(store.get_gate_decision(mv.gate_decision_id))})


@router.get("/registered-models/history")
def get_model_history(
    name: Annotated[str, Query()], store: Store, version: str | None = None
) -> Response:
    records = store.get_model_history(name)
    if version is not None:
        number = version_number(version)
        records = [r for r in records if r.version == number]
    return wire.json_response({"transitions": [_transition(r) for r in records]})


@router.post("/registered-models/promote")
def promote(body: Promote, store: Store, uris: Uris, claimed: Claimed) -> Response:
    mv = promote_version(store, body, claimed_actor=claimed)
    return wire.json_response({"model_version": wire.model_version(mv, uris)})


def promote_version(
    store: SqlStore, body: Promote, *, prefect_flow_run_id: str | None = None, claimed_actor: str | None = None
) -> ModelVersion:
    """``store.promote`` for a promote request (this route's and the REST store's)."""
    if body.alias is None and body.stage is None:
        raise InvalidArgument("Pass 'alias' or 'stage' (or both): promote needs something to move.")
    return store.promote(
        body.name,
        version_number(body.version),
        alias=body.alias,
        stage=stage(body.stage) if body.stage is not None else None,
        archive_existing_versions=body.archive_existing_versions,
        require_passed_gate=body.require_passed_gate,
        actor=body.actor,
        reason=body.reason,
        prefect_flow_run_id=prefect_flow_run_id,
        claimed_actor=claimed_actor,
    )


@router.post("/registered-models/rollback")
def rollback(body: Rollback, store: Store, uris: Uris, claimed: Claimed) -> Response:
    mv = store.rollback_alias(body.name, body.alias, actor=body.actor, reason=body.reason, claimed_actor=claimed)
    return wire.json_response({"model_version": wire.model_version(mv, uris)})


@router.get("/runs/get")
def get_run(run_id: Annotated[str, Query()], store: Store, uris: Uris) -> Response:
    return wire.json_response({"run": _run(store.get_run(run_id), uris)})


@router.get("/runs/by-prefect-id")
def get_run_by_prefect_id(
    store: Store, uris: Uris, flow_run_id: str | None = None, task_run_id: str | None = None
) -> Response:
    if (flow_run_id is None) == (task_run_id is None):
        raise InvalidArgument("Pass exactly one of 'flow_run_id' or 'task_run_id'.")
    run = store.get_run_by_prefect_id(flow_run_id=flow_run_id, task_run_id=task_run_id)
    if run is None:
        which = f"flow run {flow_run_id!r}" if flow_run_id is not None else f"task run {task_run_id!r}"
        raise NotFound(f"No tracking run is keyed by Prefect {which}.")
    return wire.json_response({"run": _run(run, uris)})


@router.post("/gc")
def garbage_collect(
    body: GarbageCollect, store: Store, settings: Annotated[ServerSettings, Depends(get_server_settings)]
) -> Response:
    report = collect_garbage(
        older_than_seconds=parse_duration(body.older_than),
        experiment_ids=body.experiment_ids,
        run_ids=body.run_ids,
        keep_last=body.keep_last,
        quarantine_older_than_seconds=(
            None if body.quarantine_older_than is None else parse_duration(body.quarantine_older_than)
        ),
        dry_run=body.dry_run,
        store=store,
        settings=settings.backend_settings(),
    )
    return wire.json_response(report.to_dict())
