"""The mlflow client's hot calls, answered without FastAPI's per-request machinery.

A training job's traffic is a handful of calls over and over: ``runs/log-batch``,
``runs/log-metric``, ``runs/create``, ``runs/update``, ``runs/get`` (the client's
``set_terminated`` asks for the run before ending it) and ``runs/search``. For such a
call FastAPI spends more than the store does (routing over every route of the app,
resolving dependencies, validating a 1,000-point body with pydantic, a trip through
anyio's thread pool), so :class:`FastRoutes`, an ASGI middleware inside the app, answers
them itself:

- the same route functions of :mod:`.routes.runs` do the work, with the same store and URI
  translation (``app.state``), in a worker thread;
- the body is parsed with orjson and validated by the route's pydantic model, except a
  log-batch of plain well-typed points, checked by a loop of exact type tests (anything
  else goes through the model);
- under ``--auth``, :func:`.auth.security.authorize` (the one rule table) runs first, on the
  route FastAPI would have matched;
- errors go through the app's own exception handlers, so codes and messages are MLflow's
  as on every other route;
- a body the model refuses (or that is not a JSON object) is handed to FastAPI unchanged,
  which answers its 400 exactly as before; so are requests while
  ``app.dependency_overrides`` is set (tests overriding the store).

The routes stay registered with FastAPI: ``/openapi.json`` describes them, and the body
limit (``limits.BodyLimitMiddleware``) and auth's after-rules wrap this middleware.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qsl

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

from tracking_plugin.entities import Metric, Param, RunTag
from tracking_plugin.store._metric_batch import MetricColumns, plain_points
from tracking_plugin.store.rest_wire import build_metric

from serving_tasks.tracking_server import schemas
from serving_tasks.tracking_server.auth.security import authorize
from serving_tasks.tracking_server.routes import runs

__all__ = ["FastRoutes"]

Handler = Callable[[Any, Any, Any], Response]  # (parsed request, store, uris) -> response


@dataclass(frozen=True)
class _Entry:
    method: str
    path: str
    parse: Callable[[dict[str, Any]], Any]  # raises ValidationError (-> FastAPI answers)
    handle: Handler


def _model(model: type[BaseModel]) -> Callable[[dict[str, Any]], Any]:
    return model.model_validate


def _run_id_of(data: dict[str, Any]) -> str | None:
    run_id = data.get("run_id") or data.get("run_uuid")
    return run_id if type(run_id) is str else None


def _points(items: Any) -> MetricColumns | list[Metric] | None:
    """Metric points of a log-batch body when every one is plain and well typed (str key,
    float value, int timestamp and step within int64), else None (the model decides).

    Column by column: each field's values in one list, their types checked as a set. A
    batch without NaN stays columns (``MetricColumns``), which the store writes as they
    are; one with NaN becomes entities by ``build_metric``, which sets the slots directly
    (the frozen dataclass's own ``__init__`` goes through ``object.__setattr__``). Either
    costs a fraction of a loop testing and building point by point (1.1 ms for 1,000)."""
    if type(items) is not list:
        return None
    if not items:
        return []
    if set(map(type, items)) != {dict}:
        return None
    try:
        keys = [item["key"] for item in items]
        values = [item["value"] for item in items]
        stamps = [item["timestamp"] for item in items]
    except KeyError:
        return None
    steps = [item.get("step", 0) for item in items]
    columns = MetricColumns.checked(keys, values, stamps, steps)
    if columns is not None:
        return columns
    if not plain_points(keys, values, stamps, steps):
        return None
    return list(map(build_metric, keys, values, stamps, steps))


def _pairs(items: Any) -> list[tuple[str, str]] | None:
    if type(items) is not list:
        return None
    out = []
    for item in items:
        if type(item) is not dict or type(item.get("key")) is not str or type(item.get("value")) is not str:
            return None
        out.append((item["key"], item["value"]))
    return out


@dataclass(frozen=True)
class _Batch:
    run_id: str
    metrics: MetricColumns | list[Metric]
    params: list[Param]
    tags: list[RunTag]


def _parse_batch(data: dict[str, Any]) -> _Batch:
    run_id = _run_id_of(data)
    metrics = _points(data.get("metrics", []))
    params = _pairs(data.get("params", []))
    tags = _pairs(data.get("tags", []))
    if run_id is None or metrics is None or params is None or tags is None:
        body = schemas.LogBatch.model_validate(data)
        assert body.run_id is not None
        return _Batch(
            body.run_id, [Metric(m.key, m.value, m.timestamp, m.step) for m in body.metrics],
            [Param(p.key, p.value) for p in body.params], [RunTag(t.key, t.value) for t in body.tags],
        )
    return _Batch(run_id, metrics, [Param(k, v) for k, v in params], [RunTag(k, v) for k, v in tags])


def _log_batch(batch: _Batch, store: Any, _uris: Any) -> Response:
    return runs.log_batch_items(store, batch.run_id, batch.metrics, batch.params, batch.tags)


def _parse_get(query: dict[str, Any]) -> dict[str, Any]:
    return query


def _get_run(query: dict[str, Any], store: Any, uris: Any) -> Response:
    return runs.get_run(store, uris, run_id=query.get("run_id"), run_uuid=query.get("run_uuid"))


M = "/api/2.0/mlflow/runs"
_CREATE_RUN = f"{M}/create"
_ENTRIES = (
    _Entry("POST", f"{M}/log-batch", _parse_batch, _log_batch),
    _Entry("POST", f"{M}/log-metric", _model(schemas.LogMetric), lambda b, s, u: runs.log_metric(b, s)),
    _Entry("POST", f"{M}/create", _model(schemas.CreateRun), runs.create_run),
    _Entry("POST", f"{M}/update", _model(schemas.UpdateRun), runs.update_run),
    _Entry("POST", f"{M}/search", _model(schemas.SearchRuns), runs.search_runs),
    _Entry("GET", f"{M}/get", _parse_get, _get_run),
)
_GET_PARAMS = {f"{M}/get": frozenset({"run_id", "run_uuid"})}


class FastRoutes:
    """ASGI middleware answering the routes of ``_ENTRIES`` (see the module doc); every
    other request goes on to ``app``. ``owner`` is the FastAPI app (state, exception
    handlers, the registered routes)."""

    def __init__(self, app: Any, owner: FastAPI) -> None:
        self.app = app
        self.owner = owner
        registered = {(method, r.path): r for r in runs.router.routes for method in getattr(r, "methods", ())}
        self.entries = {(e.method, e.path): (e, registered[(e.method, e.path)]) for e in _ENTRIES}
        # Store calls block: they run in threads of our own (a plain executor costs a fraction
        # of anyio's to_thread per call), as many as anyio would use.
        self.executor = ThreadPoolExecutor(max_workers=40, thread_name_prefix="mlops-fast")

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Any) -> None:
        found = self.entries.get((scope.get("method", ""), scope.get("path", ""))) if scope["type"] == "http" else None
        if found is None or self.owner.dependency_overrides:
            await self.app(scope, receive, send)
            return
        entry, route = found
        scope["route"] = route
        scope.setdefault("path_params", {})
        body = b""
        request = Request(scope, receive)
        try:
            if entry.method == "GET":
                data = _query(scope, _GET_PARAMS[entry.path])
            else:
                body = await _read(receive)  # within the body limit (BodyLimitMiddleware's receive)
                try:
                    data = orjson.loads(body)
                except orjson.JSONDecodeError:
                    data = None
            parsed = None
            if isinstance(data, dict):
                try:
                    parsed = entry.parse(data)
                except ValidationError:
                    parsed = None
            if parsed is None:  # FastAPI answers (its 400 naming the field), from the same bytes
                await self.app(scope, _replay(body, receive), send)
                return
            request._body = body
            if entry.method != "GET":
                request._json = data
            state = self.owner.state
            auth = getattr(state, "auth", None)
            if auth is not None:
                await authorize(request)
                if getattr(request.state, "search_narrowed", False):  # unreadable experiments left out
                    parsed = entry.parse(data)
            response = await asyncio.get_running_loop().run_in_executor(
                self.executor, entry.handle, parsed, state.store, state.uris
            )
            if auth is not None and entry.path == _CREATE_RUN and response.status_code == 200:
                info = orjson.loads(response.body)["run"]["info"]
                auth.authorizer.remember_run(info["run_id"], info["experiment_id"])
        except Exception as exc:  # the app's handlers: MLflow's error codes (500 for the unforeseen)
            handler = _handler_for(self.owner, exc)
            if handler is None:
                raise
            response = await handler(request, exc)
        await response(scope, receive, send)


def _handler_for(app: FastAPI, exc: Exception) -> Any:
    for cls in type(exc).__mro__:
        if cls in app.exception_handlers:
            return app.exception_handlers[cls]
    return None


async def _read(receive: Callable[[], Awaitable[Any]]) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
    """A ``receive`` that gives the already read body once, then the connection's own."""
    sent = False

    async def replay() -> Any:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _query(scope: dict[str, Any], allowed: frozenset[str]) -> dict[str, Any] | None:
    """The query string as a dict when it holds only ``allowed`` keys, each once and
    non-empty (else None: FastAPI reads it)."""
    pairs = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    query = dict(pairs)
    if len(query) != len(pairs) or not query.keys() <= allowed or not all(query.values()):
        return None
    return query
