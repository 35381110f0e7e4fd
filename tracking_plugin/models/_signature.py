# Over 600 lines on purpose: MLflow's schema types, their inference from pandas/numpy and their
# enforcement at predict time must agree, so they are kept together.
"""Model signatures in MLflow's JSON shape: inference from data and enforcement at predict.

A signature has an input :class:`Schema`, an optional output schema and optional
parameters. A schema is a list of :class:`ColSpec` (named or positional columns of a
DataFrame) or of :class:`TensorSpec` (numpy arrays). In the ``MLmodel`` file each part is
a JSON string, exactly as MLflow writes it, so either tool reads the other's signature::

    signature:
      inputs: '[{"type": "double", "name": "a", "required": true}]'
      outputs: '[{"type": "long", "required": true}]'
      params: null

Enforcement (:func:`validate_input`) follows MLflow's rules, with the casts a JSON request
needs: integers are accepted for ``float``/``double`` columns when they are exactly
representable, any integer width for ``integer``/``long`` when the values fit, ``double``
for ``float`` (rounded to float32), any datetime precision for ``datetime``. Everything
else that does not match (text in a number column, floats in an integer column) is refused
with :class:`~tracking_plugin.errors.InvalidArgument` naming the column and the type.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Iterable, Mapping, Union

import numpy as np
import pandas as pd

from tracking_plugin.errors import InvalidArgument

__all__ = [
    "ColSpec",
    "ModelSignature",
    "ParamSchema",
    "ParamSpec",
    "Schema",
    "ALLOWED_VALUES_KEY",
    "TensorSpec",
    "check_allowed_values",
    "infer_signature",
    "validate_input",
]

#: Key of the ``MLmodel`` ``metadata`` mapping that lists, per input column, the only
#: values the model accepts (``{"contract": ["month-to-month", ...]}``). MLflow's signature
#: JSON has no place for them (its ColSpec refuses unknown keys), and ``metadata`` is
#: kept verbatim by MLflow, so models with it still load there.
ALLOWED_VALUES_KEY = "mlops.allowed_values"

# MLflow's DataType names (mlflow.types.DataType) and the numpy dtype each stands for.
SCALAR_TYPES: dict[str, np.dtype[Any] | None] = {
    "boolean": np.dtype("bool"),
    "integer": np.dtype("int32"),
    "long": np.dtype("int64"),
    "float": np.dtype("float32"),
    "double": np.dtype("float64"),
    "string": None,
    "binary": None,
    "datetime": None,
}
# Nested types MLflow can write (GenAI models); kept verbatim, not enforced here.
COMPLEX_TYPES = ("array", "object", "map", "any", "sparkml_vector")

# Largest integers a float holds exactly: above these an int -> float cast changes values.
_EXACT_INT_IN_FLOAT = {"double": 2**53, "float": 2**24}
_INT_RANGE = {"integer": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}


@dataclass(frozen=True)
class ColSpec:
    """One column: MLflow type name, optional column name, and whether it must be present.

    >>> ColSpec("double", "petal_length").to_dict()
    {'type': 'double', 'name': 'petal_length', 'required': True}
    """

    type: str
    name: str | None = None
    required: bool = True
    # The full JSON of a nested type ({"type": "array", "items": ...}), kept for round trips.
    type_details: Mapping[str, Any] | None = field(default=None, compare=True, repr=False)

    def __post_init__(self) -> None:
        if self.type not in SCALAR_TYPES and self.type not in COMPLEX_TYPES:
            raise InvalidArgument(
                f"Unsupported column type {self.type!r}: use one of {', '.join(SCALAR_TYPES)}."
            )
        if self.name is not None and not isinstance(self.name, str):
            raise InvalidArgument(f"Column name {self.name!r} must be a string or None.")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.type_details) if self.type_details else {"type": self.type}
        if self.name is not None:
            out["name"] = self.name
        out["required"] = self.required
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ColSpec:
        type_ = data.get("type")
        details = None
        if type_ in COMPLEX_TYPES:
            details = {k: v for k, v in data.items() if k not in ("name", "required")}
        return cls(type=str(type_), name=data.get("name"), required=bool(data.get("required", True)), type_details=details)


@dataclass(frozen=True)
class TensorSpec:
    """A numpy input or output: dtype name and shape, ``-1`` for a free dimension.

    >>> TensorSpec("float64", (-1, 4)).to_dict()
    {'type': 'tensor', 'tensor-spec': {'dtype': 'float64', 'shape': [-1, 4]}}
    """

    dtype: str
    shape: tuple[int, ...]
    name: str | None = None

    def __post_init__(self) -> None:
        try:
            np.dtype(self.dtype)
        except TypeError as exc:
            raise InvalidArgument(f"Unsupported tensor dtype {self.dtype!r}: {exc}") from exc
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))

    @property
    def required(self) -> bool:
        return True

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {} if self.name is None else {"name": self.name}
        out["type"] = "tensor"
        out["tensor-spec"] = {"dtype": self.dtype, "shape": list(self.shape)}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TensorSpec:
        spec = data["tensor-spec"]
        return cls(dtype=str(spec["dtype"]), shape=tuple(spec["shape"]), name=data.get("name"))


Spec = Union[ColSpec, TensorSpec]


@dataclass(frozen=True)
class Schema:
    """An ordered list of column specs or tensor specs (not a mix).

    >>> Schema([ColSpec("double", "a"), ColSpec("string", "b")]).input_names()
    ['a', 'b']
    """

    inputs: tuple[Spec, ...]

    def __init__(self, inputs: Iterable[Spec]) -> None:
        specs = tuple(inputs)
        if not specs:
            raise InvalidArgument("A schema needs at least one column or tensor spec.")
        kinds = {type(s) for s in specs}
        if not kinds <= {ColSpec, TensorSpec} or len(kinds) > 1:
            raise InvalidArgument(
                "A schema holds either ColSpec or TensorSpec items, not a mix of them or other objects."
            )
        names = [s.name for s in specs]
        named = [n for n in names if n is not None]
        if named and len(named) != len(names):
            raise InvalidArgument("Either every spec of a schema has a name or none has.")
        if len(set(named)) != len(named):
            dup = sorted({n for n in named if named.count(n) > 1})
            raise InvalidArgument(f"Duplicate column name(s) in schema: {', '.join(map(repr, dup))}.")
        object.__setattr__(self, "inputs", specs)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.inputs)

    def __len__(self) -> int:
        return len(self.inputs)

    def is_tensor_spec(self) -> bool:
        return isinstance(self.inputs[0], TensorSpec)

    def has_input_names(self) -> bool:
        return self.inputs[0].name is not None

    def input_names(self) -> list[str]:
        return [s.name for s in self.inputs if s.name is not None]

    def required_input_names(self) -> list[str]:
        return [s.name for s in self.inputs if s.name is not None and s.required]

    def to_dict(self) -> list[dict[str, Any]]:
        return [s.to_dict() for s in self.inputs]

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> Schema:
        items = json.loads(text)
        return cls(TensorSpec.from_dict(x) if x.get("type") == "tensor" else ColSpec.from_dict(x) for x in items)

    def describe(self) -> str:
        """``a (double), b (long, optional)``: for error messages."""
        parts = []
        for i, spec in enumerate(self.inputs):
            label = spec.name if spec.name is not None else f"#{i}"
            if isinstance(spec, TensorSpec):
                parts.append(f"{label} (tensor {spec.dtype} {list(spec.shape)})")
            else:
                parts.append(f"{label} ({spec.type}{'' if spec.required else ', optional'})")
        return ", ".join(parts)

    @cached_property
    def _columns(self) -> pd.Index:
        # Built once: turning a list of names into an Index costs more than a 1-row cast.
        return pd.Index(self.input_names())

    @cached_property
    def _plan(self) -> tuple[tuple[str | None, str, bool], ...]:
        return tuple((s.name, s.type, s.required) for s in self.inputs if isinstance(s, ColSpec))


@dataclass(frozen=True)
class ParamSpec:
    """An inference parameter: name, MLflow type, default, and ``shape`` (None or ``(-1,)``)."""

    name: str
    type: str
    default: Any
    shape: tuple[int, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "default": self.default,
            "shape": list(self.shape) if self.shape is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ParamSpec:
        shape = data.get("shape")
        return cls(
            name=str(data["name"]),
            type=str(data.get("type", data.get("dtype"))),
            default=data.get("default"),
            shape=tuple(shape) if shape is not None else None,
        )


@dataclass(frozen=True)
class ParamSchema:
    params: tuple[ParamSpec, ...]

    def __init__(self, params: Iterable[ParamSpec]) -> None:
        object.__setattr__(self, "params", tuple(params))

    def to_json(self) -> str:
        return json.dumps([p.to_dict() for p in self.params])

    @classmethod
    def from_json(cls, text: str) -> ParamSchema:
        return cls(ParamSpec.from_dict(x) for x in json.loads(text))


@dataclass(frozen=True)
class ModelSignature:
    """Inputs, outputs and params of a model, in MLflow's ``MLmodel`` shape.

    >>> sig = ModelSignature(Schema([ColSpec("double", "x")]), Schema([ColSpec("long")]))
    >>> ModelSignature.from_dict(sig.to_dict()) == sig
    True
    """

    inputs: Schema | None
    outputs: Schema | None = None
    params: ParamSchema | None = None

    def to_dict(self) -> dict[str, str | None]:
        return {
            "inputs": self.inputs.to_json() if self.inputs is not None else None,
            "outputs": self.outputs.to_json() if self.outputs is not None else None,
            "params": self.params.to_json() if self.params is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSignature:
        try:
            return cls(
                inputs=Schema.from_json(data["inputs"]) if data.get("inputs") else None,
                outputs=Schema.from_json(data["outputs"]) if data.get("outputs") else None,
                params=ParamSchema.from_json(data["params"]) if data.get("params") else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, InvalidArgument):
                raise
            raise InvalidArgument(f"Malformed model signature {dict(data)!r}: {exc}") from exc


# ---------------------------------------------------------------------------- inference


def _column_type(name: Any, values: pd.Series) -> str:
    dtype = values.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return _column_type(name, pd.Series(np.asarray(dtype.categories)))
    if isinstance(dtype, pd.StringDtype):
        return "string"
    kind = dtype.kind
    if kind == "b":
        return "boolean"
    if kind in "iu":
        return "integer" if dtype.itemsize < 4 or (kind == "i" and dtype.itemsize == 4) else "long"
    if kind == "f":
        return "float" if dtype.itemsize <= 4 else "double"
    if kind == "M":
        return "datetime"
    if kind == "O":
        inferred = pd.api.types.infer_dtype(values, skipna=True)
        by_content = {
            "string": "string",
            "empty": "string",
            "bytes": "binary",
            "boolean": "boolean",
            "integer": "long",
            "floating": "double",
            "mixed-integer-float": "double",
            "decimal": "double",
            "datetime": "datetime",
            "datetime64": "datetime",
            "date": "datetime",
        }
        if inferred in by_content:
            return by_content[inferred]
        raise InvalidArgument(
            f"Cannot infer a signature type for column {name!r}: its values are {inferred!r}. "
            "Convert it to numbers, text or datetimes, or pass signature= explicitly."
        )
    raise InvalidArgument(
        f"Cannot infer a signature type for column {name!r} of dtype {dtype}: "
        "pass signature= explicitly."
    )


def _schema_of(data: Any, *, what: str) -> Schema:
    if isinstance(data, pd.DataFrame):
        if data.shape[1] == 0:
            raise InvalidArgument(f"Cannot infer a signature from the {what}: the DataFrame has no columns.")
        return Schema(ColSpec(_column_type(c, data[c]), str(c)) for c in data.columns)
    if isinstance(data, pd.Series):
        name = data.name if isinstance(data.name, str) else None
        return Schema([ColSpec(_column_type(name, data), name)])
    if isinstance(data, np.ndarray):
        return Schema([TensorSpec(_tensor_dtype(data), (-1, *data.shape[1:]))])
    if isinstance(data, Mapping):
        if data and all(isinstance(v, np.ndarray) for v in data.values()):
            return Schema(TensorSpec(_tensor_dtype(v), (-1, *v.shape[1:]), str(k)) for k, v in data.items())
        return _schema_of(frame_from(data), what=what)
    if isinstance(data, list):
        return _schema_of(frame_from(data), what=what)
    raise InvalidArgument(
        f"Cannot infer a signature from the {what} of type {type(data).__name__}: use a pandas "
        "DataFrame, a dict of columns, a numpy array, or pass signature= explicitly."
    )


def _tensor_dtype(arr: np.ndarray) -> str:
    # Text tensors are recorded without a width, as MLflow does ("str", not "<U5").
    return {"U": "str", "S": "bytes"}.get(arr.dtype.kind, arr.dtype.name)


def frame_from(data: Mapping[str, Any] | list[Any]) -> pd.DataFrame:
    """A DataFrame from a dict of columns (or of scalars: one row) or a list of records."""
    if isinstance(data, Mapping):
        if all(np.isscalar(v) or v is None for v in data.values()):
            return pd.DataFrame([dict(data)])
        return pd.DataFrame(dict(data))
    return pd.DataFrame(data)


def infer_signature(model_input: Any, model_output: Any = None, params: Mapping[str, Any] | None = None) -> ModelSignature:
    """Infer a :class:`ModelSignature` from example input (and output, and params).

    >>> import pandas as pd, numpy as np
    >>> sig = infer_signature(pd.DataFrame({"a": [1.0], "b": ["x"]}), np.array([0]))
    >>> sig.inputs.to_dict()
    [{'type': 'double', 'name': 'a', 'required': True}, {'type': 'string', 'name': 'b', 'required': True}]
    >>> sig.outputs.to_dict()
    [{'type': 'long', 'required': True}]
    """
    inputs = _schema_of(model_input, what="model input")
    outputs = None
    if model_output is not None:
        # Row-wise predictions for column input (a 1-D array) are one unnamed column, as MLflow.
        if isinstance(model_output, np.ndarray) and model_output.ndim == 1 and not inputs.is_tensor_spec():
            model_output = pd.Series(model_output)
        outputs = _schema_of(model_output, what="model output")
    param_schema = None
    if params:
        specs = []
        for key, value in params.items():
            if isinstance(value, (list, tuple)):
                first = value[0] if value else ""
                specs.append(ParamSpec(key, _python_type(key, first), list(value), (-1,)))
            else:
                specs.append(ParamSpec(key, _python_type(key, value), value))
        param_schema = ParamSchema(specs)
    return ModelSignature(inputs, outputs, param_schema)


def _python_type(key: str, value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "boolean"
    if isinstance(value, (int, np.integer)):
        return "long"
    if isinstance(value, (float, np.floating)):
        return "double"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bytes):
        return "binary"
    raise InvalidArgument(f"Cannot infer a type for param {key!r} from {value!r}: use a number, bool or text.")


# ---------------------------------------------------------------------------- enforcement


def _refuse(name: Any, dtype: Any, expected: str, why: str) -> InvalidArgument:
    return InvalidArgument(
        f"Column {name!r} of the model input has dtype {dtype}, but the model signature "
        f"expects {expected}: {why}"
    )


def _conform_column(name: Any, values: pd.Series, type_: str) -> pd.Series:
    """Return ``values`` as ``type_`` if that is safe, else raise InvalidArgument."""
    dtype = values.dtype
    if type_ in COMPLEX_TYPES:
        return values
    if dtype == object and type_ not in ("string", "binary", "boolean"):
        values = values.infer_objects()
        dtype = values.dtype
    is_extension = isinstance(dtype, pd.api.extensions.ExtensionDtype)
    kind = dtype.kind

    if type_ in ("double", "float"):
        target = SCALAR_TYPES[type_]
        if dtype == target:
            return values
        if kind == "f":
            return values.astype(target)
        if kind in "iu":
            limit = _EXACT_INT_IN_FLOAT[type_]
            if dtype.itemsize >= (4 if type_ == "double" else 2) or is_extension:
                if len(values) and (values.max() > limit or values.min() < -limit):
                    raise _refuse(name, values.dtype, type_, f"integers beyond +/-{limit} are not exact as {type_}. Send them as {type_} values.")
            return values.astype(target)
        why = "text cannot be used as numbers." if kind in "OUS" else f"{dtype} is not a number type."
        raise _refuse(name, values.dtype, type_, why + " Send numbers for this column.")

    if type_ in ("integer", "long"):
        target = SCALAR_TYPES[type_]
        if dtype == target:
            return values
        if kind in "iu" and not isinstance(dtype, pd.CategoricalDtype):
            if is_extension and values.isna().any():
                raise _refuse(name, values.dtype, type_, "it has missing values, which an integer column cannot hold. Declare the column as double in the signature.")
            low, high = _INT_RANGE[type_]
            if len(values) and (values.max() > high or values.min() < low):
                raise _refuse(name, values.dtype, type_, f"values are outside the {type_} range [{low}, {high}].")
            return values.astype(target)
        if kind == "f":
            raise _refuse(name, values.dtype, type_, "floating point values cannot be used as integers without loss (integer columns with missing values arrive as floats; declare such a column as double).")
        raise _refuse(name, values.dtype, type_, "send whole numbers for this column.")

    if type_ == "boolean":
        if kind == "b":
            if is_extension and not values.isna().any():
                return values.astype(bool)
            return values
        if dtype == object and pd.api.types.infer_dtype(values, skipna=True) in ("boolean", "empty"):
            return values  # MLflow keeps object so None stays None instead of becoming False
        raise _refuse(name, values.dtype, "boolean", "send true/false values for this column.")

    if type_ == "string":
        if isinstance(dtype, pd.StringDtype):
            return values
        if isinstance(dtype, pd.CategoricalDtype):
            if pd.api.types.infer_dtype(dtype.categories, skipna=True) in ("string", "empty"):
                return values.astype(object)
        elif dtype == object and pd.api.types.infer_dtype(values, skipna=True) in ("string", "empty"):
            return values
        raise _refuse(name, values.dtype, "string", "send text values for this column.")

    if type_ == "binary":
        if dtype == object and pd.api.types.infer_dtype(values, skipna=True) in ("bytes", "empty"):
            return values
        if kind == "S" or isinstance(dtype, pd.StringDtype):
            return values
        raise _refuse(name, values.dtype, "binary", "send bytes for this column.")

    if type_ == "datetime":
        if isinstance(dtype, pd.DatetimeTZDtype):
            raise _refuse(name, values.dtype, "datetime", "timezone-aware values are not supported; send naive (UTC) times.")
        if kind == "M":
            return values  # any precision: MLflow's datetime type is precision agnostic
        if dtype == object or isinstance(dtype, pd.StringDtype):
            try:
                converted = pd.to_datetime(values, errors="raise")
            except (ValueError, TypeError) as exc:
                raise _refuse(name, values.dtype, "datetime", f"some values are not dates or times ({exc}).") from exc
            if isinstance(converted.dtype, pd.DatetimeTZDtype):
                raise _refuse(name, values.dtype, "datetime", "timezone-aware values are not supported; send naive (UTC) times.")
            return converted
        raise _refuse(name, values.dtype, "datetime", "send ISO 8601 date-time strings for this column.")
    raise InvalidArgument(f"Unsupported column type {type_!r} in the model signature.")  # pragma: no cover


def _as_schema(signature: ModelSignature | Schema | None) -> Schema | None:
    if isinstance(signature, ModelSignature):
        return signature.inputs
    return signature


def validate_input(data: pd.DataFrame, signature: ModelSignature | Schema, *, allow_extra: bool = False) -> pd.DataFrame:
    """Check ``data`` against the input schema; return it cast to the declared types.

    Columns come back in the schema's order. Missing required columns, columns not in the
    schema (unless ``allow_extra``, then they are dropped) and values that cannot be cast
    safely raise :class:`~tracking_plugin.errors.InvalidArgument` naming the column.

    >>> import pandas as pd
    >>> sig = ModelSignature(Schema([ColSpec("double", "a"), ColSpec("long", "b")]))
    >>> validate_input(pd.DataFrame({"b": [1], "a": [2]}), sig).dtypes.tolist()
    [dtype('float64'), dtype('int64')]
    >>> validate_input(pd.DataFrame({"a": [2.0]}), sig)
    Traceback (most recent call last):
    ...
    tracking_plugin.errors.InvalidArgument: Model input is missing required column(s) 'b'. The model signature expects: a (double), b (long).
    """
    schema = _as_schema(signature)
    if schema is None:
        return data
    if not isinstance(data, pd.DataFrame):
        raise InvalidArgument(f"Model input must be a pandas DataFrame here, not {type(data).__name__}.")
    if schema.is_tensor_spec():
        raise InvalidArgument(
            "This model's signature describes numpy tensors, not columns: pass a numpy array "
            f"({schema.describe()})."
        )
    plan = schema._plan
    columns = data.columns
    if not schema.has_input_names():
        # Positional columns: names in the input do not matter, only their number and types.
        if len(columns) != len(plan) and not (allow_extra and len(columns) > len(plan)):
            raise InvalidArgument(
                f"Model input has {len(columns)} column(s), the model signature expects "
                f"{len(plan)} unnamed column(s): {schema.describe()}."
            )
        frame = data if len(columns) == len(plan) else data.iloc[:, : len(plan)]
        dtypes = frame.dtypes.tolist()
        changed = {}
        for i, (_, type_, _) in enumerate(plan):
            if not _exact(dtypes[i], type_):
                values = frame.iloc[:, i]
                conformed = _conform_column(columns[i], values, type_)
                if conformed is not values:
                    changed[i] = conformed
        if changed:
            frame = frame.copy(deep=False)
            for i, values in changed.items():
                frame.isetitem(i, values)
        return frame

    names = columns.tolist()
    dtype_of = dict(zip(names, data.dtypes.tolist()))
    if len(dtype_of) != len(names):
        dup = sorted({str(c) for c in names if names.count(c) > 1})
        raise InvalidArgument(f"Model input has duplicate column(s) {', '.join(map(repr, dup))}.")
    missing = [name for name, _, required in plan if required and name not in dtype_of]
    if missing:
        raise InvalidArgument(
            f"Model input is missing required column(s) {', '.join(map(repr, missing))}. "
            f"The model signature expects: {schema.describe()}."
        )
    wanted = [name for name, _, _ in plan if name in dtype_of]
    if len(wanted) != len(names) and not allow_extra:
        known = set(wanted)
        extra = [c for c in names if c not in known]
        raise InvalidArgument(
            f"Model input has column(s) {', '.join(map(repr, extra))} that are not in the "
            f"model signature ({schema.describe()}). Remove them."
        )
    # Only columns whose dtype is not already exactly right are looked at (and copied).
    to_check = [(name, type_) for name, type_, _ in plan if name in dtype_of and not _exact(dtype_of[name], type_)]
    if not to_check and wanted == names:
        return data
    fast = _homogeneous(data, schema, names, wanted, dtype_of)
    if fast is not None:
        return fast
    frame = data if wanted == names else data[wanted]
    if not to_check:
        return frame
    return _cast_columns(frame, wanted, dtype_of, to_check)


def _homogeneous(data: pd.DataFrame, schema: Schema, names: list[str], wanted: list[str], dtype_of: Mapping[str, Any]) -> pd.DataFrame | None:
    """One numpy pass for the common request shape: numeric columns of one dtype, one type.

    Selecting, reordering and casting column by column costs a pandas call each; here the
    frame's single block is taken as an array, indexed and cast once.
    """
    dtypes = set(dtype_of.values())
    if len(dtypes) != 1:
        return None
    (dtype,) = dtypes
    types = {type_ for name, type_, _ in schema._plan if name in dtype_of}
    if len(types) != 1 or not isinstance(dtype, np.dtype):
        return None
    (type_,) = types
    exact = _exact(dtype, type_)
    if not exact and not _bulk_castable(dtype, type_):
        return None
    arr = data.to_numpy()
    if wanted != names:
        index_of = {name: i for i, name in enumerate(names)}
        arr = arr[:, [index_of[name] for name in wanted]]
    if not exact:
        arr = _cast_block(wanted, arr, dtype, type_)
    columns = schema._columns if len(wanted) == len(schema._plan) else pd.Index(wanted)
    return pd.DataFrame(arr, columns=columns, index=data.index, copy=False)


def _bulk_castable(dtype: Any, type_: str) -> bool:
    if not isinstance(dtype, np.dtype):
        return False
    if dtype.kind in "iu":
        return type_ in ("double", "float", "long", "integer")
    return dtype.kind == "f" and type_ in ("double", "float")


def _cast_block(names: list[str], arr: np.ndarray, dtype: np.dtype[Any], type_: str) -> np.ndarray:
    """Cast same-dtype columns at once (one numpy call, not one pandas call per column)."""
    target = SCALAR_TYPES[type_]
    assert target is not None
    if dtype.kind in "iu" and arr.size:
        if type_ in _EXACT_INT_IN_FLOAT:
            low, high = -_EXACT_INT_IN_FLOAT[type_], _EXACT_INT_IN_FLOAT[type_]
            check = dtype.itemsize >= (4 if type_ == "double" else 2)
            why = f"integers beyond +/-{high} are not exact as {type_}. Send them as {type_} values."
        else:
            low, high = _INT_RANGE[type_]
            check = dtype.itemsize > target.itemsize or (dtype.kind == "u" and dtype.itemsize >= target.itemsize)
            why = f"values are outside the {type_} range [{low}, {high}]."
        if check:
            bad = arr.max(axis=0) > high
            if dtype.kind == "i":
                bad |= arr.min(axis=0) < low
            if bad.any():
                raise _refuse(names[int(np.flatnonzero(bad)[0])], dtype, type_, why)
    return arr.astype(target, copy=False)


def _cast_columns(frame: pd.DataFrame, wanted: list[str], dtype_of: Mapping[str, Any], to_check: list[tuple[str, str]]) -> pd.DataFrame:
    positions = {name: i for i, name in enumerate(wanted)}
    groups: dict[tuple[Any, str], list[str]] = {}
    singles = []
    for name, type_ in to_check:
        if _bulk_castable(dtype_of[name], type_):
            groups.setdefault((dtype_of[name], type_), []).append(name)
        else:
            singles.append((name, type_))
    changed: list[tuple[int, Any]] = []
    for (dtype, type_), group in groups.items():
        for name in group:
            column = frame.iloc[:, positions[name]].to_numpy()
            changed.append((positions[name], _cast_block([name], column[:, None], dtype, type_)[:, 0]))
    for name, type_ in singles:
        values = frame.iloc[:, positions[name]]
        conformed = _conform_column(name, values, type_)
        if conformed is not values:
            changed.append((positions[name], conformed))
    if not changed:
        return frame
    out = frame.copy(deep=False)
    for position, values in changed:
        out.isetitem(position, values)
    return out


def _exact(dtype: Any, type_: str) -> bool:
    """True when a column of ``dtype`` needs no check or cast for MLflow type ``type_``."""
    target = SCALAR_TYPES.get(type_)
    if target is not None:
        return dtype is target or dtype == target
    if type_ == "string":
        return isinstance(dtype, pd.StringDtype)
    if type_ == "datetime":
        return isinstance(dtype, np.dtype) and dtype.kind == "M"
    return type_ in COMPLEX_TYPES


def check_allowed_values(data: pd.DataFrame, allowed: Mapping[str, Iterable[Any]]) -> None:
    """Refuse values outside a column's allowed set (missing values are left to the signature).

    A model trained on a fixed vocabulary (one-hot encoded categories, say) would otherwise
    score ``"nonsense"`` silently as "none of the known values".

    >>> import pandas as pd
    >>> check_allowed_values(pd.DataFrame({"plan": ["basic", "gold"]}), {"plan": ["basic", "pro"]})
    Traceback (most recent call last):
    ...
    tracking_plugin.errors.InvalidArgument: Column 'plan' has value(s) 'gold' that the model does not know; allowed values: 'basic', 'pro'.
    """
    if not isinstance(data, pd.DataFrame):
        return
    for column, values in allowed.items():
        if column not in data.columns:
            continue
        known = list(values)
        series = data[column]
        unknown = series[series.notna() & ~series.isin(known)]
        if len(unknown):
            shown = list(dict.fromkeys(unknown.tolist()))
            listed = ", ".join(repr(v) for v in shown[:5]) + (f" and {len(shown) - 5} more" if len(shown) > 5 else "")
            raise InvalidArgument(
                f"Column {column!r} has value(s) {listed} that the model does not know; "
                f"allowed values: {', '.join(repr(v) for v in known)}."
            )


def validate_tensor(data: Any, schema: Schema) -> Any:
    """Check numpy input against a tensor schema; cast safely or raise InvalidArgument."""
    specs = schema.inputs
    if isinstance(data, Mapping):
        out = {}
        for spec in specs:
            if spec.name not in data:
                raise InvalidArgument(f"Model input is missing tensor {spec.name!r}. The model signature expects: {schema.describe()}.")
            out[spec.name] = _conform_tensor(spec.name, np.asarray(data[spec.name]), spec)  # type: ignore[arg-type]
        return out
    if isinstance(data, pd.DataFrame):
        data = data.to_numpy()
    if len(specs) != 1:
        raise InvalidArgument(f"Model input must be a dict of named arrays: {schema.describe()}.")
    return _conform_tensor(specs[0].name or "input", np.asarray(data), specs[0])  # type: ignore[arg-type]


def _conform_tensor(name: str, arr: np.ndarray, spec: TensorSpec) -> np.ndarray:
    target = np.dtype(spec.dtype)
    if arr.dtype != target and not (target.kind in "US" and arr.dtype.kind == target.kind):
        if arr.dtype.kind in "iu" and target.kind == "f" and arr.size:
            limit = 2**53 if target.itemsize >= 8 else 2**24
            if np.abs(arr).max() > limit:
                raise InvalidArgument(f"Tensor {name!r}: integers beyond +/-{limit} are not exact as {target}.")
        elif not (np.can_cast(arr.dtype, target, casting="safe") or (arr.dtype.kind == "f" and target.kind == "f")):
            raise InvalidArgument(
                f"Tensor {name!r} of the model input has dtype {arr.dtype}, but the model signature "
                f"expects {target}. Send {target} values."
            )
        arr = arr.astype(target)
    if len(spec.shape) != arr.ndim or any(want != -1 and want != got for want, got in zip(spec.shape, arr.shape)):
        raise InvalidArgument(
            f"Tensor {name!r} of the model input has shape {list(arr.shape)}, but the model "
            f"signature expects {list(spec.shape)} (-1 means any size)."
        )
    return arr


def apply_params(params: Mapping[str, Any] | None, schema: ParamSchema | None) -> dict[str, Any] | None:
    """Fill in declared defaults and check the declared types of inference params."""
    if schema is None:
        return dict(params) if params else None
    given = dict(params or {})
    out: dict[str, Any] = {}
    for spec in schema.params:
        if spec.name not in given:
            out[spec.name] = spec.default
            continue
        value = given.pop(spec.name)
        checks = {
            "boolean": lambda v: isinstance(v, (bool, np.bool_)),
            "integer": lambda v: isinstance(v, (int, np.integer)) and not isinstance(v, bool),
            "long": lambda v: isinstance(v, (int, np.integer)) and not isinstance(v, bool),
            "float": lambda v: isinstance(v, (int, float, np.number)) and not isinstance(v, bool),
            "double": lambda v: isinstance(v, (int, float, np.number)) and not isinstance(v, bool),
            "string": lambda v: isinstance(v, str),
        }
        check = checks.get(spec.type)
        items = value if spec.shape is not None and isinstance(value, (list, tuple)) else [value]
        if check is not None and not all(check(v) for v in items):
            raise InvalidArgument(f"Param {spec.name!r} must be of type {spec.type}, got {value!r}.")
        out[spec.name] = value
    if given:
        raise InvalidArgument(
            f"Unknown param(s) {', '.join(map(repr, sorted(given)))}: the model signature declares "
            f"{', '.join(repr(p.name) for p in schema.params) or 'none'}."
        )
    return out


def as_model_input(data: Any, schema: Schema | None) -> Any:
    """Turn dicts, lists and arrays into the container the schema calls for."""
    if schema is not None and schema.is_tensor_spec():
        if isinstance(data, Mapping) and not all(isinstance(v, np.ndarray) for v in data.values()) and len(schema) == 1 and schema.inputs[0].name not in data:
            data = frame_from(data)
        return data
    if isinstance(data, pd.DataFrame):
        return data
    if isinstance(data, pd.Series):
        return data.to_frame()
    if isinstance(data, (Mapping, list)):
        if isinstance(data, list) and data and not isinstance(data[0], Mapping) and schema is not None and schema.has_input_names():
            return pd.DataFrame(data, columns=schema.input_names())
        return frame_from(data)
    if isinstance(data, np.ndarray) and schema is not None:
        # A 1-D array is one row, unless the schema has one column: then it is one value a row.
        arr = data.reshape(-1, 1) if data.ndim == 1 and len(schema) == 1 else data.reshape(1, -1) if data.ndim == 1 else data
        if arr.ndim == 2 and arr.shape[1] == len(schema):
            return pd.DataFrame(arr, columns=schema.input_names() if schema.has_input_names() else None)
        raise InvalidArgument(
            f"Model input is an array of shape {list(data.shape)}, but the model signature expects "
            f"{len(schema)} column(s): {schema.describe()}. Send a DataFrame or rows of that width."
        )
    return data

