# Over 600 lines on purpose: the scoring app's routes, auth, limits and error mapping are one
# FastAPI factory; prediction, batching and model swaps live in their own modules.
"""The scoring app: MLflow's scoring protocol over one model URI, as a FastAPI application.

Routes::

    POST /invocations   JSON (dataframe_split | dataframe_records | instances | inputs,
                        optional params), text/csv or Parquet -> {"predictions": [...]}
    GET  /ping          200 while the process is up
    GET  /health        200 once a model is loaded, 503 before
    GET  /version       the model version now serving (follows the alias)
    GET  /metadata      name, version, alias, run id, signature, input example, batching,
                        prediction log counters (logged, queued, dropped rows)
    GET  /openapi.json  the OpenAPI schema; the request body is derived from the signature
                        (its example is made up from the column types: the model's input
                        example holds real rows and is only in /metadata)
    GET  /docs, /redoc  FastAPI's schema viewers

With a token, every route but ``/ping`` and ``/health`` requires it (one check in front of
the routing, so a route added later cannot forget it; unknown paths answer 401 too).

Errors use MLflow's JSON shape ``{"error_code": ..., "message": ...}``: 400 for bad input
(the message names the key or column), 401 without the bearer token, 413 over the body
limit or the decoded-size and row limits (:class:`~serving_tasks._payload.PayloadLimits`),
415 for other content types, 500 with a ``request_id`` (also in ``X-Request-ID``) only
when the model itself raises. None of them stops the server.

Every response carries ``X-Request-ID``: the caller's own when it sent a valid one (1-128
letters, digits and ``._:-``), else a new one, so labels that arrive later can be joined
to logged predictions. With ``log_predictions`` (``--log-predictions RATE``) a share of the
answered requests is queued for :mod:`serving_tasks._prediction_log`, which writes them as
Parquet off the request path (dropping and counting rows when its queue is full).

The request body is read as bytes and parsed here (orjson), not by pydantic: on this hot
path a pydantic model costs more than the rest of the request. ``predict`` runs in one
worker thread behind the micro-batcher, so the event loop does not wait on the model
(except a lone request whose last predict took under 20 ms, which runs on the loop to
save two thread hand-offs; see ``_batcher``); each response says in ``X-Batch-Size`` how
many requests shared its ``predict`` call and in ``Server-Timing: predict;dur=<ms>`` how
long that call took.

Example::

    import uvicorn
    from serving_tasks.app import create_app

    uvicorn.run(create_app("models:/churn@champion"), port=5000)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

import orjson
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response

from tracking_plugin.errors import InvalidArgument

from serving_tasks._batcher import MicroBatcher
from serving_tasks._model_holder import ModelHolder
from serving_tasks._prediction_log import PredictionLogger
from serving_tasks._promotion_listener import start_promotion_listener
from serving_tasks._served_model import ModelPredictError, ServedModel, predictions_to_json
from serving_tasks._payload import (
    CONTENT_TYPE_CSV,
    CONTENT_TYPE_JSON,
    CONTENT_TYPE_PARQUET,
    DEFAULT_MAX_COLUMNS,
    DEFAULT_MAX_DECODED_BYTES,
    DEFAULT_MAX_ROWS,
    MalformedPayload,
    ParsedPayload,
    PayloadLimits,
    PayloadTooLarge,
    UnsupportedContentType,
    check_values,
    params_key,
    parse_content_type,
    parse_payload,
)

__all__ = ["create_app"]

logger = logging.getLogger("serving_tasks")

# Bodies larger than this are parsed in a helper thread so one big request does not stall
# the event loop (and every small request queued behind it).
_INLINE_PARSE_LIMIT = 256 * 1024
# Batches whose predict should take less than this run on the event loop (see _batcher).
_INLINE_PREDICT_MS = 20.0
_JSON = "application/json"
# Routes a load balancer or orchestrator probes without credentials.
_OPEN_PATHS = frozenset({"/ping", "/health"})
# serving_tasks.deploy proves a server is the one it started: it sends a random challenge
# in this header to /health and expects HMAC-SHA256(instance key, challenge) back.
INSTANCE_CHALLENGE_HEADER = "X-Mlops-Instance-Challenge"
INSTANCE_PROOF_HEADER = "X-Mlops-Instance-Proof"
# A caller's X-Request-ID is echoed (and logged with its predictions) only if it matches.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id_for(given: str | None) -> str:
    """The caller's request id when it is valid, else a new one (32 hex digits).

    >>> request_id_for("order-42")
    'order-42'
    >>> len(request_id_for("bad id with spaces"))
    32
    """
    if given is not None and _REQUEST_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex


def instance_proof(key: str, challenge: str) -> str:
    """The answer to a ``/health`` identity challenge (see :mod:`serving_tasks.deploy`)."""
    return hmac.new(key.encode(), challenge.encode(), hashlib.sha256).hexdigest()


def _server_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("prefect-mlops")
    except PackageNotFoundError:
        return "0+unknown"


@dataclass(frozen=True, slots=True)
class _Reply:
    """A response, sendable through FastAPI or straight over ASGI."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()

    def to_response(self) -> Response:
        return Response(self.body, status_code=self.status, media_type=_JSON, headers=dict(self.headers))

    async def send(self, send: Any) -> None:
        raw = [(b"content-type", b"application/json"), (b"content-length", str(len(self.body)).encode())]
        raw.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers)
        await send({"type": "http.response.start", "status": self.status, "headers": raw})
        await send({"type": "http.response.body", "body": self.body})


def _error(status: int, code: str, message: str, headers: tuple[tuple[str, str], ...] = (), **extra: Any) -> _Reply:
    return _Reply(status, orjson.dumps({"error_code": code, "message": message, **extra}), headers)


def _json(value: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(value, default=str, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status, media_type=_JSON)


class _ClientGone(Exception):
    """The client disconnected before sending its whole body: nobody to answer."""


class _Auth:
    """Optional bearer-token check, compared in constant time."""

    def __init__(self, token: str | None) -> None:
        if token is not None and not token:
            raise InvalidArgument("The bearer token is empty; pass a non-empty token or none at all.")
        self._token = token.encode() if token else None

    @property
    def enabled(self) -> bool:
        return self._token is not None

    def refusal(self, header: str | None) -> _Reply | None:
        """None if ``header`` (the Authorization value) is accepted, else the 401 reply."""
        if self._token is None:
            return None
        scheme, _, given = (header or "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self._token):
            return None
        if not header:
            return _error(
                401,
                "UNAUTHENTICATED",
                "This server requires a bearer token: send 'Authorization: Bearer <token>'.",
                headers=(("WWW-Authenticate", 'Bearer realm="prefect-mlops"'),),
            )
        return _error(
            401,
            "UNAUTHENTICATED",
            "The bearer token is not valid for this server.",
            headers=(("WWW-Authenticate", 'Bearer realm="prefect-mlops", error="invalid_token"'),),
        )


def _internal_error(request_id: str | None, exc: BaseException, what: str) -> _Reply:
    request_id = request_id_for(request_id)
    logger.error("request %s: %s", request_id, what, exc_info=exc)
    message = f"{what} (request id {request_id}; the server log has the traceback)."
    if isinstance(exc, ModelPredictError):
        message = f"The model raised {exc.message} (request id {request_id}); the server log has the traceback."
    return _error(
        500,
        getattr(exc, "error_code", "INTERNAL_ERROR"),
        message,
        headers=(("X-Request-ID", request_id),),
        request_id=request_id,
    )


class _Scorer:
    """POST /invocations: auth, content type, body limit, parse, batch, predict, reply."""

    def __init__(
        self,
        holder: ModelHolder,
        batcher: MicroBatcher[ParsedPayload, bytes],
        auth: _Auth,
        max_body_bytes: int,
        limits: PayloadLimits,
        prediction_log: PredictionLogger | None = None,
    ) -> None:
        self.holder = holder
        self.batcher = batcher
        self.auth = auth
        self.limit = max_body_bytes
        self.limits = limits
        self.prediction_log = prediction_log

    async def score(self, header: Callable[[str], str | None], chunks: AsyncIterator[bytes]) -> _Reply:
        """``header(name)`` reads a request header (lower-case name); ``chunks`` the body."""
        request_id = request_id_for(header("x-request-id"))
        reply = await self._score(header, chunks, request_id)
        if any(k == "X-Request-ID" for k, _ in reply.headers):
            return reply
        return _Reply(reply.status, reply.body, (*reply.headers, ("X-Request-ID", request_id)))

    async def _score(self, header: Callable[[str], str | None], chunks: AsyncIterator[bytes], request_id: str) -> _Reply:
        if (refusal := self.auth.refusal(header("authorization"))) is not None:
            return refusal
        try:
            media_type = parse_content_type(header("content-type"))
            body = await self._read_body(header("content-length"), chunks)
            served = self.holder.current
            if len(body) > _INLINE_PARSE_LIMIT:
                payload = await asyncio.to_thread(_parse, body, media_type, served, self.limits)
            else:
                payload = _parse(body, media_type, served, self.limits)
            served.check_columns(payload.column_names)
            check_values(payload, served.required_names, served.floating_names)
            if payload.n_rows == 0:  # many models refuse empty input: answer without them
                return _Reply(200, b'{"predictions":[]}')
            key = (served, payload.frame is None, payload.column_names, params_key(payload.params))
            result = await self.batcher.submit(key, served, payload, rows=payload.n_rows)
        except _ClientGone:
            raise
        except UnsupportedContentType as exc:
            return _error(415, exc.error_code, exc.message)
        except PayloadTooLarge as exc:
            return _error(413, exc.error_code, exc.message)
        except InvalidArgument as exc:
            return _error(400, exc.error_code, exc.message)
        except ModelPredictError as exc:
            return _internal_error(request_id, exc, "The model failed on this input")
        except Exception as exc:
            return _internal_error(request_id, exc, "Unexpected error while scoring")
        if self.prediction_log is not None:
            self.prediction_log.offer(served, payload, result.value, request_id, body=body, media_type=media_type)
        return _Reply(
            200,
            b'{"predictions":' + result.value + b"}",
            (
                ("X-Batch-Size", str(result.batch_requests)),
                # W3C Server-Timing: how much of the latency was the model (browsers' and
                # proxies' timing views show it; the benchmark subtracts it).
                ("Server-Timing", f"predict;dur={result.predict_ms:.3f}"),
            ),
        )

    async def _read_body(self, declared: str | None, chunks: AsyncIterator[bytes]) -> bytes:
        """The whole body, refusing (413) past the limit without reading the rest."""
        limit = self.limit
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                raise MalformedPayload(f"Content-Length {declared!r} is not a number.") from None
            if size > limit:
                raise PayloadTooLarge(
                    f"The body is {size} bytes, over this server's limit of {limit} bytes; "
                    "send fewer rows per request or start the server with a larger --max-body-mb."
                )
        parts: list[bytes] = []
        received = 0
        async for chunk in chunks:
            received += len(chunk)
            if received > limit:  # chunked uploads declare no length: count while reading
                raise PayloadTooLarge(
                    f"The body exceeds this server's limit of {limit} bytes; "
                    "send fewer rows per request or start the server with a larger --max-body-mb."
                )
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)


async def _asgi_body(receive: Any) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone()
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


class _InvocationsFastPath:
    """Serves ``POST /invocations`` as plain ASGI, in front of FastAPI's routing.

    FastAPI's router, dependency solving and middleware stack cost about as much per
    request as parsing a small payload; the scoring endpoint skips them (middleware added
    to the app with ``add_middleware`` does not see ``POST /invocations``). The route is still
    declared on the FastAPI app (same scorer) so that it appears in the OpenAPI schema.
    """

    def __init__(self, app: Any, scorer: _Scorer) -> None:
        self.app = app
        self.scorer = scorer

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] != "/invocations" or scope["method"] != "POST":
            given = next((v for k, v in scope["headers"] if k == b"x-request-id"), None)
            request_id = request_id_for(None if given is None else given.decode("latin-1")).encode()
            # The token rule for every other route, /docs and /openapi.json included.
            auth = self.scorer.auth
            if auth.enabled and scope["path"] not in _OPEN_PATHS:
                header = next((v for k, v in scope["headers"] if k == b"authorization"), None)
                refusal = auth.refusal(None if header is None else header.decode("latin-1"))
                if refusal is not None:
                    await refusal.send(_with_request_id(send, request_id))
                    return
            await self.app(scope, receive, _with_request_id(send, request_id))
            return
        headers: dict[bytes, bytes] = dict(scope["headers"])

        def header(name: str) -> str | None:
            value = headers.get(name.encode())
            return None if value is None else value.decode("latin-1")

        try:
            reply = await self.scorer.score(header, _asgi_body(receive))
        except _ClientGone:
            return
        await reply.send(send)


def _with_request_id(send: Any, request_id: bytes) -> Any:
    """``send`` that adds ``X-Request-ID`` to a response that has none."""

    async def sending(message: Any) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            if not any(k.lower() == b"x-request-id" for k, _ in headers):
                headers.append((b"x-request-id", request_id))
                message = {**message, "headers": headers}
        await send(message)

    return sending


def create_app(
    model_uri: str,
    *,
    token: str | None = None,
    max_batch_size: int = 64,
    max_wait_ms: float = 2.0,
    max_body_bytes: int = 10 * 2**20,
    max_rows: int = DEFAULT_MAX_ROWS,
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
    max_columns: int = DEFAULT_MAX_COLUMNS,
    poll_interval: float | None = 5.0,
    follow_events: bool | None = None,
    allow_pickle: bool = False,
    loader: Callable[[str], Any] | None = None,
    instance_key: str | None = None,
    log_predictions: float | None = None,
    prediction_log_uri: str | None = None,
    prediction_log_queue_rows: int = 100_000,
    prediction_log_flush_s: float = 5.0,
) -> FastAPI:
    """Build the scoring app for ``model_uri`` (``models:/name@alias``, ``runs:/...``, a path).

    The model loads when the app starts (uvicorn's lifespan), so a model that cannot be
    loaded stops the server at startup instead of failing every request.

    - ``token``: require ``Authorization: Bearer <token>`` on every route but ``/ping`` and
      ``/health`` (the probes), ``/openapi.json`` and ``/docs`` included;
    - ``max_batch_size`` rows / ``max_wait_ms``: micro-batching bounds (1 turns it off);
    - ``max_body_bytes``: larger bodies get 413;
    - ``max_rows`` per request and ``max_decoded_bytes`` (what a CSV or Parquet body
      decodes to, e.g. a compressed Parquet file): 413 past them; ``max_columns``: 400 for
      wider input when the signature names no columns (with names, its width is the bound);
    - ``poll_interval``: seconds between registry checks of the alias (None: never);
    - ``follow_events``: also listen for ``mlops.model.promoted`` Prefect events to notice
      alias moves at once (None: when ``PREFECT_API_URL`` is set);
    - ``allow_pickle``: also load models serialized with pickle/cloudpickle (unpickling
      runs code: only for models you trust);
    - ``loader``: how a model URI becomes a model (default ``tracking_plugin.models.load_model``);
    - ``instance_key``: a secret the starter of this server knows; ``/health`` answers an
      ``X-Mlops-Instance-Challenge`` with its HMAC so the starter can tell its own server
      from another process on the port (:mod:`serving_tasks.deploy`);
    - ``log_predictions``: share of requests (0 < rate <= 1) whose inputs, predictions and
      request id are written as Parquet under ``prediction_log_uri`` (default
      ``<artifact root>/prediction-logs``); None (the default) logs nothing. At most
      ``prediction_log_queue_rows`` rows wait in memory (more are dropped and counted in
      ``/metadata``); they are written at least every ``prediction_log_flush_s`` seconds
      (:mod:`serving_tasks._prediction_log`).
    """
    if max_body_bytes < 1:
        raise InvalidArgument(f"max_body_bytes must be positive, got {max_body_bytes}.")
    limits = PayloadLimits(max_rows=max_rows, max_decoded_bytes=max_decoded_bytes, max_columns=max_columns)
    auth = _Auth(token)
    holder = ModelHolder(model_uri, poll_interval=poll_interval, loader=loader, allow_pickle=allow_pickle)
    prediction_log = None
    if log_predictions is not None:
        prediction_log = PredictionLogger(
            prediction_log_uri or default_prediction_log_uri(),
            sample_rate=log_predictions,
            max_queue_rows=prediction_log_queue_rows,
            flush_interval=prediction_log_flush_s,
        )
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlops-predict")
    batcher: MicroBatcher[ParsedPayload, bytes] = MicroBatcher(
        lambda served, payloads: served.predict_payloads(payloads),
        executor=executor,
        max_batch_size=max_batch_size,
        max_wait_ms=max_wait_ms,
        inline_below_ms=_INLINE_PREDICT_MS,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not holder.loaded:  # serving_tasks.server loads it before uvicorn starts
            await asyncio.to_thread(holder.load)
        holder.start()
        if prediction_log is not None:
            prediction_log.start()
        listener = None
        if holder.follows_alias:
            listener = start_promotion_listener(holder, enabled=follow_events)
        app.state.listener = listener
        try:
            yield
        finally:
            if listener is not None:
                listener.stop()
            holder.stop()
            executor.shutdown(wait=False, cancel_futures=True)
            if prediction_log is not None:  # after the last request: write what is queued
                await asyncio.to_thread(prediction_log.stop)

    app = FastAPI(
        title="prefect-mlops scoring server",
        summary=f"MLflow scoring protocol for {model_uri}",
        version=_server_version(),
        lifespan=lifespan,
    )
    app.state.holder = holder
    app.state.batcher = batcher
    app.state.prediction_log = prediction_log

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        return _internal_error(request.headers.get("x-request-id"), exc, "Unexpected server error").to_response()

    @app.get("/ping", summary="Liveness probe", response_class=Response, responses={200: {"description": "Alive"}})
    async def ping() -> Response:
        return Response(b"\n", media_type=_JSON)

    @app.get(
        "/health",
        summary="Readiness probe: 200 once a model is loaded",
        response_class=Response,
        responses={200: {"description": "A model is loaded"}, 503: {"description": "No model loaded yet"}},
    )
    async def health(request: Request) -> Response:
        headers = {}
        challenge = request.headers.get(INSTANCE_CHALLENGE_HEADER)
        if challenge and instance_key:
            headers[INSTANCE_PROOF_HEADER] = instance_proof(instance_key, challenge[:256])
        if not holder.loaded:
            reply = _error(503, "TEMPORARILY_UNAVAILABLE", "The model is still loading.").to_response()
            reply.headers.update(headers)
            return reply
        return Response(b"\n", media_type=_JSON, headers=headers)

    @app.get(
        "/version",
        summary="The model version now serving",
        response_class=Response,
        responses={200: {"description": "Version info", "content": {_JSON: {"schema": _VERSION_SCHEMA}}}},
        openapi_extra=_security(auth),
    )
    async def version() -> Response:
        return _json(_identity(holder, holder.current))

    @app.get(
        "/metadata",
        summary="Model name, version, alias, run id, signature and input example",
        response_class=Response,
        responses={200: {"description": "Model metadata", "content": {_JSON: {"schema": {"type": "object"}}}}},
        openapi_extra=_security(auth),
    )
    async def metadata() -> Response:
        served = holder.current
        body = _identity(holder, served)
        body.update(
            signature=_signature_dict(served.signature),
            input_example=_example_split(served.input_example),
            loaded_at=served.loaded_at,
            refused_versions=[
                {"version": r.version, "reason": r.reason, "at": r.at} for r in holder.refused
            ],
            batching={
                "max_batch_size": batcher.max_batch_size,
                "max_wait_ms": batcher.max_wait * 1000,
                "predict_calls": batcher.batches,
                "requests": batcher.requests,
            },
            max_body_bytes=max_body_bytes,
            max_rows=limits.max_rows,
            max_decoded_bytes=limits.max_decoded_bytes,
            alias_follow={
                "poll_interval_s": holder.poll_interval if holder.follows_alias else None,
                "promotion_events": getattr(app.state, "listener", None) is not None,
                "last_registry_error": holder.last_error,
            },
            prediction_log=None if prediction_log is None else prediction_log.stats(),
        )
        return _json(body)

    scorer = _Scorer(holder, batcher, auth, max_body_bytes, limits, prediction_log)

    @app.post(
        "/invocations",
        summary="Score rows with the served model (MLflow scoring protocol)",
        response_class=Response,
        responses=_INVOCATION_RESPONSES,
        openapi_extra=_security(auth),
    )
    async def invocations(request: Request) -> Response:
        # Normally answered by _InvocationsFastPath before routing; same scorer either way.
        try:
            reply = await scorer.score(request.headers.get, request.stream())
        except _ClientGone:
            return Response(status_code=499)
        return reply.to_response()

    # Outermost: POST /invocations is answered before Starlette's middleware stack (its
    # error and telemetry middlewares cost a third of the event loop's time per request);
    # the scorer turns every error into its own 4xx/5xx reply anyway.
    build_stack = app.build_middleware_stack
    app.build_middleware_stack = lambda: _InvocationsFastPath(build_stack(), scorer)  # type: ignore[method-assign]
    _install_openapi(app, holder, auth)
    return app


def default_prediction_log_uri() -> str:
    """``<PREFECT_MLOPS_ARTIFACT_ROOT>/prediction-logs``: where ``--log-predictions`` writes by default."""
    from tracking_plugin.artifacts import join_artifact_uri
    from tracking_plugin.settings import get_settings

    return join_artifact_uri(get_settings().artifact_root, "prediction-logs")


def _parse(body: bytes, media_type: str, served: ServedModel, limits: PayloadLimits) -> ParsedPayload:
    return parse_payload(
        body, media_type, input_names=served.input_names, required_names=served.required_names, limits=limits
    )


def _identity(holder: ModelHolder, served: ServedModel) -> dict[str, Any]:
    return {
        "model_uri": holder.model_uri,
        "source_uri": served.source_uri,
        "name": served.name,
        "version": served.version,
        "alias": served.alias,
        "run_id": served.run_id,
        "model_uuid": served.model_uuid,
        "server_version": _server_version(),
    }


def _signature_dict(signature: Any) -> Any:
    if signature is None:
        return None
    raw = signature.to_dict() if hasattr(signature, "to_dict") else signature
    if isinstance(raw, dict):
        # MLflow's to_dict() holds each part as a JSON string; decode for readability.
        out = {}
        for key, value in raw.items():
            if isinstance(value, str):
                with contextlib.suppress(orjson.JSONDecodeError):
                    value = orjson.loads(value)
            out[key] = value
        return out
    return raw


def _example_split(example: Any) -> Any:
    """The input example as a ``dataframe_split`` value, ready to POST back."""
    if example is None:
        return None
    if hasattr(example, "to_dict") and hasattr(example, "columns"):
        split = example.to_dict(orient="split")
        split.pop("index", None)
        return orjson.loads(orjson.dumps(split, default=_to_jsonable, option=orjson.OPT_SERIALIZE_NUMPY))
    return orjson.loads(predictions_to_json(example))


def _to_jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    return str(obj)


# OpenAPI -------------------------------------------------------------------------------

_ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error_code": {"type": "string"},
        "message": {"type": "string"},
        "request_id": {"type": "string"},
    },
    "required": ["error_code", "message"],
}
_VERSION_SCHEMA = {
    "type": "object",
    "properties": {
        "model_uri": {"type": "string"},
        "source_uri": {"type": "string"},
        "name": {"type": ["string", "null"]},
        "version": {"type": ["integer", "null"]},
        "alias": {"type": ["string", "null"]},
        "run_id": {"type": ["string", "null"]},
        "model_uuid": {"type": ["string", "null"]},
        "server_version": {"type": "string"},
    },
}


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": _ERROR_SCHEMA}}}


_INVOCATION_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "One prediction per input row",
        "content": {
            _JSON: {
                "schema": {
                    "type": "object",
                    "properties": {"predictions": {"type": "array"}},
                    "required": ["predictions"],
                }
            }
        },
    },
    400: _error_response("Malformed body, unknown key, or input not matching the signature"),
    401: _error_response("Missing or wrong bearer token"),
    413: _error_response("Body over the server's limit"),
    415: _error_response("Unsupported Content-Type"),
    500: _error_response("The model raised; quote the request id"),
}

# MLflow column types -> JSON Schema for one value. Bounds keep "valid" numbers castable.
_TYPE_SCHEMAS: dict[str, dict[str, Any]] = {
    "double": {"type": "number"},
    "float": {"type": "number", "minimum": -3.4e38, "maximum": 3.4e38},
    "long": {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1},
    "integer": {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1},
    "boolean": {"type": "boolean"},
    "string": {"type": "string"},
    "binary": {"type": "string", "contentEncoding": "base64"},
    "datetime": {"type": "string", "format": "date-time"},
}


_PLACEHOLDERS: dict[str, Any] = {
    "double": 0.0,
    "float": 0.0,
    "long": 0,
    "integer": 0,
    "boolean": False,
    "string": "",
    "binary": "",
    "datetime": "1970-01-01T00:00:00",
}


def _value_schema(type_name: str, required: bool) -> dict[str, Any]:
    schema = dict(_TYPE_SCHEMAS.get(type_name, {}))
    if not required:
        return {"anyOf": [schema, {"type": "null"}]} if schema else {}
    return schema


def _request_body(served: ServedModel | None) -> dict[str, Any]:
    names = served.input_names if served is not None else None
    if served is None or names is None:
        record: dict[str, Any] = {"type": "object", "additionalProperties": True}
        row: dict[str, Any] = {"type": "array"}
        columnar: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "array"}}
        columns: dict[str, Any] = {"type": "array", "items": {"type": "string"}}
        required_names: list[str] = []
    else:
        types = served.column_types
        required = served.required_names
        props = {n: _value_schema(types.get(n, ""), n in required) for n in names}
        required_names = [n for n in names if n in required]
        record = {"type": "object", "properties": props, "required": required_names, "additionalProperties": False}
        row = {
            "type": "array",
            "prefixItems": [props[n] for n in names],
            "minItems": len(names),
            "maxItems": len(names),
        }
        columnar = {
            "type": "object",
            "properties": {n: {"type": "array", "items": props[n], "minItems": 1, "maxItems": 1} for n in names},
            "required": required_names,
            "additionalProperties": False,
        }
        columns = {"const": list(names)}
    params = {"type": "object", "description": "Keyword params for predict (only if the model takes them)"}
    variants = [
        {
            "title": "dataframe_split",
            "type": "object",
            "properties": {
                "dataframe_split": {
                    "type": "object",
                    "properties": {"columns": columns, "data": {"type": "array", "items": row}},
                    "required": ["columns", "data"],
                    "additionalProperties": False,
                },
                "params": params,
            },
            "required": ["dataframe_split"],
            "additionalProperties": False,
        },
        {
            "title": "dataframe_records",
            "type": "object",
            "properties": {"dataframe_records": {"type": "array", "items": record}, "params": params},
            "required": ["dataframe_records"],
            "additionalProperties": False,
        },
        {
            "title": "instances",
            "type": "object",
            "properties": {"instances": {"type": "array", "items": record}, "params": params},
            "required": ["instances"],
            "additionalProperties": False,
        },
        {
            "title": "inputs",
            "type": "object",
            "properties": {"inputs": columnar, "params": params},
            "required": ["inputs"],
            "additionalProperties": False,
        },
    ]
    json_media: dict[str, Any] = {"schema": {"oneOf": variants}}
    if names is not None:
        # Made up from the types: the model's input example holds real training rows, which
        # do not belong in a schema (/metadata has it, behind the token when there is one).
        json_media["example"] = {
            "dataframe_split": {"columns": list(names), "data": [[_PLACEHOLDERS.get(types.get(n, ""), None) for n in names]]}
        }
    return {
        "required": True,
        "description": "Rows to score. The JSON variants follow MLflow's scoring protocol.",
        "content": {
            CONTENT_TYPE_JSON: json_media,
            CONTENT_TYPE_CSV: {"schema": {"type": "string", "description": "DataFrame.to_csv(index=False)"}},
            CONTENT_TYPE_PARQUET: {"schema": {"type": "string", "format": "binary"}},
        },
    }


def _security(auth: _Auth) -> dict[str, Any] | None:
    return {"security": [{"bearerAuth": []}]} if auth.enabled else None


def _install_openapi(app: FastAPI, holder: ModelHolder, auth: _Auth) -> None:
    """Publish /openapi.json with the request body derived from the model now serving."""
    cache: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        served = holder.current if holder.loaded else None
        if cache.get("served") is served and "schema" in cache:
            return cache["schema"]  # type: ignore[no-any-return]
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        schema["paths"]["/invocations"]["post"]["requestBody"] = _request_body(served)
        if auth.enabled:
            schema.setdefault("components", {}).setdefault("securitySchemes", {})["bearerAuth"] = {
                "type": "http",
                "scheme": "bearer",
            }
        cache.update(served=served, schema=schema)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
