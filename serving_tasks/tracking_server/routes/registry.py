"""``/api/2.0/mlflow/registered-models/*`` and ``model-versions/*``: the model registry.

HTTP methods are MLflow's: GET calls take their arguments in the query string, the others
a JSON body (DELETE included). Registering a version through the server records where its
files already are (``storage_location``: the logged model's, run's or given location); it
does not copy them, as ``mlflow server`` does not.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from tracking_plugin.artifacts import join_artifact_uri
from tracking_plugin.entities import ModelVersionStatus, Stage
from tracking_plugin.errors import InvalidArgument
from tracking_plugin.store.sql import SqlStore

from serving_tasks.tracking_server import schemas, wire
from serving_tasks.tracking_server.deps import get_actor, get_store, get_uris
from serving_tasks.tracking_server.routes.experiments import ok
from serving_tasks.tracking_server.routing import OrjsonRoute

router = APIRouter(prefix="/api/2.0/mlflow", tags=["model registry"], route_class=OrjsonRoute)
Store = Annotated[SqlStore, Depends(get_store)]
Uris = Annotated[wire.ArtifactUris, Depends(get_uris)]
Actor = Annotated["str | None", Depends(get_actor)]


def version_number(value: Any) -> int:
    """A model version as MLflow sends it (a string of digits)."""
    text = str(value).strip()
    if not text.isdigit() or int(text) < 1 or len(text) > 10:
        raise InvalidArgument(f"Invalid value {value!r} for parameter 'version': expected a positive integer like '3'.")
    return int(text)


def stage(value: str) -> Stage:
    for candidate in Stage:
        if candidate.value.lower() == value.strip().lower():
            return candidate
    raise InvalidArgument(
        f"Invalid value {value!r} for parameter 'stage': use one of {', '.join(s.value for s in Stage)}."
    )


def _registered(rm: Any, uris: wire.ArtifactUris) -> Response:
    return wire.json_response({"registered_model": wire.registered_model(rm, uris)})


def _version(mv: Any, uris: wire.ArtifactUris) -> Response:
    return wire.json_response({"model_version": wire.model_version(mv, uris)})


def _paged(key: str, items: list[Any], token: str | None) -> Response:
    out: dict[str, Any] = {key: items}
    if token:
        out["next_page_token"] = token
    return wire.json_response(out)


# ---------------------------------------------------------------- registered models


@router.post("/registered-models/create")
def create_registered_model(body: schemas.CreateRegisteredModel, store: Store, uris: Uris) -> Response:
    rm = store.create_registered_model(body.name, {t.key: t.value for t in body.tags}, body.description)
    return _registered(rm, uris)


@router.get("/registered-models/get")
def get_registered_model(name: Annotated[str, Query()], store: Store, uris: Uris) -> Response:
    return _registered(store.get_registered_model(name), uris)


@router.post("/registered-models/rename")
def rename_registered_model(body: schemas.RenameRegisteredModel, store: Store, uris: Uris) -> Response:
    return _registered(store.rename_registered_model(body.name, body.new_name), uris)


@router.patch("/registered-models/update")
def update_registered_model(body: schemas.UpdateRegisteredModel, store: Store, uris: Uris) -> Response:
    return _registered(store.update_registered_model(body.name, body.description), uris)


@router.delete("/registered-models/delete")
def delete_registered_model(body: schemas.ModelName, store: Store) -> Response:
    store.delete_registered_model(body.name)
    return ok()


# The mlflow client appends this clause to every registered-model search to leave out
# prompts (models tagged mlflow.prompt.is_prompt = 'true'); MLflow's store treats it as
# "not a prompt", which a plain tag comparison would turn into "has the tag". We drop the
# clause and leave prompts out of the results ourselves.
_PROMPT_TAG = "mlflow.prompt.is_prompt"
_NOT_PROMPT_CLAUSE = re.compile(r"(?:^|\s+AND\s+)tags?\.`mlflow\.prompt\.is_prompt`\s*!=\s*'true'\s*$", re.IGNORECASE)


def _without_prompt_clause(filter_string: str | None) -> tuple[str | None, bool]:
    if not filter_string:
        return filter_string, False
    stripped = _NOT_PROMPT_CLAUSE.sub("", filter_string)
    return (stripped or None), stripped != filter_string


@router.get("/registered-models/search")
def search_registered_models(
    store: Store,
    uris: Uris,
    filter: str | None = None,
    max_results: Annotated[int, Query(ge=1)] = 100,
    order_by: Annotated[list[str] | None, Query()] = None,
    page_token: str | None = None,
) -> Response:
    filter_string, skip_prompts = _without_prompt_clause(filter)
    page = store.search_registered_models(
        filter_string=filter_string, max_results=max_results, order_by=order_by or None, page_token=page_token or None
    )
    models = [rm for rm in page if not (skip_prompts and rm.tags.get(_PROMPT_TAG) == "true")]
    return _paged("registered_models", [wire.registered_model(rm, uris) for rm in models], page.token)


def _latest(store: SqlStore, uris: wire.ArtifactUris, name: str, stages: list[str]) -> Response:
    versions = store.get_latest_versions(name, [stage(s) for s in stages] or None)
    return wire.json_response({"model_versions": [wire.model_version(v, uris) for v in versions]})


@router.post("/registered-models/get-latest-versions")
def get_latest_versions(body: schemas.GetLatestVersions, store: Store, uris: Uris) -> Response:
    return _latest(store, uris, body.name, body.stages)


@router.get("/registered-models/get-latest-versions")
def get_latest_versions_get(
    name: Annotated[str, Query()], store: Store, uris: Uris, stages: Annotated[list[str] | None, Query()] = None
) -> Response:
    return _latest(store, uris, name, stages or [])


@router.post("/registered-models/set-tag")
def set_registered_model_tag(body: schemas.SetRegisteredModelTag, store: Store) -> Response:
    store.set_registered_model_tag(body.name, body.key, body.value)
    return ok()


@router.delete("/registered-models/delete-tag")
def delete_registered_model_tag(body: schemas.DeleteRegisteredModelTag, store: Store) -> Response:
    store.delete_registered_model_tag(body.name, body.key)
    return ok()


@router.post("/registered-models/alias")
def set_registered_model_alias(body: schemas.SetAlias, store: Store, actor: Actor) -> Response:
    store.set_registered_model_alias(body.name, body.alias, version_number(body.version), actor=actor)
    return ok()


@router.delete("/registered-models/alias")
def delete_registered_model_alias(body: schemas.DeleteAlias, store: Store, actor: Actor) -> Response:
    store.delete_registered_model_alias(body.name, body.alias, actor=actor)
    return ok()


@router.get("/registered-models/alias")
def get_model_version_by_alias(
    name: Annotated[str, Query()], alias: Annotated[str, Query()], store: Store, uris: Uris
) -> Response:
    return _version(store.get_model_version_by_alias(name, alias), uris)


# ---------------------------------------------------------------- model versions


def storage_location(store: SqlStore, source: str) -> tuple[str, str | None]:
    """Where the files of a version registered from ``source`` are (a real location), and
    the run that produced them when the source says so."""
    model_id = wire.model_id_of_source(source)
    if model_id is not None:
        model = store.get_logged_model(model_id)
        return model.artifact_location, model.source_run_id
    if source.startswith("runs:/"):
        run_id, _, path = source[len("runs:/") :].partition("/")
        return join_artifact_uri(store.get_run(run_id).info.artifact_uri, path or None), run_id
    return source, None


@router.post("/model-versions/create")
def create_model_version(body: schemas.CreateModelVersion, store: Store, uris: Uris) -> Response:
    source = uris.from_wire(body.source)
    location, source_run_id = storage_location(store, source)
    mv = store.create_model_version(
        body.name,
        source,
        run_id=body.run_id or source_run_id,
        tags={t.key: t.value for t in body.tags},
        description=body.description or None,
    )
    mv = store.finish_model_version(body.name, mv.version, status=ModelVersionStatus.READY, storage_location=location)
    return _version(mv, uris)


@router.get("/model-versions/get")
def get_model_version(
    name: Annotated[str, Query()], version: Annotated[str, Query()], store: Store, uris: Uris
) -> Response:
    return _version(store.get_model_version(name, version_number(version)), uris)


@router.patch("/model-versions/update")
def update_model_version(body: schemas.UpdateModelVersion, store: Store, uris: Uris) -> Response:
    return _version(store.update_model_version(body.name, version_number(body.version), body.description), uris)


@router.delete("/model-versions/delete")
def delete_model_version(body: schemas.DeleteModelVersion, store: Store) -> Response:
    store.delete_model_version(body.name, version_number(body.version))
    return ok()


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
    return _paged("model_versions", [wire.model_version(v, uris) for v in page], page.token)


@router.post("/model-versions/transition-stage")
def transition_model_version_stage(body: schemas.TransitionStage, store: Store, uris: Uris, actor: Actor) -> Response:
    mv = store.transition_model_version_stage(
        body.name,
        version_number(body.version),
        stage(body.stage),
        archive_existing_versions=body.archive_existing_versions,
        actor=actor,
    )
    return _version(mv, uris)


@router.post("/model-versions/set-tag")
def set_model_version_tag(body: schemas.SetModelVersionTag, store: Store) -> Response:
    store.set_model_version_tag(body.name, version_number(body.version), body.key, body.value)
    return ok()


@router.delete("/model-versions/delete-tag")
def delete_model_version_tag(body: schemas.DeleteModelVersionTag, store: Store) -> Response:
    store.delete_model_version_tag(body.name, version_number(body.version), body.key)
    return ok()


@router.get("/model-versions/get-download-uri")
def get_model_version_download_uri(
    name: Annotated[str, Query()], version: Annotated[str, Query()], store: Store, uris: Uris
) -> Response:
    mv = store.get_model_version(name, version_number(version))
    location = mv.storage_location or storage_location(store, mv.source)[0]
    return wire.json_response({"artifact_uri": uris.to_wire(location)})
