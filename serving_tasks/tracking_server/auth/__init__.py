"""Authentication and permissions of the tracking server (off unless asked for).

``prefect-mlops server --auth`` (or ``PREFECT_MLOPS_AUTH=true``) makes ``create_app`` call
:func:`install_auth`: every request then needs HTTP Basic credentials or a Bearer API
token, and every route is checked against one rule table (:mod:`.rules`) by one FastAPI
``Security`` dependency (:mod:`.security`). Users, tokens and grants live in the backend
database (:mod:`.store`), so replicas share them.

Modules: ``permissions`` (READ < EDIT < MANAGE), ``rules`` (route -> requirement),
``security`` (the dependency), ``responses`` (creator grants, filtered searches),
``credentials`` (header parsing, verification cache, failed-login limits), ``store``,
``routes`` (MLflow's users/permissions API and our tokens), ``settings``, ``errors``.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request, Security
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from tracking_plugin.errors import MlopsError
from tracking_plugin.store.db import Database

from serving_tasks.tracking_server.auth.credentials import Authenticator
from serving_tasks.tracking_server.auth.errors import (
    AuthError,
    PermissionDenied,
    TooManyAttempts,
    Unauthenticated,
    install_auth_error_handler,
)
from serving_tasks.tracking_server.auth.permissions import Permission
from serving_tasks.tracking_server.auth.responses import AfterRulesMiddleware
from serving_tasks.tracking_server.auth.routes import router
from serving_tasks.tracking_server.auth.rules import RULES, Access, Rule, rule_for
from serving_tasks.tracking_server.auth.security import AuthState, Authorizer, authorize
from serving_tasks.tracking_server.auth.settings import AuthSettings
from serving_tasks.tracking_server.auth.store import ApiToken, AuthStore, NewToken, User

__all__ = [
    "RULES",
    "Access",
    "ApiToken",
    "AuthError",
    "AuthSettings",
    "AuthState",
    "AuthStore",
    "Authorizer",
    "NewToken",
    "Permission",
    "PermissionDenied",
    "Rule",
    "TooManyAttempts",
    "Unauthenticated",
    "User",
    "auth_dependencies",
    "docs_router",
    "ensure_admin",
    "install_auth",
    "rule_for",
]


def ensure_admin(store: AuthStore, settings: AuthSettings) -> None:
    """Create the first admin from the settings if missing; refuse to go on with no admin."""
    if settings.admin_username and settings.admin_password is not None:
        username = settings.admin_username
        if username not in {u.username for u in store.list_users()}:
            store.create_user(username, settings.admin_password.get_secret_value(), is_admin=True)
    if not store.has_admin():
        raise MlopsError(
            "Authentication is on but the database has no admin user: set "
            "PREFECT_MLOPS_AUTH_ADMIN_USERNAME and PREFECT_MLOPS_AUTH_ADMIN_PASSWORD for the first start "
            "(or run `prefect-mlops users create NAME --admin`). There is no default password."
        )


def auth_dependencies() -> list:  # type: ignore[type-arg]
    """The app-wide dependency list that turns auth on (pass to ``FastAPI(dependencies=...)``)."""
    return [Security(authorize)]


# /docs and /openapi.json under --auth: app routes, so they need a login like every other
# (FastAPI's built-in ones bypass app dependencies). Their rules are in .rules.
docs_router = APIRouter()


@docs_router.get("/openapi.json", include_in_schema=False)
def openapi_json(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@docs_router.get("/docs", include_in_schema=False)
def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{request.app.title} - Swagger UI")


def install_auth(app: FastAPI, db: Database, settings: AuthSettings) -> None:
    """Turn authentication on for ``app`` (built with :func:`auth_dependencies`)."""
    db.ensure_schema()
    store = AuthStore(db)
    ensure_admin(store, settings)
    authenticator = Authenticator(
        store, cache_seconds=settings.credential_cache_seconds, max_failed_logins=settings.max_failed_logins,
        lockout_seconds=settings.lockout_seconds,
    )
    authorizer = Authorizer(
        store, settings.default_permission, app.state.uris.root, cache_seconds=settings.credential_cache_seconds
    )
    state = AuthState(store, authenticator, authorizer)
    app.state.auth = state
    install_auth_error_handler(app)
    app.include_router(router)
    app.add_middleware(AfterRulesMiddleware, state=state)
