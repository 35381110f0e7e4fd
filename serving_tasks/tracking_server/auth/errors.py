"""Errors of authentication and authorization, and their HTTP form.

Hierarchy (all :class:`tracking_plugin.errors.MlopsError`)::

    AuthError
    ├── Unauthenticated    401 UNAUTHENTICATED     no, malformed or wrong credentials
    ├── PermissionDenied   403 PERMISSION_DENIED   authenticated, but not allowed
    └── TooManyAttempts    429 REQUEST_LIMIT_EXCEEDED (+ Retry-After) after failed logins

The JSON body is MLflow's ``{"error_code", "message"}``, so the mlflow client raises
``MlflowException`` with these codes. Messages never repeat a credential.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response

from tracking_plugin.errors import MlopsError

from serving_tasks.tracking_server.wire import json_response

__all__ = ["AuthError", "PermissionDenied", "TooManyAttempts", "Unauthenticated", "install_auth_error_handler"]


class AuthError(MlopsError):
    status = 401
    headers: dict[str, str] = {}


class Unauthenticated(AuthError):
    error_code = "UNAUTHENTICATED"
    status = 401
    headers = {"WWW-Authenticate": 'Basic realm="prefect-mlops"'}


class PermissionDenied(AuthError):
    error_code = "PERMISSION_DENIED"
    status = 403


class TooManyAttempts(AuthError):
    error_code = "REQUEST_LIMIT_EXCEEDED"
    status = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(max(1, retry_after))}


async def _auth_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AuthError)
    response = json_response({"error_code": exc.error_code, "message": exc.message}, exc.status)
    response.headers.update(exc.headers)
    return response


def install_auth_error_handler(app: FastAPI) -> None:
    app.add_exception_handler(AuthError, _auth_error)
