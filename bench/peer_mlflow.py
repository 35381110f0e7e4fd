"""MLflow's side of the benchmarks. Runs in .venv-peer (MLflow installed there only).

    python bench/peer_mlflow.py <benchmark> <workdir>   -> prints one JSON object
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
    import mlflow

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("bench")
    return uri


def log_metric(workdir: Path) -> dict:
    import mlflow

    _setup(workdir)
    times = []
    with mlflow.start_run():
        for i in range(300):
            t = time.perf_counter()
            mlflow.log_metric("loss", 1.0 / (i + 1), step=i)
            times.append(time.perf_counter() - t)
    return {"log_metric_ms": _data.median(times) * 1000}


def log_batch(workdir: Path) -> dict:
    """1,000 points a call (MLflow's batch limit), in the rounds bench/run.py asks for."""
    import mlflow
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    _setup(workdir)
    client = MlflowClient()
    points = 1000
    calls = itertools.count()
    with mlflow.start_run() as run:
        now = int(time.time() * 1000)

        def once() -> float:
            rep = next(calls)
            metrics = [Metric(f"m{i % 10}", float(i), now, rep * points + i) for i in range(points)]
            t = time.perf_counter()
            client.log_batch(run.info.run_id, metrics=metrics)
            return time.perf_counter() - t

        return _data.batch_result(_data.serve_rounds(once, warmup=1), points)


def lifecycle(workdir: Path) -> dict:
    import mlflow

    _setup(workdir)
    n = 60
    t = time.perf_counter()
    for i in range(n):
        with mlflow.start_run():
            mlflow.log_param("a", i)
            mlflow.log_param("b", "x")
            mlflow.log_metric("m", float(i))
    return {"runs_per_s": n / (time.perf_counter() - t)}


def _mlflow_columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


def search(workdir: Path) -> dict:
    """Populate MLflow's own schema with N runs by direct SQL, then time search_runs in the
    rounds bench/run.py asks for (interleaved with ours)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    n_runs = int(os.environ.get("BENCH_SEARCH_RUNS", "100000"))
    uri = _setup(workdir)
    exp = mlflow.get_experiment_by_name("bench")
    rows = _data.search_rows(n_runs)
    db = sqlite3.connect(str(workdir / "mlflow.db"))
    now = int(time.time() * 1000)
    run_cols = set(_mlflow_columns(db, "runs"))
    base = {"name": "r", "source_type": "LOCAL", "source_name": "", "entry_point_name": "", "user_id": "bench",
            "status": "FINISHED", "start_time": now, "end_time": now, "source_version": "",
            "lifecycle_stage": "active", "artifact_uri": "/tmp/a", "experiment_id": int(exp.experiment_id),
            "deleted_time": None}
    cols = [c for c in ["run_uuid", *base] if c in run_cols]
    db.executemany(
        f"INSERT INTO runs ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})",
        [tuple(({**base, "run_uuid": rid, "start_time": now + i})[c] for c in cols) for i, (rid, _, _) in enumerate(rows)],
    )
    db.executemany("INSERT INTO params (key, value, run_uuid) VALUES ('model', ?, ?)", [(m, rid) for rid, _, m in rows])
    db.executemany(
        "INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) VALUES ('acc', ?, ?, 0, 0, ?)",
        [(a, now, rid) for rid, a, _ in rows],
    )
    db.executemany(
        "INSERT INTO metrics (key, value, timestamp, step, is_nan, run_uuid) VALUES ('acc', ?, ?, 0, 0, ?)",
        [(a, now, rid) for rid, a, _ in rows],
    )
    db.commit()
    _data.settle(db)
    client = MlflowClient(uri)
    hits = len(client.search_runs([exp.experiment_id], _data.SEARCH_FILTER, max_results=1000))

    def once() -> None:
        client.search_runs([exp.experiment_id], _data.SEARCH_FILTER, max_results=1000)

    return _data.search_result(_data.serve_rounds(_data.timed(once)), {"search_hits": hits, "search_runs": n_runs})


def log_model(workdir: Path) -> dict:
    import mlflow
    import mlflow.sklearn

    _setup(workdir)
    model, x = _data.forest()
    example = x.head(5)
    times = []
    for i in range(2):
        with mlflow.start_run():
            t = time.perf_counter()
            info = mlflow.sklearn.log_model(
                model, name="model", input_example=example, registered_model_name="bench",
                skops_trusted_types=["sklearn.tree._tree.Tree"],  # MLflow 3.17 requires it for forests
            )
            times.append(time.perf_counter() - t)
    client = mlflow.MlflowClient()
    client.set_registered_model_alias("bench", "champion", info.registered_model_version)
    mlflow.pyfunc.load_model("models:/bench@champion")  # warm imports, as a server would be
    load = []
    for _ in range(7):
        t = time.perf_counter()
        mlflow.pyfunc.load_model("models:/bench@champion")
        load.append(time.perf_counter() - t)
    return {"log_model_s": _data.median(times), "load_model_ms": _data.median(load) * 1000}


BENCHMARKS = {f.__name__: f for f in (log_metric, log_batch, lifecycle, search, log_model)}

if __name__ == "__main__":
    name, workdir = sys.argv[1], Path(sys.argv[2])
    workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(workdir)
    print(json.dumps(BENCHMARKS[name](workdir)))
