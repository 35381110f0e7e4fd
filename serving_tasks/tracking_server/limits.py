"""Request body limits: a JSON call over ``max_json_body_bytes`` or an upload over
``max_artifact_bytes`` is refused with 413 before (or while) it is read."""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from fastapi import HTTPException, Request

__all__ = ["BodyLimitMiddleware", "read_body"]

ARTIFACT_PREFIX = "/api/2.0/mlflow-artifacts/"


def _too_large(limit: int) -> HTTPException:
    return HTTPException(
        413,
        f"The request body exceeds the server's limit of {limit} bytes; send less per call "
        "(or raise PREFECT_MLOPS_SERVER_MAX_JSON_BODY_BYTES / _MAX_ARTIFACT_BYTES).",
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


class BodyLimitMiddleware:
    """ASGI middleware: JSON API bodies (everything but artifact uploads) at most ``limit``
    bytes. A declared Content-Length over the limit is answered 413 without reading; a
    chunked body is cut off when it passes the limit."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Any) -> None:
        if scope["type"] != "http" or scope["path"].startswith(ARTIFACT_PREFIX):
            await self.app(scope, receive, send)
            return
        limit = self.limit
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await _reject(send, limit)
                return
        seen = 0

        async def limited_receive() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _too_large(limit)
            return message

        await self.app(scope, limited_receive, send)


async def _reject(send: Any, limit: int) -> None:
    import orjson

    body = orjson.dumps({"error_code": "RESOURCE_EXHAUSTED", "message": _too_large(limit).detail})
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
