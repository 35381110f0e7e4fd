"""Serving benchmark: our server vs ``mlflow models serve --env-manager local``.

Same 50-tree forest (each side serves the copy saved in its own format), same load
generator (wrk, 1-row JSON ``dataframe_split`` requests), one after the other on this
machine. Also measures the model's own 1-row predict time and batch scoring throughput
against ``predict`` on the whole frame in memory.

    python bench/serving.py <workdir>      (PEER_PYTHON: the python of .venv-peer)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _data  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DURATION = os.environ.get("BENCH_WRK_DURATION", "15s")
C1_ROUNDS = 3  # 1-connection latency: rounds of (predict timing, wrk, predict timing)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} not healthy after {timeout} s")


def _predict_ms(model, row, seconds: float = 2.0) -> float:
    """Median 1-row predict time of the model itself, over ``seconds``."""
    times = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 50:
        t = time.perf_counter()
        model.predict(row)
        times.append(time.perf_counter() - t)
    return _data.median(times) * 1000


def _paired_c1(url: str, body: str, workdir: Path, model, row) -> dict:
    """1-connection p50 against the model's own predict time measured just before and just
    after each wrk run: this machine's speed drifts by tens of percent within minutes, so
    each round compares latency with the predict time of the same moment (medians)."""
    rounds = []
    for _ in range(C1_ROUNDS):
        before = _predict_ms(model, row)
        measured = _wrk(url, body, 1, workdir, duration="5s")
        after = _predict_ms(model, row)
        rounds.append({**measured, "predict_ms": (before + after) / 2, "gap_ms": measured["p50_ms"] - (before + after) / 2})
    served = [r["server_predict_p50_ms"] for r in rounds if r["server_predict_p50_ms"] is not None]
    return {
        "rps": _data.median([r["rps"] for r in rounds]),
        "p50_ms": _data.median([r["p50_ms"] for r in rounds]),
        "p99_ms": _data.median([r["p99_ms"] for r in rounds]),
        "predict_ms": _data.median([r["predict_ms"] for r in rounds]),
        "gap_ms": _data.median([r["gap_ms"] for r in rounds]),
        "non_2xx": sum(r["non_2xx"] for r in rounds),
        # p50 latency minus the median predict time the server measured for the same requests.
        "server_gap_ms": _data.median([r["p50_ms"] - r["server_predict_p50_ms"] for r in rounds]) if served else None,
        "server_predict_ms": _data.median(served) if served else None,
        "rounds": rounds,
    }


# With one connection, wrk's Lua also collects the server's own predict time of every
# response (Server-Timing: predict;dur=<ms>; MLflow sends none) and prints its median.
_SERVER_TIMING_LUA = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
durations = {}
function response(status, headers, body)
  local timing = headers["Server-Timing"] or headers["server-timing"]
  if timing then
    local ms = string.match(timing, "dur=([%d%.]+)")
    if ms then table.insert(durations, tonumber(ms)) end
  end
end
function done(summary, latency, requests)
  local all = {}
  for _, thread in ipairs(threads) do
    for _, ms in ipairs(thread:get("durations")) do table.insert(all, ms) end
  end
  if #all > 0 then
    table.sort(all)
    io.write(string.format("server_predict_p50_ms: %f\\n", all[math.floor(#all / 2) + 1]))
  end
end
"""


def _wrk(url: str, body: str, connections: int, workdir: Path, duration: str = DURATION) -> dict:
    script = workdir / "post.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(body)}\n" + (_SERVER_TIMING_LUA if connections == 1 else "")
    )
    threads = min(connections, 2)
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}", "--latency", "-s", str(script), url + "/invocations"],
        capture_output=True, text=True, check=True,
    ).stdout

    def ms(label: str) -> float:
        match = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not match:
            return float("nan")
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    server = re.search(r"server_predict_p50_ms: ([\d.]+)", out)
    return {
        "rps": rps, "p50_ms": ms("50"), "p99_ms": ms("99"), "non_2xx": int(errors.group(1)) if errors else 0,
        "server_predict_p50_ms": float(server.group(1)) if server else None,
    }


def _serve(cmd: list[str], url: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env=env)
    _wait_healthy(url, proc)
    return proc


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def main(workdir: Path) -> dict:
    from tracking_plugin.models import load_model, save_model
    from serving_tasks.batch import score_table

    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install -y wrk (make bench does it)")
    workdir.mkdir(parents=True, exist_ok=True)
    model, x = _data.forest()
    ours_path, peer_path = workdir / "ours-model", workdir / "mlflow-model"
    shutil.rmtree(ours_path, ignore_errors=True)
    shutil.rmtree(peer_path, ignore_errors=True)
    save_model(model, str(ours_path), input_example=x.head(3))
    peer_python = os.environ["PEER_PYTHON"]
    subprocess.run(
        [peer_python, "-c",
         "import sys; sys.path.insert(0, sys.argv[1]); import _data, mlflow.sklearn; m, x = _data.forest(); "
         "mlflow.sklearn.save_model(m, sys.argv[2], input_example=x.head(3), serialization_format='cloudpickle')",
         str(ROOT / "bench"), str(peer_path)],
        check=True, capture_output=True,
    )
    row = x.head(1)
    body = json.dumps({"dataframe_split": {"columns": list(row.columns), "data": row.values.tolist()}})

    # The model alone.
    loaded = load_model(str(ours_path))
    times = []
    for _ in range(300):
        t = time.perf_counter()
        loaded.predict(row)
        times.append(time.perf_counter() - t)
    raw_times = []
    for _ in range(300):
        t = time.perf_counter()
        model.predict(row)
        raw_times.append(time.perf_counter() - t)
    results: dict = {"predict_1row_ms": _data.median(raw_times) * 1000, "pyfunc_predict_1row_ms": _data.median(times) * 1000}

    # Batch scoring vs in-memory predict on the whole frame.
    big, _ = _data.forest_data(n_rows=100_000, seed=1)
    big_path = workdir / "big.parquet"
    big.to_parquet(big_path)
    t = time.perf_counter()
    model.predict(big)
    in_memory = 100_000 / (time.perf_counter() - t)
    batch = score_table(str(ours_path), str(big_path), str(workdir / "scores.parquet"))
    results.update(in_memory_rows_per_s=in_memory, batch_predict_rows_per_s=batch.rows_per_second)

    # Our server.
    port = _port()
    url = f"http://127.0.0.1:{port}"
    proc = _serve([sys.executable, "-m", "serving_tasks.cli", "-m", str(ours_path), "-p", str(port)], url)
    try:
        _wrk(url, body, 8, workdir)  # warm-up
        results["ours_c8"] = _wrk(url, body, 8, workdir)
        results["ours_c1"] = _paired_c1(url, body, workdir, model, row)
    finally:
        _stop(proc)

    # MLflow's server, same model, same load.
    port = _port()
    url = f"http://127.0.0.1:{port}"
    mlflow_bin = str(Path(peer_python).parent / "mlflow")
    # mlflow models serve shells out to `uvicorn`: its venv's bin must be on PATH.
    peer_env = {**os.environ, "PATH": f"{Path(peer_python).parent}:{os.environ.get('PATH', '')}"}
    proc = _serve([mlflow_bin, "models", "serve", "-m", str(peer_path), "-p", str(port), "--env-manager", "local"],
                  url, env=peer_env)
    try:
        _wrk(url, body, 8, workdir)
        results["mlflow_c8"] = _wrk(url, body, 8, workdir)
        results["mlflow_c1"] = _paired_c1(url, body, workdir, model, row)
    finally:
        _stop(proc)
    return results


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
