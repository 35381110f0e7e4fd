"""Prediction logging: what the scoring server answered, written as Parquet for later joins.

With ``--log-predictions RATE`` the scoring server hands each sampled request to a
:class:`PredictionLogger`: the request's input rows, the predictions it returned (and the
positive-class probability when the model has ``predict_proba``), the model name and
version, the request id (also sent back as ``X-Request-ID``, so labels that arrive later
can be joined on it) and the time. A writer thread groups what is queued and writes it as
Parquet into an artifact store (a local folder or ``s3://``, via
:func:`tracking_plugin.artifacts.get_artifact_repository`), Hive-partitioned::

    <uri>/model=<name>/version=<version>/date=<YYYY-MM-DD>/part-<ms>-<id>.parquet

(``model=_unregistered/version=0`` for a model served from a path or run). Each file has
the columns ``request_id``, ``row`` (the row's position in its request), ``logged_at``
(UTC), ``model_name``, ``model_version``, the input columns (one whose name clashes with
these or with ``prediction``/``probability`` is stored as ``input.<name>``), ``prediction``
(a JSON string when the model returns records) and, for binary classifiers,
``probability`` (of class 1; multi-class models get a ``probabilities`` list instead).

The request path never waits for any of it: :meth:`PredictionLogger.offer` appends to a
queue bounded in rows and returns; when the queue is full the request's rows are dropped
and counted (``dropped_rows`` in :meth:`PredictionLogger.stats`, shown by ``/metadata``).
JSON decoding, ``predict_proba`` and Parquet encoding run in the writer thread. A write that
fails (e.g. S3 unreachable) is retried on the next flush while the queue has room for its
rows; :meth:`PredictionLogger.stop` flushes what is left when the server shuts down.

Read them back with pyarrow (``pyarrow.dataset.dataset(uri, partitioning="hive")``) or
``prefect_mlops.flows.performance.read_prediction_log``; the ``performance_monitor`` flow
joins them with labels that arrive later.
"""

from __future__ import annotations

import collections
import datetime as dt
import io
import itertools
import logging
import random
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Sequence
from urllib.parse import quote

import orjson

from tracking_plugin.errors import InvalidArgument

from serving_tasks._payload import ParsedPayload

__all__ = ["PredictionLogger", "RESERVED_COLUMNS", "UNREGISTERED_MODEL", "partition_path"]

logger = logging.getLogger("serving_tasks")

#: The partition name of a model served from a path or a run (no registry name).
UNREGISTERED_MODEL = "_unregistered"
#: Columns the logger writes itself; an input column of the same name gets ``input.``.
RESERVED_COLUMNS = frozenset(
    {"request_id", "row", "logged_at", "model_name", "model_version", "prediction", "probability", "probabilities"}
)


def partition_path(model_name: str | None, version: int | None, day: dt.date) -> str:
    """The folder (relative to the log URI) of one model version's predictions of one day.

    >>> partition_path("churn", 3, dt.date(2026, 12, 4))
    'model=churn/version=3/date=2026-12-04'
    """
    name = quote(model_name or UNREGISTERED_MODEL, safe="-_.")
    return f"model={name}/version={int(version or 0)}/date={day.isoformat()}"


@dataclass(frozen=True, slots=True)
class _Entry:
    served: Any  # serving_tasks._served_model.ServedModel
    payload: ParsedPayload
    predictions: bytes  # the JSON array sent back to the caller
    request_id: str
    at: float  # time.time() when answered


class PredictionLogger:
    """Queue scored requests on the event loop; write them as Parquet from one thread.

    - ``uri``: the log's root (a folder or ``s3://bucket/prefix``);
    - ``sample_rate``: share of requests logged (0 < rate <= 1; 1 logs every request);
    - ``max_queue_rows``: rows held in memory at most; past it a request's rows are
      dropped and counted, never waited for;
    - ``batch_rows`` / ``flush_interval``: the writer writes when this many rows are
      queued or this many seconds have passed, whichever comes first.
    """

    def __init__(
        self,
        uri: str,
        *,
        sample_rate: float = 1.0,
        max_queue_rows: int = 100_000,
        batch_rows: int = 10_000,
        flush_interval: float = 5.0,
        settings: Any = None,
    ) -> None:
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float)) or not 0 < sample_rate <= 1:
            raise InvalidArgument(
                f"Invalid prediction log sampling rate {sample_rate!r}: use a share above 0 and at most 1 "
                "(e.g. --log-predictions 0.1 logs one request in ten)."
            )
        if not isinstance(uri, str) or not uri.strip():
            raise InvalidArgument(f"Invalid prediction log URI {uri!r}: pass a folder or an s3://bucket/prefix URI.")
        if max_queue_rows < 1 or batch_rows < 1 or not flush_interval > 0:
            raise InvalidArgument(
                f"Invalid prediction log bounds (max_queue_rows={max_queue_rows}, batch_rows={batch_rows}, "
                f"flush_interval={flush_interval}): all must be positive."
            )
        from tracking_plugin.artifacts import get_artifact_repository

        self.uri = uri
        self.sample_rate = float(sample_rate)
        self.max_queue_rows = max_queue_rows
        self.batch_rows = batch_rows
        self.flush_interval = flush_interval
        self._repo = get_artifact_repository(uri, settings)  # refuses a bad scheme at startup
        self.uri = getattr(self._repo, "artifact_uri", uri)  # a relative folder made absolute
        self._queue: collections.deque[_Entry] = collections.deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._random = random.Random()
        self._queued_rows = 0
        self.logged_rows = 0
        self.dropped_rows = 0
        self.sampled_out_requests = 0
        self.files_written = 0
        self.write_errors = 0
        self.last_error: str | None = None
        self._proba_failed: set[int] = set()

    # the request path ---------------------------------------------------------------

    def offer(self, served: Any, payload: ParsedPayload, predictions: bytes, request_id: str, at: float | None = None) -> None:
        """Queue one answered request (or drop and count it when the queue is full). O(1).

        ``at`` (epoch seconds, default now) is when it was answered; replays set it."""
        if self.sample_rate < 1.0 and self._random.random() >= self.sample_rate:
            self.sampled_out_requests += 1
            return
        rows = payload.n_rows
        with self._lock:
            if self._stopping or self._queued_rows + rows > self.max_queue_rows:
                self.dropped_rows += rows
                return
            self._queue.append(_Entry(served, payload, predictions, request_id, time.time() if at is None else at))
            self._queued_rows += rows
            full = self._queued_rows >= self.batch_rows
        if full:
            self._wake.set()

    # lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="mlops-prediction-log", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking requests and write what is queued (the server's shutdown)."""
        with self._lock:
            self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        else:
            self.flush()
        with self._lock:
            left = self._queued_rows
        if left:
            logger.error(
                "prediction log: %d row(s) could not be written to %s before shutdown (%s)", left, self.uri, self.last_error
            )

    def stats(self) -> dict[str, Any]:
        """What ``/metadata`` shows under ``prediction_log``."""
        with self._lock:
            queued = self._queued_rows
        return {
            "uri": self.uri,
            "sample_rate": self.sample_rate,
            "logged_rows": self.logged_rows,
            "queued_rows": queued,
            "dropped_rows": self.dropped_rows,
            "sampled_out_requests": self.sampled_out_requests,
            "max_queue_rows": self.max_queue_rows,
            "files_written": self.files_written,
            "write_errors": self.write_errors,
            "last_error": self.last_error,
        }

    # the writer thread ---------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            stopping = self._stopping
            self.flush()
            if stopping:
                return

    def flush(self) -> None:
        """Write everything queued now (called by the writer thread, and by tests)."""
        with self._lock:
            entries = list(self._queue)
            self._queue.clear()
            self._queued_rows = 0
        if not entries:
            return
        groups: dict[tuple[int, dt.date], list[_Entry]] = {}
        for entry in entries:
            day = dt.datetime.fromtimestamp(entry.at, dt.timezone.utc).date()
            groups.setdefault((id(entry.served), day), []).append(entry)
        for (_, day), group in groups.items():
            try:
                self._write(group, day)
            except Exception as exc:  # keep serving; retry these rows on the next flush
                self.write_errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                logger.warning("prediction log: writing %d request(s) to %s failed: %s", len(group), self.uri, self.last_error)
                self._requeue(group)

    def _requeue(self, group: list[_Entry]) -> None:
        rows = sum(e.payload.n_rows for e in group)
        with self._lock:
            if self._queued_rows + rows > self.max_queue_rows:
                self.dropped_rows += rows
                return
            self._queue.extendleft(reversed(group))
            self._queued_rows += rows

    def _write(self, group: list[_Entry], day: dt.date) -> None:
        import pyarrow.parquet as pq

        served = group[0].served
        table = self._table(group)
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        name = f"part-{int(time.time() * 1000)}-{uuid.uuid4().hex[:12]}.parquet"
        self._repo.log_bytes(buffer.getvalue(), f"{partition_path(served.name, served.version, day)}/{name}")
        self.files_written += 1
        self.logged_rows += table.num_rows

    def _table(self, group: list[_Entry]) -> Any:
        import numpy as np
        import pandas as pd
        import pyarrow as pa

        served = group[0].served
        inputs = _input_frame([e.payload for e in group])
        counts = [e.payload.n_rows for e in group]
        predictions = list(itertools.chain.from_iterable(_predictions(e) for e in group))
        if len(predictions) != len(inputs):
            raise RuntimeError(f"{len(predictions)} predictions for {len(inputs)} input rows")
        out: dict[str, Any] = {
            "request_id": pa.array(list(itertools.chain.from_iterable([e.request_id] * n for e, n in zip(group, counts))), pa.string()),
            "row": pa.array(np.concatenate([np.arange(n, dtype=np.int32) for n in counts])),
            "logged_at": pa.array(
                np.repeat(np.array([int(e.at * 1000) for e in group], dtype="int64"), counts).astype("datetime64[ms]"),
                pa.timestamp("ms", tz="UTC"),
            ),
            "model_name": pa.array([served.name or UNREGISTERED_MODEL] * len(inputs), pa.string()),
            "model_version": pa.array([int(served.version or 0)] * len(inputs), pa.int64()),
        }
        for column in inputs.columns:
            name = str(column)
            out[f"input.{name}" if name in RESERVED_COLUMNS or name.startswith("input.") else name] = _arrow_column(inputs[column])
        kind, values = _prediction_column(predictions)
        out["prediction"] = values
        proba = _proba_from_predictions(predictions) if kind == "vectors" else None
        if proba is None and kind == "scalars":
            proba = self._predict_proba(served, inputs)
        if proba is not None:
            if proba.ndim == 2 and proba.shape[1] == 2:
                out["probability"] = pa.array(proba[:, 1].astype("float64"))
            elif proba.ndim == 2:
                out["probabilities"] = pa.array(proba.astype("float64").tolist(), pa.list_(pa.float64()))
        return pa.table(out)

    def _predict_proba(self, served: Any, inputs: Any) -> Any:
        """Class probabilities from the served model's estimator, or None (no such method,
        or it fails: then said once per model in the log, and the rows are kept without)."""
        import numpy as np

        raw = getattr(served.model, "get_raw_model", None)
        estimator = raw() if callable(raw) else None
        method = getattr(estimator, "predict_proba", None)
        if method is None or id(served) in self._proba_failed:
            return None
        frame = inputs
        names = served.input_names
        if names is not None:
            frame = inputs[[n for n in names if n in inputs.columns]]
        try:
            return np.asarray(method(frame))
        except Exception as exc:
            self._proba_failed.add(id(served))
            logger.warning("prediction log: predict_proba of %s failed (%s); logging predictions only", served.source_uri, exc)
            return None


def _input_frame(payloads: Sequence[ParsedPayload]) -> Any:
    """The payloads' rows as one DataFrame. JSON payloads with the same columns are joined
    as lists first: a DataFrame per 1-row request would cost ~2 ms each, holding the GIL
    the event loop needs."""
    import pandas as pd

    blocks: list[Any] = []
    run: list[dict[str, list[Any]]] = []

    def close_run() -> None:
        if run:
            names = list(run[0])
            blocks.append(pd.DataFrame({n: list(itertools.chain.from_iterable(c[n] for c in run)) for n in names}))
            run.clear()

    for payload in payloads:
        if payload.columns is None:
            close_run()
            blocks.append(payload.frame.reset_index(drop=True))
        else:
            if run and tuple(run[0]) != tuple(payload.columns):
                close_run()
            run.append(payload.columns)
    close_run()
    return blocks[0] if len(blocks) == 1 else pd.concat(blocks, ignore_index=True)


def _predictions(entry: _Entry) -> list[Any]:
    values = orjson.loads(entry.predictions)
    if not isinstance(values, list):
        values = [values]
    if len(values) != entry.payload.n_rows:  # not one per row (e.g. a scalar): one JSON per row
        text = entry.predictions.decode()
        return [text] * entry.payload.n_rows
    return values


def _prediction_column(values: Sequence[Any]) -> tuple[str, Any]:
    """("scalars" | "vectors" | "json", the Arrow array)."""
    import pyarrow as pa

    if all(isinstance(v, (int, float, bool, str)) or v is None for v in values):
        try:
            return "scalars", pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass  # mixed types: fall through to JSON text
    if all(isinstance(v, list) and all(isinstance(x, (int, float)) for x in v) for v in values):
        return "vectors", pa.array([[float(x) for x in v] for v in values], pa.list_(pa.float64()))
    return "json", pa.array([v if isinstance(v, str) else orjson.dumps(v).decode() for v in values], pa.string())


def _proba_from_predictions(values: Sequence[Any]) -> Any:
    """A model whose pyfunc predict is ``predict_proba`` already returned the probabilities."""
    import numpy as np

    array = np.asarray(values, dtype="float64")
    if array.ndim == 2 and array.shape[1] >= 2 and np.all((array >= 0) & (array <= 1)):
        return array
    return None


def _arrow_column(series: Any) -> Any:
    """One input column as Arrow; a column Arrow cannot type (mixed values) becomes text."""
    import pyarrow as pa

    try:
        return pa.array(series, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in series.tolist()], pa.string())
