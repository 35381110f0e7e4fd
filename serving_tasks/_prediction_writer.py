"""The prediction log's writer process: turns queued requests into Parquet files.

:mod:`serving_tasks._prediction_log` runs one per server process (``python -c "from
serving_tasks._prediction_writer import writer_main; writer_main()"``) and sends it groups
of answered requests (one model, one day) as length-prefixed pickles on its stdin: the
request bodies and JSON answers joined into byte strings, with their lengths, request ids
and times. Here each body is parsed again as the server parsed it (``parse_payload`` with
the model's signature columns), the model's estimator (pickled by the server once per
model) adds ``predict_proba``, and the Arrow table is written as zstd Parquet into the
artifact store; the reply (rows written, or the error) goes back on stdout.

None of this holds the server's GIL; the process runs at nice 10, below the server.
"""

from __future__ import annotations

import datetime as dt
import io
import itertools
import logging
import operator
import os
import pickle
import signal
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any, BinaryIO, Sequence
from urllib.parse import quote

import orjson

from serving_tasks._payload import ParsedPayload

__all__ = ["MODELS_KEPT", "RESERVED_COLUMNS", "UNREGISTERED_MODEL", "WriteFailed", "partition_path", "read_message", "write_message", "writer_main"]

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

#: Models a writer process keeps (and the server remembers it has sent); older ones are sent again.
MODELS_KEPT = 8
_COLUMNS = operator.attrgetter("columns")


class WriteFailed(Exception):
    """The writer process could not write a group; its message is the error it hit."""


def write_message(stream: BinaryIO, message: Any) -> None:
    """One length-prefixed pickle on ``stream`` (a pipe write releases the GIL)."""
    blob = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(len(blob).to_bytes(8, "little"))
    stream.write(blob)
    stream.flush()


def read_message(stream: BinaryIO) -> Any:
    """One length-prefixed pickle from ``stream``, or None at the end of the stream."""
    header = _read_exactly(stream, 8)
    if header is None:
        return None
    blob = _read_exactly(stream, int.from_bytes(header, "little"))
    if blob is None:
        return None
    return pickle.loads(blob)


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    data = stream.read(size)
    if len(data) < size:
        return None
    return bytes(data)


def writer_main() -> None:
    """The writer process: read groups from stdin, write them, answer on stdout."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the server's shutdown flushes through us
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Below the server in CPU priority: on a busy machine its encoding waits, not requests
    # (at nice 10 it still gets ~10% of a core against one busy process, ~8x what 1,000
    # logged requests/s need).
    if hasattr(os, "nice"):  # POSIX
        os.nice(10)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    requests = sys.stdin.buffer
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    sys.stdout = sys.stderr  # nothing else may write to the reply pipe
    from tracking_plugin.artifacts import get_artifact_repository

    repo = None
    repo_error = "the writer process has no artifact store"
    models: dict[int, _Model] = {}
    while True:
        message = read_message(requests)
        if message is None:
            return
        if message[0] == "open":  # no reply: a failure is the reply to every write
            try:
                repo = get_artifact_repository(message[1], message[2])
            except Exception as exc:
                repo_error = f"{type(exc).__name__}: {exc}"
            import pandas  # noqa: F401  (warm up while the server starts)
            import pyarrow.parquet  # noqa: F401

            continue
        reply: tuple[bool, Any]
        try:
            if repo is None:
                raise RuntimeError(repo_error)
            _, key, description, day, wire = message
            if description is not None:
                models[key] = _Model.load(description)
                while len(models) > MODELS_KEPT:
                    del models[next(iter(models))]
            model = models[key]
            table = model.table(wire)
            _upload(repo, table, model, day)
            reply = (True, table.num_rows)
        except Exception as exc:
            reply = (False, f"{type(exc).__name__}: {exc}")
        write_message(replies, reply)


def _upload(repo: Any, table: Any, model: "_Model", day: dt.date) -> None:
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    name = f"part-{int(time.time() * 1000)}-{uuid.uuid4().hex[:12]}.parquet"
    repo.log_bytes(buffer.getvalue(), f"{partition_path(model.name, model.version, day)}/{name}")


@dataclass
class _Model:
    """A served model as the writer process knows it."""

    name: str | None
    version: int | None
    source_uri: str
    input_names: tuple[str, ...] | None
    estimator: Any  # with predict_proba, or None
    proba_failed: bool = False

    @classmethod
    def load(cls, description: dict[str, Any]) -> "_Model":
        blob = description.pop("estimator")
        estimator = None
        if blob is not None:
            try:
                estimator = pickle.loads(blob)
            except Exception as exc:
                logger.warning("prediction log: cannot load the estimator of %s (%s); logging predictions only", description["source_uri"], exc)
        return cls(estimator=estimator, **description)

    def payloads(self, inputs: Any) -> list[ParsedPayload]:
        """The requests' inputs as the server parsed them."""
        from serving_tasks._payload import PayloadLimits, parse_payload

        limits = PayloadLimits(max_rows=2**62, max_decoded_bytes=2**62, max_columns=2**31)  # the server checked them
        if isinstance(inputs, tuple):
            joined, lengths, media_types = inputs
            ends = lengths.cumsum().tolist()
            starts = [0, *ends[:-1]]
            view = memoryview(joined)
            return [
                parse_payload(bytes(view[a:b]), m, input_names=self.input_names, limits=limits)
                for a, b, m in zip(starts, ends, media_types)
            ]
        return [
            parse_payload(item[0], item[1], input_names=self.input_names, limits=limits)
            if len(item) == 2
            else ParsedPayload(n_rows=item[0], columns=item[1], frame=item[2])
            for item in inputs
        ]

    def table(self, wire: tuple[Any, ...]) -> Any:
        """One Arrow table for a group of requests (this model, one day)."""
        import numpy as np
        import pyarrow as pa

        inputs_wire, answers, answer_lengths, request_ids, stamps, counts = wire
        if isinstance(request_ids, str):
            request_ids = request_ids.split("\n")
        payloads = self.payloads(inputs_wire)
        total = int(counts.sum())
        inputs = _input_frame(payloads)
        if len(inputs) != total:
            raise RuntimeError(f"{len(inputs)} input rows for {total} logged rows")
        starts = np.cumsum(counts) - counts
        out: dict[str, Any] = {
            "request_id": pa.array(np.repeat(np.array(request_ids, dtype=object), counts), pa.string()),
            "row": pa.array((np.arange(total, dtype=np.int64) - np.repeat(starts, counts)).astype(np.int32)),
            "logged_at": pa.array(
                np.repeat((stamps * 1000).astype("int64"), counts).astype("datetime64[ms]"), pa.timestamp("ms", tz="UTC")
            ),
            "model_name": pa.array([self.name or UNREGISTERED_MODEL] * total, pa.string()),
            "model_version": pa.array(np.full(total, int(self.version or 0), dtype=np.int64)),
        }
        for column in inputs.columns:
            name = str(column)
            out[f"input.{name}" if name in RESERVED_COLUMNS or name.startswith("input.") else name] = _arrow_column(inputs[column])
        kind, values = _prediction_column(_predictions(answers, answer_lengths, counts))
        if len(values) != total:
            raise RuntimeError(f"{len(values)} predictions for {total} input rows")
        out["prediction"] = values
        proba = _proba_from_vectors(values) if kind == "vectors" else None
        if proba is None and kind == "scalars":
            proba = self.predict_proba(inputs)
        if proba is not None:
            if proba.ndim == 2 and proba.shape[1] == 2:
                out["probability"] = pa.array(proba[:, 1].astype("float64"))
            elif proba.ndim == 2:
                out["probabilities"] = pa.array(proba.astype("float64").tolist(), pa.list_(pa.float64()))
        return pa.table(out)

    def predict_proba(self, inputs: Any) -> Any:
        """Class probabilities from the estimator, or None (it has no such method, or it
        fails: then said once per model in the log, and the rows are kept without)."""
        import numpy as np

        if self.estimator is None or self.proba_failed:
            return None
        frame = inputs
        if self.input_names is not None:
            frame = inputs[[n for n in self.input_names if n in inputs.columns]]
        try:
            return np.asarray(self.estimator.predict_proba(frame))
        except Exception as exc:
            self.proba_failed = True
            logger.warning("prediction log: predict_proba of %s failed (%s); logging predictions only", self.source_uri, exc)
            return None


def _input_frame(payloads: Sequence[ParsedPayload]) -> Any:
    """The payloads' rows as one DataFrame. JSON payloads with the same columns (the usual
    case) are joined column by column with C-level iteration and typed as ``predict``
    typed them (:func:`columns_to_frame`); other mixes go block by block."""
    import pandas as pd

    from serving_tasks._served_model import columns_to_frame

    columns = list(map(_COLUMNS, payloads))
    first = columns[0]
    if first is not None and columns.count(None) == 0:
        names = tuple(first)
        if all(map(names.__eq__, map(tuple, columns))):
            if len(columns) == 1:
                return columns_to_frame(first)
            return columns_to_frame(
                {n: list(itertools.chain.from_iterable(map(operator.itemgetter(n), columns))) for n in names}
            )
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


def _predictions(joined: bytes, lengths: Any, counts: Any) -> list[Any]:
    """One value per logged row from the requests' JSON answers (``joined``, each
    ``lengths[i]`` bytes long): each answer an array with an element per row in the usual
    case; otherwise (e.g. a scalar) the answer's JSON text on each of its rows."""
    import numpy as np

    ends = np.cumsum(lengths).tolist()
    texts = [joined[a:b] for a, b in zip([0, *ends[:-1]], ends)]
    answers = orjson.loads(b"[" + b",".join(texts) + b"]")
    if set(map(type, answers)) == {list}:
        if np.array_equal(np.fromiter(map(len, answers), dtype=np.int64, count=len(answers)), counts):
            return list(itertools.chain.from_iterable(answers))
    values: list[Any] = []
    for text, answer, n in zip(texts, answers, counts.tolist()):
        if not isinstance(answer, list):
            answer = [answer]
        if len(answer) != n:  # not one per row (e.g. a scalar): one JSON per row
            answer = [text.decode()] * n
        values.extend(answer)
    return values


def _prediction_column(values: list[Any]) -> tuple[str, Any]:
    """("scalars" | "vectors" | "json", the Arrow array). pyarrow infers the type in C; a
    list of numbers per row is a vector; anything else (records, mixed types) is JSON text."""
    import pyarrow as pa

    try:
        array = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        array = None
    if array is not None:
        kind = array.type
        if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind) or pa.types.is_string(kind) or pa.types.is_null(kind):
            return "scalars", array
        inner = kind.value_type if pa.types.is_list(kind) else None
        if inner is not None and (pa.types.is_integer(inner) or pa.types.is_floating(inner) or pa.types.is_boolean(inner)):
            if array.null_count == 0 and array.flatten().null_count == 0:
                return "vectors", array.cast(pa.list_(pa.float64()))
    return "json", pa.array([v if isinstance(v, str) else orjson.dumps(v).decode() for v in values], pa.string())


def _proba_from_vectors(array: Any) -> Any:
    """A model whose pyfunc predict is ``predict_proba`` already returned the probabilities:
    rows of the same length (>= 2), every value in [0, 1]."""
    import numpy as np
    import pyarrow.compute as pc

    lengths = pc.list_value_length(array)
    width = pc.min_max(lengths)
    low, high = width["min"].as_py(), width["max"].as_py()
    if low is None or low != high or low < 2:
        return None
    flat = array.flatten().to_numpy(zero_copy_only=False).reshape(-1, low)
    if np.all((flat >= 0) & (flat <= 1)):
        return flat
    return None


def _arrow_column(series: Any) -> Any:
    """One input column as Arrow; a column Arrow cannot type (mixed values) becomes text."""
    import pyarrow as pa

    try:
        return pa.array(series, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in series.tolist()], pa.string())


