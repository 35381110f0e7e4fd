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
  and a zoomed range;

and in Chromium (Debian's package driven by Playwright, as the browser tests; skipped with
``--no-browser``), median of 5 fresh page loads after a warm-up:

- ``browser_runs_page_interactive_ms``: the runs page's DOMContentLoaded end (HTML parsed,
  our script run, its handlers attached), from the navigation's start;
- ``browser_chart_drawn_ms``: the 1,000,000-point chart's request + parse + draw (what the
  chart reports in ``data-draw-ms``) and ``browser_run_page_chart_visible_ms``: from the
  navigation's start to the chart drawn.

MLflow (``--peer-python``, default ``$PEER_PYTHON``; ``--no-peer`` to skip): ``mlflow
server`` on SQLite holding the same runs, params, tags, metrics and the same 1,000,000-point
history (written by direct SQL into MLflow's own schema, as bench/peer_mlflow.py does), and
the calls its UI makes for the same views: ``ajax-api/2.0/mlflow/runs/search`` with 100 runs
(its page size) newest first and sorted by a metric, and
``ajax-api/2.0/mlflow/metrics/get-history-bulk-interval`` (its sampled chart data, 320
points); and in Chromium its runs page until the first run name shows.

Prints one JSON object (keys listed in bench/RESULTS.md's web UI section).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
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


def _progress(result: dict[str, object]) -> None:
    """What is measured so far, on stderr (the MLflow side can take many minutes)."""
    print(json.dumps(result), file=sys.stderr, flush=True)


CHROMIUM = os.environ.get("PREFECT_MLOPS_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def _median_ms(values: list[float]) -> float:
    return round(statistics.median(values), 1)


def browser_ours(base: str, exp: str, dense: str, rounds: int = 5) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    out: dict[str, float] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 860})
            interactive = []
            for i in range(rounds + 1):
                page = context.new_page()
                page.goto(f"{base}/experiments/{exp}?size=50", wait_until="domcontentloaded")
                page.wait_for_selector("#runs tbody tr")
                ms = page.evaluate("() => performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd")
                page.close()
                if i:
                    interactive.append(ms)
            out["browser_runs_page_interactive_ms"] = _median_ms(interactive)
            drawn, visible = [], []
            for i in range(rounds + 1):
                page = context.new_page()
                page.goto(f"{base}/runs/{dense}", wait_until="domcontentloaded")
                page.wait_for_selector(".chart-box[data-ready='full']", timeout=120_000)
                draw_ms = float(page.locator(".chart-box").first.get_attribute("data-draw-ms"))
                at = page.evaluate("() => performance.now()")
                page.close()
                if i:
                    drawn.append(draw_ms)
                    visible.append(at)
            out["browser_chart_drawn_ms"] = _median_ms(drawn)
            out["browser_run_page_chart_visible_ms"] = _median_ms(visible)
        finally:
            browser.close()
    return out


def _mlflow_cols(db: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]


def peer_mlflow(peer_python: str, workdir: Path, n_runs: int, n_points: int, browser: bool) -> dict[str, object]:
    """MLflow's UI calls (and, with ``browser``, its runs page in Chromium) on the same data."""
    db_path = workdir / "mlflow.db"
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(workdir / "mlflow-server.log", "wb")
    command = [peer_python, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{db_path}",
               "--artifacts-destination", str(workdir / "mlflow-artifacts"), "--host", "127.0.0.1",
               "--port", str(port), "--workers", "1"]
    # No background job runner (MLflow's GenAI jobs): nothing here uses it, and it would
    # start worker processes that compete for the two cores.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    out: dict[str, object] = {}
    try:
        _wait_healthy(base, 180)
        with httpx.Client(base_url=base, timeout=60) as http:
            exp = http.post("/api/2.0/mlflow/experiments/create", json={"name": "bench-ui"}).json()["experiment_id"]
            dense = http.post("/api/2.0/mlflow/runs/create", json={"experiment_id": exp, "run_name": "dense",
                                                                     "start_time": int(time.time() * 1000)}).json()["run"]["info"]["run_id"]
    finally:
        _stop(server)
    # Filled with the server stopped (MLflow's SQLite database is not in WAL mode: a long
    # write would lock its readers out), then served afresh.
    t = time.perf_counter()
    rng = np.random.default_rng(0)
    now = int(time.time() * 1000)
    db = sqlite3.connect(str(db_path))
    ids = [f"{i:032x}" for i in range(1, n_runs)]
    cols = _mlflow_cols(db, "runs")
    base_row = {"source_type": "LOCAL", "source_name": "", "entry_point_name": "", "user_id": "bench",
                "status": "FINISHED", "source_version": "", "lifecycle_stage": "active",
                "artifact_uri": "/tmp/a", "experiment_id": int(exp), "deleted_time": None}
    names = [c for c in ["run_uuid", "name", "start_time", "end_time", *base_row] if c in cols]
    db.executemany(
        f"INSERT INTO runs ({','.join(names)}) VALUES ({','.join('?' * len(names))})",
        [tuple({**base_row, "run_uuid": rid, "name": f"run-{i}", "start_time": now - i * 1000,
                "end_time": now - i * 1000 + 500}[c] for c in names) for i, rid in enumerate(ids)],
    )
    models = np.array(["rf", "gbm", "lr"])[rng.integers(0, 3, len(ids))]
    for key, values in (("model", models), ("max_depth", rng.integers(2, 12, len(ids))), ("lr", rng.random(len(ids)))):
        db.executemany("INSERT INTO params (run_uuid, key, value) VALUES (?, ?, ?)",
                       [(rid, key, str(v)) for rid, v in zip(ids, values.tolist())])
    db.executemany("INSERT INTO tags (run_uuid, key, value) VALUES (?, 'team', ?)", [(rid, "risk") for rid in ids])
    db.executemany("INSERT INTO tags (run_uuid, key, value) VALUES (?, 'mlflow.runName', ?)",
                   [(rid, f"run-{i}") for i, rid in enumerate(ids)])
    for key in ("acc", "auc", "loss", "f1"):
        values = rng.random(len(ids)).tolist()
        db.executemany("INSERT INTO latest_metrics (run_uuid, key, value, is_nan, timestamp, step) VALUES (?, ?, ?, 0, ?, 0)",
                       [(rid, key, v, now) for rid, v in zip(ids, values)])
        db.executemany("INSERT INTO metrics (run_uuid, key, value, is_nan, timestamp, step) VALUES (?, ?, ?, 0, ?, 0)",
                       [(rid, key, v, now) for rid, v in zip(ids, values)])
    points = (np.sin(np.arange(n_points) / 1000.0) + rng.normal(0, 0.05, n_points)).tolist()
    db.executemany("INSERT INTO metrics (run_uuid, key, value, is_nan, timestamp, step) VALUES (?, 'train_loss', ?, 0, ?, ?)",
                   [(dense, v, now + s, s) for s, v in enumerate(points)])
    db.execute("INSERT INTO latest_metrics (run_uuid, key, value, is_nan, timestamp, step) VALUES (?, 'train_loss', ?, 0, ?, ?)",
               (dense, points[-1], now + n_points - 1, n_points - 1))
    db.commit()
    db.close()
    out["mlflow_fill_s"] = round(time.perf_counter() - t, 1)
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        _wait_healthy(base, 180)
        with httpx.Client(base_url=base, timeout=MLFLOW_TIMEOUT_S) as http:
            search = "/ajax-api/2.0/mlflow/runs/search"
            _progress(out)
            out["mlflow_runs_search_100"] = timed_post(http, search, {"experiment_ids": [exp], "max_results": 100,
                                                                       "order_by": ["attributes.start_time DESC"], "run_view_type": "ACTIVE_ONLY"})
            out["mlflow_runs_search_100_sorted_by_metric"] = timed_post(http, search, {
                "experiment_ids": [exp], "max_results": 100, "order_by": ["metrics.`auc` DESC"], "run_view_type": "ACTIVE_ONLY"})
            _progress(out)
            out["mlflow_chart_bulk_interval_320"] = timed(http, "/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval",
                                                          run_ids=dense, metric_key="train_loss", max_results=320)
        if browser:
            out.update(_mlflow_browser(base, exp))
    finally:
        _stop(server)
        log.close()
    return out


MLFLOW_TIMEOUT_S = 300


def _stop(server: subprocess.Popen) -> None:  # type: ignore[type-arg]
    """Stop ``mlflow server`` and what it started (uvicorn, its job runner and huey
    consumers): it runs in a session of its own, so its process group is ours to end."""
    try:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)


def _mlflow_browser(base: str, exp: str, rounds: int = 3) -> dict[str, object]:
    """MLflow's runs page until the first run's name is on screen (its table renders the
    rows the search returns; the newest run is run-0)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 860})
            shown = []
            for i in range(rounds + 1):
                page = context.new_page()
                try:
                    page.goto(f"{base}/#/experiments/{exp}/runs", wait_until="domcontentloaded")
                    page.get_by_text("run-0", exact=True).first.wait_for(timeout=60_000)
                except Exception as exc:  # noqa: BLE001 - reported in the JSON, not fatal
                    return {"mlflow_browser_runs_page_error": f"{type(exc).__name__}: {str(exc)[:200]}"}
                at = page.evaluate("() => performance.now()")
                page.close()
                if i:
                    shown.append(at)
            return {"mlflow_browser_runs_page_first_rows_ms": _median_ms(shown)}
        finally:
            browser.close()


def _wait_healthy(base: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"server at {base} did not start")
        time.sleep(0.2)


def timed_post(http: httpx.Client, url: str, body: dict[str, object], rounds: int = 3) -> dict[str, object]:
    try:
        r = http.post(url, json=body)  # warm-up
    except httpx.TimeoutException:
        return {"timeout_s": MLFLOW_TIMEOUT_S}
    assert r.status_code == 200, r.text[:500]
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        r = http.post(url, json=body)
        times.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200
    return {"median_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1), "bytes": len(r.content)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--no-browser", action="store_true", help="skip the Chromium timings")
    parser.add_argument("--peer-python", default=os.environ.get("PEER_PYTHON", ""),
                        help="a Python with mlflow installed (e.g. .venv-peer/bin/python); default $PEER_PYTHON")
    parser.add_argument("--no-peer", action="store_true", help="skip MLflow's side")
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
            _wait_healthy(base, 60)
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
            _progress(result)
            if not args.no_browser:
                result.update(browser_ours(base, exp, dense))
                _progress(result)
        finally:
            server.terminate()
            server.wait(timeout=15)
        if args.peer_python and not args.no_peer:
            result.update(peer_mlflow(args.peer_python, workdir, args.runs, args.points, not args.no_browser))
        elif not args.no_peer:
            result["mlflow"] = "not measured: pass --peer-python or set PEER_PYTHON (make bench builds .venv-peer)"
    print(json.dumps(result))


if __name__ == "__main__":
    main()
