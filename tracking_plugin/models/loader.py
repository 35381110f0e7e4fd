"""The ``loader_module`` of custom models saved by prefect-mlops.

Its name is written into the ``python_function`` flavor of every custom model, so
``mlflow.pyfunc.load_model`` can load them too: MLflow imports this module and calls
``_load_pyfunc(path)``. Keep both names stable.
"""

from __future__ import annotations

import os
from typing import Any

__all__: list[str] = []


def _load_pyfunc(path: str, model_config: dict[str, Any] | None = None) -> Any:
    """Entry point for ``mlflow.pyfunc.load_model``; returns an object with ``predict``.

    Pickle-based models follow MLflow's own switch, ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION``
    (default true there), since the caller chose MLflow's loader.
    """
    from tracking_plugin.models._api import load_local

    allow = os.environ.get("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true").strip().lower() in ("true", "1")
    model_dir = os.path.dirname(path) if os.path.isfile(path) else path
    return load_local(model_dir, allow_pickle=allow)
