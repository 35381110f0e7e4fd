"""The loaded-model object (:class:`PyFuncModel`) and custom models (:class:`PythonModel`)."""

from __future__ import annotations

import abc
import importlib
import inspect
import logging
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Collection, Mapping

import numpy as np
import pandas as pd

from tracking_plugin.errors import InvalidArgument, ModelLoadRefused
from tracking_plugin.models._example import load_example
from tracking_plugin.models._mlmodel import ModelMetadata
from tracking_plugin.models._paths import model_path
from tracking_plugin.models._signature import (
    ALLOWED_VALUES_KEY,
    ModelSignature,
    apply_params,
    check_allowed_values,
    as_model_input,
    frame_from,
    validate_input,
    validate_tensor,
)

__all__ = ["PyFuncModel", "PythonModel", "PythonModelContext"]

logger = logging.getLogger(__name__)

_MISSING = object()


@dataclass(frozen=True)
class PythonModelContext:
    """What :meth:`PythonModel.load_context` and ``predict`` receive, as in MLflow.

    ``artifacts`` maps each name given to ``save_model(artifacts=...)`` to the local path
    of its copy inside the model directory.
    """

    artifacts: Mapping[str, str] = field(default_factory=dict)
    model_config: Mapping[str, Any] = field(default_factory=dict)


class PythonModel(abc.ABC):
    """Base class of custom models, like ``mlflow.pyfunc.PythonModel``.

    Subclass it, implement :meth:`predict` (and optionally :meth:`load_context`), and save an
    instance with :func:`~tracking_plugin.models.save_model`. With the default skops format
    the instance's attributes are stored as data and the class is imported by name at load,
    so define the class in an importable module (not ``__main__``)::

        class AddN(PythonModel):
            def __init__(self, n):
                self.n = n

            def predict(self, context, model_input, params=None):
                return model_input.apply(lambda column: column + self.n)
    """

    def load_context(self, context: PythonModelContext) -> None:
        """Called once after loading, before the first ``predict`` (load artifacts here)."""

    @abc.abstractmethod
    def predict(self, context: PythonModelContext, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        """Return predictions for ``model_input`` (a DataFrame, unless the signature says tensors)."""


class _SklearnImpl:
    def __init__(self, estimator: Any, predict_fn: str) -> None:
        self.estimator = estimator
        self.predict_fn = getattr(estimator, predict_fn)
        self._warned_params = False

    def predict(self, data: Any, params: dict[str, Any] | None) -> Any:
        if params and not self._warned_params:
            logger.warning("scikit-learn models take no inference params; ignoring %s.", sorted(params))
            self._warned_params = True
        return self.predict_fn(data)

    def raw(self) -> Any:
        return self.estimator


class _PythonModelImpl:
    def __init__(self, python_model: Any, context: PythonModelContext) -> None:
        self.python_model = python_model
        self.context = context
        parameters = list(inspect.signature(python_model.predict).parameters.values())
        inputs = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "params"]
        # MLflow allows predict(self, model_input) as well as predict(self, context, model_input).
        self.takes_context = any(p.name == "context" for p in parameters) or len(inputs) == 2
        self.takes_params = any(p.name == "params" or p.kind is p.VAR_KEYWORD for p in parameters)

    def predict(self, data: Any, params: dict[str, Any] | None) -> Any:
        args = (self.context, data) if self.takes_context else (data,)
        if self.takes_params:
            return self.python_model.predict(*args, params=params)
        return self.python_model.predict(*args)

    def raw(self) -> Any:
        return self.python_model


class PyFuncModel:
    """A loaded model: ``predict`` with signature enforcement, plus its metadata.

    Returned by :func:`~tracking_plugin.models.load_model`.

    Attributes:
        metadata: the parsed ``MLmodel`` (``metadata.verified`` says whether a sha256
            manifest was checked).
        model_uri: the URI it was loaded from; ``local_path`` the directory read.
    """

    def __init__(self, *, metadata: ModelMetadata, impl: _SklearnImpl | _PythonModelImpl, local_path: str, model_uri: str) -> None:
        self.metadata = metadata
        self.model_uri = model_uri
        self.local_path = local_path
        self._impl = impl
        self._input_example: Any = _MISSING
        signature = metadata.signature
        self._inputs = signature.inputs if signature is not None else None
        self._params = signature.params if signature is not None else None
        # Per-column vocabularies the saver declared (metadata "mlops.allowed_values").
        allowed = (metadata.metadata or {}).get(ALLOWED_VALUES_KEY)
        self._allowed_values: Mapping[str, Any] | None = allowed if isinstance(allowed, Mapping) and allowed else None

    def __repr__(self) -> str:
        flavor = "sklearn" if isinstance(self._impl, _SklearnImpl) else "python_model"
        return f"PyFuncModel(model_uri={self.model_uri!r}, flavor={flavor!r}, run_id={self.metadata.run_id!r})"

    @property
    def signature(self) -> ModelSignature | None:
        return self.metadata.signature

    @property
    def input_example(self) -> Any:
        """The saved input example (DataFrame or array), read on first access; None if absent."""
        if self._input_example is _MISSING:
            self._input_example = load_example(self.local_path, self.metadata.saved_input_example_info, self.signature)
        return self._input_example

    def predict(self, data: pd.DataFrame | dict[str, Any] | list[Any] | np.ndarray, params: dict[str, Any] | None = None) -> Any:
        """Predict after checking ``data`` against the signature.

        Missing required columns, values that cannot be cast safely and values outside a
        column's allowed set (``metadata["mlops.allowed_values"]``) raise
        :class:`~tracking_plugin.errors.InvalidArgument` naming the column; columns not in
        the signature are dropped (as MLflow does). Dicts and lists become DataFrames.
        """
        schema = self._inputs
        if schema is not None:
            data = as_model_input(data, schema)
            if schema.is_tensor_spec():
                data = validate_tensor(data, schema)
            else:
                data = validate_input(data, schema, allow_extra=True)
        elif isinstance(data, (Mapping, list)):
            data = frame_from(data)
        if self._allowed_values is not None:
            check_allowed_values(data, self._allowed_values)
        return self._impl.predict(data, apply_params(params, self._params))

    def get_raw_model(self) -> Any:
        """The underlying estimator (sklearn) or :class:`PythonModel` instance."""
        return self._impl.raw()

    @property
    def raw_model(self) -> Any:
        return self._impl.raw()

    def unwrap_python_model(self) -> Any:
        """The :class:`PythonModel` instance of a custom model (MLflow's name)."""
        if not isinstance(self._impl, _PythonModelImpl):
            raise InvalidArgument(
                "unwrap_python_model() is only for custom PythonModel models; this is a scikit-learn "
                "model: use get_raw_model() to get the estimator."
            )
        return self._impl.python_model


# ---------------------------------------------------------------------------- custom classes


def class_reference(obj: Any) -> str:
    """``module:QualName`` of an instance's class; refuse classes that cannot be imported back."""
    cls = type(obj)
    module, qualname = cls.__module__, cls.__qualname__
    if module == "__main__" or "<locals>" in qualname:
        raise InvalidArgument(
            f"Cannot save {qualname} with skops: it is defined in {'__main__' if module == '__main__' else 'a function'}, "
            "so it cannot be imported when the model is loaded. Move the class into an importable module, "
            "or opt in to serialization_format='cloudpickle' (loading will then need allow_pickle=True)."
        )
    return f"{module}:{qualname}"


_REFERENCE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def import_class(reference: Any, where: str, *, verified: bool = True, trusted_classes: Collection[str] = ()) -> type:
    """The PythonModel subclass ``module:QualName`` names; what may be imported is checked first.

    Importing a module runs its code, so before any import: the reference must be a
    well-formed ``module:QualName``, not from the standard library (no PythonModel lives
    there); and for a model without a manifest (``verified`` False) the class must be in
    ``trusted_classes``.
    """
    if not isinstance(reference, str) or not _REFERENCE_RE.fullmatch(reference):
        raise ModelLoadRefused(
            f"Refusing to load the model at {where!r}: its python_model_class {reference!r} is not "
            "of the form 'package.module:ClassName'."
        )
    module_name, _, qualname = reference.partition(":")
    top = module_name.partition(".")[0]
    if top in sys.stdlib_module_names or top == "builtins":
        raise ModelLoadRefused(
            f"Refusing to load the model at {where!r}: its python_model_class {reference!r} names the "
            "standard library, where no PythonModel subclass lives; nothing was imported."
        )
    if not verified and reference not in trusted_classes:
        raise ModelLoadRefused(
            f"Refusing to load the model at {where!r}: it has no sha256 manifest (it was not saved by "
            f"prefect-mlops, or the manifest was removed), and importing its class {reference!r} would "
            f"run the code of module {module_name!r}. Nothing was imported. If you trust the model, pass "
            f"load_model(..., trusted_classes=[{reference!r}]); better, re-save it with save_model."
        )
    try:
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ModelLoadRefused(
            f"Cannot load the model at {where!r}: its class {reference!r} cannot be imported ({exc}). "
            "Install the package that defines it in this environment (see the model's requirements.txt)."
        ) from exc
    if not isinstance(target, type) or not issubclass(target, PythonModel):
        raise ModelLoadRefused(
            f"Refusing to load the model at {where!r}: its class {reference!r} is not a subclass of "
            "tracking_plugin.models.PythonModel."
        )
    return target


def instance_state(obj: Any) -> dict[str, Any]:
    state = obj.__getstate__() if hasattr(obj, "__getstate__") else obj.__dict__
    if state is None:
        state = {}
    if not isinstance(state, dict):
        raise InvalidArgument(
            f"Cannot save {type(obj).__qualname__} with skops: its state is a {type(state).__name__}, "
            "not a dict of attributes. Use plain attributes, or serialization_format='cloudpickle'."
        )
    return state


def rebuild_instance(cls: type, state: Mapping[str, Any]) -> Any:
    try:
        obj = cls.__new__(cls)
    except TypeError as exc:  # e.g. an abstract class
        raise ModelLoadRefused(f"Cannot rebuild the model's {cls.__qualname__} ({exc}).") from exc
    setstate = getattr(obj, "__setstate__", None)
    if setstate is not None:
        setstate(dict(state))
    else:
        obj.__dict__.update(state)
    return obj


def context_for(model_dir: str | os.PathLike[str], artifacts_conf: Mapping[str, Any] | None) -> PythonModelContext:
    artifacts = {}
    for name, info in (artifacts_conf or {}).items():
        relative = info.get("path") if isinstance(info, Mapping) else None
        if not isinstance(relative, str):
            raise ModelLoadRefused(f"Malformed artifact entry {name!r} in the MLmodel file: {info!r}.")
        artifacts[str(name)] = str(model_path(model_dir, relative, what=f"artifact {name!r}"))
    return PythonModelContext(artifacts=artifacts)
