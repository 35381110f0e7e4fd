"""Batch scoring without Prefect: the body of the ``batch_predict`` task.

    result = score_table("models:/churn@champion", "s3://data/today.parquet", "s3://data/scores.parquet")
    result.rows, result.rows_per_second

The model is loaded once (``tracking_plugin.models.load_model``: any model URI), the input
scored ``chunk_size`` rows at a time (each chunk checked against the model's signature),
and the predictions written as CSV or Parquet (by extension; local path, ``file://`` or
``s3://``) or returned as a DataFrame.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from tracking_plugin.errors import InvalidArgument

__all__ = ["BatchPredictionResult", "score_table"]


@dataclass(frozen=True)
class BatchPredictionResult:
    """What :func:`score_table` scored, how fast, and where the predictions went."""

    rows: int
    seconds: float
    rows_per_second: float
    output: str | None
    predictions: pd.DataFrame | None  # only when no output URI was given
    chunks: int = 1


def _check_options(chunk_size: Any, prediction_column: Any, keep_columns: Any) -> list[str]:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise InvalidArgument(f"Invalid chunk_size {chunk_size!r}: use a positive whole number of rows, e.g. 50000.")
    if not isinstance(prediction_column, str) or not prediction_column:
        raise InvalidArgument(f"Invalid prediction_column {prediction_column!r}: use a non-empty column name.")
    if keep_columns is None:
        return []
    if isinstance(keep_columns, str) or not all(isinstance(c, str) for c in keep_columns):
        raise InvalidArgument(f"Invalid keep_columns {keep_columns!r}: pass a list of column names, e.g. ['id'].")
    return list(keep_columns)


def _prediction_columns(values: Any, prediction_column: str) -> dict[str, Any]:
    """One output column per prediction column; a model's own column names are kept."""
    if isinstance(values, pd.DataFrame):
        if values.shape[1] == 1:
            return {prediction_column: values.iloc[:, 0].to_numpy()}
        return {f"{prediction_column}_{c}": values[c].to_numpy() for c in values.columns}
    if isinstance(values, pd.Series):
        return {prediction_column: values.to_numpy()}
    array = np.asarray(values)
    if array.ndim <= 1:
        return {prediction_column: array.reshape(-1)}
    array = array.reshape(array.shape[0], -1)
    if array.shape[1] == 1:
        return {prediction_column: array[:, 0]}
    return {f"{prediction_column}_{j}": array[:, j] for j in range(array.shape[1])}


def score_table(
    model_uri: str,
    input: pd.DataFrame | str | os.PathLike[str],  # noqa: A002 - the batch_predict task's name
    output: str | os.PathLike[str] | None = None,
    *,
    chunk_size: int = 50_000,
    prediction_column: str = "prediction",
    keep_columns: Sequence[str] | None = None,
    progress: Callable[[int, int, int], None] | None = None,
) -> BatchPredictionResult:
    """Score ``input`` (DataFrame or CSV/Parquet URI) with ``model_uri`` in chunks.

    The output has the ``keep_columns`` of the input (default none, e.g. ``["id"]``) and
    the predictions in ``prediction_column`` (``<prediction_column>_<name or i>`` for
    models returning several columns). It is written to ``output`` when given, else
    returned in ``predictions``. ``progress(chunks_done, chunks_total, rows_in_chunk)`` is
    called after each chunk. Bad URIs and options are refused before any data is read.
    """
    from tracking_plugin.models import load_model
    from tracking_plugin.tables import check_table_uri, read_table, write_table

    keep = _check_options(chunk_size, prediction_column, keep_columns)
    if prediction_column in keep:
        raise InvalidArgument(
            f"prediction_column {prediction_column!r} is also in keep_columns; name the predictions otherwise."
        )
    if isinstance(input, os.PathLike):
        input = os.fspath(input)  # noqa: A001
    if isinstance(output, os.PathLike):
        output = os.fspath(output)
    if isinstance(input, str):
        check_table_uri(input)
    elif not isinstance(input, pd.DataFrame):
        raise InvalidArgument(
            f"Invalid input {type(input).__name__}: pass a pandas DataFrame or the URI of a "
            "CSV/Parquet file (local path, file:// or s3://)."
        )
    if output is not None:
        check_table_uri(output)

    started = time.perf_counter()
    model = load_model(model_uri)
    frame = read_table(input) if isinstance(input, str) else input
    missing = [c for c in keep if c not in frame.columns]
    if missing:
        raise InvalidArgument(
            f"keep_columns {missing} are not columns of the input; its columns are {list(frame.columns)}."
        )

    n_chunks = max(1, math.ceil(len(frame) / chunk_size))
    parts: list[dict[str, Any]] = []
    for index in range(n_chunks):
        chunk = frame.iloc[index * chunk_size : (index + 1) * chunk_size]
        if len(chunk):
            columns = _prediction_columns(model.predict(chunk), prediction_column)
            wrong = {name: len(v) for name, v in columns.items() if len(v) != len(chunk)}
            if wrong:
                raise InvalidArgument(
                    f"The model {model_uri!r} returned {wrong} predictions for a chunk of {len(chunk)} rows; "
                    "batch scoring needs one prediction per row."
                )
            parts.append(columns)
        if progress is not None:
            progress(index + 1, n_chunks, len(chunk))

    result = frame[keep].reset_index(drop=True) if keep else pd.DataFrame(index=pd.RangeIndex(len(frame)))
    if parts:
        clash = sorted(set(parts[0]) & set(keep))
        if clash:
            raise InvalidArgument(
                f"keep_columns {clash} would be overwritten by the predictions; pass another "
                f"prediction_column than {prediction_column!r}."
            )
        for name in parts[0]:
            result[name] = np.concatenate([p[name] for p in parts])
    else:
        result[prediction_column] = pd.Series(dtype="float64")
    if output is not None:
        write_table(result, output)
    seconds = max(time.perf_counter() - started, 1e-9)
    return BatchPredictionResult(
        rows=len(frame), seconds=seconds, rows_per_second=len(frame) / seconds,
        output=output, predictions=None if output is not None else result, chunks=n_chunks,
    )
