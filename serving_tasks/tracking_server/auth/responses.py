"""After a route answered: creators get MANAGE, searches keep only what the caller may read.

An ASGI middleware, active only on the few routes whose rule has an :class:`~.rules.After`
step (all of them fixed paths). It buffers those JSON answers, applies the step for the
user :func:`~.security.authorize` authenticated (``request.state.auth_user``) and sends
the result. A page of a filtered search can hold fewer items than ``max_results``, as
with MLflow's basic-auth app; ``next_page_token`` is kept, so paging still reaches every
readable item.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

import orjson
from starlette.concurrency import run_in_threadpool

from serving_tasks.tracking_server.auth.permissions import Permission
from serving_tasks.tracking_server.auth.rules import RULES, After
from serving_tasks.tracking_server.auth.security import AuthState
from serving_tasks.tracking_server.auth.store import User

__all__ = ["AfterRulesMiddleware"]

_AFTER = {key: rule.after for key, rule in RULES.items() if rule.after is not None}


def apply_after(
    state: AuthState, step: After, user: User, data: dict[str, Any], creating_model: str | None = None
) -> dict[str, Any]:
    """``data`` (a successful answer) after ``step`` for ``user``; ``creating_model``: the
    name the request created a version under when no such model existed before it."""
    if step is After.GRANT_EXPERIMENT_CREATOR:
        if not user.is_admin and data.get("experiment_id") is not None:
            state.store.grant_experiment(data["experiment_id"], user.username, Permission.MANAGE)
        return data
    if step is After.GRANT_MODEL_CREATOR:
        name = (data.get("registered_model") or {}).get("name")
        if not user.is_admin and name:
            state.store.grant_model(name, user.username, Permission.MANAGE)
        return data
    if step is After.GRANT_NEW_MODEL_CREATOR:
        version = data.get("model_version") or {}
        # version 1 under a name that did not exist: this call created the model (two racing
        # first versions: only the one that got number 1 becomes its manager)
        if creating_model and version.get("name") == creating_model and str(version.get("version")) == "1":
            state.store.grant_model(creating_model, user.username, Permission.MANAGE)
        return data
    if user.is_admin:
        return data
    if step is After.FILTER_EXPERIMENTS:
        readable = state.authorizer.readable_experiments(user)
        data["experiments"] = [e for e in data.get("experiments", []) if readable.allows(e.get("experiment_id"))]
    elif step is After.FILTER_MODELS:
        readable = state.authorizer.readable_models(user)
        data["registered_models"] = [m for m in data.get("registered_models", []) if readable.allows(m.get("name"))]
    elif step is After.FILTER_MODEL_VERSIONS:
        readable = state.authorizer.readable_models(user)
        data["model_versions"] = [v for v in data.get("model_versions", []) if readable.allows(v.get("name"))]
    for key in ("experiments", "registered_models", "model_versions"):
        if key in data and not data[key]:
            del data[key]  # proto JSON leaves out empty lists, as the unfiltered answer does
    return data


class AfterRulesMiddleware:
    def __init__(self, app: Any, state: AuthState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Any) -> None:
        step = _AFTER.get((scope.get("method", ""), scope.get("path", ""))) if scope["type"] == "http" else None
        if step is None:
            await self.app(scope, receive, send)
            return
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def capture(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = b"".join(chunks)
            request_state = scope.get("state") or {}
            user = request_state.get("auth_user")
            if start.get("status") == 200 and user is not None:
                data = orjson.loads(body) if body else {}
                data = await run_in_threadpool(
                    apply_after, self.state, step, user, data, request_state.get("creating_model")
                )
                body = orjson.dumps(data)
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, capture)
