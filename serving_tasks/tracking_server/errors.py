"""Exception handlers: our errors and request problems as MLflow's JSON errors.

Every error response is ``{"error_code": ..., "message": ...}`` with MLflow's status for
the code, so the mlflow client raises the ``MlflowException`` it would raise against
``mlflow server``:

============================  ======  ==========================================
``tracking_plugin.errors``    status  ``error_code``
============================  ======  ==========================================
InvalidArgument                400     INVALID_PARAMETER_VALUE
NotFound                       404     RESOURCE_DOES_NOT_EXIST
AlreadyExists                  400     RESOURCE_ALREADY_EXISTS
Conflict, ModelLoadRefused     400     INVALID_STATE
BackendUnavailable             503     TEMPORARILY_UNAVAILABLE
============================  ======  ==========================================

A body that is not JSON, a missing field or a wrong type is 400 INVALID_PARAMETER_VALUE
naming the field; an unknown path 404 ENDPOINT_NOT_FOUND; an over-limit body 413. The
mlflow client retries 5xx, so no bad input may become one: a conflict with recorded
state is a 400 here although MLflow's own code table maps INVALID_STATE to 500.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from tracking_plugin.errors import (
    AlreadyExists,
    BackendUnavailable,
    Conflict,
    InvalidArgument,
    MlopsError,
    ModelLoadRefused,
    NotFound,
)

from serving_tasks.tracking_server.wire import json_response

__all__ = ["install_error_handlers", "status_of"]

_log = logging.getLogger("prefect_mlops.tracking_server")

_STATUS: list[tuple[type[MlopsError], int]] = [
    (InvalidArgument, 400),
    (NotFound, 404),
    (AlreadyExists, 400),
    (Conflict, 400),
    (ModelLoadRefused, 400),
    (BackendUnavailable, 503),
]
_HTTP_CODES = {
    400: "INVALID_PARAMETER_VALUE",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "ENDPOINT_NOT_FOUND",
    405: "ENDPOINT_NOT_FOUND",
    413: "RESOURCE_EXHAUSTED",
    415: "INVALID_PARAMETER_VALUE",
}


def status_of(exc: MlopsError) -> int:
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def error_response(status: int, error_code: str, message: str) -> Response:
    return json_response({"error_code": error_code, "message": message}, status)


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "request body"


def _validation_message(exc: RequestValidationError) -> str:
    problems = []
    for error in exc.errors()[:5]:
        kind = error.get("type", "")
        field = _field_name(tuple(error.get("loc", ())))
        if kind == "missing":
            problems.append(f"Missing value for required parameter '{field}'.")
        elif kind == "json_invalid":
            problems.append(f"The request body is not valid JSON ({error.get('msg', '')}); send a JSON object.")
        elif kind == "model_attributes_type" and field == "request body":
            problems.append("The request body must be a JSON object.")
        elif kind == "model_attributes_type":  # an item of a list (a batch's metric) that is no object
            shown = _shown(error.get("input"))
            problems.append(f"Invalid value {shown} for parameter '{field}': it must be a JSON object.")
        else:
            message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
            if field == "request body" or message.startswith("Missing value"):
                problems.append(message)
            else:
                problems.append(f"Invalid value {_shown(error.get('input'))} for parameter '{field}': {message}.")
    return " ".join(problems) or "Invalid request."


def _shown(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


async def _mlops_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, MlopsError)
    status = status_of(exc)
    if status >= 500:
        _log.warning("backend unavailable: %s", exc.message)
    return error_response(status, exc.error_code, exc.message)


async def _validation_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return error_response(400, "INVALID_PARAMETER_VALUE", _validation_message(exc))


async def _pydantic_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ValidationError)
    return error_response(400, "INVALID_PARAMETER_VALUE", _validation_message(RequestValidationError(exc.errors())))


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "BAD_REQUEST" if exc.status_code < 500 else "INTERNAL_ERROR")
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = "No such endpoint; see /openapi.json for the API this server speaks."
    return error_response(exc.status_code, code, message)


async def _unexpected(request: Request, exc: Exception) -> Response:
    _log.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(500, "INTERNAL_ERROR", f"Internal error ({type(exc).__name__}); see the server log.")


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers above on ``app``."""
    app.add_exception_handler(MlopsError, _mlops_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ValidationError, _pydantic_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
