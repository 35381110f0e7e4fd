# Over 600 lines on purpose: every request format of MLflow's scoring protocol and every input
# limit are parsed in one place, so that each input problem is the same kind of 400.
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

The body limit counts bytes on the wire; :class:`PayloadLimits` bounds what they decode
to, checked before the decoding is paid for where the format allows it: a Parquet file's
rows and uncompressed sizes are read from its footer (a 131 KB zstd file can hold 3 x 10^7
zeros), string columns stay dictionary-encoded until their decoded length is known, a CSV
header's width is counted before pandas parses the body, and pandas stops reading a CSV
one row past the row limit.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import orjson

from tracking_plugin.errors import InvalidArgument

__all__ = [
    "CONTENT_TYPE_CSV",
    "CONTENT_TYPE_JSON",
    "CONTENT_TYPE_PARQUET",
    "MalformedPayload",
    "ParsedPayload",
    "PayloadLimits",
    "PayloadTooLarge",
    "SUPPORTED_CONTENT_TYPES",
    "UnsupportedContentType",
    "check_values",
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
    """The body, or what it decodes to, is over one of the server's limits (413)."""

    error_code = "BAD_REQUEST"


DEFAULT_MAX_ROWS = 1_000_000
DEFAULT_MAX_DECODED_BYTES = 256 * 2**20
DEFAULT_MAX_COLUMNS = 4096


@dataclass(frozen=True, slots=True, kw_only=True)
class PayloadLimits:
    """Bounds on what one request body may decode to (the body size is the app's limit).

    - ``max_rows``: rows in one request, any format (``--max-rows``; 413 past it);
    - ``max_decoded_bytes``: the in-memory size of a CSV or Parquet body's columns
      (``--max-decoded-mb``; 413 past it);
    - ``max_columns``: columns in one request when the model's signature names none
      (with a signature, its width is the bound); 400 past it.
    """

    max_rows: int = DEFAULT_MAX_ROWS
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES
    max_columns: int = DEFAULT_MAX_COLUMNS

    def __post_init__(self) -> None:
        for name in ("max_rows", "max_decoded_bytes", "max_columns"):
            if getattr(self, name) < 1:
                raise InvalidArgument(f"{name} must be positive, got {getattr(self, name)}.")

    def check_rows(self, n_rows: int, where: str, *, counted_all: bool = True) -> None:
        if n_rows > self.max_rows:
            count = f"{n_rows} rows" if counted_all else f"more than {self.max_rows} rows"
            raise PayloadTooLarge(
                f"The {where} holds {count}, over this server's limit of {self.max_rows} rows "
                "per request; send fewer rows per request or start the server with a larger --max-rows."
            )

    def check_decoded(self, n_bytes: int, where: str) -> None:
        if n_bytes > self.max_decoded_bytes:
            raise PayloadTooLarge(
                f"The {where} decodes to {n_bytes} bytes, over this server's limit of "
                f"{self.max_decoded_bytes} decoded bytes per request; send fewer rows per request "
                "or start the server with a larger --max-decoded-mb."
            )

    def check_width(
        self, width: int, input_names: Sequence[str] | None, where: str, names: Iterable[Any] = ()
    ) -> None:
        """Refuse (400) more columns than the model takes, before they are parsed.

        ``names`` (when known) lets the message name the columns the model does not take.
        """
        if input_names is not None and width > len(input_names):
            known = set(input_names)
            extra = [repr(n) for n in names if not isinstance(n, str) or n not in known]
            listed = ", ".join(extra[:5]) + (" and more" if len(extra) > 5 else "")
            shown = ", ".join(input_names[:20]) + (", ..." if len(input_names) > 20 else "")
            raise InvalidArgument(
                f"The {where} has {width} columns; the model signature has {len(input_names)} ({shown})"
                + (f": column(s) {listed} are not in the model signature. Remove or rename them." if extra else ".")
            )
        if width > self.max_columns:
            raise MalformedPayload(
                f"The {where} has {width} columns, over this server's limit of {self.max_columns} "
                "columns for a model whose signature names none."
            )


DEFAULT_LIMITS = PayloadLimits()


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
    limits: PayloadLimits = DEFAULT_LIMITS,
) -> ParsedPayload:
    """Parse a request body whose media type came from :func:`parse_content_type`.

    ``input_names`` (the model signature's column names, in order) name the columns of
    positional rows (``[[1, 2.5]]``); without them such columns are named "0", "1", ...
    ``required_names`` are checked record by record. ``limits`` bound rows, columns and
    decoded bytes (:class:`PayloadLimits`).

    >>> p = parse_payload(b'{"dataframe_records": [{"a": 1, "b": 2.5}]}', "application/json")
    >>> p.columns, p.n_rows
    ({'a': [1], 'b': [2.5]}, 1)
    """
    if media_type == CONTENT_TYPE_JSON:
        payload = _parse_json(body, input_names, required_names, limits)
        limits.check_rows(payload.n_rows, "JSON body")
        return payload
    if media_type == CONTENT_TYPE_CSV:
        return _parse_csv(body, input_names, limits)
    if media_type == CONTENT_TYPE_PARQUET:
        return _parse_parquet(body, input_names, limits)
    raise UnsupportedContentType(f"Unsupported Content-Type {media_type!r}.")


# JSON -------------------------------------------------------------------------------------


def _parse_json(
    body: bytes, input_names: Sequence[str] | None, required_names: frozenset[str], limits: PayloadLimits
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
        columns = _from_split(value, input_names, limits)
    elif key == "dataframe_records":
        if not isinstance(value, list):
            raise MalformedPayload(f"'dataframe_records' must be a list of objects, got {type(value).__name__}.")
        columns = _from_records(value, key, required_names, input_names, limits)
    else:
        columns = _from_tf_serving(value, key, input_names, required_names, limits)
    n_rows = len(next(iter(columns.values()))) if columns else 0
    return ParsedPayload(n_rows=n_rows, columns=columns, params=params or None)


def _check_name(name: Any, where: str) -> str:
    if not isinstance(name, str):
        raise MalformedPayload(f"Column names must be strings; {where} has {name!r}.")
    return name


def _from_split(value: Any, input_names: Sequence[str] | None, limits: PayloadLimits) -> dict[str, list[Any]]:
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
    limits.check_width(len(names), input_names, "'dataframe_split.columns'", names)
    names = [_check_name(n, "'dataframe_split.columns'") for n in names]
    _check_unique(names, "'dataframe_split.columns'")
    return _rows_to_columns(data, names, "'dataframe_split.data'")


def _from_records(
    records: list[Any],
    key: str,
    required_names: frozenset[str],
    input_names: Sequence[str] | None,
    limits: PayloadLimits,
) -> dict[str, list[Any]]:
    if not records:
        return {}
    first = records[0]
    if not isinstance(first, dict):
        raise MalformedPayload(f"'{key}' must be a list of objects; item 0 is a {type(first).__name__}.")
    limits.check_width(len(first), input_names, f"'{key}' item 0", first)
    names = [_check_name(n, f"'{key}' item 0") for n in first]
    columns: dict[str, list[Any]] = {n: [v] for n, v in first.items()}
    known = columns.keys()  # a live view: grows as ragged records add columns
    for i in range(1, len(records)):
        record = records[i]
        if not isinstance(record, dict):
            raise MalformedPayload(f"'{key}' must be a list of objects; item {i} is a {type(record).__name__}.")
        if record.keys() == known:
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
                limits.check_width(len(names), input_names, f"'{key}' (up to item {i})", names)
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
    value: Any,
    key: str,
    input_names: Sequence[str] | None,
    required_names: frozenset[str],
    limits: PayloadLimits,
) -> dict[str, list[Any]]:
    if isinstance(value, dict):
        # Columnar: {"col": [values, ...], ...}; a dict of scalars is one row.
        if not value:
            raise MalformedPayload(f"'{key}' is an empty object; send columns as {{\"col\": [values, ...]}}.")
        limits.check_width(len(value), input_names, f"'{key}'", value)
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
        return _from_records(value, key, required_names, input_names, limits)
    if isinstance(first, list):
        limits.check_width(len(first), input_names, f"'{key}' row 0")
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


def _parse_csv(body: bytes, input_names: Sequence[str] | None, limits: PayloadLimits) -> ParsedPayload:
    import pandas as pd

    if not body.strip():
        raise MalformedPayload("The CSV body is empty; send a header line and rows (DataFrame.to_csv(index=False)).")
    # The header's width first: pandas spends seconds per MB on a header of 10^5 columns
    # before any column check could refuse it. Without quotes the commas give the width
    # exactly, with no list of 10^5 names built just to be refused. Only the header is
    # decoded here: pandas reads the bytes itself (a decoded copy of the whole body would
    # cost up to 4x its size).
    end = body.find(b"\n")
    try:
        first_line = (body if end < 0 else body[:end]).decode("utf-8").rstrip("\r")
    except UnicodeDecodeError as exc:
        raise MalformedPayload(f"The CSV body is not UTF-8 ({exc}).") from None
    if '"' not in first_line:
        width = first_line.count(",") + 1
        names: list[str] = first_line.split(",", 64)[:64]  # enough to name a few in an error
    else:
        try:
            names = next(csv.reader(line.decode("utf-8") for line in io.BytesIO(body)))
        except (csv.Error, StopIteration, UnicodeDecodeError) as exc:
            raise MalformedPayload(
                f"The CSV header line cannot be read ({exc}); send DataFrame.to_csv(index=False) output."
            ) from None
        width = len(names)
    limits.check_width(width, input_names, "CSV header", names)
    try:
        # One row past the limit tells "too many" without parsing the rest.
        frame = pd.read_csv(io.BytesIO(body), encoding="utf-8", nrows=limits.max_rows + 1)
    except UnicodeDecodeError as exc:
        raise MalformedPayload(f"The CSV body is not UTF-8 ({exc}).") from None
    except (ValueError, pd.errors.ParserError, UnicodeError, csv.Error) as exc:
        raise MalformedPayload(
            f"The body is not valid CSV ({exc}); send DataFrame.to_csv(index=False) output."
        ) from None
    limits.check_rows(len(frame), "CSV body", counted_all=False)
    _check_frame_columns(frame, "CSV header")
    limits.check_decoded(int(frame.memory_usage(index=False, deep=True).sum()), "CSV body")
    return ParsedPayload(n_rows=len(frame), frame=frame)


def _parse_parquet(body: bytes, input_names: Sequence[str] | None, limits: PayloadLimits) -> ParsedPayload:
    """Read a Parquet body within ``limits``: the footer is checked before any data page is
    decompressed, string columns are measured while still dictionary-encoded, and decoding
    goes one row group at a time so a footer that understates sizes costs one row group."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    def invalid(exc: Exception) -> MalformedPayload:
        return MalformedPayload(f"The body is not a valid Parquet file ({exc}); send DataFrame.to_parquet() output.")

    try:
        meta = pq.read_metadata(io.BytesIO(body))
        schema = meta.schema.to_arrow_schema()
    except (pa.ArrowException, ValueError, OSError, TypeError) as exc:
        raise invalid(exc) from None
    pandas_index = _pandas_index_columns(schema)
    data_names = [n for n in schema.names if n not in pandas_index]
    limits.check_width(len(data_names), input_names, "Parquet file", data_names)
    limits.check_rows(meta.num_rows, "Parquet file")
    declared = 0
    declared_rows = 0
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        declared_rows += group.num_rows
        declared += sum(max(group.column(c).total_uncompressed_size, 0) for c in range(group.num_columns))
    limits.check_rows(declared_rows, "Parquet file's row groups")
    limits.check_decoded(declared, "Parquet file (uncompressed size in its footer)")
    # The footer's sizes are only the writer's word: the decompressor allocates what each
    # page's own header declares, so those are summed too before anything is decompressed.
    limits.check_decoded(_declared_page_bytes(body, meta), "Parquet file (uncompressed size of its pages)")
    for field in schema:
        if pa.types.is_nested(field.type) and field.name not in pandas_index:
            raise MalformedPayload(
                f"Parquet column {field.name!r} has the nested type {field.type}; the scoring server "
                "takes flat columns (numbers, strings, booleans, timestamps)."
            )
    strings = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_binary(f.type)
               or pa.types.is_large_string(f.type) or pa.types.is_large_binary(f.type)]
    try:
        reader = pq.ParquetFile(io.BytesIO(body), read_dictionary=strings)
        decoded = 0
        rows = 0
        groups = []
        for g in range(reader.num_row_groups):
            table = reader.read_row_group(g)
            rows += table.num_rows
            limits.check_rows(rows, "Parquet file (decoded)")
            for column in table.columns:
                if pa.types.is_dictionary(column.type):
                    # What the dense column will take: the values each index points at.
                    for chunk in column.chunks:
                        lengths = pc.binary_length(chunk.dictionary).fill_null(0)
                        decoded += int(pc.sum(pc.take(lengths, chunk.indices)).as_py() or 0) + 8 * len(chunk)
                else:
                    decoded += column.nbytes
            limits.check_decoded(decoded, "Parquet file")
            groups.append(table)
        table = pa.concat_tables(groups) if groups else reader.schema_arrow.empty_table()
        if strings:
            table = table.cast(schema)  # dictionary -> the file's own string/binary types
        frame = table.to_pandas()
    except InvalidArgument:
        raise
    except (pa.ArrowException, ValueError, OSError, TypeError) as exc:
        raise invalid(exc) from None
    _check_frame_columns(frame, "Parquet file")
    return ParsedPayload(n_rows=len(frame), frame=frame)


_MAX_PARQUET_PAGES = 100_000


def _declared_page_bytes(body: bytes, meta: Any) -> int:
    """The sum of the uncompressed sizes the pages' own headers declare (what decoding will
    allocate), read by walking each column chunk's page headers without decompressing."""
    total = 0
    pages = 0
    try:
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            for c in range(group.num_columns):
                chunk = group.column(c)
                start = chunk.data_page_offset
                if chunk.has_dictionary_page and chunk.dictionary_page_offset:
                    start = min(start, chunk.dictionary_page_offset)
                end = start + chunk.total_compressed_size
                if start < 4 or end > len(body) - 8:
                    raise ValueError(f"column chunk {c} of row group {g} lies outside the file")
                pos = start
                while pos < end:
                    uncompressed, compressed, pos = _page_header(body, pos)
                    if uncompressed < 0 or compressed < 0:
                        raise ValueError("a page declares a negative size")
                    total += uncompressed
                    pos += compressed
                    pages += 1
                    if pages > _MAX_PARQUET_PAGES:
                        raise ValueError(f"more than {_MAX_PARQUET_PAGES} pages")
    except (ValueError, IndexError) as exc:
        raise MalformedPayload(f"The body is not a valid Parquet file ({exc}); send DataFrame.to_parquet() output.") from None
    return total


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("a varint in a page header is too long")


def _zigzag(n: int) -> int:
    return (n >> 1) ^ -(n & 1)


def _page_header(buf: bytes, pos: int) -> tuple[int, int, int]:
    """(uncompressed_page_size, compressed_page_size, end of header) of the Thrift
    compact-protocol ``PageHeader`` at ``pos`` (fields 2 and 3)."""
    sizes = {2: -1, 3: -1}
    last = 0
    while True:
        byte = buf[pos]
        pos += 1
        if byte == 0:
            break
        kind = byte & 0x0F
        if byte >> 4:
            field = last + (byte >> 4)
        else:
            raw, pos = _varint(buf, pos)
            field = _zigzag(raw)
        last = field
        if kind == 5 and field in sizes:
            raw, pos = _varint(buf, pos)
            sizes[field] = _zigzag(raw)
        else:
            pos = _skip_thrift(buf, pos, kind, 0)
    if sizes[2] < 0 or sizes[3] < 0:
        raise ValueError("a page header lacks its sizes")
    return sizes[2], sizes[3], pos


def _skip_thrift(buf: bytes, pos: int, kind: int, depth: int) -> int:
    """The position after one Thrift compact value of ``kind`` at ``pos``."""
    if depth > 16:
        raise ValueError("a page header nests too deeply")
    if kind in (1, 2):  # booleans live in the field header
        return pos
    if kind == 3:
        return pos + 1
    if kind in (4, 5, 6):
        return _varint(buf, pos)[1]
    if kind == 7:
        return pos + 8
    if kind == 8:
        length, pos = _varint(buf, pos)
        return pos + length
    if kind in (9, 10):
        header = buf[pos]
        pos += 1
        size, element = header >> 4, header & 0x0F
        if size == 15:
            size, pos = _varint(buf, pos)
        for _ in range(size):
            pos = pos + 1 if element in (1, 2) else _skip_thrift(buf, pos, element, depth + 1)
            if pos > len(buf):
                raise ValueError("a page header runs past the end of the file")
        return pos
    if kind == 11:
        size, pos = _varint(buf, pos)
        if size:
            types = buf[pos]
            pos += 1
            for _ in range(size):
                pos = _skip_thrift(buf, pos, types >> 4, depth + 1)
                pos = _skip_thrift(buf, pos, types & 0x0F, depth + 1)
                if pos > len(buf):
                    raise ValueError("a page header runs past the end of the file")
        return pos
    if kind == 12:
        last = 0
        while True:
            byte = buf[pos]
            pos += 1
            if byte == 0:
                return pos
            if not byte >> 4:
                _, pos = _varint(buf, pos)
            pos = _skip_thrift(buf, pos, byte & 0x0F, depth + 1)
    raise ValueError(f"unknown Thrift type {kind} in a page header")


def _pandas_index_columns(schema: Any) -> set[str]:
    """Columns pandas wrote for the index (``DataFrame.to_parquet`` with a non-range index)."""
    metadata = schema.pandas_metadata or {}
    return {c for c in metadata.get("index_columns", []) if isinstance(c, str)}


def _check_frame_columns(frame: Any, where: str) -> None:
    names = list(frame.columns)
    for name in names:
        if not isinstance(name, str):
            raise MalformedPayload(f"Column names must be strings; the {where} has {name!r}.")
    _check_unique(names, f"the {where}")


def check_values(payload: ParsedPayload, required: frozenset[str], floating: frozenset[str]) -> None:
    """Refuse (400) what the model would choke on: a missing value (null, NaN, empty CSV
    field) in a ``required`` column, and an infinity in a ``floating`` (double/float) column.

    JSON cannot carry NaN or infinities (and a JSON ``null`` in a required column is
    refused by the signature check), so for JSON bodies only nulls among other values are
    looked for; CSV and Parquet bodies are checked column by column with numpy.
    """
    if payload.columns is not None:
        for name in required:
            values = payload.columns.get(name)
            if values is not None and None in values:
                raise InvalidArgument(
                    f"Required column {name!r} has a null in row {values.index(None)}; send a value "
                    "for every row (the model signature marks it required)."
                )
        return
    import numpy as np

    frame = payload.frame
    for name in frame.columns:
        if name in required:
            missing = frame[name].isna().to_numpy()
            if missing.any():
                raise InvalidArgument(
                    f"Required column {name!r} has a missing value (null, NaN or an empty field) in row "
                    f"{int(np.flatnonzero(missing)[0])}; send a value for every row (the model signature "
                    "marks it required)."
                )
        if name in floating:
            values = frame[name].to_numpy()
            if values.dtype.kind == "f":
                infinite = np.isinf(values)
                if infinite.any():
                    row = int(np.flatnonzero(infinite)[0])
                    raise InvalidArgument(
                        f"Column {name!r} holds {values[row]} in row {row}; send finite numbers "
                        "(JSON cannot carry infinities either)."
                    )


def params_key(params: Mapping[str, Any] | None) -> bytes:
    """A hashable identity of ``params``: only requests with equal params share a batch."""
    if not params:
        return b""
    try:
        return orjson.dumps(params, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError as exc:  # deeper than orjson's 255 levels, ...
        raise MalformedPayload(
            f"'params' cannot be used ({exc}); send a flat object of name -> value "
            "(values nest at most 255 levels)."
        ) from None
