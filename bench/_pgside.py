"""The workloads of ``bench/pg.py`` that both sides share, written against a tiny adapter
(``Side``) so prefect-mlops and MLflow run the very same loop; stdlib + psycopg only."""

from __future__ import annotations

import json
import sys
import time
from typing import Callable

import _data
import _pgload


class Side:
    """What a workload needs of a tracking library (implemented in pg_ours.py / pg_peer.py)."""

    batch_points: int  # points per log_batch call in the throughput workload (MLflow: its limit)

    def experiment_id(self) -> str: ...
    def create_run(self) -> str: ...
    def end_run(self, run_id: str) -> None: ...
    def log_param(self, run_id: str, key: str, value: str) -> None: ...
    def log_metric(self, run_id: str, key: str, value: float) -> None: ...
    def log_batch(self, run_id: str, points: list[tuple[str, float, int, int]]) -> None: ...
    def history(self, run_id: str, key: str) -> int: ...
    def search(self, experiment_id: str, filter_string: str, max_results: int) -> int: ...


def log_batch(side: Side, url: str, args: list[str]) -> dict:
    run_id = side.create_run()
    n = side.batch_points
    now = int(time.time() * 1000)
    calls = [0]

    def once() -> float:
        rep = calls[0]
        calls[0] += 1
        points = [(f"m{i % 10}", float(i), now, rep * n + i) for i in range(n)]
        t = time.perf_counter()
        side.log_batch(run_id, points)
        return time.perf_counter() - t

    times = _data.serve_rounds(once, warmup=1)
    result = _data.batch_result(times, n)
    result["run_id"] = run_id
    result["calls"] = calls[0]
    return result


def lifecycle(side: Side, url: str, args: list[str]) -> dict:
    counter = [0]

    def once() -> float:
        i = counter[0]
        counter[0] += 1
        t = time.perf_counter()
        run_id = side.create_run()
        side.log_param(run_id, "a", str(i))
        side.log_param(run_id, "b", "x")
        side.log_metric(run_id, "m", float(i))
        side.end_run(run_id)
        return time.perf_counter() - t

    times = _data.serve_rounds(once, warmup=3)
    return {"runs_per_s": 1 / _data.median(times), "lifecycle_ms": _data.median(times) * 1000, "runs": len(times)}


def search(side: Side, url: str, args: list[str]) -> dict:
    n_runs = int(args[0])
    exp = side.experiment_id()
    rows = _data.search_rows(n_runs)
    load_s = _pgload.load_search_runs(url, int(exp), rows)
    print(f"loaded {n_runs:,} runs in {load_s:.1f} s", file=sys.stderr, flush=True)
    hits = side.search(exp, _data.SEARCH_FILTER, 1000)
    once = _data.timed(lambda: side.search(exp, _data.SEARCH_FILTER, 1000))
    times = _data.serve_rounds(once, warmup=2)
    return _data.search_result(times, {"search_hits": hits, "search_runs": n_runs, "load_s": load_s})


def history(side: Side, url: str, args: list[str]) -> dict:
    points = int(args[0])
    run_id = side.create_run()
    load_s = _pgload.load_history(url, run_id, "loss", points)
    got = side.history(run_id, "loss")
    if got != points:
        raise SystemExit(f"history returned {got} points, expected {points}")
    # The check above was the warm-up (MLflow takes over a minute per million points).
    times = _data.serve_rounds(_data.timed(lambda: side.history(run_id, "loss")), warmup=0)
    return {"history_points": points, "history_s": _data.median(times), "history_times_s": [round(t, 3) for t in times],
            "load_s": load_s}


def init(side: Side, url: str, args: list[str]) -> dict:
    """Create the schema and the experiment (the database then serves as a template)."""
    return {"experiment_id": side.experiment_id()}


def make_run(side: Side, url: str, args: list[str]) -> dict:
    return {"run_id": side.create_run()}


def writer(side: Side, url: str, args: list[str]) -> dict:
    """One of the concurrent writers: ``args`` = run_id ('new' for a run of its own),
    metric key, points, points per call. Prints ``ready``, starts on ``go``."""
    run_id, key, points, per_call = args[0], args[1], int(args[2]), int(args[3])
    if run_id == "new":
        run_id = side.create_run()
    side.log_batch(run_id, [])  # connect, check the run
    print("ready", flush=True)
    sys.stdin.readline()
    now = int(time.time() * 1000)
    times: list[float] = []
    errors: list[str] = []
    acknowledged = 0
    started = time.time()
    cpu = time.process_time()
    for first in range(0, points, per_call):
        batch = [(key, float(s), now + s, s) for s in range(first, min(first + per_call, points))]
        t = time.perf_counter()
        try:
            side.log_batch(run_id, batch)
        except Exception as exc:  # noqa: BLE001 - counted and reported, the writer goes on
            errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
        else:
            acknowledged += len(batch)
        times.append(time.perf_counter() - t)
    return {"run_id": run_id, "started": started, "ended": time.time(), "times": times,
            "errors": errors, "acknowledged": acknowledged, "cpu_s": time.process_time() - cpu}


WORKLOADS: dict[str, Callable[[Side, str, list[str]], dict]] = {
    f.__name__: f for f in (init, log_batch, lifecycle, search, history, make_run, writer)
}


def main(make_side: Callable[[str, str], Side]) -> None:
    """``python pg_<side>.py <workload> <url> <workdir> [args...]`` -> one JSON line last."""
    import os

    name, url, workdir, *args = sys.argv[1:]
    os.makedirs(workdir, exist_ok=True)
    os.chdir(workdir)
    side = make_side(url, workdir)
    print(json.dumps(WORKLOADS[name](side, url, args)), flush=True)
