"""Every exception prefect-mlops raises on purpose.

Hierarchy::

    MlopsError                      base of everything below
    ├── InvalidArgument (ValueError)   a value the caller passed is not acceptable
    ├── NotFound (LookupError)         an experiment, run, model, version or alias is unknown
    ├── AlreadyExists                  a name that must be unique is taken
    ├── Conflict                       the request is valid but the current state forbids it
    │                                  (changed param value, promoting a failed gate, ...)
    ├── BackendUnavailable             the database or artifact store cannot be reached
    └── ModelLoadRefused               a model is tampered, truncated or unsafe to load

Each error carries an MLflow-compatible ``error_code`` (``INVALID_PARAMETER_VALUE``,
``RESOURCE_DOES_NOT_EXIST``, ...). HTTP status codes are mapped only by the FastAPI
exception handlers in ``serving_tasks``. Messages name the bad value and say what to do.
Foreign exceptions (SQLAlchemy, botocore) are translated at the edge with ``raise ... from``.
"""

from __future__ import annotations

__all__ = [
    "AlreadyExists",
    "BackendUnavailable",
    "Conflict",
    "InvalidArgument",
    "MlopsError",
    "ModelLoadRefused",
    "NotFound",
    "is_transient",
]


class MlopsError(Exception):
    """Base class of every error raised by prefect-mlops."""

    error_code: str = "INTERNAL_ERROR"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(MlopsError, ValueError):
    """A value passed by the caller is malformed or out of range."""

    error_code = "INVALID_PARAMETER_VALUE"


class NotFound(MlopsError, LookupError):
    """The named experiment, run, model, version or alias does not exist."""

    error_code = "RESOURCE_DOES_NOT_EXIST"


class AlreadyExists(MlopsError):
    """A resource with that unique name already exists."""

    error_code = "RESOURCE_ALREADY_EXISTS"


class Conflict(MlopsError):
    """The request is well formed but conflicts with the recorded state."""

    error_code = "INVALID_STATE"


class BackendUnavailable(MlopsError):
    """The tracking database or the artifact store could not be reached."""

    error_code = "TEMPORARILY_UNAVAILABLE"


class ModelLoadRefused(MlopsError):
    """A model was not loaded: its files fail the manifest check, or it needs unsafe opt-in."""

    error_code = "INVALID_STATE"


def is_transient(error: BaseException) -> bool:
    """Whether trying again may succeed: an unreachable database or store
    (:class:`BackendUnavailable`) or an OS-level I/O error. Bad input, a missing object or
    a refused model fail the same way every time. The one rule behind every retry."""
    return isinstance(error, (BackendUnavailable, OSError))
