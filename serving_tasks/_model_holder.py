"""The model being served, and how it is replaced when its registry alias moves.

:class:`ServedModel` wraps one loaded model with what the server needs to know about it
(registry name and version, signature columns) and
turns a batch of parsed payloads into per-request JSON predictions.

:class:`ModelHolder` keeps the current :class:`ServedModel`. For ``models:/name@alias`` it
polls the registry (and can be woken early, e.g. by a ``mlops.model.promoted`` event); when
the alias points at a new version it loads that version beside the old one, checks it on
its own input example, and swaps the reference in one assignment. Requests already
holding the old model finish on it; no request fails because of the swap. A version that
fails to load or fails its input example is refused and remembered; the old one stays.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import orjson

from tracking_plugin.errors import InvalidArgument, MlopsError
from tracking_plugin.events import MODEL_PROMOTED

from serving_tasks._payload import ParsedPayload

__all__ = [
    "ModelHolder",
    "ModelPredictError",
    "PromotionListener",
    "RefusedVersion",
    "ServedModel",
    "predictions_to_json",
    "start_promotion_listener",
]

logger = logging.getLogger("serving_tasks")


class ModelPredictError(MlopsError):
    """The model's own ``predict`` raised on input that passed validation (HTTP 500)."""

    error_code = "INTERNAL_ERROR"


@dataclass(frozen=True, slots=True)
class RefusedVersion:
    """A registry version the alias pointed at but that was not swapped in, and why."""

    version: int
    reason: str
    at: float


@dataclass(frozen=True, slots=True)
class _Columns:
    names: tuple[str, ...]
    required: frozenset[str]
    types: dict[str, str]  # column -> MLflow type name ("double", "long", "string", ...)
    floating: frozenset[str]  # the double/float columns


def _signature_columns(signature: Any) -> _Columns | None:
    """Names, required names and types of a column signature; None for tensors or none."""
    schema = getattr(signature, "inputs", None)
    if schema is None or schema.is_tensor_spec() or not schema.has_input_names():
        return None  # positional or tensor input: requests name no columns
    return _Columns(
        names=tuple(schema.input_names()),
        required=frozenset(schema.required_input_names()),
        types={spec.name: spec.type for spec in schema.inputs},
        floating=frozenset(spec.name for spec in schema.inputs if spec.type in ("double", "float")),
    )


@dataclass(frozen=True, slots=True, eq=False)
class ServedModel:
    """One loaded model and its registry identity (``version`` None outside the registry)."""

    model: Any  # tracking_plugin.models.PyFuncModel
    source_uri: str  # the exact URI loaded, e.g. models:/churn/3
    name: str | None = None
    version: int | None = None
    alias: str | None = None
    run_id: str | None = None
    model_uuid: str | None = None
    loaded_at: float = field(default_factory=time.time)
    _columns: _Columns | None = None

    @classmethod
    def wrap(cls, model: Any, source_uri: str, **identity: Any) -> "ServedModel":
        metadata = getattr(model, "metadata", None)
        return cls(
            model=model,
            source_uri=source_uri,
            run_id=identity.pop("run_id", None) or getattr(metadata, "run_id", None),
            model_uuid=getattr(metadata, "model_uuid", None),
            _columns=_signature_columns(getattr(model, "signature", None)),
            **identity,
        )

    @property
    def signature(self) -> Any:
        return getattr(self.model, "signature", None)

    @property
    def input_example(self) -> Any:
        return getattr(self.model, "input_example", None)

    @property
    def input_names(self) -> tuple[str, ...] | None:
        return self._columns.names if self._columns else None

    @property
    def required_names(self) -> frozenset[str]:
        return self._columns.required if self._columns else frozenset()

    @property
    def floating_names(self) -> frozenset[str]:
        return self._columns.floating if self._columns else frozenset()

    @property
    def column_types(self) -> dict[str, str]:
        return dict(self._columns.types) if self._columns else {}

    # prediction ----------------------------------------------------------------------

    def check_columns(self, names: Sequence[str]) -> None:
        """Refuse missing required columns and columns the signature does not know (400).

        MLflow drops unknown columns silently; a scoring client that sends ``"tenur"``
        instead of ``"tenure"`` is better told. Types are checked by ``predict`` itself
        (``PyFuncModel.predict`` enforces the signature), once per batch.
        """
        expected = self.input_names
        if expected is None:
            return
        known = set(expected)
        extra = [n for n in names if n not in known]
        if extra:
            raise InvalidArgument(
                f"The input has column(s) {', '.join(map(repr, extra))} that are not in the model "
                f"signature ({', '.join(expected)}). Remove or rename them."
            )
        present = set(names)
        missing = [n for n in expected if n in self.required_names and n not in present]
        if missing:
            raise InvalidArgument(
                f"The input is missing required column(s) {', '.join(map(repr, missing))}; the model "
                f"signature expects {', '.join(expected)}."
            )

    def predict_frame(self, frame: Any, params: dict[str, Any] | None = None) -> Any:
        """Predict; the model's signature check raises InvalidArgument (400), anything else
        raised inside the model becomes ModelPredictError (500). ``params`` are checked
        against the signature's params by ``PyFuncModel.predict``."""
        try:
            if params:
                return self.model.predict(frame, params=params)
            return self.model.predict(frame)
        except InvalidArgument:
            raise
        except Exception as exc:
            raise ModelPredictError(f"{type(exc).__name__}: {exc}") from exc

    def predict_payloads(self, payloads: Sequence[ParsedPayload]) -> list[bytes]:
        """Predict a batch (same columns, same params) at once; one JSON array per payload.

        Runs in the predict thread, so the JSON encoding happens there too, off the loop.
        """
        frame = _build_frame(payloads)
        predictions = self.predict_frame(frame, payloads[0].params)
        counts = [p.n_rows for p in payloads]
        return [predictions_to_json(part) for part in _split_rows(predictions, counts)]

    def check_input_example(self) -> None:
        """Predict the model's own input example; raise if that fails or returns wrong rows."""
        example = self.input_example
        if example is None:
            return
        predictions = self.predict_frame(example)  # DataFrame, or an array for tensor models
        rows = len(example) if hasattr(example, "shape") else None
        n = _n_rows(predictions)
        if rows is not None and n is not None and n != rows:
            raise ModelPredictError(f"predict returned {n} rows for the {rows}-row input example")


def _build_frame(payloads: Sequence[ParsedPayload]) -> Any:
    import pandas as pd

    first = payloads[0]
    if first.frame is not None:
        if len(payloads) == 1:
            return first.frame
        return pd.concat([p.frame for p in payloads], ignore_index=True)
    if len(payloads) == 1:
        columns = first.columns or {}
    else:
        columns = {
            n: list(itertools.chain.from_iterable(p.columns[n] for p in payloads))  # type: ignore[index]
            for n in first.columns or {}
        }
    values = [_column_array(v) for v in columns.values()]
    index = pd.RangeIndex(len(values[0]) if values else 0)
    if values and all(isinstance(v, np.ndarray) for v in values) and len({v.dtype for v in values}) == 1:
        # All columns of one numeric dtype (the common case: all floats): one 2-D block.
        # With a ready Index for the columns this is ~10x faster than a dict of columns in
        # pandas 3, which spends most of its time inferring the column labels' dtype.
        return pd.DataFrame(np.vstack(values).T, index=index, columns=_column_index(tuple(columns)), copy=False)
    return pd.DataFrame(dict(zip(columns, values)), index=index, copy=False)


@functools.lru_cache(maxsize=64)
def _column_index(names: tuple[str, ...]) -> Any:
    import pandas as pd

    return pd.Index(names)


def _column_array(values: list[Any]) -> Any:
    """A numpy array for a plain numeric/boolean column (pandas builds a frame from arrays
    much faster than from lists); other columns stay lists, for pandas to infer (None ->
    NaN in numbers, text -> str, ...) exactly as it would from the JSON."""
    try:
        array = np.asarray(values)
    except (ValueError, OverflowError):  # ragged nested lists, ints beyond 64 bits
        return values
    if array.ndim == 1 and array.dtype.kind in "biuf":
        return array
    return values


def _n_rows(predictions: Any) -> int | None:
    try:
        return len(predictions)
    except TypeError:
        return None


def _split_rows(predictions: Any, counts: list[int]) -> list[Any]:
    if len(counts) == 1:
        return [predictions]
    total = sum(counts)
    n = _n_rows(predictions)
    if n != total:
        # Not row-aligned: cannot tell whose rows are whose, so the batcher retries alone.
        raise RuntimeError(f"predict returned {n} rows for a batch of {total}")
    rows = predictions.iloc if hasattr(predictions, "iloc") else predictions
    parts = []
    start = 0
    for count in counts:
        parts.append(rows[start : start + count])
        start += count
    return parts


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    try:
        import pandas as pd

        if obj is pd.NA or obj is pd.NaT:
            return None
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, (bytes, bytearray)):
        import base64

        return base64.b64encode(obj).decode("ascii")
    return str(obj)


_NUMPY_OPTS = orjson.OPT_SERIALIZE_NUMPY


def predictions_to_json(predictions: Any) -> bytes:
    """Predictions as MLflow returns them: arrays/Series as lists, DataFrames as records.

    NaN and infinities become ``null`` (valid JSON, unlike MLflow's bare ``NaN``).
    """
    if hasattr(predictions, "to_dict") and hasattr(predictions, "columns"):  # DataFrame
        return orjson.dumps(predictions.to_dict(orient="records"), default=_json_default, option=_NUMPY_OPTS)
    if hasattr(predictions, "to_numpy"):  # Series
        predictions = predictions.to_numpy()
    if isinstance(predictions, np.ndarray):
        if predictions.dtype.kind in "biuf" and predictions.flags.c_contiguous:
            try:
                return orjson.dumps(predictions, option=_NUMPY_OPTS)
            except orjson.JSONEncodeError:
                pass  # e.g. float16: fall back to Python objects
        return orjson.dumps(predictions.tolist(), default=_json_default, option=_NUMPY_OPTS)
    return orjson.dumps(predictions, default=_json_default, option=_NUMPY_OPTS)


# The holder ----------------------------------------------------------------------------


def _default_loader(uri: str, *, allow_pickle: bool = False) -> Any:
    from tracking_plugin.models import load_model

    return load_model(uri, allow_pickle=allow_pickle)


class ModelHolder:
    """Loads the model behind ``model_uri`` and, for ``models:/name@alias``, follows the alias.

    ``loader`` turns a model URI into a loaded model (default: ``tracking_plugin.models.load_model``,
    with ``allow_pickle``).
    Call :meth:`load` once, then :meth:`start` to poll every ``poll_interval`` seconds
    (``None`` or 0: never). :meth:`refresh` does one check now; :meth:`wake` asks the
    polling thread to check at once (used by the event listener).
    """

    def __init__(
        self,
        model_uri: str,
        *,
        poll_interval: float | None = 5.0,
        loader: Callable[[str], Any] | None = None,
        allow_pickle: bool = False,
    ) -> None:
        from tracking_plugin.models import parse_model_uri

        self.model_uri = model_uri
        self.poll_interval = poll_interval
        self._loader = loader or functools.partial(_default_loader, allow_pickle=allow_pickle)
        parsed = parse_model_uri(model_uri)
        self._kind = getattr(parsed, "kind", None)
        self.name: str | None = getattr(parsed, "name", None) if self._kind == "models" else None
        self.alias: str | None = getattr(parsed, "alias", None) if self._kind == "models" else None
        self._stage = getattr(parsed, "stage", None) if self._kind == "models" else None
        self._version = getattr(parsed, "version", None) if self._kind == "models" else None
        self._current: ServedModel | None = None
        self._client: Any = None
        self._refused: dict[int, RefusedVersion] = {}
        self._swap_lock = threading.Lock()  # one refresh at a time (poll thread vs wake)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None  # last registry error seen while polling

    # state ---------------------------------------------------------------------------

    @property
    def follows_alias(self) -> bool:
        return self.alias is not None

    @property
    def current(self) -> ServedModel:
        current = self._current
        if current is None:
            raise RuntimeError("no model loaded yet; call ModelHolder.load() first")
        return current

    @property
    def loaded(self) -> bool:
        return self._current is not None

    @property
    def refused(self) -> list[RefusedVersion]:
        return sorted(self._refused.values(), key=lambda r: r.version)

    # loading -------------------------------------------------------------------------

    def _registry(self) -> Any:
        if self._client is None:
            from tracking_plugin.client import TrackingClient

            self._client = TrackingClient()
        return self._client

    def _resolve_version(self) -> int | None:
        """The registry version the URI designates right now (None outside the registry)."""
        if self.name is None:
            return None
        if self.alias is not None:
            return int(self._registry().get_model_version_by_alias(self.name, self.alias).version)
        if self._version is not None and str(self._version).isdigit():
            return int(self._version)
        client = self._registry()
        stages = None if self._stage in (None, "latest") else [self._stage]
        getter = getattr(client, "get_latest_versions", None)
        if getter is None:
            return None
        versions = getter(self.name, stages=stages) if stages else getter(self.name)
        return max((int(v.version) for v in versions), default=None)

    def _load_version(self, version: int | None) -> ServedModel:
        uri = f"models:/{self.name}/{version}" if version is not None else self.model_uri
        model = self._loader(uri)
        return ServedModel.wrap(model, uri, name=self.name, version=version, alias=self.alias)

    def load(self) -> ServedModel:
        """Load the model now (blocking). Raises if it cannot be loaded at all."""
        version = self._resolve_version()
        # For alias/stage URIs, load the exact version resolved, so a move between the
        # lookup and the load cannot give a model labelled with the wrong version.
        served = self._load_version(version if self.name is not None else None)
        try:
            served.check_input_example()
        except Exception as exc:  # serve it anyway: the user asked for this very model
            logger.warning("model %s fails its own input example: %s", served.source_uri, exc)
        self._current = served
        logger.info("serving %s (version %s)", served.source_uri, served.version)
        return served

    def refresh(self) -> bool:
        """Check the alias once; load, verify and swap in a new version. True if swapped."""
        if not self.follows_alias:
            return False
        with self._swap_lock:
            try:
                version = self._resolve_version()
            except Exception as exc:
                # Registry unreachable or alias deleted: keep serving what we have.
                message = f"{type(exc).__name__}: {exc}"
                if message != self.last_error:
                    logger.warning("cannot resolve %s: %s; still serving the current version", self.model_uri, message)
                self.last_error = message
                return False
            self.last_error = None
            current = self._current
            if version is None or (current is not None and current.version == version) or version in self._refused:
                return False
            reason = None
            try:
                candidate = self._load_version(version)
            except Exception as exc:
                reason = f"failed to load: {type(exc).__name__}: {exc}"
            else:
                try:
                    candidate.check_input_example()
                except Exception as exc:
                    detail = exc.message if isinstance(exc, ModelPredictError) else f"{type(exc).__name__}: {exc}"
                    reason = f"failed its own input example: {detail}"
            if reason is not None:
                self._refused[version] = RefusedVersion(version, reason, time.time())
                logger.error(
                    "not swapping in %s version %s (alias %r moved to it): it %s; still serving version %s",
                    self.name,
                    version,
                    self.alias,
                    reason,
                    current.version if current else None,
                )
                return False
            self._current = candidate  # the swap: one reference assignment
            logger.info("alias %s@%s moved: now serving version %s", self.name, self.alias, version)
            return True

    # polling -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the polling thread (no-op unless following an alias with a poll interval)."""
        if not self.follows_alias or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._poll_loop, name="mlops-alias-poll", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Check the registry now instead of at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _poll_loop(self) -> None:
        interval = self.poll_interval or None  # None: wait for wake() only
        while not self._stop.is_set():
            self._wake.wait(interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.refresh()
            except Exception:  # never let the thread die: the next poll may succeed
                logger.exception("alias poll of %s failed", self.model_uri)


# Prefect events ------------------------------------------------------------------------

PROMOTED_EVENT = MODEL_PROMOTED


class PromotionListener:
    """Wakes a :class:`ModelHolder` when a ``mlops.model.promoted`` Prefect event arrives.

    Runs its own event loop in a daemon thread; ``prefect`` is imported there, after the
    server is up, so it never slows startup or the request path. Polling stays on as the
    safety net: a missed event only delays the swap until the next poll.
    """

    def __init__(self, holder: ModelHolder) -> None:
        self._holder = holder
        self._loop: Any = None
        self._task: Any = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mlops-promotion-events", daemon=True)
        self.events_seen = 0

    def start(self) -> "PromotionListener":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        loop, task = self._loop, self._task
        if loop is not None and task is not None:
            with _suppress_closed_loop():
                loop.call_soon_threadsafe(task.cancel)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        import asyncio

        self._loop = asyncio.new_event_loop()
        try:
            self._task = self._loop.create_task(self._listen_forever())
            self._loop.run_until_complete(self._task)
        except asyncio.CancelledError:  # stop()
            pass
        except Exception:
            logger.exception("the %s listener stopped; alias moves are noticed by polling only", PROMOTED_EVENT)
        finally:
            self._loop.close()

    async def _listen_forever(self) -> None:
        import asyncio

        from prefect.events.clients import get_events_subscriber
        from prefect.events.filters import EventFilter, EventNameFilter

        event_filter = EventFilter(event=EventNameFilter(name=[PROMOTED_EVENT]))
        delay = 1.0
        while not self._stopped.is_set():
            try:
                async with get_events_subscriber(filter=event_filter) as subscriber:
                    delay = 1.0
                    logger.info("listening for %s Prefect events", PROMOTED_EVENT)
                    # Whatever moved while we were not subscribed: one check covers it.
                    self._holder.wake()
                    async for event in subscriber:
                        self.events_seen += 1
                        if self._concerns_us(event):
                            logger.info("%s event for %s: checking the registry now", PROMOTED_EVENT, self._holder.name)
                            self._holder.wake()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("Prefect event subscription failed (%s); polling continues, retrying in %.0f s", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60.0)

    def _concerns_us(self, event: Any) -> bool:
        # The event names the model in its resource or payload; when it does not say,
        # checking the registry once costs less than missing a promotion.
        name = self._holder.name
        try:
            text = orjson.dumps(
                {"resource": dict(event.resource), "related": [dict(r) for r in event.related], "payload": event.payload},
                default=str,
            ).decode()
        except Exception:
            return True
        return name is None or name in text


@contextlib.contextmanager
def _suppress_closed_loop() -> Any:
    try:
        yield
    except RuntimeError:  # the loop already closed
        pass


def start_promotion_listener(holder: ModelHolder, *, enabled: bool | None = None) -> PromotionListener | None:
    """Start a :class:`PromotionListener` if ``enabled`` (None: when PREFECT_API_URL is set).

    Without a Prefect API URL there is no server to subscribe to (Prefect's ephemeral mode
    would start one in a subprocess), so alias moves are noticed by polling alone.
    """
    if enabled is None:
        enabled = bool(os.environ.get("PREFECT_API_URL"))
    if not enabled or not holder.follows_alias:
        return None
    return PromotionListener(holder).start()
