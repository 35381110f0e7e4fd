"""Deterministic benchmark data shared by both sides (stdlib + numpy + pandas + sklearn only,
so it imports in MLflow's venv too)."""

from __future__ import annotations

import numpy as np
import pandas as pd

N_FEATURES = 10


def forest_data(n_rows: int = 5000, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.normal(size=(n_rows, N_FEATURES)), columns=[f"f{i}" for i in range(N_FEATURES)])
    y = (x["f0"] + 0.5 * x["f1"] - 0.3 * x["f2"] + rng.normal(scale=0.5, size=n_rows) > 0).astype(int).to_numpy()
    return x, y


def forest(seed: int = 0):  # type: ignore[no-untyped-def]
    """The issue's benchmark model: a 50-tree random forest on 10 features."""
    from sklearn.ensemble import RandomForestClassifier

    x, y = forest_data(seed=seed)
    return RandomForestClassifier(n_estimators=50, random_state=seed, n_jobs=1).fit(x, y), x


def search_rows(n_runs: int, seed: int = 0) -> list[tuple[str, float, str]]:
    """(run_id, acc, model) for the search benchmark: 1/3 'rf', acc uniform in [0, 1)."""
    rng = np.random.default_rng(seed)
    acc = rng.random(n_runs)
    models = np.array(["rf", "gbm", "lr"])[rng.integers(0, 3, n_runs)]
    return [(f"{i:032x}", float(a), str(m)) for i, (a, m) in enumerate(zip(acc, models))]


SEARCH_FILTER = "metrics.acc > 0.9 and params.model = 'rf'"


def settle(db) -> None:  # type: ignore[no-untyped-def]
    """After filling a database by direct SQL: fold a WAL into the database file (as
    SQLite's automatic checkpoints do on a database in use; a no-op without WAL), close
    the connection and let the OS write the files, so the timed calls do not compete with
    the write-back of the filling."""
    import os

    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    os.sync()


def serve_rounds(once, warmup: int = 3) -> list[float]:  # type: ignore[no-untyped-def]
    """Run ``once`` (one timed call; it returns its own time in seconds, so it can prepare
    untimed) in rounds the parent asks for, so both sides' rounds alternate; return the
    times of all timed calls.

    Protocol on stdin/stdout: after ``warmup`` calls print ``ready``; for each line ``go N``
    run N calls and print their times as a JSON list; stop at ``end``. The caller prints
    its result as the last line.
    """
    import json
    import sys

    for _ in range(warmup):  # imports, connections, caches
        once()
    print("ready", flush=True)
    times: list[float] = []
    for line in sys.stdin:
        command = line.split()
        if not command or command[0] == "end":
            break
        batch = [once() for _ in range(int(command[1]))]
        times.extend(batch)
        print(json.dumps(batch), flush=True)
    return times


def timed(fn):  # type: ignore[no-untyped-def]
    """``fn`` as a ``serve_rounds`` call: run it, return its time in seconds."""
    import time

    def once() -> float:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    return once


def search_result(times: list[float], info: dict) -> dict:
    return {**info, "search_ms": median(times) * 1000, "search_times_ms": [round(t * 1000, 2) for t in times]}


def batch_result(times: list[float], points: int) -> dict:
    """Points per second of the median call, and every call's time."""
    return {
        "log_batch_points_per_s": points / median(times),
        "log_batch_points_per_call": points,
        "log_batch_times_ms": [round(t * 1000, 2) for t in times],
    }


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
