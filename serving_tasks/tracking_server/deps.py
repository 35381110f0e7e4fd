"""FastAPI dependencies: the store, the artifact store and the URI translation of the app.

Built once per process by ``create_app`` and kept on ``app.state``; tests and embedders
can override them with ``app.dependency_overrides`` like any FastAPI dependency.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import Request

from serving_tasks.tracking_server.auth.permissions import EVERYTHING, Readable

if TYPE_CHECKING:
    from tracking_plugin.artifacts import ArtifactRepository
    from tracking_plugin.store.sql import SqlStore

    from serving_tasks.tracking_server.settings import ServerSettings
    from serving_tasks.tracking_server.wire import ArtifactUris

__all__ = [
    "get_actor", "get_artifact_root", "get_claimed_actor", "get_readable_experiments", "get_readable_models",
    "get_server_settings", "get_store", "get_uris",
]


def get_store(request: Request) -> SqlStore:
    """The process-wide store of the backend (one engine and connection pool)."""
    return request.app.state.store  # type: ignore[no-any-return]


def get_uris(request: Request) -> ArtifactUris:
    """Stored artifact locations <-> ``mlflow-artifacts:/`` URIs shown to clients."""
    return request.app.state.uris  # type: ignore[no-any-return]


def get_artifact_root(request: Request) -> ArtifactRepository:
    """The artifact store at the storage root, which the proxy reads and writes."""
    return request.app.state.artifact_root  # type: ignore[no-any-return]


def get_server_settings(request: Request) -> ServerSettings:
    return request.app.state.settings  # type: ignore[no-any-return]


def get_actor(request: Request) -> str | None:
    """The authenticated user of the request (``--auth``), recorded as the actor of audit
    rows; None when authentication is off."""
    user = getattr(request.state, "auth_user", None)
    return None if user is None else user.username  # type: ignore[no-any-return]


def get_claimed_actor(request: Request) -> str | None:
    """Under ``--auth``: the ``actor`` the client put in an audited request's body (the body's
    ``actor`` is replaced by the authenticated user); kept beside it in the audit row,
    marked as claimed. None without auth or when the client claimed nobody."""
    return getattr(request.state, "claimed_actor", None)


def get_readable_experiments(request: Request) -> Readable:
    """The experiments the request's user may read (everything without ``--auth``), for
    list pages that filter what they show; the rule table's check already ran."""
    state, user = getattr(request.app.state, "auth", None), getattr(request.state, "auth_user", None)
    return EVERYTHING if state is None or user is None else state.authorizer.readable_experiments(user)  # type: ignore[no-any-return]


def get_readable_models(request: Request) -> Readable:
    """The registered models the request's user may read (everything without ``--auth``)."""
    state, user = getattr(request.app.state, "auth", None), getattr(request.state, "auth_user", None)
    return EVERYTHING if state is None or user is None else state.authorizer.readable_models(user)  # type: ignore[no-any-return]
