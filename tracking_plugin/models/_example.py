"""Input examples: saved as MLflow does (``input_example.json`` + ``serving_input_example.json``).

A DataFrame (or a dict of columns, which becomes one) is stored in pandas' ``split``
orient without the index, and the serving example wraps it as ``{"dataframe_split": ...}``.
A numpy array (or dict of arrays) is stored as nested lists, served as ``{"inputs": ...}``.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from tracking_plugin.errors import InvalidArgument, ModelLoadRefused
from tracking_plugin.models._paths import model_path
from tracking_plugin.models._signature import ModelSignature, frame_from, validate_input, validate_tensor

EXAMPLE_FILE = "input_example.json"
SERVING_EXAMPLE_FILE = "serving_input_example.json"
MAX_EXAMPLE_ROWS = 1000


@dataclass(frozen=True)
class Example:
    data: Any  # what the model is called with: DataFrame, ndarray or dict of ndarrays
    kind: str  # "dataframe" | "ndarray"
    payload: Any  # JSON-ready input_example.json content
    serving: Mapping[str, Any]

    @property
    def info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"artifact_path": EXAMPLE_FILE, "type": self.kind}
        if self.kind == "dataframe":
            info["pandas_orient"] = "split"
        info["serving_input_path"] = SERVING_EXAMPLE_FILE
        return info

    def save(self, model_dir: Path) -> None:
        (model_dir / EXAMPLE_FILE).write_text(json.dumps(self.payload, default=_json_default, allow_nan=False))
        (model_dir / SERVING_EXAMPLE_FILE).write_text(json.dumps(self.serving, default=_json_default, allow_nan=False, indent=2))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (dt.datetime, dt.date, pd.Timestamp)):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _cell(value: Any) -> Any:
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None  # JSON has no NaN; MLflow writes null too
    if isinstance(value, np.generic):
        return _cell(value.item())
    return value


def prepare_example(input_example: Any) -> Example:
    """Normalise a user's input example; refuse types we cannot store faithfully."""
    if isinstance(input_example, Mapping) and input_example and all(isinstance(v, np.ndarray) for v in input_example.values()):
        arrays = {str(k): v[:MAX_EXAMPLE_ROWS] for k, v in input_example.items()}
        payload = {k: v.tolist() for k, v in arrays.items()}
        return Example(arrays, "ndarray", payload, {"inputs": payload})
    if isinstance(input_example, np.ndarray):
        arr = input_example[:MAX_EXAMPLE_ROWS]
        payload = arr.tolist()
        return Example(arr, "ndarray", payload, {"inputs": payload})
    if isinstance(input_example, (Mapping, list)):
        input_example = frame_from(input_example)
    if isinstance(input_example, pd.Series):
        input_example = input_example.to_frame()
    if not isinstance(input_example, pd.DataFrame):
        raise InvalidArgument(
            f"Unsupported input_example of type {type(input_example).__name__}: use a pandas "
            "DataFrame, a dict of columns, or a numpy array."
        )
    frame = input_example.head(MAX_EXAMPLE_ROWS).reset_index(drop=True)
    rows = [[_cell(v) for v in row] for row in frame.astype(object).itertuples(index=False, name=None)]
    split = {"columns": [str(c) for c in frame.columns], "data": rows}
    return Example(frame, "dataframe", split, {"dataframe_split": split})


def load_example(model_dir: str | os.PathLike[str], info: Mapping[str, Any] | None, signature: ModelSignature | None) -> Any:
    """Read the saved example back as a DataFrame (or array); None if there is none."""
    if not info:
        return None
    if not isinstance(info, Mapping):
        raise ModelLoadRefused(f"The MLmodel of the model at {os.fspath(model_dir)!r} has a malformed saved_input_example_info: {info!r}.")
    path = model_path(model_dir, info.get("artifact_path", EXAMPLE_FILE), what="input example")
    if not path.is_file():
        return None
    payload = json.loads(path.read_text())
    if info.get("params") and isinstance(payload, Mapping) and "inputs" in payload:
        payload = payload["inputs"]  # MLflow's example with params: {"inputs": ..., "params": ...}
    if info.get("type") == "dataframe":
        frame = pd.DataFrame(payload["data"], columns=payload.get("columns"))
        if signature is not None and signature.inputs is not None and not signature.inputs.is_tensor_spec():
            try:
                return validate_input(frame, signature, allow_extra=True)
            except InvalidArgument:
                return frame
        return frame
    if info.get("type") == "ndarray":
        schema = signature.inputs if signature is not None else None
        if isinstance(payload, Mapping):
            arrays = {k: np.asarray(v) for k, v in payload.items()}
            if schema is not None and schema.is_tensor_spec() and schema.has_input_names():
                try:
                    return validate_tensor(arrays, schema)
                except InvalidArgument:
                    return arrays
            return arrays
        arr = np.asarray(payload)
        if schema is not None and schema.is_tensor_spec() and len(schema) == 1:
            try:
                return validate_tensor(arr, schema)
            except InvalidArgument:
                return arr
        return arr
    return payload
