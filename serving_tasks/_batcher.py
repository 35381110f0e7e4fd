"""Micro-batching: coalesce concurrent requests into one ``predict`` call.

The event loop parses requests; :meth:`MicroBatcher.submit` queues them. One predict runs
at a time, in a worker thread (but see the last paragraph), so the event loop keeps
accepting requests meanwhile; the
requests that arrive during a predict form the next batch. Hence:

- an idle server never waits: a lone request is dispatched at once (on the next turn of
  the event loop, which also catches requests that arrived in the same network read);
- a busy server batches by itself, up to ``max_batch_size`` rows: requests arriving during
  a predict form the next batch. When the worker gets free with requests queued, it waits
  at most ``max_wait_ms`` for more: until as many requests are queued as were just
  answered plus already waiting (clients answered a moment ago usually send their next
  request within a round trip), or the batch is full. Waiting a millisecond to predict
  twice the rows at once is a good trade when ``predict`` costs about the same for 1 or
  64 rows, as tree ensembles do;
- only requests with the same *key* share a batch (same model, same columns, same
  params), and a single request is never split, even when it alone exceeds the bound;
- when a batch fails, each of its requests is retried alone, so one bad request fails
  only itself, and every caller receives exactly the result computed for its own rows.

``max_batch_size=1`` turns batching off (each request is its own predict).

When requests come one at a time (a lone request, nothing queued, the previous batch a
lone request too) and the predict is expected to take less than ``inline_below_ms``
(judged from the last predict, scaled by rows), it runs on the event loop itself instead
of the worker thread: handing a request to another thread and back costs two thread
wake-ups, which on a busy 2-core VM add up to a millisecond or more, against a few
milliseconds of predict. Under concurrency the thread stays, so the loop parses the next
batch during a predict; slow predicts (and the first, unmeasured one) always go to the
thread, so ``/health`` never waits long behind a predict.
"""

from __future__ import annotations

import asyncio
import collections
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Hashable, Sequence, TypeVar

from tracking_plugin.errors import InvalidArgument

__all__ = ["BatchResult", "MicroBatcher"]

P = TypeVar("P")  # one request's payload
R = TypeVar("R")  # one request's result


@dataclass(frozen=True, slots=True)
class BatchResult(Generic[R]):
    """What a caller gets back: its own result, how many requests shared the predict, and
    how long that predict call took (ms, the batch function's wall time)."""

    value: R
    batch_requests: int
    predict_ms: float = 0.0


@dataclass(slots=True)
class _Pending(Generic[P]):
    key: Hashable
    target: Any
    payload: P
    rows: int
    future: asyncio.Future[Any]
    enqueued: float = field(default_factory=time.monotonic)


class MicroBatcher(Generic[P, R]):
    """Schedule ``run(target, payloads) -> results`` calls on ``executor``, batching.

    ``run`` receives the payloads of one batch (all with the same key and target) and
    returns one result per payload, in order; it runs in the executor thread. Errors
    raised by ``run`` reach the callers whose payloads caused them.

    >>> import asyncio, concurrent.futures
    >>> async def demo():
    ...     pool = concurrent.futures.ThreadPoolExecutor(1)
    ...     batcher = MicroBatcher(lambda target, ps: [p * 2 for p in ps], executor=pool)
    ...     out = await asyncio.gather(*(batcher.submit("k", None, n, rows=1) for n in range(3)))
    ...     pool.shutdown()
    ...     return [r.value for r in out]
    >>> asyncio.run(demo())
    [0, 2, 4]
    """

    def __init__(
        self,
        run: Callable[[Any, Sequence[P]], Sequence[R]],
        *,
        executor: Executor,
        max_batch_size: int = 64,
        max_wait_ms: float = 2.0,
        inline_below_ms: float = 0.0,
    ) -> None:
        if max_batch_size < 1:
            raise InvalidArgument(f"max_batch_size must be at least 1 (1 turns batching off), got {max_batch_size}.")
        if max_wait_ms < 0:
            raise InvalidArgument(f"max_wait_ms must be >= 0, got {max_wait_ms}.")
        self._run = run
        self._executor = executor
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.inline_below = inline_below_ms / 1000.0
        self._last: tuple[float, int] | None = None  # (seconds, rows) of the last predict
        self._took = 0.0  # seconds the last _execute took (retries included)
        self._queue: collections.deque[_Pending[P]] = collections.deque()
        self._draining = False
        self._arrived: asyncio.Event | None = None
        self.batches = 0  # predict calls made (for /metadata and tests)
        self.requests = 0

    async def submit(self, key: Hashable, target: Any, payload: P, *, rows: int) -> BatchResult[R]:
        """Queue one request and wait for its own result (or its own exception)."""
        loop = asyncio.get_running_loop()
        item = _Pending(key, target, payload, rows, loop.create_future())
        self._queue.append(item)
        if not self._draining:
            self._draining = True
            # A task starts on the next loop turn: requests read in this turn join it.
            loop.create_task(self._drain())
        elif self._arrived is not None:
            self._arrived.set()
        return await item.future  # type: ignore[no-any-return]

    def _take_batch(self) -> list[_Pending[P]]:
        """Pop the head request and the queued requests that may share its predict."""
        head = self._queue.popleft()
        batch = [head]
        rows = head.rows
        if self.max_batch_size == 1 or rows >= self.max_batch_size:
            return batch
        kept: list[_Pending[P]] = []
        while self._queue:
            item = self._queue.popleft()
            if item.key == head.key and rows + item.rows <= self.max_batch_size:
                batch.append(item)
                rows += item.rows
                if rows >= self.max_batch_size:
                    break
            else:
                kept.append(item)
        # Requests of other keys keep their place at the front, in order.
        self._queue.extendleft(reversed(kept))
        return batch

    def _queued(self, key: Hashable) -> tuple[int, int]:
        """(requests, rows) queued under ``key``."""
        requests = rows = 0
        for item in self._queue:
            if item.key == key:
                requests += 1
                rows += item.rows
        return requests, rows

    async def _gather_more(self, expected: int) -> None:
        """The worker just got free and requests are queued: wait up to max_wait for the
        batch to fill, or until ``expected`` requests are queued (those just answered plus
        those already waiting: a fixed pool of clients comes back within a round trip)."""
        if self.max_wait <= 0 or self.max_batch_size == 1 or not self._queue:
            return
        key = self._queue[0].key
        deadline = time.monotonic() + self.max_wait
        self._arrived = asyncio.Event()
        try:
            while True:
                requests, rows = self._queued(key)
                if requests >= expected or rows >= self.max_batch_size:
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except TimeoutError:
                    return
        finally:
            self._arrived = None

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        answered = 0  # requests in the previous batch (0: the batcher was idle)
        try:
            while self._queue:
                if answered:
                    await self._gather_more(answered + len(self._queue))
                batch = self._take_batch()
                live = [item for item in batch if not item.future.done()]
                if not live:
                    continue
                rows = sum(item.rows for item in live)
                payloads = [item.payload for item in live]
                try:
                    # Inline only when requests come one at a time (a lone request, nothing
                    # queued, the previous batch a single request too): under concurrency the
                    # thread lets the loop parse the next batch while this one predicts.
                    if answered <= 1 and len(live) == 1 and not self._queue and self._inline(rows):
                        outcomes = self._execute(live[0].target, payloads, rows)
                    else:
                        outcomes = await loop.run_in_executor(
                            self._executor, self._execute, live[0].target, payloads, rows
                        )
                except BaseException as exc:  # executor shut down, loop closing, ...
                    for item in live:
                        if not item.future.done():
                            item.future.set_exception(exc)
                    raise
                self.batches += 1
                self.requests += len(live)
                answered = len(live)
                for item, (ok, value) in zip(live, outcomes):
                    if item.future.done():  # the caller went away
                        continue
                    if ok:
                        item.future.set_result(BatchResult(value, len(live), self._took * 1000))
                    else:
                        item.future.set_exception(value)
        finally:
            self._draining = False
            if self._queue:  # only after a failure above; restart for the survivors
                self._draining = True
                loop.create_task(self._drain())

    def _inline(self, rows: int) -> bool:
        """Is this batch's predict expected to be short enough for the event loop?"""
        if self._last is None or self.inline_below <= 0:
            return False
        seconds, last_rows = self._last
        return seconds * max(1.0, rows / max(1, last_rows)) < self.inline_below

    def _execute(self, target: Any, payloads: list[P], rows: int = 0) -> list[tuple[bool, Any]]:
        """Run the batch (worker thread, or the loop when short); if it fails, run each
        payload alone."""
        started = time.perf_counter()
        try:
            results = self._run(target, payloads)
            self._took = time.perf_counter() - started
            self._last = (self._took, rows)
            if len(results) != len(payloads):
                raise RuntimeError(f"batch function returned {len(results)} results for {len(payloads)} requests")
            return [(True, r) for r in results]
        except Exception as exc:
            self._last = None  # failures say nothing about the next predict's time
            if len(payloads) == 1:
                self._took = time.perf_counter() - started
                return [(False, exc)]
        outcomes: list[tuple[bool, Any]] = []
        for payload in payloads:
            try:
                outcomes.append((True, self._run(target, [payload])[0]))
            except Exception as exc:
                outcomes.append((False, exc))
        self._took = time.perf_counter() - started
        return outcomes
