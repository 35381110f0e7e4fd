"""``/api/2.0/mlflow/experiments/*``: create, get, search, rename, delete, restore, tags."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from tracking_plugin.artifacts import join_artifact_uri
from tracking_plugin.entities import ViewType
from tracking_plugin.errors import AlreadyExists, InvalidArgument, NotFound
from tracking_plugin.store.sql import SqlStore

from serving_tasks.tracking_server import schemas, wire
from serving_tasks.tracking_server.deps import get_store, get_uris
from serving_tasks.tracking_server.routing import OrjsonRoute

router = APIRouter(prefix="/api/2.0/mlflow/experiments", tags=["experiments"], route_class=OrjsonRoute)
Store = Annotated[SqlStore, Depends(get_store)]
Uris = Annotated[wire.ArtifactUris, Depends(get_uris)]
EMPTY = b"{}"


def ok() -> Response:
    return Response(EMPTY, media_type="application/json")


def view_type(value: str | int | None, field: str = "view_type") -> ViewType:
    """MLflow's ViewType by name (``ACTIVE_ONLY``...) or proto number (1, 2, 3)."""
    if value is None or value == "":
        return ViewType.ACTIVE_ONLY
    by_number = {1: ViewType.ACTIVE_ONLY, 2: ViewType.DELETED_ONLY, 3: ViewType.ALL}
    try:
        return by_number[int(value)] if str(value).isdigit() else ViewType(str(value).upper())
    except (KeyError, ValueError):
        raise InvalidArgument(
            f"Invalid value {value!r} for parameter '{field}': use ACTIVE_ONLY, DELETED_ONLY or ALL."
        ) from None


DEFAULT_EXPERIMENT_ID = "0"
DEFAULT_EXPERIMENT_NAME = "Default"


def resolve_experiment_id(store: SqlStore, uris: wire.ArtifactUris, experiment_id: str) -> str:
    """MLflow's default experiment is id ``"0"`` (what the mlflow client uses when no
    experiment is set); here it is the experiment named ``Default``, created on first use."""
    if experiment_id != DEFAULT_EXPERIMENT_ID:
        return experiment_id
    found = store.get_experiment_by_name(DEFAULT_EXPERIMENT_NAME)
    if found is None:
        try:
            return store.create_experiment(DEFAULT_EXPERIMENT_NAME, join_artifact_uri(uris.root, uuid.uuid4().hex))
        except AlreadyExists:  # another replica created it just now
            found = store.get_experiment_by_name(DEFAULT_EXPERIMENT_NAME)
            assert found is not None
    return found.experiment_id


@router.post("/create")
def create_experiment(body: schemas.CreateExperiment, store: Store, uris: Uris) -> Response:
    if body.artifact_location:
        location = uris.from_wire(body.artifact_location)
    else:
        location = join_artifact_uri(uris.root, uuid.uuid4().hex)
    experiment_id = store.create_experiment(body.name, location, {t.key: t.value for t in body.tags})
    return wire.json_response({"experiment_id": experiment_id})


@router.get("/get")
def get_experiment(experiment_id: Annotated[str, Query()], store: Store, uris: Uris) -> Response:
    experiment = store.get_experiment(resolve_experiment_id(store, uris, experiment_id))
    return wire.json_response({"experiment": wire.experiment(experiment, uris)})


@router.get("/get-by-name")
def get_experiment_by_name(experiment_name: Annotated[str, Query()], store: Store, uris: Uris) -> Response:
    found = store.get_experiment_by_name(experiment_name)
    if found is None:
        raise NotFound(f"Could not find experiment with name '{experiment_name}'.")
    return wire.json_response({"experiment": wire.experiment(found, uris)})


def _search(
    store: SqlStore,
    uris: wire.ArtifactUris,
    *,
    max_results: int,
    page_token: str | None,
    filter_string: str | None,
    order_by: list[str],
    view: str | int | None,
) -> Response:
    page = store.search_experiments(
        view_type=view_type(view),
        max_results=max_results,
        filter_string=filter_string or None,
        order_by=order_by or None,
        page_token=page_token or None,
    )
    out: dict[str, object] = {"experiments": [wire.experiment(e, uris) for e in page]}
    if page.token:
        out["next_page_token"] = page.token
    return wire.json_response(out)


@router.post("/search")
def search_experiments(body: schemas.SearchExperiments, store: Store, uris: Uris) -> Response:
    return _search(
        store, uris, max_results=body.max_results, page_token=body.page_token, filter_string=body.filter,
        order_by=body.order_by, view=body.view_type,
    )


@router.get("/search")
def search_experiments_get(
    store: Store,
    uris: Uris,
    max_results: Annotated[int, Query(ge=1, lt=2**63)] = 1000,
    page_token: str | None = None,
    filter: str | None = None,
    order_by: Annotated[list[str] | None, Query()] = None,
    view_type: str = "ACTIVE_ONLY",
) -> Response:
    return _search(
        store, uris, max_results=max_results, page_token=page_token, filter_string=filter,
        order_by=order_by or [], view=view_type,
    )


@router.post("/update")
def update_experiment(body: schemas.UpdateExperiment, store: Store) -> Response:
    store.rename_experiment(body.experiment_id, body.new_name)
    return ok()


@router.post("/delete")
def delete_experiment(body: schemas.ExperimentId, store: Store) -> Response:
    store.delete_experiment(body.experiment_id)
    return ok()


@router.post("/restore")
def restore_experiment(body: schemas.ExperimentId, store: Store) -> Response:
    store.restore_experiment(body.experiment_id)
    return ok()


@router.post("/set-experiment-tag")
def set_experiment_tag(body: schemas.SetExperimentTag, store: Store) -> Response:
    store.set_experiment_tag(body.experiment_id, body.key, body.value)
    return ok()


@router.post("/delete-experiment-tag")
def delete_experiment_tag(body: schemas.DeleteExperimentTag, store: Store) -> Response:
    store.delete_experiment_tag(body.experiment_id, body.key)
    return ok()
