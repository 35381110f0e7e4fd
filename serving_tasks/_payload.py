"""Parsing of ``/invocations`` request bodies: MLflow's scoring protocol, no I/O.

Accepted bodies (the same as ``mlflow models serve``)::

    application/json   {"dataframe_split": {"columns": [...], "data": [[...], ...]}}
                       {"dataframe_records": [{"col": value, ...}, ...]}
                       {"instances": [...]}   rows (objects or lists) or one column of scalars
                       {"inputs": ...}        rows, or columns {"col": [values, ...]}
                       each with an optional "params": {...}
    text/csv           a header line, then rows (``DataFrame.to_csv(index=False)``)
    application/vnd.apache.parquet   (also application/x-parquet, application/parquet)

JSON bodies are parsed into columns (``{name: [values]}``) rather than a DataFrame: the
micro-batcher joins the columns of many requests and builds one DataFrame per batch, which
is much cheaper than one per request. CSV and Parquet bodies become DataFrames directly.

Every refusal is a :class:`~tracking_plugin.errors.InvalidArgument` subclass whose message
names the bad key, column or value; the app maps them to 400, 413 and 415.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import orjson

from tracking_plugin.errors import InvalidArgument

__all__ = [
    "CONTENT_TYPE_CSV",
    "CONTENT_TYPE_JSON",
    "CONTENT_TYPE_PARQUET",
    "MalformedPayload",
    "ParsedPayload",
    "PayloadTooLarge",
    "SUPPORTED_CONTENT_TYPES",
    "UnsupportedContentType",
    "params_key",
    "parse_content_type",
    "parse_payload",
]

CONTENT_TYPE_JSON = "application/json"
CONTENT_TYPE_CSV = "text/csv"
CONTENT_TYPE_PARQUET = "application/vnd.apache.parquet"
_PARQUET_ALIASES = frozenset({CONTENT_TYPE_PARQUET, "application/x-parquet", "application/parquet"})
SUPPORTED_CONTENT_TYPES = (CONTENT_TYPE_JSON, CONTENT_TYPE_CSV, CONTENT_TYPE_PARQUET)

DATA_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
PARAMS_KEY = "params"
_ALLOWED_KEYS = frozenset((*DATA_KEYS, PARAMS_KEY))
_EXAMPLE = '{"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2.5]]}}'


class MalformedPayload(InvalidArgument):
    """The body is not valid JSON/CSV/Parquet or does not follow the scoring protocol (400)."""

    error_code = "BAD_REQUEST"


class UnsupportedContentType(InvalidArgument):
    """The Content-Type is not one the scoring protocol accepts (415)."""

    error_code = "BAD_REQUEST"


class PayloadTooLarge(InvalidArgument):
    """The body is longer than the server's limit (413)."""

    error_code = "BAD_REQUEST"


@dataclass(frozen=True, slots=True)
class ParsedPayload:
    """One request's input, ready for the batcher.

    Exactly one of ``columns`` (JSON bodies: column name -> list of values, all the same
    length) and ``frame`` (CSV/Parquet bodies: a DataFrame) is set.
    """

    n_rows: int
    columns: dict[str, list[Any]] | None = None
    frame: Any = None  # pandas.DataFrame; typed loosely so this module imports no pandas
    params: dict[str, Any] | None = None

    @property
    def column_names(self) -> tuple[str, ...]:
        if self.columns is not None:
            return tuple(self.columns)
        return tuple(str(c) for c in self.frame.columns)


def parse_content_type(header: str | None) -> str:
    """Return the canonical media type for a Content-Type header, or raise 415.

    >>> parse_content_type("application/json; charset=UTF-8")
    'application/json'
    """
    if not header:
        raise UnsupportedContentType(
            f"Missing Content-Type header; send one of {', '.join(SUPPORTED_CONTENT_TYPES)}."
        )
    mime, _, rest = header.partition(";")
    mime = mime.strip().lower()
    for part in rest.split(";"):
        key, _, value = part.partition("=")
        key = key.strip().lower()
        if not key:
            continue
        if key != "charset":
            raise UnsupportedContentType(
                f"Unsupported Content-Type parameter {key!r} in {header!r}; only 'charset' is accepted."
            )
        if value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise UnsupportedContentType(
                f"Unsupported charset {value.strip()!r}; the scoring server reads UTF-8 only."
            )
    if mime == CONTENT_TYPE_JSON or mime == CONTENT_TYPE_CSV:
        return mime
    if mime in _PARQUET_ALIASES:
        return CONTENT_TYPE_PARQUET
    raise UnsupportedContentType(
        f"Unsupported Content-Type {mime!r}; send one of {', '.join(SUPPORTED_CONTENT_TYPES)}."
    )


def parse_payload(
    body: bytes,
    media_type: str,
    *,
    input_names: Sequence[str] | None = None,
    required_names: frozenset[str] = frozenset(),
) -> ParsedPayload:
    """Parse a request body whose media type came from :func:`parse_content_type`.

    ``input_names`` (the model signature's column names, in order) name the columns of
    positional rows (``[[1, 2.5]]``); without them such columns are named "0", "1", ...
    ``required_names`` are checked record by record.

    >>> p = parse_payload(b'{"dataframe_records": [{"a": 1, "b": 2.5}]}', "application/json")
    >>> p.columns, p.n_rows
    ({'a': [1], 'b': [2.5]}, 1)
    """
    if media_type == CONTENT_TYPE_JSON:
        return _parse_json(body, input_names, required_names)
    if media_type == CONTENT_TYPE_CSV:
        return _parse_csv(body)
    if media_type == CONTENT_TYPE_PARQUET:
        return _parse_parquet(body)
    raise UnsupportedContentType(f"Unsupported Content-Type {media_type!r}.")


# JSON -------------------------------------------------------------------------------------


def _parse_json(
    body: bytes, input_names: Sequence[str] | None, required_names: frozenset[str]
) -> ParsedPayload:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedPayload(f"The body is not valid JSON ({exc}). Example of a valid body: {_EXAMPLE}") from None
    if not isinstance(doc, dict):
        raise MalformedPayload(
            f"The JSON body must be an object with exactly one of {', '.join(DATA_KEYS)}; "
            f"got a {type(doc).__name__}. Example: {_EXAMPLE}"
        )
    unknown = [k for k in doc if k not in _ALLOWED_KEYS]
    if unknown:
        raise MalformedPayload(
            f"Unknown payload key {unknown[0]!r}; the body may hold exactly one of "
            f"{', '.join(DATA_KEYS)} and optionally 'params'."
        )
    present = [k for k in DATA_KEYS if k in doc]
    if len(present) != 1:
        if present:
            raise MalformedPayload(
                f"The body holds both {present[0]!r} and {present[1]!r}; send exactly one of "
                f"{', '.join(DATA_KEYS)}."
            )
        raise MalformedPayload(f"The body holds none of {', '.join(DATA_KEYS)}; send exactly one. Example: {_EXAMPLE}")
    key = present[0]
    params = doc.get(PARAMS_KEY)
    if params is not None and not isinstance(params, dict):
        raise MalformedPayload(f"'params' must be a JSON object of name -> value, got {type(params).__name__}.")
    value = doc[key]
    if key == "dataframe_split":
        columns = _from_split(value, input_names)
    elif key == "dataframe_records":
        if not isinstance(value, list):
            raise MalformedPayload(f"'dataframe_records' must be a list of objects, got {type(value).__name__}.")
        columns = _from_records(value, key, required_names)
    else:
        columns = _from_tf_serving(value, key, input_names, required_names)
    n_rows = len(next(iter(columns.values()))) if columns else 0
    return ParsedPayload(n_rows=n_rows, columns=columns, params=params or None)


def _check_name(name: Any, where: str) -> str:
    if not isinstance(name, str):
        raise MalformedPayload(f"Column names must be strings; {where} has {name!r}.")
    return name


def _from_split(value: Any, input_names: Sequence[str] | None) -> dict[str, list[Any]]:
    if not isinstance(value, dict):
        raise MalformedPayload(
            "'dataframe_split' must be an object with 'columns' and 'data' "
            f"(DataFrame.to_dict(orient='split')), got {type(value).__name__}."
        )
    extra = [k for k in value if k not in ("columns", "data", "index")]
    if extra:
        raise MalformedPayload(
            f"Unknown key {extra[0]!r} in 'dataframe_split'; it may hold 'columns', 'data' and 'index'."
        )
    if "data" not in value:
        raise MalformedPayload("'dataframe_split' lacks 'data' (a list of rows).")
    data = value["data"]
    if not isinstance(data, list):
        raise MalformedPayload(f"'dataframe_split.data' must be a list of rows, got {type(data).__name__}.")
    names = value.get("columns")
    if names is None:
        width = len(data[0]) if data and isinstance(data[0], list) else 0
        names = _positional_names(input_names, width, "'dataframe_split' without 'columns'")
    elif not isinstance(names, list):
        raise MalformedPayload(f"'dataframe_split.columns' must be a list of names, got {type(names).__name__}.")
    names = [_check_name(n, "'dataframe_split.columns'") for n in names]
    _check_unique(names, "'dataframe_split.columns'")
    return _rows_to_columns(data, names, "'dataframe_split.data'")


def _from_records(records: list[Any], key: str, required_names: frozenset[str]) -> dict[str, list[Any]]:
    if not records:
        return {}
    first = records[0]
    if not isinstance(first, dict):
        raise MalformedPayload(f"'{key}' must be a list of objects; item 0 is a {type(first).__name__}.")
    names = [_check_name(n, f"'{key}' item 0") for n in first]
    columns: dict[str, list[Any]] = {n: [v] for n, v in first.items()}
    first_keys = first.keys()
    for i in range(1, len(records)):
        record = records[i]
        if not isinstance(record, dict):
            raise MalformedPayload(f"'{key}' must be a list of objects; item {i} is a {type(record).__name__}.")
        if record.keys() == first_keys:
            for n in names:
                columns[n].append(record[n])
            continue
        # Ragged records: a key one record lacks is null there (as pandas and MLflow do),
        # unless the model requires that column.
        for n in record:
            if n not in columns:
                _check_name(n, f"'{key}' item {i}")
                if n in required_names:
                    raise InvalidArgument(
                        f"Required column {n!r} is missing from '{key}' item 0; every record must hold it."
                    )
                columns[n] = [None] * i
                names.append(n)
        for n in names:
            if n in record:
                columns[n].append(record[n])
            elif n in required_names:
                raise InvalidArgument(
                    f"Required column {n!r} is missing from '{key}' item {i}; every record must hold it."
                )
            else:
                columns[n].append(None)
    return columns


def _from_tf_serving(
    value: Any, key: str, input_names: Sequence[str] | None, required_names: frozenset[str]
) -> dict[str, list[Any]]:
    if isinstance(value, dict):
        # Columnar: {"col": [values, ...], ...}; a dict of scalars is one row.
        if not value:
            raise MalformedPayload(f"'{key}' is an empty object; send columns as {{\"col\": [values, ...]}}.")
        names = [_check_name(n, f"'{key}'") for n in value]
        if all(isinstance(v, list) for v in value.values()):
            lengths = {len(v) for v in value.values()}
            if len(lengths) != 1:
                counts = ", ".join(f"{n!r}: {len(value[n])}" for n in names)
                raise MalformedPayload(f"The columns of '{key}' have different lengths ({counts}).")
            return {n: value[n] for n in names}
        if any(isinstance(v, list) for v in value.values()):
            bad = next(n for n in names if not isinstance(value[n], list))
            raise MalformedPayload(
                f"'{key}' mixes lists and scalars (column {bad!r}); send every column as a list."
            )
        return {n: [value[n]] for n in names}
    if not isinstance(value, list):
        raise MalformedPayload(f"'{key}' must be a list of rows or an object of columns, got {type(value).__name__}.")
    if not value:
        return {}
    first = value[0]
    if isinstance(first, dict):
        return _from_records(value, key, required_names)
    if isinstance(first, list):
        names = _positional_names(input_names, len(first), f"'{key}' given as lists")
        return _rows_to_columns(value, names, f"'{key}'")
    # A flat list of scalars: one value per row of a single-column model.
    names = _positional_names(input_names, 1, f"'{key}' given as a list of scalars")
    for i, item in enumerate(value):
        if isinstance(item, (list, dict)):
            raise MalformedPayload(f"'{key}' mixes scalars and {type(item).__name__}s (item {i}).")
    return {names[0]: value}


def _positional_names(input_names: Sequence[str] | None, width: int, what: str) -> list[str]:
    if input_names is None:
        # No named columns in the signature (tensor-based or none): columns by position,
        # which is what a model fitted on a numpy array expects.
        return [str(i) for i in range(width)]
    if width != len(input_names):
        raise InvalidArgument(
            f"{what}: rows have {width} values but the model expects {len(input_names)} "
            f"columns ({', '.join(input_names)})."
        )
    return list(input_names)


def _check_unique(names: list[str], where: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise MalformedPayload(f"Column {name!r} appears twice in {where}.")
        seen.add(name)


def _rows_to_columns(rows: list[Any], names: list[str], where: str) -> dict[str, list[Any]]:
    width = len(names)
    for i, row in enumerate(rows):
        if not isinstance(row, list):
            raise MalformedPayload(f"{where} must be a list of rows (lists); row {i} is a {type(row).__name__}.")
        if len(row) != width:
            raise MalformedPayload(f"{where} row {i} has {len(row)} values for {width} columns ({', '.join(names)}).")
    if not rows:
        return {n: [] for n in names}
    return {n: list(col) for n, col in zip(names, zip(*rows))}


# CSV and Parquet -------------------------------------------------------------------------


def _parse_csv(body: bytes) -> ParsedPayload:
    import pandas as pd

    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedPayload(f"The CSV body is not UTF-8 ({exc}).") from None
    if not text.strip():
        raise MalformedPayload("The CSV body is empty; send a header line and rows (DataFrame.to_csv(index=False)).")
    try:
        frame = pd.read_csv(io.StringIO(text))
    except (ValueError, pd.errors.ParserError, UnicodeError) as exc:
        raise MalformedPayload(
            f"The body is not valid CSV ({exc}); send DataFrame.to_csv(index=False) output."
        ) from None
    _check_frame_columns(frame, "CSV header")
    return ParsedPayload(n_rows=len(frame), frame=frame)


def _parse_parquet(body: bytes) -> ParsedPayload:
    import pandas as pd
    import pyarrow as pa

    try:
        frame = pd.read_parquet(io.BytesIO(body))
    except (pa.ArrowException, ValueError, OSError, TypeError) as exc:
        raise MalformedPayload(f"The body is not a valid Parquet file ({exc}); send DataFrame.to_parquet() output.") from None
    _check_frame_columns(frame, "Parquet file")
    return ParsedPayload(n_rows=len(frame), frame=frame)


def _check_frame_columns(frame: Any, where: str) -> None:
    names = list(frame.columns)
    for name in names:
        if not isinstance(name, str):
            raise MalformedPayload(f"Column names must be strings; the {where} has {name!r}.")
    _check_unique(names, f"the {where}")


def params_key(params: Mapping[str, Any] | None) -> bytes:
    """A hashable identity of ``params``: only requests with equal params share a batch."""
    if not params:
        return b""
    return orjson.dumps(params, option=orjson.OPT_SORT_KEYS)
