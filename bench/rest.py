"""The mlflow client over HTTP: against `mlflow server` and against `prefect-mlops server`.

    python bench/rest.py <ours|mlflow> <workdir>          -> prints one JSON object
    python bench/rest.py ours <workdir> --auth            -> the same, with authentication on

Runs in MLflow's venv (the client is the same unmodified mlflow client on both sides);
starts the server under test as a subprocess on SQLite in ``workdir`` (one worker each,
artifacts proxied), then times, through the client:

- ``log_metric``: median of 300 synchronous calls;
- ``log_batch``: 1,000-point calls (MLflow's REST limit), points/s of the median call;
- lifecycle: create run + one log_batch (a param, a metric) + end, runs/s over 1,500 runs,
  which then are the data of
- ``search_runs``: ``metrics.acc > 0.5 and params.model = 'rf'`` over the 1,500 runs
  (about a sixth match), median of 20 calls.

With ``--auth`` our server runs with ``--auth`` and the client is a non-admin user (the
creator of the experiment, so every call goes through the permission check) holding
``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``; the answer adds
``log_metric_ms_token`` (the same 300 calls with ``MLFLOW_TRACKING_TOKEN``) and
``log_metric_ms_first_login`` (one uncached password check: argon2). The cost of auth per
request is ``log_metric_ms`` with ``--auth`` minus without.

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


AUTH_ADMIN, AUTH_ADMIN_PW = "bench-admin", "bench-admin-password"
AUTH_USER, AUTH_USER_PW = "bench-user", "bench-user-password"


def _server_command(side: str, workdir: Path, port: int, auth: bool = False) -> list[str]:
    db = f"sqlite:///{workdir / 'server.db'}"
    artifacts = str(workdir / "artifacts")
    if side == "mlflow":
        return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", db, "--artifacts-destination",
                artifacts, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    ours = os.environ.get("OURS_SERVER") or shutil.which("prefect-mlops") or "prefect-mlops"
    return [ours, "server", "--backend-store-uri", db, "--default-artifact-root", artifacts,
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1", *(["--auth"] if auth else [])]


def _auth_setup(url: str) -> str:
    """A non-admin user (the client's credentials from now on) and an API token of it."""
    import base64
    import urllib.request

    def call(path: str, body: dict, user: str, password: str) -> dict:
        request = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST", headers={
            "Content-Type": "application/json",
            "Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    call("/api/2.0/mlflow/users/create", {"username": AUTH_USER, "password": AUTH_USER_PW}, AUTH_ADMIN, AUTH_ADMIN_PW)
    token = call("/api/2.0/mlops/tokens/create", {"name": "bench"}, AUTH_USER, AUTH_USER_PW)["token"]
    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = AUTH_USER, AUTH_USER_PW
    return str(token)


def _log_metric_ms(client, run_id: str, key: str) -> float:  # type: ignore[no-untyped-def]
    times = []
    for i in range(300):
        t = time.perf_counter()
        client.log_metric(run_id, key, 1.0 / (i + 1), step=i)
        times.append(time.perf_counter() - t)
    return _data.median(times) * 1000


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


def main(side: str, workdir: Path, auth: bool = False) -> dict:
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    if auth and side != "ours":
        raise SystemExit("--auth is for our server (mlflow server's basic-auth app is not benchmarked here)")
    env = dict(os.environ)
    if auth:
        env.update(PREFECT_MLOPS_AUTH_ADMIN_USERNAME=AUTH_ADMIN, PREFECT_MLOPS_AUTH_ADMIN_PASSWORD=AUTH_ADMIN_PW)
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    port = _free_port()
    log = workdir / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(_server_command(side, workdir, port, auth), stdout=out, stderr=subprocess.STDOUT,
                                cwd=workdir, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(url, proc, log)
        token = _auth_setup(url) if auth else None
        client = MlflowClient(url)
        experiment_id = client.create_experiment("bench")

        run_id = client.create_run(experiment_id).info.run_id
        first_login_ms = None
        if auth:  # one uncached check of the password (a new header: the cache is keyed by it)
            os.environ["MLFLOW_TRACKING_PASSWORD"] = AUTH_USER_PW + "-changed"
            _change_password(url, AUTH_USER_PW + "-changed")
            t = time.perf_counter()
            client.log_metric(run_id, "first", 1.0)
            first_login_ms = (time.perf_counter() - t) * 1000
        for i in range(20):  # warm up connections and caches
            client.log_metric(run_id, "warmup", float(i), step=i)
        log_metric_ms = _log_metric_ms(client, run_id, "loss")
        extra: dict = {}
        if auth:
            password = os.environ.pop("MLFLOW_TRACKING_PASSWORD")
            user = os.environ.pop("MLFLOW_TRACKING_USERNAME")
            os.environ["MLFLOW_TRACKING_TOKEN"] = str(token)
            for i in range(20):
                client.log_metric(run_id, "warmup-token", float(i), step=i)
            extra = {"auth": True, "log_metric_ms_token": _log_metric_ms(client, run_id, "loss-token"),
                     "log_metric_ms_first_login": first_login_ms}
            del os.environ["MLFLOW_TRACKING_TOKEN"]
            os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = user, password

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
            **extra,
        }
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _change_password(url: str, new: str) -> None:
    import base64
    import urllib.request

    request = urllib.request.Request(
        url + "/api/2.0/mlflow/users/update-password", method="PATCH",
        data=json.dumps({"username": AUTH_USER, "password": new}).encode(),
        headers={"Content-Type": "application/json", "Authorization": "Basic "
                 + base64.b64encode(f"{AUTH_ADMIN}:{AUTH_ADMIN_PW}".encode()).decode()})
    urllib.request.urlopen(request, timeout=30).close()


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], Path(sys.argv[2]).resolve(), auth="--auth" in sys.argv[3:])))
