"""Buffered (asynchronous) metric logging: a queue and one background writer per process.

``log_metric(..., synchronous=False)`` validates the point in the caller's thread and
appends it to a :class:`collections.deque` (atomic under the GIL, so the caller takes no
lock). A daemon thread wakes every ``async_flush_interval`` seconds, or as soon as
``async_batch_size`` points are waiting, groups the points per (store, run) and writes
each group with one ``store.log_batch`` call.

Guarantees:

- :func:`flush` returns once every point queued before the call is written, and raises
  the first error the writer met since the last flush (later ones are attached as notes).
  Failed points of one run never block the points of other runs.
- ``end_run`` flushes before changing the run's status; so does leaving a ``with
  start_run()`` block by an exception.
- At interpreter exit (normal end or an uncaught exception) an ``atexit`` hook drains the
  queue. ``os._exit`` and SIGKILL skip it, as they skip every ``atexit`` hook.
- After ``fork`` the child starts with an empty queue and no thread: points queued by the
  parent are written by the parent only.
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import threading
from typing import TYPE_CHECKING, Any

from tracking_plugin.entities import Metric

if TYPE_CHECKING:
    from tracking_plugin.store.base import TrackingStore

__all__ = ["MetricBuffer", "flush", "get_buffer"]

logger = logging.getLogger(__name__)


class _FlushMarker:
    """Put in the queue by :meth:`MetricBuffer.flush`; set once everything before it is written."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


class MetricBuffer:
    """The per-process metric queue and its writer thread."""

    def __init__(self, *, batch_size: int = 5000, interval: float = 0.25) -> None:
        self._reset(batch_size=batch_size, interval=interval)

    def _reset(self, *, batch_size: int, interval: float) -> None:
        self.batch_size = batch_size
        self.interval = interval
        self._queue: collections.deque[Any] = collections.deque()
        self._wake = threading.Event()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._errors: list[BaseException] = []
        self._errors_lock = threading.Lock()
        # True while the writer holds popped points it has not written yet (see flush()).
        self._busy = False

    # ------------------------------------------------------------- caller side

    def configure(self, *, batch_size: int, interval: float) -> None:
        self.batch_size = batch_size
        self.interval = interval

    def enqueue(self, store: TrackingStore, run_id: str, metric: Metric) -> None:
        """Queue one validated point. Never blocks on I/O."""
        self._queue.append((store, run_id, metric))
        if self._thread is None:
            self._start()
        elif len(self._queue) >= self.batch_size:
            self._wake.set()

    def enqueue_many(self, store: TrackingStore, run_id: str, metrics: list[Metric]) -> None:
        self._queue.extend((store, run_id, m) for m in metrics)
        if self._thread is None:
            self._start()
        elif len(self._queue) >= self.batch_size:
            self._wake.set()

    def pending(self) -> int:
        """Points (and flush markers) waiting in the queue; in-flight batches excluded."""
        return len(self._queue)

    def flush(self, timeout: float | None = None) -> None:
        """Write everything queued so far; raise the first background error since last flush."""
        # Fast path (end_run calls this for every run): nothing queued and nothing in flight.
        # Read the queue before the flag: the writer sets the flag before it pops, so an
        # empty queue plus a clear flag means every earlier point has been written.
        idle = not self._queue and not self._busy
        if self._thread is not None and not idle:
            marker = _FlushMarker()
            self._queue.append(marker)
            self._wake.set()
            if not marker.done.wait(timeout):
                raise TimeoutError(
                    f"Buffered metrics were not written within {timeout} s "
                    f"({len(self._queue)} items still queued)."
                )
        self.raise_errors()

    def raise_errors(self) -> None:
        with self._errors_lock:
            errors, self._errors = self._errors, []
        if not errors:
            return
        first = errors[0]
        for other in errors[1:]:
            first.add_note(f"Also failed in the background: {other!r}")
        raise first

    # ------------------------------------------------------------ writer side

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="prefect-mlops-metric-writer", daemon=True)
                thread.start()
                self._thread = thread

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                self._drain()
            except BaseException as exc:  # noqa: BLE001 - keep the writer alive, report on flush
                self._record(exc)

    def _drain(self) -> None:
        self._busy = True
        try:
            self._drain_queue()
        finally:
            self._busy = False

    def _drain_queue(self) -> None:
        groups: dict[tuple[Any, str], list[Metric]] = {}
        count = 0
        queue = self._queue
        while True:
            try:
                item = queue.popleft()
            except IndexError:
                break
            if type(item) is _FlushMarker:
                self._write(groups)
                groups, count = {}, 0
                item.done.set()
                continue
            store, run_id, metric = item
            key = (store, run_id)
            group = groups.get(key)
            if group is None:
                groups[key] = [metric]
            else:
                group.append(metric)
            count += 1
            if count >= self.batch_size:
                self._write(groups)
                groups, count = {}, 0
        self._write(groups)

    def _write(self, groups: dict[tuple[Any, str], list[Metric]]) -> None:
        for (store, run_id), metrics in groups.items():
            try:
                store.log_batch(run_id, metrics=metrics)
            except BaseException as exc:  # noqa: BLE001 - reported by flush()
                if isinstance(exc, Exception):
                    exc.add_note(
                        f"prefect-mlops: {len(metrics)} buffered metric point(s) of run "
                        f"{run_id} were not written."
                    )
                self._record(exc)

    def _record(self, exc: BaseException) -> None:
        logger.error("Buffered metric logging failed: %r", exc)
        with self._errors_lock:
            self._errors.append(exc)

    def _drain_at_exit(self) -> None:
        if self._thread is None:
            return
        try:
            self.flush(timeout=None)
        except BaseException as exc:  # noqa: BLE001 - interpreter is exiting; log instead
            logger.error("Buffered metrics could not all be written at exit: %r", exc)


_BUFFER = MetricBuffer()


def get_buffer() -> MetricBuffer:
    """The process-wide buffer."""
    return _BUFFER


def flush(timeout: float | None = None) -> None:
    """Write every buffered metric point now; raise the first background error, if any."""
    _BUFFER.flush(timeout)


def _after_fork_in_child() -> None:
    # The parent's thread does not exist in the child, its locks may be held and its queued
    # points are the parent's to write: reset in place so every reference stays valid.
    _BUFFER._reset(batch_size=_BUFFER.batch_size, interval=_BUFFER.interval)


def _at_exit() -> None:
    _BUFFER._drain_at_exit()


atexit.register(_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
