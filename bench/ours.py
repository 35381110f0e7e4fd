"""prefect-mlops' side of the benchmarks; same workloads as peer_mlflow.py.

    python bench/ours.py <benchmark> <workdir>   -> prints one JSON object
"""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _data  # noqa: E402


def _setup(workdir: Path) -> str:
    import tracking_plugin as mlops

    uri = f"sqlite:///{workdir / 'ours.db'}"
    os.environ["PREFECT_MLOPS_TRACKING_URI"] = uri
    os.environ["PREFECT_MLOPS_ARTIFACT_ROOT"] = str(workdir / "artifacts")
    mlops.set_tracking_uri(uri)
    mlops.set_experiment("bench")
    return uri


def log_metric(workdir: Path) -> dict:
    import tracking_plugin as mlops

    _setup(workdir)
    sync, buffered = [], []
    with mlops.start_run():
        for i in range(2000):
            t = time.perf_counter()
            mlops.log_metric("loss", 1.0 / (i + 1), step=i)
            sync.append(time.perf_counter() - t)
        for i in range(20000):
            t = time.perf_counter()
            mlops.log_metric("buffered", 1.0 / (i + 1), step=i, synchronous=False)
            buffered.append(time.perf_counter() - t)
        mlops.flush()
    return {"log_metric_ms": _data.median(sync) * 1000, "buffered_log_metric_us": _data.median(buffered) * 1e6}


def log_batch(workdir: Path) -> dict:
    """100,000 points a call, in the rounds bench/run.py asks for (interleaved with MLflow's)."""
    import tracking_plugin as mlops
    from tracking_plugin.client import TrackingClient
    from tracking_plugin.entities import Metric

    _setup(workdir)
    client = TrackingClient()
    points = 100_000
    calls = itertools.count()
    with mlops.start_run() as run:
        now = int(time.time() * 1000)

        def once() -> float:
            rep = next(calls)
            metrics = [Metric(f"m{i % 10}", float(i), now, rep * points + i) for i in range(points)]
            t = time.perf_counter()
            client.log_batch(run.info.run_id, metrics=metrics)
            return time.perf_counter() - t

        return _data.batch_result(_data.serve_rounds(once, warmup=1), points)


def raw_sqlite(workdir: Path) -> dict:
    """The ceiling: plain sqlite3 executemany in WAL mode, synchronous=NORMAL."""
    db = sqlite3.connect(str(workdir / "raw.db"))
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE m (run_uuid TEXT, key TEXT, value REAL, is_nan INT, timestamp INT, step INT)")
    db.execute("CREATE INDEX ix ON m (run_uuid, key, step)")
    rates = []
    for rep in range(8):
        rows = [("r" * 32, f"m{i % 10}", float(i), 0, 0, rep * 100_000 + i) for i in range(100_000)]
        t = time.perf_counter()
        db.executemany("INSERT INTO m VALUES (?, ?, ?, ?, ?, ?)", rows)
        db.commit()
        rates.append(100_000 / (time.perf_counter() - t))
    return {"raw_sqlite_points_per_s": _data.median(rates)}


def lifecycle(workdir: Path) -> dict:
    import tracking_plugin as mlops

    _setup(workdir)
    n = 500
    t = time.perf_counter()
    for i in range(n):
        with mlops.start_run():
            mlops.log_param("a", i)
            mlops.log_param("b", "x")
            mlops.log_metric("m", float(i))
    return {"runs_per_s": n / (time.perf_counter() - t)}


def search(workdir: Path) -> dict:
    """Populate our schema with the same N runs by direct SQL, then time search_runs in the
    rounds bench/run.py asks for (interleaved with MLflow's)."""
    import tracking_plugin as mlops
    from tracking_plugin.client import TrackingClient

    n_runs = int(os.environ.get("BENCH_SEARCH_RUNS", "100000"))
    uri = _setup(workdir)
    exp = mlops.get_experiment_by_name("bench")
    rows = _data.search_rows(n_runs)
    now = int(time.time() * 1000)
    db = sqlite3.connect(str(workdir / "ours.db"))
    db.executemany(
        "INSERT INTO runs (run_uuid, name, experiment_id, user_id, status, start_time, end_time, "
        "artifact_uri, lifecycle_stage) VALUES (?, 'r', ?, 'bench', 'FINISHED', ?, ?, '/tmp/a', 'active')",
        [(rid, int(exp.experiment_id), now + i, now + i) for i, (rid, _, _) in enumerate(rows)],
    )
    db.executemany("INSERT INTO params (run_uuid, key, value) VALUES (?, 'model', ?)", [(rid, m) for rid, _, m in rows])
    db.executemany(
        "INSERT INTO latest_metrics (run_uuid, key, value, is_nan, timestamp, step) VALUES (?, 'acc', ?, 0, ?, 0)",
        [(rid, a, now) for rid, a, _ in rows],
    )
    db.executemany(
        "INSERT INTO metrics (run_uuid, key, value, is_nan, timestamp, step) VALUES (?, 'acc', ?, 0, ?, 0)",
        [(rid, a, now) for rid, a, _ in rows],
    )
    db.commit()
    _data.settle(db)
    client = TrackingClient(uri)
    hits = len(client.search_runs([exp.experiment_id], _data.SEARCH_FILTER, max_results=1000))

    def once() -> None:
        client.search_runs([exp.experiment_id], _data.SEARCH_FILTER, max_results=1000)

    return _data.search_result(_data.serve_rounds(_data.timed(once)), {"search_hits": hits, "search_runs": n_runs})


def log_model(workdir: Path) -> dict:
    import tracking_plugin as mlops
    from tracking_plugin.client import TrackingClient
    from tracking_plugin.models import load_model, log_model as log

    _setup(workdir)
    model, x = _data.forest()
    example = x.head(5)
    times = []
    info = None
    for _ in range(3):
        with mlops.start_run():
            t = time.perf_counter()
            info = log(model, "model", input_example=example, registered_model_name="bench")
            times.append(time.perf_counter() - t)
    TrackingClient().set_registered_model_alias("bench", "champion", info.registered_model_version)
    load_model("models:/bench@champion")  # warm imports, as a server would be
    load = []
    for _ in range(7):
        t = time.perf_counter()
        load_model("models:/bench@champion")
        load.append(time.perf_counter() - t)
    return {"log_model_s": _data.median(times), "load_model_ms": _data.median(load) * 1000}


BENCHMARKS = {f.__name__: f for f in (log_metric, log_batch, raw_sqlite, lifecycle, search, log_model)}

if __name__ == "__main__":
    name, workdir = sys.argv[1], Path(sys.argv[2])
    workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(workdir)
    print(json.dumps(BENCHMARKS[name](workdir)))
