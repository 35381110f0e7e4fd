"""Read and write tables (CSV, gzipped CSV or Parquet) at a path, ``file://`` or ``s3://`` URI
(or a tracking server's ``mlflow-artifacts:/`` URI).

The one reader behind batch scoring and the pipeline's file data source, so both speak
the same URIs and give the same errors::

    df = read_table("s3://bucket/batches/2026-11-26.parquet")
    write_table(predictions, "out/predictions.csv")

S3 goes through the artifact repositories (boto3, endpoint and credentials from
settings, errors translated there). A missing file is :class:`NotFound` naming it; an
unreadable one :class:`InvalidArgument` naming it and the parser's complaint; an unknown
extension :class:`InvalidArgument` listing the supported ones.
"""

from __future__ import annotations

import contextlib
import io
import os
import uuid
import zlib
from pathlib import Path
from typing import Any, Literal, Sequence
from urllib.parse import unquote, urlsplit

import pandas as pd

from tracking_plugin.artifacts import get_artifact_repository
from tracking_plugin.errors import BackendUnavailable, InvalidArgument, MlopsError, NotFound
from tracking_plugin.fluent import current_client

__all__ = ["SUPPORTED_SUFFIXES", "check_table_uri", "local_table_path", "read_table", "table_format", "write_table"]

SUPPORTED_SUFFIXES = (".csv", ".csv.gz", ".parquet")
# Read and written through the artifact repositories: S3, and a tracking server's proxy
# (a run's artifact URI when the tracking URI is a server's).
_REMOTE = ("s3://", "mlflow-artifacts:")


def table_format(uri: str) -> Literal["csv", "parquet"]:
    """``csv`` or ``parquet`` from the file extension; InvalidArgument otherwise."""
    name = uri.split("?", 1)[0].lower()
    if name.endswith((".csv", ".csv.gz")):
        return "csv"
    if name.endswith(".parquet"):
        return "parquet"
    raise InvalidArgument(
        f"Cannot read data file {uri!r}: unknown file type. "
        f"Supported file types: {', '.join(SUPPORTED_SUFFIXES)}."
    )


def check_table_uri(uri: Any) -> str:
    """Refuse, before any I/O, a URI that cannot name a table file; return it."""
    if not isinstance(uri, str) or not uri.strip():
        raise InvalidArgument(f"Data file URI must be a non-empty string, got {uri!r}.")
    if uri.startswith("s3://"):
        parts = urlsplit(uri)
        if not parts.netloc or not parts.path.strip("/"):
            raise InvalidArgument(f"S3 data file URI {uri!r} must look like s3://bucket/path/file.csv.")
    elif "://" in uri and not uri.startswith("file://"):
        raise InvalidArgument(
            f"Cannot read data file {uri!r}: unsupported scheme. "
            "Use a local path, file:///path or s3://bucket/key."
        )
    table_format(uri)
    return uri


def local_table_path(uri: str) -> Path:
    """The filesystem path of a plain path or ``file://`` URI."""
    if uri.startswith("file://"):
        return Path(unquote(urlsplit(uri).path))
    return Path(uri).expanduser()


def _split_s3(uri: str) -> tuple[str, str]:
    parent, _, name = uri.rstrip("/").rpartition("/")
    return parent, name


def _parse(data: Any, uri: str, parse_dates: Sequence[str]) -> pd.DataFrame:
    fmt = table_format(uri)
    try:
        if fmt == "parquet":
            return pd.read_parquet(data)
        compression = "gzip" if uri.lower().endswith(".gz") else None
        return pd.read_csv(data, compression=compression, parse_dates=list(parse_dates) or None)
    except pd.errors.EmptyDataError as exc:
        raise InvalidArgument(f"Data file {uri!r} is empty: {str(exc).strip()}.") from exc
    # pyarrow's ArrowInvalid is a ValueError; a bad gzip header or a permission problem is
    # an OSError, a cut-off gzip stream an EOFError, a corrupt one a zlib.error; binary
    # garbage in a CSV is a UnicodeDecodeError (a ValueError too).
    except (ValueError, OSError, EOFError, zlib.error, pd.errors.ParserError) as exc:
        raise InvalidArgument(
            f"Cannot parse data file {uri!r} as {fmt.upper()}: {str(exc).strip()}. "
            "Check that the file is complete and matches its extension."
        ) from exc


def read_table(uri: str, *, parse_dates: Sequence[str] = ()) -> pd.DataFrame:
    """Load a CSV (``.csv``, ``.csv.gz``) or Parquet file from a local path or S3.

    ``parse_dates`` names CSV columns to parse as datetimes (Parquet keeps its types).
    """
    uri = _as_uri(uri)
    check_table_uri(uri)
    if uri.startswith(_REMOTE):
        return _parse(io.BytesIO(_read_s3(uri)), uri, parse_dates)
    path = local_table_path(uri)
    if not path.exists():
        raise NotFound(f"Data file {uri!r} does not exist (looked at {str(path)!r}).")
    if not path.is_file():
        raise InvalidArgument(f"Data file {uri!r} is a directory, not a file.")
    return _parse(path, uri, parse_dates)


def write_table(df: pd.DataFrame, uri: str) -> str:
    """Write ``df`` as CSV or Parquet (by extension) to a local path or S3; returns ``uri``.

    The file appears whole or not at all: a local file is written beside the target and
    renamed, an S3 object is uploaded in one request (or one multipart upload).
    """
    uri = _as_uri(uri)
    check_table_uri(uri)
    if not isinstance(df, pd.DataFrame):
        raise InvalidArgument(f"Cannot write {type(df).__name__} to {uri!r}: pass a pandas DataFrame.")
    fmt = table_format(uri)
    buffer = io.BytesIO()
    try:
        if fmt == "csv":
            df.to_csv(buffer, index=False, compression="gzip" if uri.lower().endswith(".gz") else None)
        else:
            df.to_parquet(buffer, index=False)
    # pyarrow refuses mixed-type object columns (ArrowTypeError/ArrowInvalid: TypeError or
    # ValueError subclasses) and non-string column names.
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(
            f"Cannot write data file {uri!r} as {fmt.upper()}: {str(exc).strip()}. Give each column one "
            "type (e.g. df[col].astype(str)) and string column names, or write CSV."
        ) from exc
    if uri.startswith(_REMOTE):
        parent, name = _split_s3(uri)
        try:
            get_artifact_repository(parent, current_client().settings).log_bytes(buffer.getvalue(), name)
        except MlopsError as exc:
            raise type(exc)(f"Cannot write data file {uri!r}: {exc.message}") from exc
        return uri
    path = local_table_path(uri)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise IsADirectoryError(f"{str(path)!r} is a directory")
        tmp.write_bytes(buffer.getvalue())
        tmp.replace(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise InvalidArgument(
            f"Cannot write data file {uri!r}: {exc.strerror or exc}. Choose a writable file path."
        ) from exc
    return uri


def _as_uri(uri: Any) -> Any:
    return os.fspath(uri) if isinstance(uri, os.PathLike) else uri


def _read_s3(uri: str) -> bytes:
    parent, name = _split_s3(uri)
    try:
        # The S3 endpoint and credentials of the backend in use (e.g. a flow's block).
        return get_artifact_repository(parent, current_client().settings).read_bytes(name)
    except NotFound as exc:
        raise NotFound(f"Data file {uri!r} does not exist: {exc.message}") from exc
    except BackendUnavailable as exc:
        raise BackendUnavailable(f"Cannot read data file {uri!r}: {exc.message}") from exc
