"""``/api/2.0/mlflow/logged-models``: MLflow 3's logged models (``models:/m-<id>``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from tracking_plugin.entities import LoggedModelStatus
from tracking_plugin.errors import InvalidArgument
from tracking_plugin.store.sql import SqlStore

from serving_tasks.tracking_server import schemas, wire
from serving_tasks.tracking_server.deps import get_store, get_uris
from serving_tasks.tracking_server.routes.experiments import ok, resolve_experiment_id
from serving_tasks.tracking_server.routing import OrjsonRoute

router = APIRouter(prefix="/api/2.0/mlflow/logged-models", tags=["logged models"], route_class=OrjsonRoute)
Store = Annotated[SqlStore, Depends(get_store)]
Uris = Annotated[wire.ArtifactUris, Depends(get_uris)]


def _status(value: str) -> LoggedModelStatus:
    by_number = {1: LoggedModelStatus.PENDING, 2: LoggedModelStatus.READY, 3: LoggedModelStatus.UPLOAD_FAILED}
    try:
        return by_number[int(value)] if value.isdigit() else LoggedModelStatus(value)
    except (KeyError, ValueError):
        raise InvalidArgument(
            f"Invalid value {value!r} for parameter 'status': use LOGGED_MODEL_READY or LOGGED_MODEL_UPLOAD_FAILED."
        ) from None


def _model(store: SqlStore, uris: wire.ArtifactUris, model: Any) -> Response:
    return wire.json_response({"model": wire.logged_model(model, uris)})


@router.post("")
def create_logged_model(body: schemas.CreateLoggedModel, store: Store, uris: Uris) -> Response:
    model = store.create_logged_model(
        resolve_experiment_id(store, uris, body.experiment_id),
        name=body.name or None,
        model_type=body.model_type or None,
        source_run_id=body.source_run_id or None,
        params={p.key: p.value for p in body.params},
        tags={t.key: t.value for t in body.tags},
    )
    return _model(store, uris, model)


@router.post("/search")
def search_logged_models(body: schemas.SearchLoggedModels, store: Store, uris: Uris) -> Response:
    page = store.search_logged_models(
        body.experiment_ids, filter_string=body.filter or None, max_results=body.max_results,
        page_token=body.page_token or None,
    )
    out: dict[str, Any] = {"models": [wire.logged_model(m, uris) for m in page]}
    if page.token:
        out["next_page_token"] = page.token
    return wire.json_response(out)


@router.get("/{model_id}")
def get_logged_model(model_id: str, store: Store, uris: Uris) -> Response:
    return _model(store, uris, store.get_logged_model(model_id))


@router.patch("/{model_id}")
def finalize_logged_model(model_id: str, body: schemas.FinalizeLoggedModel, store: Store, uris: Uris) -> Response:
    return _model(store, uris, store.finalize_logged_model(model_id, _status(body.status)))


@router.delete("/{model_id}")
def delete_logged_model(model_id: str, store: Store) -> Response:
    store.delete_logged_model(model_id)
    return ok()


@router.patch("/{model_id}/tags")
def set_logged_model_tags(model_id: str, body: schemas.SetLoggedModelTags, store: Store, uris: Uris) -> Response:
    return _model(store, uris, store.set_logged_model_tags(model_id, {t.key: t.value for t in body.tags}))


@router.delete("/{model_id}/tags/{tag_key}")
def delete_logged_model_tag(model_id: str, tag_key: str, store: Store) -> Response:
    store.delete_logged_model_tag(model_id, tag_key)
    return ok()


@router.post("/{model_id}/params")
def log_logged_model_params(model_id: str, body: schemas.LogLoggedModelParams, store: Store) -> Response:
    store.log_logged_model_params(model_id, {p.key: p.value for p in body.params})
    return ok()
