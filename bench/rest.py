"""The mlflow client over HTTP: against `mlflow server` and against `prefect-mlops server`.

    python bench/rest.py <ours|mlflow|floor> <workdir>   -> prints one JSON object

Runs in MLflow's venv (the client is the same unmodified mlflow client on both sides);
starts the server under test as a subprocess on SQLite in ``workdir`` (one worker each,
artifacts proxied), then times, through the client:

- ``log_metric``: median of 300 synchronous calls;
- ``log_batch``: 1,000-point calls (MLflow's REST limit), points/s of the median call;
- lifecycle: create run + one log_batch (a param, a metric) + end, runs/s over 1,500 runs,
  which then are the data of
- ``search_runs``: ``metrics.acc > 0.5 and params.model = 'rf'`` over the 1,500 runs
  (about a sixth match), median of 20 calls.

``floor`` runs the same calls against ``bench/rest_floor.py``, which answers at once with
fixed bodies: the mlflow client's own cost, so ``mlflow / floor`` bounds any server's gain.

The server for our side is ``$OURS_SERVER`` (default: ``prefect-mlops`` next to
``$OURS_PYTHON``, or on PATH).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _data  # noqa: E402

N_RUNS = int(os.environ.get("BENCH_REST_RUNS", "1500"))
SEARCH_FILTER = "metrics.acc > 0.5 and params.model = 'rf'"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_command(side: str, workdir: Path, port: int) -> list[str]:
    db = f"sqlite:///{workdir / 'server.db'}"
    artifacts = str(workdir / "artifacts")
    if side == "floor":
        return [sys.executable, str(Path(__file__).resolve().with_name("rest_floor.py")), str(port)]
    if side == "mlflow":
        return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", db, "--artifacts-destination",
                artifacts, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    ours = os.environ.get("OURS_SERVER") or shutil.which("prefect-mlops") or "prefect-mlops"
    return [ours, "server", "--backend-store-uri", db, "--default-artifact-root", artifacts,
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]


def _wait(url: str, proc: subprocess.Popen, log: Path) -> None:  # type: ignore[type-arg]
    import urllib.request

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("server not healthy within 120 s")


def main(side: str, workdir: Path) -> dict:
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    port = _free_port()
    log = workdir / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(_server_command(side, workdir, port), stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(url, proc, log)
        client = MlflowClient(url)
        experiment_id = client.create_experiment("bench")

        run_id = client.create_run(experiment_id).info.run_id
        for i in range(20):  # warm up connections and caches
            client.log_metric(run_id, "warmup", float(i), step=i)
        times = []
        for i in range(300):
            t = time.perf_counter()
            client.log_metric(run_id, "loss", 1.0 / (i + 1), step=i)
            times.append(time.perf_counter() - t)
        log_metric_ms = _data.median(times) * 1000

        now = int(time.time() * 1000)
        batch_times = []
        for call in range(12):
            metrics = [Metric(f"m{i % 10}", float(i), now, call * 1000 + i) for i in range(1000)]
            t = time.perf_counter()
            client.log_batch(run_id, metrics=metrics)
            batch_times.append(time.perf_counter() - t)
        batch = _data.batch_result(batch_times[2:], 1000)

        rows = _data.search_rows(N_RUNS)
        started = time.perf_counter()
        for _rid, acc, model in rows:
            rid = client.create_run(experiment_id).info.run_id
            client.log_batch(rid, metrics=[Metric("acc", acc, now, 0)], params=[Param("model", model)])
            client.set_terminated(rid)
        runs_per_s = N_RUNS / (time.perf_counter() - started)

        hits = len(client.search_runs([experiment_id], SEARCH_FILTER, max_results=1000))
        search_times = []
        for _ in range(22):
            t = time.perf_counter()
            client.search_runs([experiment_id], SEARCH_FILTER, max_results=1000)
            search_times.append(time.perf_counter() - t)
        return {
            "side": side,
            "log_metric_ms": log_metric_ms,
            **batch,
            "runs_per_s": runs_per_s,
            "search_ms": _data.median(search_times[2:]) * 1000,
            "search_hits": hits,
            "search_runs": N_RUNS,
        }
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], Path(sys.argv[2]).resolve())))
