"""Signature inference (MLflow's JSON shape) and enforcement (validate_input)."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from tracking_plugin.errors import InvalidArgument
from tracking_plugin.models import (
    ColSpec,
    ModelSignature,
    ParamSchema,
    ParamSpec,
    Schema,
    TensorSpec,
    infer_signature,
    validate_input,
)


def _sig(*specs: ColSpec) -> ModelSignature:
    return ModelSignature(Schema(specs))


def test_inference_maps_pandas_dtypes_to_mlflow_types():
    frame = pd.DataFrame(
        {
            "flag": [True, False],
            "small": np.array([1, 2], dtype="int32"),
            "big": np.array([1, 2], dtype="int64"),
            "f32": np.array([1.0, 2.0], dtype="float32"),
            "f64": [1.5, 2.5],
            "text": ["a", "b"],
            "obj_text": pd.Series(["a", None], dtype=object),
            "raw": [b"x", b"y"],
            "when": pd.to_datetime(["2024-01-01", "2024-01-02"]),
            "cat": pd.Categorical(["x", "y"]),
        }
    )
    sig = infer_signature(frame, np.array([0, 1]))
    assert [(c.name, c.type) for c in sig.inputs] == [
        ("flag", "boolean"),
        ("small", "integer"),
        ("big", "long"),
        ("f32", "float"),
        ("f64", "double"),
        ("text", "string"),
        ("obj_text", "string"),
        ("raw", "binary"),
        ("when", "datetime"),
        ("cat", "string"),
    ]
    assert sig.outputs.to_dict() == [{"type": "long", "required": True}]


def test_signature_dict_is_mlflow_shaped_and_round_trips():
    sig = infer_signature(pd.DataFrame({"x": [1.0]}), pd.DataFrame({"p": [0.3], "label": ["a"]}), params={"k": 3, "mode": "fast"})
    as_dict = sig.to_dict()
    assert as_dict["inputs"] == '[{"type": "double", "name": "x", "required": true}]'
    assert as_dict["outputs"] == (
        '[{"type": "double", "name": "p", "required": true}, {"type": "string", "name": "label", "required": true}]'
    )
    assert as_dict["params"] == (
        '[{"name": "k", "type": "long", "default": 3, "shape": null}, '
        '{"name": "mode", "type": "string", "default": "fast", "shape": null}]'
    )
    assert ModelSignature.from_dict(as_dict) == sig


def test_mlflow_nested_types_survive_a_round_trip():
    text = '[{"type": "array", "items": {"type": "string"}, "name": "tags", "required": false}]'
    sig = ModelSignature.from_dict({"inputs": text, "outputs": None})
    assert sig.inputs.inputs[0].type == "array"
    assert sig.to_dict()["inputs"] == text


def test_tensor_signature_from_numpy():
    sig = infer_signature(np.zeros((4, 3), dtype="float32"), np.zeros((4, 2)))
    assert sig.inputs.inputs == (TensorSpec("float32", (-1, 3)),)
    assert sig.outputs.inputs == (TensorSpec("float64", (-1, 2)),)


def test_unsupported_example_values_are_refused_with_the_column():
    with pytest.raises(InvalidArgument, match="'blob'"):
        infer_signature(pd.DataFrame({"blob": [{"a": 1}, {"b": 2}]}))
    with pytest.raises(InvalidArgument, match="Unsupported column type 'decimal'"):
        ColSpec("decimal", "x")


def test_missing_columns_are_all_named():
    sig = _sig(ColSpec("double", "a"), ColSpec("long", "b"), ColSpec("string", "c"))
    with pytest.raises(InvalidArgument) as err:
        validate_input(pd.DataFrame({"a": [1.0]}), sig)
    assert "'b', 'c'" in err.value.message and "b (long)" in err.value.message


def test_optional_columns_may_be_absent():
    sig = _sig(ColSpec("double", "a"), ColSpec("string", "note", required=False))
    out = validate_input(pd.DataFrame({"a": [1.0]}), sig)
    assert list(out.columns) == ["a"]


def test_extra_columns_refused_unless_allowed():
    sig = _sig(ColSpec("double", "a"))
    frame = pd.DataFrame({"a": [1.0], "zz": [2]})
    with pytest.raises(InvalidArgument, match="'zz'.*not in the model signature"):
        validate_input(frame, sig)
    assert list(validate_input(frame, sig, allow_extra=True).columns) == ["a"]


@pytest.mark.parametrize(
    ("type_", "values", "expected_dtype"),
    [
        ("double", np.array([1, 2], dtype="int64"), "float64"),
        ("double", np.array([1, 2], dtype="int32"), "float64"),
        ("double", np.array([1.5], dtype="float32"), "float64"),
        ("float", np.array([1.5, 2.25]), "float32"),
        ("long", np.array([1, 2], dtype="int32"), "int64"),
        ("long", np.array([1, 2], dtype="uint8"), "int64"),
        ("integer", np.array([1, 2], dtype="int64"), "int32"),
        ("boolean", np.array([True]), "bool"),
        ("datetime", pd.Series(["2024-05-01T10:00:00"]), None),
        ("string", pd.Series(["a", None], dtype=object), "object"),
    ],
)
def test_safe_casts_are_applied(type_, values, expected_dtype):
    out = validate_input(pd.DataFrame({"x": values}), _sig(ColSpec(type_, "x")))
    if expected_dtype is None:
        assert out["x"].dtype.kind == "M"
    else:
        assert str(out["x"].dtype) == expected_dtype


@pytest.mark.parametrize(
    ("type_", "values", "fragment"),
    [
        ("double", ["1.0", "abc"], "text cannot be used as numbers"),
        ("long", [1.5, 2.0], "floating point"),
        ("long", ["1"], "whole numbers"),
        ("integer", np.array([2**40], dtype="int64"), "outside the integer range"),
        ("double", np.array([2**60], dtype="int64"), "not exact"),
        ("string", [1, 2], "text values"),
        ("boolean", [1, 0], "true/false"),
        ("datetime", ["not a date"], "not dates"),
        ("long", pd.array([1, None], dtype="Int64"), "missing values"),
    ],
)
def test_uncastable_values_name_column_and_type(type_, values, fragment):
    with pytest.raises(InvalidArgument) as err:
        validate_input(pd.DataFrame({"col_x": values}), _sig(ColSpec(type_, "col_x")))
    assert "'col_x'" in err.value.message and f"expects {type_}" in err.value.message
    assert fragment in err.value.message


def test_well_formed_frame_is_returned_without_copy():
    sig = _sig(ColSpec("double", "a"), ColSpec("string", "b"))
    frame = pd.DataFrame({"a": [1.0], "b": ["x"]})
    assert validate_input(frame, sig) is frame


def test_positional_signature_checks_width_and_types():
    sig = _sig(ColSpec("double"), ColSpec("double"))
    out = validate_input(pd.DataFrame({"p": [1], "q": [2.0]}), sig)
    assert out.dtypes.tolist() == [np.dtype("float64"), np.dtype("float64")]
    with pytest.raises(InvalidArgument, match="3 column"):
        validate_input(pd.DataFrame({"p": [1.0], "q": [2.0], "r": [3.0]}), sig)


def test_params_schema_applies_defaults_and_types():
    from tracking_plugin.models._signature import apply_params

    schema = ParamSchema([ParamSpec("k", "long", 3), ParamSpec("mode", "string", "fast")])
    assert apply_params(None, schema) == {"k": 3, "mode": "fast"}
    assert apply_params({"k": 5}, schema) == {"k": 5, "mode": "fast"}
    with pytest.raises(InvalidArgument, match="'k' must be of type long"):
        apply_params({"k": "five"}, schema)
    with pytest.raises(InvalidArgument, match="Unknown param"):
        apply_params({"temperature": 0.1}, schema)


def test_enforcing_one_row_is_cheap():
    # The serving layer calls this per request; it must stay far below the model's own cost.
    names = [f"f{i}" for i in range(20)]
    sig = _sig(*(ColSpec("double", n) for n in names))
    row = pd.DataFrame([{n: float(i) for i, n in enumerate(names)}])
    casted_row = pd.DataFrame([{n: i for i, n in enumerate(names)}])  # JSON ints for doubles
    for frame in (row, casted_row):
        validate_input(frame, sig)
        best = min(_timed(lambda: validate_input(frame, sig)) for _ in range(20))
        assert best < 0.005, f"validate_input took {best * 1e3:.2f} ms for one row"


def _timed(fn) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
