"""Model serving: MLflow's scoring protocol on FastAPI/uvicorn, with micro-batching,
registry-alias following and optional bearer auth.

    prefect-mlops serve -m models:/churn@champion -p 5000
    python -m serving_tasks.cli -m models:/churn@champion -p 5000

or, in Python, ``uvicorn.run(create_app("models:/churn@champion"), port=5000)``.
Nothing here imports Prefect on the request path, and importing this package imports
neither FastAPI nor pandas until one of the names below is used (the Prefect tasks in
``serving_tasks.tasks`` do not need them).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from serving_tasks._payload import MalformedPayload, PayloadTooLarge, UnsupportedContentType
    from serving_tasks.app import create_app

__all__ = ["MalformedPayload", "PayloadTooLarge", "UnsupportedContentType", "create_app"]

_LAZY = {
    "MalformedPayload": "serving_tasks._payload",
    "PayloadTooLarge": "serving_tasks._payload",
    "UnsupportedContentType": "serving_tasks._payload",
    "create_app": "serving_tasks.app",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'serving_tasks' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
