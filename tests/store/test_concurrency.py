"""Eight processes log metrics at once, into one run and into separate runs.

Every process logs 2,000 points: 1,000 single-point ``log_batch`` calls and 1,000 points
in batches of varying sizes, in shuffled order. Afterwards every point is present exactly
once, the latest values follow the (step, timestamp, value) rule, and no process saw an
error (no "database is locked" on SQLite, no deadlock on PostgreSQL).
"""

from __future__ import annotations

import multiprocessing as mp
import random
import traceback
from collections import Counter
from typing import Any

import pytest

from tracking_plugin.entities import Metric
from tracking_plugin.store.sql import SqlStore

PROCESSES = 8
POINTS = 2_000
SINGLE = 1_000
BATCH_SIZES = (3, 17, 80, 100, 300, 500)  # sums to 1,000
T0 = 1_700_000_000_000

assert sum(BATCH_SIZES) + SINGLE == POINTS


def points_of(worker: int) -> list[Metric]:
    """The points one worker logs: a key shared by all workers and one of its own.

    Steps are distinct across workers, so the expected latest value is unambiguous.
    """
    return [
        Metric(
            "shared" if i % 2 == 0 else f"own{worker}",
            float(worker * 100_000 + i),
            T0 + i,
            i * PROCESSES + worker,
        )
        for i in range(POINTS)
    ]


def _worker(uri: str, run_id: str, worker: int, barrier: Any, results: Any) -> None:
    try:
        store = SqlStore.from_uri(uri)
        points = points_of(worker)
        random.Random(worker).shuffle(points)  # the greatest point may come early
        barrier.wait(timeout=120)
        position = 0
        for _ in range(SINGLE):
            store.log_batch(run_id, metrics=[points[position]])
            position += 1
        for size in BATCH_SIZES:
            store.log_batch(run_id, metrics=points[position : position + size])
            position += size
        results.put(("ok", worker, position))
    except BaseException:  # noqa: BLE001 - reported to the parent, which fails the test
        results.put(("error", worker, traceback.format_exc()))


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["one-run", "separate-runs"])
def test_concurrent_logging_loses_nothing(store: SqlStore, layout: str) -> None:
    exp_id = store.create_experiment("concurrency", "/tmp/concurrency")
    if layout == "one-run":
        run_ids = [store.create_run(exp_id, user_id="u", start_time=T0).info.run_id] * PROCESSES
    else:
        run_ids = [store.create_run(exp_id, user_id="u", start_time=T0).info.run_id for _ in range(PROCESSES)]

    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(PROCESSES), ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(store.db.uri, run_ids[w], w, barrier, results))
        for w in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=300) for _ in range(PROCESSES)]
    for p in procs:
        p.join(60)
    errors = [o[2] for o in outcomes if o[0] != "ok"]
    assert not errors, "\n".join(errors)
    assert sorted(o[1:] for o in outcomes) == [(w, POINTS) for w in range(PROCESSES)]

    for run_id in set(run_ids):
        writers = [w for w in range(PROCESSES) if run_ids[w] == run_id]
        expected = [m for w in writers for m in points_of(w)]
        keys = {m.key for m in expected}
        logged: list[Metric] = []
        for key in keys:
            logged.extend(store.get_metric_history(run_id, key))
        # Every point exactly once: same multiset, same count.
        assert len(logged) == len(expected) == POINTS * len(writers)
        assert Counter(logged) == Counter(expected)
        latest = store.get_run(run_id).data.metrics
        for key in keys:
            best = max((m for m in expected if m.key == key), key=lambda m: (m.step, m.timestamp, m.value))
            assert latest[key] == best.value, key
