"""The micro-batcher's scheduling rules, with a real batch function in a real worker thread."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import pytest

from serving_tasks._batcher import MicroBatcher


class Recorder:
    """A batch function that doubles numbers, remembers each batch, and fails on "boom"."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[list[Any]] = []
        self.delay = delay
        self.threads: set[str] = set()

    def __call__(self, target: Any, payloads: Sequence[Any]) -> list[Any]:
        self.batches.append(list(payloads))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        if "boom" in payloads:
            raise ValueError("boom in batch")
        return [(target, p * 2) for p in payloads]


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_each_caller_gets_its_own_result_and_concurrent_calls_share_a_predict() -> None:
    recorder = Recorder(delay=0.05)

    async def main() -> list[Any]:
        with ThreadPoolExecutor(1, thread_name_prefix="predict") as pool:
            batcher = MicroBatcher(recorder, executor=pool, max_batch_size=64, max_wait_ms=5)
            return await asyncio.gather(*(batcher.submit("k", "m", n, rows=1) for n in range(20)))

    results = _run(main())
    assert [r.value for r in results] == [("m", n * 2) for n in range(20)]
    assert len(recorder.batches) < 20  # they were coalesced
    assert sum(len(b) for b in recorder.batches) == 20
    assert recorder.threads == {"predict_0"}  # never on the event loop (inline is off by default)


class ThreadLog(Recorder):
    """A Recorder that logs the thread of every batch, in order."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__(delay)
        self.order: list[str] = []

    def __call__(self, target: Any, payloads: Sequence[Any]) -> list[Any]:
        self.order.append(threading.current_thread().name)
        return super().__call__(target, payloads)


def test_short_predicts_one_at_a_time_run_on_the_event_loop() -> None:
    fast, slow = ThreadLog(), ThreadLog(delay=0.08)

    async def main() -> list[Any]:
        loop_thread = threading.current_thread().name
        with ThreadPoolExecutor(1, thread_name_prefix="predict") as pool:
            quick = MicroBatcher(fast, executor=pool, max_wait_ms=5, inline_below_ms=50)
            lazy = MicroBatcher(slow, executor=pool, max_wait_ms=5, inline_below_ms=50)
            results = [await quick.submit("k", None, n, rows=1) for n in range(4)]
            # One request much larger than the last predict's is not trusted to be short.
            big = await quick.submit("k", None, 99, rows=10_000)
            results += [await lazy.submit("k", None, n, rows=1) for n in range(3)]
            # A burst is batched in the worker thread, so the loop parses during predicts.
            burst = await asyncio.gather(*(quick.submit("k", None, n, rows=1) for n in range(10)))
        return [loop_thread, [r.value for r in results + burst], big.value]

    loop_thread, values, big = _run(main())
    assert values == [(None, n * 2) for n in range(4)] + [(None, n * 2) for n in range(3)] + [
        (None, n * 2) for n in range(10)
    ]
    assert big == (None, 198)
    # The first predict is unmeasured: thread; then the short ones run on the loop.
    assert fast.order[:5] == ["predict_0", loop_thread, loop_thread, loop_thread, "predict_0"]  # 5th: big
    assert set(fast.order[5:]) == {"predict_0"}  # the burst's batches
    assert slow.order == ["predict_0"] * 3  # 80 ms predicts never block the loop


def test_each_result_carries_its_predict_time() -> None:
    async def main() -> list[Any]:
        with ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher(Recorder(delay=0.05), executor=pool, max_wait_ms=5)
            return await asyncio.gather(*(batcher.submit("k", None, n, rows=1) for n in range(3)))

    results = _run(main())
    assert all(50 <= r.predict_ms < 5_000 for r in results), [r.predict_ms for r in results]


def test_an_idle_batcher_dispatches_at_once_without_waiting() -> None:
    recorder = Recorder()

    async def main() -> float:
        with ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher(recorder, executor=pool, max_wait_ms=2000)
            start = time.monotonic()
            await batcher.submit("k", None, 1, rows=1)
            return time.monotonic() - start

    assert _run(main()) < 1.0  # far below max_wait_ms


def test_one_failing_request_fails_alone() -> None:
    recorder = Recorder(delay=0.02)

    async def main() -> list[Any]:
        with ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher(recorder, executor=pool, max_wait_ms=5)
            payloads = [1, 2, "boom", 3, 4]
            return await asyncio.gather(
                *(batcher.submit("k", None, p, rows=1) for p in payloads), return_exceptions=True
            )

    results = _run(main())
    assert isinstance(results[2], ValueError)
    assert [r.value[1] for i, r in enumerate(results) if i != 2] == [2, 4, 6, 8]


def test_batches_respect_keys_and_the_row_bound() -> None:
    recorder = Recorder(delay=0.05)

    async def main() -> None:
        with ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher(recorder, executor=pool, max_batch_size=4, max_wait_ms=5)
            calls = [batcher.submit("a" if n % 2 else "b", None, n, rows=2) for n in range(12)]
            calls.append(batcher.submit("a", None, 100, rows=9))  # alone: larger than the bound
            await asyncio.gather(*calls)

    _run(main())
    for batch in recorder.batches:
        assert len({p % 2 for p in batch if p != 100}) <= 1, batch  # never two keys at once
        assert batch == [100] or 2 * len(batch) <= 4
    assert [100] in recorder.batches


def test_batch_size_one_turns_batching_off() -> None:
    recorder = Recorder(delay=0.01)

    async def main() -> list[Any]:
        with ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher(recorder, executor=pool, max_batch_size=1)
            return await asyncio.gather(*(batcher.submit("k", None, n, rows=1) for n in range(8)))

    results = _run(main())
    assert all(r.batch_requests == 1 for r in results)
    assert len(recorder.batches) == 8


@pytest.mark.parametrize("bad", [{"max_batch_size": 0}, {"max_wait_ms": -1}])
def test_bad_bounds_are_refused(bad: dict[str, Any]) -> None:
    with ThreadPoolExecutor(1) as pool, pytest.raises(ValueError):
        MicroBatcher(Recorder(), executor=pool, **bad)
