"""Prediction logging: what the scoring server answered, written as Parquet for later joins.

With ``--log-predictions RATE`` the scoring server hands each sampled request to a
:class:`PredictionLogger`: the request's input rows, the predictions it returned (and the
positive-class probability when the model has ``predict_proba``), the model name and
version, the request id (also sent back as ``X-Request-ID``, so labels that arrive later
can be joined on it) and the time. What is queued is written in batches, as Parquet, by a
writer process (:mod:`serving_tasks._prediction_writer`) into an artifact store (a local folder or ``s3://``, via
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
Nor does it wait for the GIL: decoding, ``predict_proba``, Parquet encoding and the upload
run in a **writer process** (one per server process, started with the logger). The writer
thread of the server only joins the queued request bodies and answers into a few byte
strings (C-level joins, ~1 ms per 5,000 requests) and sends them down a pipe; done in the
server's own thread, the same work held the GIL ~40 ms per 5,000 requests, and every
request in that window waited up to the 5 ms switch interval at each of its I/O calls
(+40 ms at p99, bench/prediction_log.py). The writer process re-parses the bodies exactly
as the server did (``parse_payload`` with the model's signature columns) and gets a copy of
the model's estimator (pickled once per served model) for ``predict_proba``. It ignores
SIGTERM/SIGINT (the server's shutdown drives it) and exits when its pipe closes; if it dies,
the rows it was given are kept and the next flush starts a new one. A write that fails
(e.g. S3 unreachable) is retried on the next flush while the queue has room for its rows;
:meth:`PredictionLogger.stop` flushes what is left when the server shuts down.

Read them back with pyarrow (``pyarrow.dataset.dataset(uri, partitioning="hive")``) or
``prefect_mlops.flows.performance.read_prediction_log``; the ``performance_monitor`` flow
joins them with labels that arrive later.
"""

from __future__ import annotations

import collections
import datetime as dt
import itertools
import logging
import operator
import pickle
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from tracking_plugin.errors import InvalidArgument

from serving_tasks._payload import ParsedPayload
from serving_tasks._prediction_writer import (
    MODELS_KEPT,
    RESERVED_COLUMNS,
    UNREGISTERED_MODEL,
    WriteFailed,
    partition_path,
    read_message,
    write_message,
)

__all__ = ["PredictionLogger", "RESERVED_COLUMNS", "UNREGISTERED_MODEL", "partition_path"]

logger = logging.getLogger("serving_tasks")


@dataclass(frozen=True, slots=True)
class _Entry:
    served: Any  # serving_tasks._served_model.ServedModel
    n_rows: int
    predictions: bytes  # the JSON array sent back to the caller
    request_id: str
    at: float  # time.time() when answered
    body: bytes | None  # the request body (re-parsed by the writer process) ...
    media_type: str | None
    payload: ParsedPayload | None  # ... or, when the caller gave none, the parsed payload


class PredictionLogger:
    """Queue scored requests on the event loop; a thread hands them to a writer process.

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
        self._writing_rows = 0  # taken by flush(), not yet written
        self.logged_rows = 0
        self.dropped_rows = 0
        self.sampled_out_requests = 0
        self.files_written = 0
        self.write_errors = 0
        self.last_error: str | None = None
        self._settings = settings
        self._writer: _WriterProcess | None = None
        self._models: dict[int, tuple[Any, int]] = {}  # id(served) -> (served, key in the writer process)
        self._model_keys = itertools.count(1)

    # the request path ---------------------------------------------------------------

    def offer(
        self,
        served: Any,
        payload: ParsedPayload,
        predictions: bytes,
        request_id: str,
        at: float | None = None,
        *,
        body: bytes | None = None,
        media_type: str | None = None,
    ) -> None:
        """Queue one answered request (or drop and count it when the queue is full). O(1).

        ``at`` (epoch seconds, default now) is when it was answered; replays set it. The
        server also passes the request's ``body`` and ``media_type`` (what ``payload`` was
        parsed from): the writer process re-parses them, which costs this process nothing,
        where sending the parsed payload means serializing its Python objects here."""
        if self.sample_rate < 1.0 and self._random.random() >= self.sample_rate:
            self.sampled_out_requests += 1
            return
        rows = payload.n_rows
        if body is not None and media_type is not None:
            entry = _Entry(served, rows, predictions, request_id, time.time() if at is None else at, body, media_type, None)
        else:
            entry = _Entry(served, rows, predictions, request_id, time.time() if at is None else at, None, None, payload)
        with self._lock:
            if self._stopping or self._queued_rows + rows > self.max_queue_rows:
                self.dropped_rows += rows
                return
            self._queue.append(entry)
            self._queued_rows += rows
            full = self._queued_rows >= self.batch_rows
        if full:
            self._wake.set()

    # lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer process (it imports pandas and pyarrow now, not when the first
        flush competes with requests for the CPU) and the writer thread that feeds it."""
        if self._writer is None:
            self._writer = _WriterProcess(self.uri, self._settings)
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
            if not self._thread.is_alive():
                self._thread = None
        else:
            self.flush()
        if self._thread is None and self._writer is not None:
            self._writer.close()
            self._writer = None
        with self._lock:
            left = self._queued_rows
        if left:
            logger.error(
                "prediction log: %d row(s) could not be written to %s before shutdown (%s)", left, self.uri, self.last_error
            )

    def stats(self) -> dict[str, Any]:
        """What ``/metadata`` shows under ``prediction_log``."""
        with self._lock:
            queued = self._queued_rows + self._writing_rows
            logged = self.logged_rows
        return {
            "uri": self.uri,
            "sample_rate": self.sample_rate,
            "logged_rows": logged,
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
            self._writing_rows = self._queued_rows  # still "queued" in stats() until written
            self._queued_rows = 0
        if not entries:
            return
        for group, day in _groups(entries):
            try:
                self._write(group, day)
            except Exception as exc:  # keep serving; retry these rows on the next flush
                self.write_errors += 1
                self.last_error = str(exc) if isinstance(exc, WriteFailed) else f"{type(exc).__name__}: {exc}"
                logger.warning("prediction log: writing %d request(s) to %s failed: %s", len(group), self.uri, self.last_error)
                self._requeue(group)

    def _requeue(self, group: list[_Entry]) -> None:
        rows = sum(map(_N_ROWS, group))
        with self._lock:
            self._writing_rows -= rows
            if self._queued_rows + rows > self.max_queue_rows:
                self.dropped_rows += rows
                return
            self._queue.extendleft(reversed(group))
            self._queued_rows += rows

    def _write(self, group: list[_Entry], day: dt.date) -> None:
        """Hand one group to the writer process and wait (off the GIL) for it to be written."""
        if self._writer is None or not self._writer.alive():
            if self._writer is not None:
                self._writer.close()
            self._writer = _WriterProcess(self.uri, self._settings)
        writer = self._writer
        key, model = self._model_key(group[0].served, writer)
        try:
            rows = writer.call(("write", key, model, day, _wire_group(group)))
        except WriteFailed:
            writer.models.discard(key)  # send the model again next time, in case it was the cause
            raise
        except (OSError, EOFError, ValueError) as exc:  # the process died or its pipe broke
            code = writer.proc.poll()
            writer.close()
            self._writer = None
            raise RuntimeError(f"the prediction log writer process stopped (exit code {code}): {exc}") from exc
        with self._lock:  # with _writing_rows' decrement, so stats() never counts a row twice
            self.files_written += 1
            self.logged_rows += rows
            self._writing_rows -= rows

    def _model_key(self, served: Any, writer: "_WriterProcess") -> tuple[int, dict[str, Any] | None]:
        """The writer process's key for ``served``, and its description when that process
        has not had it yet (the estimator pickled once per model and process)."""
        known = self._models.get(id(served))
        if known is None or known[0] is not served:
            known = (served, next(self._model_keys))
            self._models[id(served)] = known
            while len(self._models) > MODELS_KEPT:
                del self._models[next(iter(self._models))]
        key = known[1]
        if key in writer.models:
            return key, None
        writer.models.add(key)
        return key, _describe(served)


def _describe(served: Any) -> dict[str, Any]:
    """What the writer process needs of a served model: its identity, its signature's
    columns (to re-parse bodies as the server did) and its estimator, pickled, when it has
    ``predict_proba``."""
    raw = getattr(served.model, "get_raw_model", None)
    try:
        estimator = raw() if callable(raw) else None
    except Exception:  # a flavor without a raw model
        estimator = None
    blob = None
    if estimator is not None and callable(getattr(estimator, "predict_proba", None)):
        try:
            blob = pickle.dumps(estimator, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            logger.warning("prediction log: cannot hand %s to the writer process (%s); logging predictions only", served.source_uri, exc)
    return {
        "name": served.name,
        "version": served.version,
        "source_uri": served.source_uri,
        "input_names": served.input_names,
        "estimator": blob,
    }


def _wire_group(group: list[_Entry]) -> tuple[Any, ...]:
    """A group as a few flat values: joined bodies and answers with their lengths, so that
    pickling it costs ~1 ms per 5,000 requests (a parsed payload per request cost ~10 ms)."""
    import numpy as np

    n = len(group)
    predictions = list(map(_PREDICTIONS, group))
    bodies = list(map(_BODY, group))
    if bodies.count(None) == 0:
        inputs: Any = (
            b"".join(bodies),
            np.fromiter(map(len, bodies), dtype=np.int64, count=n),
            list(map(_MEDIA_TYPE, group)),
        )
    else:  # a caller without bodies (tests, replays): the parsed payloads themselves
        inputs = [(e.body, e.media_type) if e.payload is None else (e.payload.n_rows, e.payload.columns, e.payload.frame) for e in group]
    return (
        inputs,
        b"".join(predictions),
        np.fromiter(map(len, predictions), dtype=np.int64, count=n),
        _joined_ids(list(map(_REQUEST_ID, group))),
        np.fromiter(map(_AT, group), dtype=np.float64, count=n),
        np.fromiter(map(_N_ROWS, group), dtype=np.int64, count=n),
    )


def _joined_ids(ids: list[str]) -> str | list[str]:
    """The request ids as one newline-joined string (one object to pickle, not thousands),
    or the list when an id holds a newline (the server's ids never do)."""
    joined = "\n".join(ids)
    return joined if joined.count("\n") == len(ids) - 1 else ids


_N_ROWS = operator.attrgetter("n_rows")
_BODY = operator.attrgetter("body")
_MEDIA_TYPE = operator.attrgetter("media_type")
_COLUMNS = operator.attrgetter("columns")
_REQUEST_ID = operator.attrgetter("request_id")
_AT = operator.attrgetter("at")
_SERVED = operator.attrgetter("served")
_PREDICTIONS = operator.attrgetter("predictions")


def _groups(entries: list[_Entry]) -> list[tuple[list[_Entry], dt.date]]:
    """The entries by (served model, UTC day), in queue order within each group."""
    import numpy as np

    stamps = np.fromiter(map(_AT, entries), dtype=np.float64, count=len(entries))
    days = (stamps // 86400).astype(np.int64)
    served = list(map(_SERVED, entries))
    first = served[0]
    if days.min() == days.max() and served.count(first) == len(served):  # the usual case: one group
        return [(entries, _day(int(days[0])))]
    ids: dict[int, int] = {}
    codes = np.array([ids.setdefault(id(s), len(ids)) for s in served], dtype=np.int64)
    keys, inverse = np.unique(np.stack([codes, days], axis=1), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    return [
        ([entries[i] for i in np.flatnonzero(inverse == k)], _day(int(keys[k][1])))
        for k in range(len(keys))
    ]


def _day(days_since_epoch: int) -> dt.date:
    return dt.date(1970, 1, 1) + dt.timedelta(days=days_since_epoch)


class _WriterProcess:
    """The server's side of one writer process: length-prefixed pickles over its stdin and
    stdout. Every call blocks the calling (writer) thread in a pipe read or write, which
    releases the GIL."""

    def __init__(self, uri: str, settings: Any) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from serving_tasks._prediction_writer import writer_main; writer_main()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.models: set[int] = set()
        self._send(("open", uri, settings))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def call(self, message: tuple[Any, ...]) -> Any:
        self._send(message)
        reply = read_message(self.proc.stdout)  # type: ignore[arg-type]
        if reply is None:
            raise EOFError("the writer process closed its pipe")
        ok, value = reply
        if not ok:
            raise WriteFailed(value)
        return value

    def _send(self, message: tuple[Any, ...]) -> None:
        assert self.proc.stdin is not None
        write_message(self.proc.stdin, message)

    def close(self, timeout: float = 30.0) -> None:
        """Close its pipe (the process exits when it has read everything) and wait."""
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
