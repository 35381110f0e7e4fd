"""Our own client over HTTP against ``prefect-mlops server`` (SQLite + a local folder).

    python bench/ours_http.py <workdir>   -> prints one JSON object

- ``buffered_log_metric_us``: median time to the caller of ``log_metric(...,
  synchronous=False)`` with the tracking URI set to the server (points go out in
  ``log-batch`` calls from the background thread); target < 20 us;
- ``history_100k_s``: median time of ``TrackingClient.get_metric_history`` for a metric
  of 100,000 points, fetched over HTTP and turned into entities; target < 0.5 s;
- ``history_100k_cpu_s``: the CPU seconds that fetch costs, this process plus the server
  process (from /proc; None where there is none): unlike the wall time, it does not grow
  when other programs share the cores, so it is the number to compare across busy runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _data  # noqa: E402

POINTS = 100_000


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process ``pid`` (Linux /proc), or None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start_server(workdir: Path) -> tuple[subprocess.Popen, str]:  # type: ignore[type-arg]
    port = _free_port()
    script = Path(sys.executable).with_name("prefect-mlops")
    log = (workdir / "server.log").open("wb")
    process = subprocess.Popen(
        [str(script), "server", "--backend-store-uri", f"sqlite:///{workdir / 'server.db'}",
         "--default-artifact-root", str(workdir / "artifacts"), "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).text == "OK":
                return process, url
        except httpx.HTTPError:
            time.sleep(0.1)
    process.terminate()
    raise RuntimeError(f"server did not start: {(workdir / 'server.log').read_text()[-2000:]}")


def run(workdir: Path) -> dict:
    process, url = _start_server(workdir)
    try:
        os.environ["PREFECT_MLOPS_TRACKING_URI"] = url
        os.chdir(workdir)
        import tracking_plugin as mlops
        from tracking_plugin.client import TrackingClient
        from tracking_plugin.entities import Metric

        mlops.set_experiment("bench-http")
        buffered = []
        with mlops.start_run():
            for i in range(20_000):
                t = time.perf_counter()
                mlops.log_metric("buffered", 1.0 / (i + 1), step=i, synchronous=False)
                buffered.append(time.perf_counter() - t)
            mlops.flush()
        client = TrackingClient()
        run = client.create_run(client.get_experiment_by_name("bench-http").experiment_id)
        now = int(time.time() * 1000)
        client.log_batch(run.info.run_id, metrics=[Metric("loss", 1.0 / (i + 1), now + i, i) for i in range(POINTS)])
        fetches, cpu = [], []
        for _ in range(7):
            server_cpu, own_cpu = _cpu_seconds(process.pid), time.process_time()
            t = time.perf_counter()
            history = client.get_metric_history(run.info.run_id, "loss")
            fetches.append(time.perf_counter() - t)
            after = _cpu_seconds(process.pid)
            if server_cpu is not None and after is not None:
                cpu.append(time.process_time() - own_cpu + after - server_cpu)
            assert len(history) == POINTS, len(history)
        written = len(client.get_metric_history(mlops.last_active_run().info.run_id, "buffered"))
        assert written == 20_000, written
        return {
            "buffered_log_metric_us": _data.median(buffered) * 1e6,
            "history_100k_s": _data.median(fetches),
            "history_100k_cpu_s": _data.median(cpu) if cpu else None,
        }
    finally:
        process.terminate()
        process.wait(timeout=30)


if __name__ == "__main__":
    print(json.dumps(run(Path(sys.argv[1]).resolve())))
