"""The auth API: MLflow's ``users`` and ``permissions`` endpoints, and our API tokens.

Formats follow MLflow's basic-auth app (``{"user": {...}}``, ``{"experiment_permission":
{...}}``, ``{"registered_model_permission": {...}}``), so ``mlflow.server.get_app_client``
users keep their scripts. Who may call each route is in :mod:`.rules`, checked by
:func:`~.security.authorize` before these handlers run; they only do the work.

Tokens (``/api/2.0/mlops/tokens/...``): ``create`` answers the token once
(``{"token": "mlops_...", "token_info": {...}}``); ``list`` and ``revoke`` never show it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool

from tracking_plugin.errors import InvalidArgument

from serving_tasks.tracking_server.auth.permissions import Permission
from serving_tasks.tracking_server.auth.security import AuthState, current_user
from serving_tasks.tracking_server.auth.store import User
from serving_tasks.tracking_server.routing import OrjsonRoute
from serving_tasks.tracking_server.wire import json_response

__all__ = ["router"]

router = APIRouter(tags=["auth"], route_class=OrjsonRoute)
M = "/api/2.0/mlflow"
X = "/api/2.0/mlops"


def _state(request: Request) -> AuthState:
    return request.app.state.auth  # type: ignore[no-any-return]


State = Annotated[AuthState, Depends(_state)]
Caller = Annotated[User, Depends(current_user)]


def _empty() -> Response:
    return json_response({})


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class UserCreate(_Body):
    username: str
    password: str


class UserPassword(_Body):
    username: str
    password: str


class UserAdmin(_Body):
    username: str
    is_admin: bool


class Username(_Body):
    username: str


class ExperimentGrant(_Body):
    experiment_id: str
    username: str
    permission: str


class ExperimentGrantRef(_Body):
    experiment_id: str
    username: str


class ModelGrant(_Body):
    name: str
    username: str
    permission: str


class ModelGrantRef(_Body):
    name: str
    username: str


class TokenCreate(_Body):
    username: str | None = None
    name: str = ""
    expires_in_seconds: float | None = None


class TokenRef(_Body):
    token_id: str


# ------------------------------------------------------------------- users


@router.post(f"{M}/users/create")
async def create_user(body: UserCreate, state: State) -> Response:
    user = await run_in_threadpool(state.store.create_user, body.username, body.password)
    return json_response({"user": user.to_json()})


@router.get(f"{M}/users/get")
def get_user(username: Annotated[str, Query()], state: State) -> Response:
    return json_response({"user": state.store.get_user(username).to_json()})


@router.get(f"{M}/users/list")
def list_users(state: State) -> Response:
    return json_response({"users": [u.to_json() for u in state.store.list_users()]})


@router.get(f"{X}/users/current")
def current(caller: Caller) -> Response:
    return json_response({"user": caller.to_json()})


@router.patch(f"{M}/users/update-password")
async def update_password(body: UserPassword, state: State) -> Response:
    user = await run_in_threadpool(state.store.get_user, body.username)
    await run_in_threadpool(state.store.update_password, body.username, body.password)
    state.authenticator.forget_user(user.id)
    return _empty()


@router.patch(f"{M}/users/update-admin")
def update_admin(body: UserAdmin, state: State) -> Response:
    user = state.store.set_admin(body.username, body.is_admin)
    state.authenticator.forget_user(user.id)
    return _empty()


@router.delete(f"{M}/users/delete")
def delete_user(body: Username, state: State) -> Response:
    user = state.store.get_user(body.username)
    state.store.delete_user(body.username)
    state.authenticator.forget_user(user.id)
    return _empty()


# ------------------------------------------------------------- permissions


@router.post(f"{M}/experiments/permissions/create")
def create_experiment_permission(body: ExperimentGrant, state: State) -> Response:
    grant = state.store.grant_experiment(body.experiment_id, body.username, Permission.parse(body.permission), create=True)
    return json_response({"experiment_permission": grant})


@router.get(f"{M}/experiments/permissions/get")
def get_experiment_permission(
    experiment_id: Annotated[str, Query()], username: Annotated[str, Query()], state: State
) -> Response:
    return json_response({"experiment_permission": state.store.get_experiment_grant(experiment_id, username)})


@router.patch(f"{M}/experiments/permissions/update")
def update_experiment_permission(body: ExperimentGrant, state: State) -> Response:
    state.store.grant_experiment(body.experiment_id, body.username, Permission.parse(body.permission), create=False)
    return _empty()


@router.delete(f"{M}/experiments/permissions/delete")
def delete_experiment_permission(body: ExperimentGrantRef, state: State) -> Response:
    state.store.revoke_experiment(body.experiment_id, body.username)
    return _empty()


@router.post(f"{M}/registered-models/permissions/create")
def create_model_permission(body: ModelGrant, state: State) -> Response:
    grant = state.store.grant_model(body.name, body.username, Permission.parse(body.permission), create=True)
    return json_response({"registered_model_permission": grant})


@router.get(f"{M}/registered-models/permissions/get")
def get_model_permission(name: Annotated[str, Query()], username: Annotated[str, Query()], state: State) -> Response:
    return json_response({"registered_model_permission": state.store.get_model_grant(name, username)})


@router.patch(f"{M}/registered-models/permissions/update")
def update_model_permission(body: ModelGrant, state: State) -> Response:
    state.store.grant_model(body.name, body.username, Permission.parse(body.permission), create=False)
    return _empty()


@router.delete(f"{M}/registered-models/permissions/delete")
def delete_model_permission(body: ModelGrantRef, state: State) -> Response:
    state.store.revoke_model(body.name, body.username)
    return _empty()


# ------------------------------------------------------------------ tokens


@router.post(f"{X}/tokens/create")
def create_token(body: TokenCreate, state: State, caller: Caller) -> Response:
    new = state.store.create_token(body.username or caller.username, body.name,
                                   expires_in_seconds=body.expires_in_seconds)
    return json_response({"token": new.token, "token_info": new.info.to_json()})


@router.get(f"{X}/tokens/list")
def list_tokens(state: State, caller: Caller, username: str | None = None) -> Response:
    tokens = state.store.list_tokens(username or caller.username)
    return json_response({"tokens": [t.to_json() for t in tokens]})


@router.post(f"{X}/tokens/revoke")
def revoke_token(body: TokenRef, state: State) -> Response:
    token = state.store.revoke_token(body.token_id)
    try:
        state.authenticator.forget_user(state.store.get_user(token.username).id)
    except InvalidArgument:  # pragma: no cover - a stored username is always valid
        pass
    return json_response({"token_info": token.to_json()})


