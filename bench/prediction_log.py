"""Prediction logging benchmark: what ``--log-predictions 1`` costs a request, and how fast
the performance monitor joins a large log with its labels.

1. The same 50-tree forest served twice on this machine, logging off and on, measured by
   wrk at 8 connections (1-row JSON requests), in alternating rounds so both see the same
   machine load: p50 / p99 latency and requests/s, plus the rows logged and dropped.
2. ``flows.performance``: 1,000,000 logged predictions (written by the logger itself, in
   files of 100,000 rows) read back and joined with 800,000 labels, per version and day.

    .venv/bin/python bench/prediction_log.py <workdir> [--rounds 3] [--join-rows 1000000]

``--skip-http`` runs only part 2 (no wrk needed).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _data  # noqa: E402
import serving  # noqa: E402  (wrk and server helpers)


def http_overhead(workdir: Path, rounds: int) -> dict:
    from tracking_plugin.models import save_model

    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install -y wrk (make bench does it)")
    model, x = _data.forest()
    path = workdir / "model"
    shutil.rmtree(path, ignore_errors=True)
    save_model(model, str(path), input_example=x.head(3))
    row = x.head(1)
    body = json.dumps({"dataframe_split": {"columns": list(row.columns), "data": row.values.tolist()}})
    results: dict = {"off": [], "on": []}
    for _ in range(rounds):
        for side in ("off", "on"):
            port = serving._port()
            url = f"http://127.0.0.1:{port}"
            cmd = [sys.executable, "-m", "serving_tasks.cli", "-m", str(path), "-p", str(port)]
            if side == "on":
                cmd += ["--log-predictions", "1", "--prediction-log-uri", str(workdir / "log")]
            proc = serving._serve(cmd, url)
            try:
                serving._wrk(url, body, 8, workdir, duration="3s")  # warm-up
                measured = serving._wrk(url, body, 8, workdir)
                if side == "on":
                    measured["prediction_log"] = httpx.get(url + "/metadata").json()["prediction_log"]
                results[side].append(measured)
            finally:
                serving._stop(proc)
    summary = {}
    for side in ("off", "on"):
        summary[f"{side}_p50_ms"] = _data.median([r["p50_ms"] for r in results[side]])
        summary[f"{side}_p99_ms"] = _data.median([r["p99_ms"] for r in results[side]])
        summary[f"{side}_rps"] = _data.median([r["rps"] for r in results[side]])
    summary["p99_cost_ms"] = summary["on_p99_ms"] - summary["off_p99_ms"]
    summary["dropped_rows"] = sum(r["prediction_log"]["dropped_rows"] for r in results["on"])
    summary["rounds"] = results
    return summary


def join_speed(workdir: Path, n_rows: int) -> dict:
    from prefect_mlops.flows.performance import live_metrics, read_labels, read_prediction_log
    from serving_tasks._payload import ParsedPayload
    from serving_tasks._prediction_log import PredictionLogger
    from serving_tasks._served_model import ServedModel

    root = workdir / "join-log"
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(0)
    served = ServedModel.wrap(object(), "bench", name="churn", version=1)
    log = PredictionLogger(str(root), max_queue_rows=n_rows + 1, batch_rows=n_rows + 1, flush_interval=3600)
    chunk = 100_000
    start_day = pd.Timestamp("2026-01-01", tz="UTC").timestamp()
    for i, begin in enumerate(range(0, n_rows, chunk)):
        n = min(chunk, n_rows - begin)
        frame = pd.DataFrame({"x": rng.random(n)})
        proba = rng.random(n)
        log.offer(served, ParsedPayload(n_rows=n, frame=frame), json.dumps(proba.round(4).tolist()).encode(), f"req-{i}", at=start_day + (i % 10) * 86400)
        log.flush()
    log.stop()
    labels = pd.DataFrame({"request_id": [f"req-{i // chunk}" for i in range(n_rows)], "row": [i % chunk for i in range(n_rows)],
                           "churn": rng.integers(0, 2, n_rows)}).sample(frac=0.8, random_state=0)
    labels_path = workdir / "labels.parquet"
    labels.to_parquet(labels_path)

    import sklearn.metrics  # noqa: F401 - its import (3-4 s here) is not the join's time

    t = time.perf_counter()
    logged = read_prediction_log(str(root), "churn")
    read_s = time.perf_counter() - t
    got = read_labels(str(labels_path))
    result = live_metrics(logged.frame, got)
    total_s = time.perf_counter() - t
    return {"rows": n_rows, "labels": len(labels), "days": len(result.table), "read_s": read_s, "read_join_score_s": total_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--join-rows", type=int, default=1_000_000)
    parser.add_argument("--skip-http", action="store_true")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    out = {"join": join_speed(args.workdir, args.join_rows)}
    if not args.skip_http:
        out["http"] = http_overhead(args.workdir, args.rounds)
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
