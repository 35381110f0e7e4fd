"""The model format: MLflow's ``MLmodel`` directory, written and read by our own code.

Save, log and load scikit-learn estimators and custom :class:`PythonModel` models::

    from tracking_plugin.models import save_model, load_model

    save_model(pipeline, "churn-model", input_example=X_train.head(5))
    model = load_model("churn-model")          # or runs:/..., models:/churn@champion, s3://...
    model.predict(X_new)                       # checked against the inferred signature

Models load in ``mlflow.pyfunc.load_model`` and MLflow's scikit-learn models load here.
Serialization is skops by default; pickle formats need an explicit opt-in on both save
and load. A sha256 manifest written at save is verified at load. Every path a model's
files name must stay inside the model directory (:func:`check_model_paths`).
"""

from tracking_plugin.models._api import load_model, log_model, save_model
from tracking_plugin.models._mlmodel import ModelInfo, ModelMetadata
from tracking_plugin.models._pyfunc import PyFuncModel, PythonModel, PythonModelContext
from tracking_plugin.models._serialization import clear_cache
from tracking_plugin.models._signature import (
    ALLOWED_VALUES_KEY,
    ColSpec,
    ModelSignature,
    ParamSchema,
    ParamSpec,
    Schema,
    TensorSpec,
    infer_signature,
    validate_input,
)
from tracking_plugin.models._uris import ModelUri, ModelUriKind, parse_model_uri, resolve_model_uri

from tracking_plugin.models._manifest import MANIFEST_FILE, read_manifest, verify_manifest
from tracking_plugin.models._paths import check_model_paths, check_model_tree

__all__ = [
    "ALLOWED_VALUES_KEY",
    "MANIFEST_FILE",
    "ColSpec",
    "ModelInfo",
    "ModelMetadata",
    "ModelSignature",
    "ModelUri",
    "ModelUriKind",
    "ParamSchema",
    "ParamSpec",
    "PyFuncModel",
    "PythonModel",
    "PythonModelContext",
    "Schema",
    "TensorSpec",
    "check_model_paths",
    "check_model_tree",
    "clear_cache",
    "infer_signature",
    "load_model",
    "log_model",
    "parse_model_uri",
    "read_manifest",
    "resolve_model_uri",
    "save_model",
    "validate_input",
    "verify_manifest",
]
