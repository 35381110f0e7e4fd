"""``mlflow.pyfunc``'s names: load any model as a generic predictor, log custom models.

What MLflow code calls as ``mlflow.pyfunc.*`` works as ``tracking_plugin.pyfunc.*``
(reachable after a plain ``import tracking_plugin``)::

    import tracking_plugin as mlflow

    class AddN(mlflow.pyfunc.PythonModel):
        def __init__(self, n):
            self.n = n
        def predict(self, context, model_input, params=None):
            return model_input + self.n

    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="add_n", python_model=AddN(2))
    mlflow.pyfunc.load_model(info.model_uri).predict(frame)

The model format, loading rules (sha256 manifest, no pickle without ``allow_pickle``) and
signature enforcement are those of :mod:`tracking_plugin.models`.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from tracking_plugin.errors import InvalidArgument
from tracking_plugin.models import (
    ModelInfo,
    ModelMetadata,
    ModelSignature,
    PyFuncModel,
    PythonModel,
    PythonModelContext,
    load_model,
)

__all__ = [
    "ModelInfo",
    "PyFuncModel",
    "PythonModel",
    "PythonModelContext",
    "load_model",
    "log_model",
    "save_model",
]


def model_name_argument(artifact_path: str | None, name: str | None) -> str:
    """The run-relative path of a logged model from MLflow 2's ``artifact_path`` (also
    positional) or MLflow 3's ``name``; ``model`` when neither is given."""
    if artifact_path is not None and name is not None and artifact_path != name:
        raise InvalidArgument(
            f"Both artifact_path={artifact_path!r} and name={name!r} were given; pass only name= "
            "(MLflow 3's spelling) or only artifact_path=."
        )
    chosen = name if name is not None else artifact_path
    return "model" if chosen is None else chosen


def log_model(
    artifact_path: str | None = None,
    *,
    python_model: Any = None,
    artifacts: Mapping[str, str | os.PathLike[str]] | None = None,
    registered_model_name: str | None = None,
    signature: ModelSignature | None = None,
    input_example: Any = None,
    pip_requirements: list[str] | None = None,
    metadata: dict[str, Any] | None = None,
    name: str | None = None,
) -> ModelInfo:
    """Log a :class:`PythonModel` (or a fitted scikit-learn estimator) under the active run.

    As ``mlflow.pyfunc.log_model``: ``name=`` (MLflow 3) or ``artifact_path`` (MLflow 2,
    also positional) is the run-relative path; ``artifacts`` maps names to files copied
    into the model (``context.artifacts`` at load); ``registered_model_name`` also
    registers it. Returns :class:`ModelInfo` (``model_uri`` is ``runs:/<run_id>/<name>``).
    """
    from tracking_plugin.models import log_model as _log_model

    if python_model is None:
        raise InvalidArgument("pyfunc.log_model needs python_model=<a PythonModel instance or a fitted estimator>.")
    return _log_model(
        python_model,
        model_name_argument(artifact_path, name),
        artifacts=artifacts,
        registered_model_name=registered_model_name,
        signature=signature,
        input_example=input_example,
        pip_requirements=pip_requirements,
        metadata=metadata,
    )


def save_model(
    path: str | os.PathLike[str],
    *,
    python_model: Any = None,
    artifacts: Mapping[str, str | os.PathLike[str]] | None = None,
    signature: ModelSignature | None = None,
    input_example: Any = None,
    pip_requirements: list[str] | None = None,
    metadata: dict[str, Any] | None = None,
) -> ModelMetadata:
    """Write a :class:`PythonModel` as an MLflow model directory at ``path`` (``mlflow.pyfunc.save_model``)."""
    from tracking_plugin.models import save_model as _save_model

    if python_model is None:
        raise InvalidArgument("pyfunc.save_model needs python_model=<a PythonModel instance or a fitted estimator>.")
    return _save_model(
        python_model,
        path,
        artifacts=artifacts,
        signature=signature,
        input_example=input_example,
        pip_requirements=pip_requirements,
        metadata=metadata,
    )
