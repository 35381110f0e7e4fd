"""The web UI at scale: an experiment of 100,000 runs and a 1,000,000-point metric.

    .venv/bin/python bench/ui_bench.py [--runs 100000] [--points 1000000]

Fills a fresh SQLite backend (runs, params, tags and latest metrics by direct SQL on our
schema, as bench/ours.py does for search; the dense metric through the store's
``log_batch``, 1,000 points per call), starts ``prefect-mlops server`` on it and times,
over HTTP on localhost (median of 5 after one warm-up):

- the runs page's first screen (50 rows, default columns);
- the runs page sorted by a metric;
- the runs page with a filter;
- the 1,000,000-point chart's data (``/ui-api/metric-history``, downsampled to <= 2,000 points)
  and a zoomed range.

Prints one JSON object; the numbers go into bench/RESULTS.md by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from tracking_plugin.entities import Metric
from tracking_plugin.store.sql import SqlStore


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fill(workdir: Path, n_runs: int, n_points: int) -> tuple[str, str, str, dict[str, float]]:
    db_path = workdir / "ui.db"
    uri = f"sqlite:///{db_path}"
    timings: dict[str, float] = {}
    with SqlStore.from_uri(uri) as store:
        store.db.upgrade()
        exp = store.create_experiment("bench-ui", str(workdir / "artifacts"))
        dense = store.create_run(exp, user_id="bench", start_time=int(time.time() * 1000), run_name="dense")
    rng = np.random.default_rng(0)
    now = int(time.time() * 1000)
    t = time.perf_counter()
    db = sqlite3.connect(str(db_path))
    ids = [f"{i:032x}" for i in range(1, n_runs)]
    db.executemany(
        "INSERT INTO runs (run_uuid, name, experiment_id, user_id, status, start_time, end_time, artifact_uri, "
        "lifecycle_stage) VALUES (?, ?, ?, 'bench', 'FINISHED', ?, ?, '/tmp/a', 'active')",
        [(rid, f"run-{i}", int(exp), now - i * 1000, now - i * 1000 + 500) for i, rid in enumerate(ids)],
    )
    models = np.array(["rf", "gbm", "lr"])[rng.integers(0, 3, len(ids))]
    for key, values in (("model", models), ("max_depth", rng.integers(2, 12, len(ids))), ("lr", rng.random(len(ids)))):
        db.executemany("INSERT INTO params (run_uuid, key, value) VALUES (?, ?, ?)",
                       [(rid, key, str(v)) for rid, v in zip(ids, values.tolist())])
    db.executemany("INSERT INTO tags (run_uuid, key, value) VALUES (?, 'team', ?)", [(rid, "risk") for rid in ids])
    for key in ("acc", "auc", "loss", "f1"):
        values = rng.random(len(ids)).tolist()
        db.executemany("INSERT INTO latest_metrics (run_uuid, key, value, is_nan, timestamp, step) VALUES (?, ?, ?, 0, ?, 0)",
                       [(rid, key, v, now) for rid, v in zip(ids, values)])
        db.executemany("INSERT INTO metrics (run_uuid, key, value, is_nan, timestamp, step) VALUES (?, ?, ?, 0, ?, 0)",
                       [(rid, key, v, now) for rid, v in zip(ids, values)])
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    timings["fill_runs_s"] = time.perf_counter() - t
    t = time.perf_counter()
    values = (np.sin(np.arange(n_points) / 1000.0) + rng.normal(0, 0.05, n_points)).tolist()
    with SqlStore.from_uri(uri) as store:
        start = dense.info.start_time
        for lo in range(0, n_points, 1000):
            store.log_batch(dense.info.run_id,
                            metrics=[Metric("train_loss", values[s], start + s, s) for s in range(lo, min(lo + 1000, n_points))])
    timings["fill_dense_metric_s"] = time.perf_counter() - t
    os.sync()
    return uri, exp, dense.info.run_id, timings


def timed(http: httpx.Client, url: str, rounds: int = 5, **params: object) -> dict[str, float]:
    r = http.get(url, params=params)  # warm-up
    assert r.status_code == 200, r.text[:500]
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        r = http.get(url, params=params)
        times.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200
    return {"median_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1), "bytes": len(r.content)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--points", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        uri, exp, dense, result = fill(workdir, args.runs, args.points)
        port = _free_port()
        cli = str(Path(sys.executable).with_name("prefect-mlops"))
        server = subprocess.Popen([cli, "server", "--backend-store-uri", uri, "--default-artifact-root",
                                   str(workdir / "artifacts"), "--port", str(port)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(base + "/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("server did not start")
                time.sleep(0.2)
            with httpx.Client(base_url=base, timeout=120) as http:
                page = f"/experiments/{exp}"
                result["runs"] = args.runs
                result["runs_page_first_screen"] = timed(http, page)
                result["runs_page_sorted_by_metric"] = timed(http, page, order="metrics.auc DESC")
                result["runs_page_filtered"] = timed(http, page, filter="metrics.acc > 0.9 and params.model = 'rf'",
                                                     order="metrics.acc DESC")
                result["runs_page_10th_page"] = timed(http, page, page=9)
                result["points"] = args.points
                result["chart_full_history"] = timed(http, "/ui-api/metric-history", run=dense, key="train_loss")
                result["chart_zoomed_10pct"] = timed(http, "/ui-api/metric-history", run=dense, key="train_loss",
                                                     lo=args.points // 2, hi=args.points // 2 + args.points // 10)
                result["run_page_of_dense_run"] = timed(http, f"/runs/{dense}")
        finally:
            server.terminate()
            server.wait(timeout=15)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
