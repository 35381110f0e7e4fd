"""prefect-mlops tracking: MLflow's tracking API, names and meaning, on Prefect.

>>> import tracking_plugin as mlops                          # doctest: +SKIP
>>> mlops.set_experiment("churn")                            # doctest: +SKIP
>>> with mlops.start_run():                                  # doctest: +SKIP
...     mlops.log_param("C", 1.0)
...     mlops.log_metric("auc", 0.91)

MLflow code keeps working with only its import changed: ``MlflowClient`` is
:class:`TrackingClient`, and the submodules ``sklearn`` (``autolog``, ``log_model``,
``save_model``, ``load_model``), ``pyfunc`` (``load_model``, ``log_model``,
``PythonModel``) and ``models`` (``infer_signature``, ``ModelSignature``, ...) are
attributes of this package, as ``mlflow.sklearn`` is of ``mlflow``.

The fluent functions, :class:`TrackingClient` and the entities are imported eagerly.
Parts that pull in Prefect, scikit-learn or the model format (``track``, ``autolog``,
``log_model``, ``load_model``, ``save_model``, ``register_model``, ``MlopsBackend`` and the
``sklearn`` / ``pyfunc`` / ``models`` submodules) load on first access, so ``import
tracking_plugin`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tracking_plugin import backend as _backend
from tracking_plugin import client as _client_module
from tracking_plugin.client import TrackingClient
from tracking_plugin.entities import (
    Experiment,
    FileInfo,
    LifecycleStage,
    Metric,
    ModelVersion,
    Param,
    RegisteredModel,
    Run,
    RunData,
    RunInfo,
    RunStatus,
    RunTag,
    Stage,
    ViewType,
)
from tracking_plugin.fluent import (
    ActiveRun,
    active_run,
    create_experiment,
    delete_experiment,
    delete_run,
    delete_tag,
    end_run,
    flush,
    get_artifact_uri,
    get_experiment,
    get_experiment_by_name,
    get_run,
    get_tracking_uri,
    last_active_run,
    log_artifact,
    log_artifacts,
    log_dict,
    log_figure,
    log_image,
    log_metric,
    log_metrics,
    log_param,
    log_params,
    log_text,
    search_experiments,
    search_runs,
    set_experiment,
    set_experiment_tag,
    set_tag,
    set_tags,
    set_tracking_uri,
    start_run,
)
from tracking_plugin.settings import MlopsSettings, get_settings

if TYPE_CHECKING:
    from tracking_plugin import models, pyfunc, sklearn
    from tracking_plugin.blocks import MlopsBackend
    from tracking_plugin.models import load_model, log_model, save_model
    from tracking_plugin.prefect import track
    from tracking_plugin.registry import register_model
    from tracking_plugin.sklearn import autolog

#: ``mlflow.MlflowClient``'s name for :class:`TrackingClient` (same class).
MlflowClient = TrackingClient

__version__ = "0.1.0"

__all__ = [
    "ActiveRun",
    "Experiment",
    "FileInfo",
    "LifecycleStage",
    "Metric",
    "MlflowClient",
    "MlopsBackend",
    "MlopsSettings",
    "ModelVersion",
    "Param",
    "RegisteredModel",
    "Run",
    "RunData",
    "RunInfo",
    "RunStatus",
    "RunTag",
    "Stage",
    "TrackingClient",
    "ViewType",
    "active_run",
    "autolog",
    "create_experiment",
    "delete_experiment",
    "delete_run",
    "delete_tag",
    "end_run",
    "flush",
    "get_artifact_uri",
    "get_experiment",
    "get_experiment_by_name",
    "get_run",
    "get_settings",
    "get_tracking_uri",
    "last_active_run",
    "load_model",
    "log_artifact",
    "log_artifacts",
    "log_dict",
    "log_figure",
    "log_image",
    "log_metric",
    "log_metrics",
    "log_model",
    "log_param",
    "log_params",
    "log_text",
    "models",
    "pyfunc",
    "register_model",
    "save_model",
    "search_experiments",
    "search_runs",
    "set_experiment",
    "set_experiment_tag",
    "set_tag",
    "set_tags",
    "set_tracking_uri",
    "sklearn",
    "start_run",
    "track",
]

# name -> module that defines it; imported on first attribute access (PEP 562) because
# these modules import Prefect (~1 s), scikit-learn or the model format.
_LAZY = {
    "MlopsBackend": "tracking_plugin.blocks",
    "autolog": "tracking_plugin.sklearn",
    "load_model": "tracking_plugin.models",
    "log_model": "tracking_plugin.models",
    "save_model": "tracking_plugin.models",
    "register_model": "tracking_plugin.registry",
    "track": "tracking_plugin.prefect",
}
# Submodules reachable as attributes (``tracking_plugin.sklearn.autolog()``) after a plain
# ``import tracking_plugin``, as ``mlflow.sklearn`` is; imported on first access.
_LAZY_SUBMODULES = ("models", "pyfunc", "sklearn")


def _load_block(name: str) -> Any:
    # The block type imports Prefect: loaded only when a block is named.
    from tracking_plugin.blocks import settings_of_block

    return settings_of_block(name)


def _model_registrar() -> Any:
    # Registration needs the model format (tracking_plugin.models): loaded when first used.
    from tracking_plugin.registry import register_model

    return register_model


# This package is the composition root: lower layers get what lives above them from here,
# the backend resolver (below Prefect) its way of loading saved blocks, the client (below
# the model format) its way of registering a model version.
_backend.set_block_loader(_load_block)
_client_module.set_model_registrar(_model_registrar)


def __getattr__(name: str) -> Any:
    import importlib

    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")  # the import sets the attribute
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
