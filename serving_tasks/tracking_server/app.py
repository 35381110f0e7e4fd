"""The tracking server app: MLflow's REST API and our extensions over one backend.

``create_app()`` builds the FastAPI application from :class:`ServerSettings` (the
environment by default); it opens the store once (schema migrated on first use) and the
artifact store at the storage root, and keeps nothing else: every request is answered
from the database and the artifact store, so replicas on one PostgreSQL + S3 act as one.

    import uvicorn
    from serving_tasks.tracking_server import ServerSettings, create_app

    app = create_app(ServerSettings(backend_store_uri="sqlite:///mlops.db",
                                    default_artifact_root="./mlops-artifacts"))
    uvicorn.run(app, port=5000)
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI

from tracking_plugin.artifacts import get_artifact_repository
from tracking_plugin.backend import acquire_store, release_store

from serving_tasks.tracking_server.auth import AuthSettings, auth_dependencies, docs_router, install_auth
from serving_tasks.tracking_server.errors import install_error_handlers
from serving_tasks.tracking_server.fast import FastRoutes
from serving_tasks.tracking_server.limits import BodyLimitMiddleware
from serving_tasks.tracking_server.routes import (
    artifacts,
    experiments,
    info,
    logged_models,
    metrics,
    mlops,
    mlops_store,
    registry,
    runs,
)
from serving_tasks.tracking_server.settings import ServerSettings
from serving_tasks.tracking_server.ui import install_ui
from serving_tasks.tracking_server.wire import ArtifactUris

__all__ = ["create_app"]


def create_app(settings: ServerSettings | None = None, *, auth: AuthSettings | None = None) -> FastAPI:
    """The tracking server for ``settings`` (default: ``PREFECT_MLOPS_SERVER_*`` variables);
    with credentials and permissions when ``auth.enabled`` (default: ``PREFECT_MLOPS_AUTH``)."""
    settings = settings if settings is not None else ServerSettings()
    auth = auth if auth is not None else AuthSettings()
    backend = settings.backend_settings()
    # The app holds one store (engine and connection pool) for its life; built, and the
    # schema migrated, here, so a bad URI fails before the server listens.
    store = acquire_store(backend)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            release_store(store)

    app = FastAPI(
        lifespan=lifespan,
        title="prefect-mlops tracking server",
        version=info.server_version(),
        description=(
            "MLflow's REST API (/api/2.0/mlflow/..., the /api/2.0/mlflow-artifacts/ proxy) for the "
            "unmodified mlflow client, and prefect-mlops extensions under /api/2.0/mlops/."
        ),
        # Under --auth the docs are routes of the app (auth.docs_router), so the one
        # Security dependency and the rule table cover them; FastAPI's own are not.
        docs_url=None if auth.enabled else "/docs",
        openapi_url=None if auth.enabled else "/openapi.json",
        redoc_url=None,
        dependencies=auth_dependencies() if auth.enabled else None,
    )
    app.state.settings = settings
    app.state.store = store
    root = settings.artifact_storage_root
    app.state.artifact_root = get_artifact_repository(root, backend)
    app.state.uris = ArtifactUris(app.state.artifact_root.artifact_uri.rstrip("/") or root, proxy=settings.serve_artifacts)
    install_error_handlers(app)
    for router in (experiments.router, runs.router, metrics.router, logged_models.router, registry.router, mlops.router, mlops_store.router, info.router):
        app.include_router(router)
    if settings.serve_artifacts:
        app.include_router(artifacts.router)
    # Added first, so innermost: the body limit and auth's after-rules wrap it (see fast).
    app.add_middleware(FastRoutes, owner=app)
    install_ui(app)
    if auth.enabled:
        install_auth(app, app.state.store.db, auth)
        app.include_router(docs_router)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_json_body_bytes)
    return app
