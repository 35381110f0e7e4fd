"""prefect-mlops vs MLflow on PostgreSQL, side by side in one run (issue 19).

    make bench-postgres        (or: PEER_PYTHON=.venv-peer/bin/python .venv/bin/python bench/pg.py)

Starts its own PostgreSQL cluster (as the test suite does: the server binaries under
/usr/lib/postgresql/*/bin, run as the ``postgres`` user when we are root, in a temporary
directory, with PostgreSQL's default durability: fsync and synchronous_commit on), creates
a template database per side (its own schema and the experiment ``bench``) and, from it, a
fresh database per side and workload. Each side runs in its own processes: ours in this
venv (bench/pg_ours.py), MLflow in ``PEER_PYTHON`` (bench/pg_peer.py). Timed parts
alternate in short rounds (ours, MLflow, ours, ...) so a noisy spell of the machine falls
on both; figures are medians. Progress and a table go to stderr; the last stdout line is
one JSON object with every figure.

Sizes (environment): BENCH_PG_SEARCH_RUNS (default ``100000,1000000``), BENCH_PG_PEER_MAX_RUNS
(largest search MLflow is given, default 1000000), BENCH_PG_HISTORY (default 1000000),
BENCH_PG_WRITERS (default 16), BENCH_PG_WRITER_POINTS (default 10000); BENCH_PG_REPLICAS
(server processes per side in the ``replicas`` workload, default 2).

BENCH_PG_ONLY (comma-separated, default all): run only these workloads, for iterating on
one of them: ``log_batch``, ``lifecycle``, ``search``, ``history``, ``writers`` (16
processes, each side's own client on the database) and ``replicas`` (the same writers
through the mlflow client over HTTP, split across ``prefect-mlops server`` replicas vs
``mlflow server`` processes on one database). A partial run prints its table and JSON line
but leaves bench/RESULTS.md alone, e.g.

    BENCH_PG_ONLY=replicas BENCH_PG_WRITER_POINTS=2000 PEER_PYTHON=.venv-peer/bin/python \
        .venv/bin/python bench/pg.py
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OURS = sys.executable
# Absolute (not resolved: the venv's python is a symlink): servers start in other folders.
PEER = os.path.abspath(os.environ.get("PEER_PYTHON", str(ROOT / ".venv-peer" / "bin" / "python")))
SCRIPTS = {"ours": (OURS, "pg_ours.py"), "mlflow": (PEER, "pg_peer.py")}

sys.path.insert(0, str(HERE))
import _data  # noqa: E402


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Cluster:
    """A throwaway PostgreSQL cluster in a temporary directory (tests/conftest.py's PgServer)."""

    def __init__(self) -> None:
        candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        if not candidates:
            raise SystemExit("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: "
                             "run `bash .ci/ensure-postgres` (installs them) and try again.")
        self.bin = candidates[0].parent
        self.tmp = Path(tempfile.mkdtemp(prefix="mlops-pg-bench-"))
        self.data = self.tmp / "data"
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.as_root = os.geteuid() == 0

    def _run(self, *args: str) -> None:
        cmd = ["runuser", "-u", "postgres", "--", *args] if self.as_root else list(args)
        subprocess.run(cmd, check=True, capture_output=True, text=True)

    def start(self) -> None:
        if self.as_root:
            shutil.chown(self.tmp, "postgres")
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")
        opts = (f"-p {self.port} -k {self.tmp} -c listen_addresses=127.0.0.1 -c max_connections=300 "
                "-c shared_buffers=256MB")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", opts, "-l", str(self.tmp / "log"), "-w", "start")

    def stop(self) -> None:
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop")
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def postmaster(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def url(self, dbname: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_db(self, name: str, template: str | None = None) -> str:
        import psycopg

        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        return self.url(name)


def _spawn(side: str, workload: str, url: str, workdir: str, *args: str,
           env: dict[str, str] | None = None) -> subprocess.Popen:  # type: ignore[type-arg]
    python, script = SCRIPTS[side]
    return subprocess.Popen(
        [python, str(HERE / script), workload, url, workdir, *args], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env=None if env is None else {**os.environ, **env},
    )


def _last_json(proc: subprocess.Popen, what: str, stdin: str = "") -> dict:  # type: ignore[type-arg]
    out, err = proc.communicate(stdin, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def _run_once(side: str, workload: str, url: str, *args: str, env: dict[str, str] | None = None) -> dict:
    with tempfile.TemporaryDirectory() as workdir:
        return _last_json(_spawn(side, workload, url, workdir, *args, env=env), f"{side} {workload}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# The writers of the ``replicas`` workload are the unmodified mlflow client on both sides.
# No retries: a 5xx counts as an error (the client's default would retry it up to 7 times
# with back-off, hiding it and possibly writing a batch twice).
HTTP_WRITER_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}


def _server_command(side: str, db_url: str, workdir: Path, port: int) -> list[str]:
    """One tracking server process on ``db_url`` with its defaults (one worker each)."""
    if side == "mlflow":
        return [PEER, "-m", "mlflow", "server", "--backend-store-uri", db_url, "--artifacts-destination",
                str(workdir / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    beside = Path(OURS).with_name("prefect-mlops")
    ours = str(beside) if beside.exists() else (shutil.which("prefect-mlops") or "prefect-mlops")
    return [ours, "server", "--backend-store-uri", db_url, "--default-artifact-root", str(workdir / "artifacts"),
            "--host", "127.0.0.1", "--port", str(port)]


class Servers:
    """``count`` tracking server processes of one side on one database, each in a session
    of its own (so stopping a process group ends what it started: uvicorn workers, MLflow's
    job runner); all of them are stopped on leaving, also after a failure."""

    def __init__(self, side: str, db_url: str, workdir: Path, count: int) -> None:
        self.side, self.db_url, self.workdir, self.count = side, db_url, workdir, count
        self.procs: list[subprocess.Popen] = []  # type: ignore[type-arg]
        self.urls: list[str] = []

    def __enter__(self) -> Servers:
        # MLflow's GenAI job runner is of no use here and would start more processes.
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        try:
            for i in range(self.count):
                port = _free_port()
                folder = self.workdir / f"server{i}"
                folder.mkdir(parents=True)
                with (folder / "log").open("wb") as out:
                    self.procs.append(subprocess.Popen(
                        _server_command(self.side, self.db_url, folder, port), stdout=out, stderr=subprocess.STDOUT,
                        cwd=folder, env=env, start_new_session=True))
                self.urls.append(f"http://127.0.0.1:{port}")
            for i, url in enumerate(self.urls):
                self._wait(i, url)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait(self, i: int, url: str) -> None:
        import urllib.request

        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.procs[i].poll() is not None:
                raise RuntimeError(f"{self.side} server {i} exited:\n{self.log(i)}")
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"{self.side} server {i} not healthy within 180 s:\n{self.log(i)}")

    def log(self, i: int) -> str:
        path = self.workdir / f"server{i}" / "log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
            try:  # whatever is left of the group (a worker that ignored SIGTERM)
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            if proc.poll() is None:
                proc.wait(timeout=30)

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Bench:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.count = 0

    def fresh(self, side: str) -> str:
        """A new database for one side, copied from its migrated template."""
        self.count += 1
        return self.cluster.create_db(f"{side}_{self.count}", template=f"{side}_tpl")

    def interleaved(self, workload: str, args: dict[str, list[str]], rounds: int, calls: dict[str, int]) -> dict[str, dict]:
        """Both sides prepare at once, then their timed rounds alternate (bench/run.py's
        ``_interleaved``); each reports the median of all its calls."""
        sides = list(calls)
        urls = {side: self.fresh(side) for side in sides}
        with tempfile.TemporaryDirectory() as workdir:
            procs = {side: _spawn(side, workload, urls[side], f"{workdir}/{side}", *args.get(side, []))
                     for side in sides}

            def read_until(side: str, done: Any) -> str:
                for line in procs[side].stdout:  # type: ignore[union-attr]
                    if done(line.strip()):
                        return line.strip()
                raise RuntimeError(f"{workload} ({side}) failed:\n{procs[side].stderr.read()[-3000:]}")  # type: ignore[union-attr]

            try:
                for side in sides:
                    read_until(side, lambda line: line == "ready")
                for number in range(rounds):
                    log(f"  {workload}: round {number + 1}/{rounds}")
                    for side in sides:
                        procs[side].stdin.write(f"go {calls[side]}\n")  # type: ignore[union-attr]
                        procs[side].stdin.flush()  # type: ignore[union-attr]
                        read_until(side, lambda line: line.startswith("["))
                return {side: _last_json(procs[side], f"{workload} ({side})", "end\n") for side in sides}
            finally:
                for proc in procs.values():
                    if proc.poll() is None:
                        proc.kill()

    def writers(self, side: str, writers: int, points: int, per_call: int, shared: int) -> dict:
        """``writers`` processes at once, each side's own client on the database:
        ``writers - shared`` into runs of their own, ``shared`` into one shared run (each its
        own metric key); then count what arrived."""
        url = self.fresh(side)
        shared_run = _run_once(side, "make_run", url)["run_id"]
        return _writers_round(side, [url] * writers, url, shared_run, points, per_call, shared,
                              watch={"postgres": [self.cluster.postmaster()]})

    def replicas(self, side: str, replicas: int, writers: int, points: int, per_call: int, shared: int) -> dict:
        """The same writers, each the unmodified mlflow client (in ``PEER_PYTHON``) over HTTP,
        split evenly across ``replicas`` server processes of ``side`` on one fresh database:
        ``prefect-mlops server`` or ``mlflow server``. The servers start (and are healthy)
        before the writers, and stop after them."""
        url = self.fresh(side)
        with tempfile.TemporaryDirectory() as workdir, Servers(side, url, Path(workdir), replicas) as servers:
            shared_run = _run_once("mlflow", "make_run", servers.urls[0], env=HTTP_WRITER_ENV)["run_id"]
            result = _writers_round(
                "mlflow", [servers.urls[i % replicas] for i in range(writers)], url, shared_run, points, per_call, shared,
                env=HTTP_WRITER_ENV, watch={"servers": [p.pid for p in servers.procs],
                                            "postgres": [self.cluster.postmaster()]})
        result["servers"] = replicas
        return result


def _tree_cpu(pid: int) -> float:
    """CPU seconds a process and all its descendants have used so far: its own time, its
    reaped children's (cutime/cstime) and, recursively, its live children's. Differences of
    two readings count every process of the tree, also those that came and went between."""
    tick = os.sysconf("SC_CLK_TCK")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = [int(c) for task in Path(f"/proc/{pid}/task").iterdir()
                    for c in (task / "children").read_text().split()]
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return sum(int(x) for x in fields[11:15]) / tick + sum(_tree_cpu(c) for c in children)


def _writers_round(script: str, urls: list[str], db_url: str, shared_run: str, points: int, per_call: int,
                   shared: int, env: dict[str, str] | None = None, watch: dict[str, list[int]] | None = None) -> dict:
    """One writer process per entry of ``urls`` (``script``'s side: "ours" or "mlflow"
    client, on a database URL or a server's), the first ``shared`` into ``shared_run``, the
    others into runs of their own; all start on one signal after connecting. Afterwards the
    points of every run are counted in ``db_url``. ``watch``: process trees (by name) whose
    CPU time from the start signal to the last writer's end is reported beside the writers'
    own (CPU per 1,000 points shows which part bounds the aggregate on a busy machine)."""
    watch = watch or {}
    with tempfile.TemporaryDirectory() as workdir:
        procs = [
            _spawn(script, "writer", url, f"{workdir}/{i}", shared_run if i < shared else "new", f"w{i}",
                   str(points), str(per_call), env=env)
            for i, url in enumerate(urls)
        ]
        try:
            for i, proc in enumerate(procs):
                line = proc.stdout.readline().strip()  # type: ignore[union-attr]
                if line != "ready":
                    raise RuntimeError(f"writer {i} ({urls[i]}) failed:\n{proc.stderr.read()[-3000:]}")  # type: ignore[union-attr]
            cpu_before = {name: sum(_tree_cpu(pid) for pid in pids) for name, pids in watch.items()}
            for proc in procs:
                proc.stdin.write("go\n")  # type: ignore[union-attr]
                proc.stdin.flush()  # type: ignore[union-attr]
            results = [_last_json(proc, f"writer {i} ({urls[i]})") for i, proc in enumerate(procs)]
            cpu = {name: sum(_tree_cpu(pid) for pid in pids) - cpu_before[name] for name, pids in watch.items()}
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    import _pgload

    expected: dict[str, int] = {}
    for r in results:
        expected[r["run_id"]] = expected.get(r["run_id"], 0) + r["acknowledged"]
    found = _pgload.count_points(db_url, list(expected))
    times = sorted(t for r in results for t in r["times"])
    wall = max(r["ended"] for r in results) - min(r["started"] for r in results)
    errors = [e for r in results for e in r["errors"]]
    acknowledged = sum(r["acknowledged"] for r in results)
    cpu["writers"] = sum(r["cpu_s"] for r in results)
    return {
        "points_per_s": acknowledged / wall,
        "cpu_ms_per_1000_points": {name: round(s * 1000 / max(1, acknowledged) * 1000, 2) for name, s in cpu.items()},
        "wall_s": wall,
        "p50_ms": times[len(times) // 2] * 1000,
        "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))] * 1000,
        "calls": len(times),
        "errors": len(errors),
        "error_samples": errors[:3],
        "lost_points": sum(max(0, expected[k] - found[k]) for k in expected),
        "extra_points": sum(max(0, found[k] - expected[k]) for k in expected),
    }


class _Rows(list):  # type: ignore[type-arg]
    """The table's rows; each is logged as it comes (a long run shows its figures early)."""

    def append(self, row: tuple[str, str, str, str, str]) -> None:
        log("  -> " + " | ".join(row))
        super().append(row)

    def extend(self, rows: Any) -> None:
        for row in rows:
            self.append(row)


def _sizes(name: str, default: str) -> list[int]:
    return [int(x) for x in os.environ.get(name, default).split(",") if x.strip()]


WORKLOADS = ("log_batch", "lifecycle", "search", "history", "writers", "replicas")


def _only() -> set[str]:
    """The workloads BENCH_PG_ONLY names (all when unset); an unknown name is an error."""
    names = {x.strip() for x in os.environ.get("BENCH_PG_ONLY", "").split(",") if x.strip()}
    unknown = names - set(WORKLOADS)
    if unknown:
        raise SystemExit(f"BENCH_PG_ONLY={os.environ['BENCH_PG_ONLY']!r}: unknown workload(s) {sorted(unknown)}; "
                         f"use a comma-separated subset of {', '.join(WORKLOADS)}.")
    return names or set(WORKLOADS)


def main() -> None:
    only = _only()
    results: dict[str, Any] = {}
    rows = _Rows()
    cluster = Cluster()
    log(f"PostgreSQL: starting a cluster in {cluster.tmp} (port {cluster.port})")
    cluster.start()
    started = time.time()
    try:
        bench = Bench(cluster)
        for side in SCRIPTS:
            _run_once(side, "init", cluster.create_db(f"{side}_tpl"))
        if "log_batch" in only:
            log("log_batch")
            r = bench.interleaved("log_batch", {}, rounds=7, calls={"ours": 1, "mlflow": 4})
            o, p = r["ours"]["log_batch_points_per_s"], r["mlflow"]["log_batch_points_per_s"]
            results["log_batch"] = r
            rows.append(("log_batch throughput (ours 100,000-point calls, MLflow 1,000: its limit)",
                         f"{o:,.0f} pts/s", f"{p:,.0f} pts/s", f"{o / p:.1f}x", ">= 10x"))

        if "lifecycle" in only:
            log("lifecycle")
            r = bench.interleaved("lifecycle", {}, rounds=6, calls={"ours": 40, "mlflow": 10})
            o, p = r["ours"]["runs_per_s"], r["mlflow"]["runs_per_s"]
            results["lifecycle"] = r
            rows.append(("run create + 2 params + 1 metric + end (median run)", f"{o:,.0f} runs/s",
                         f"{p:,.0f} runs/s", f"{o / p:.1f}x", ">= 5x"))

        peer_max = int(os.environ.get("BENCH_PG_PEER_MAX_RUNS", "1000000"))
        for n in _sizes("BENCH_PG_SEARCH_RUNS", "100000,1000000") if "search" in only else []:
            log(f"search_runs over {n:,} runs (loading with COPY)")
            with_peer = n <= peer_max
            calls = {"ours": 5, "mlflow": 1} if with_peer else {"ours": 5}
            # MLflow takes seconds per search over a million runs: fewer rounds there.
            r = bench.interleaved("search", {"ours": [str(n)], "mlflow": [str(n)]},
                                  rounds=9 if n <= 100_000 else 4, calls=calls)
            results[f"search_{n}"] = r
            o = r["ours"]["search_ms"]
            target = "< 50 ms and >= 5x" if n <= 100_000 else "< 200 ms"
            what = f"search_runs metric + param filter, {n:,} runs ({r['ours']['search_hits']} hits, page 1,000)"
            if with_peer:
                p = r["mlflow"]["search_ms"]
                rows.append((what, f"{o:.1f} ms", f"{p:.0f} ms", f"{p / o:.1f}x", target))
            else:
                rows.append((what, f"{o:.1f} ms", f"not run (BENCH_PG_PEER_MAX_RUNS={peer_max:,})", "-", target))

        for n in _sizes("BENCH_PG_HISTORY", "1000000") if "history" in only else []:
            log(f"get_metric_history of {n:,} points")
            r = bench.interleaved("history", {"ours": [str(n)], "mlflow": [str(n)]}, rounds=2,
                                  calls={"ours": 2, "mlflow": 1})
            results[f"history_{n}"] = r
            o, p = r["ours"]["history_s"], r["mlflow"]["history_s"]
            rows.append((f"get_metric_history, {n:,} points", f"{o:.2f} s", f"{p:.2f} s", f"{p / o:.1f}x", "< 1 s"))

        writers = int(os.environ.get("BENCH_PG_WRITERS", "16"))
        points = int(os.environ.get("BENCH_PG_WRITER_POINTS", "10000"))
        per_call, shared = 1000, 4
        shape = (f"{writers} writer processes x {points:,} points ({per_call}-point log_batch calls; "
                 f"{writers - shared} into own runs, {shared} into one shared run)")
        if "writers" in only:
            runs: dict[str, list[dict]] = {"ours": [], "mlflow": []}
            for number in range(2):  # alternate: ours, MLflow, ours, MLflow
                for side in runs:
                    log(f"{writers} writers ({side}, round {number + 1}/2)")
                    runs[side].append(bench.writers(side, writers, points, per_call, shared))
            results["writers"] = runs
            rows.extend(_writer_rows(f"{shape}: aggregate", runs))

        if "replicas" in only:
            replicas = int(os.environ.get("BENCH_PG_REPLICAS", "2"))
            runs = {"ours": [], "mlflow": []}
            for number in range(2):
                for side in runs:
                    log(f"{writers} mlflow-client writers via {replicas} {side} servers (round {number + 1}/2)")
                    runs[side].append(bench.replicas(side, replicas, writers, points, per_call, shared))
            results["replicas"] = runs
            rows.extend(_writer_rows(
                f"same {writers} writers as the mlflow client over HTTP, {writers // replicas} per server, "
                f"{replicas} `prefect-mlops server` vs {replicas} `mlflow server` processes (1 worker each): aggregate",
                runs))

            def cpu(side: str) -> str:
                return " / ".join(f"{_data.median([w['cpu_ms_per_1000_points'][part] for w in runs[side]]):.0f}"
                                  for part in ("writers", "servers", "postgres"))

            rows.append(("same: CPU ms per 1,000 points: mlflow clients / servers / PostgreSQL (median round)",
                         cpu("ours"), cpu("mlflow"), "-", "-"))
    finally:
        cluster.stop()
    results["rows"] = rows
    results["seconds"] = time.time() - started
    table = "| what | prefect-mlops | MLflow | ratio | target |\n|---|---|---|---|---|\n"
    table += "".join(f"| {' | '.join(r)} |\n" for r in rows)
    results["table"] = table
    log("\n" + table)
    if only == set(WORKLOADS):
        _write_results(table)
    else:
        log(f"BENCH_PG_ONLY={os.environ['BENCH_PG_ONLY']}: a partial run, bench/RESULTS.md left as it was")
    print(json.dumps(results))


def _writer_rows(what: str, runs: dict[str, list[dict]]) -> list[tuple[str, str, str, str, str]]:
    """The aggregate row (median of the rounds) and the p99 / errors / lost row (errors and
    lost points summed over the rounds) of a many-writers workload."""

    def med(side: str, key: str) -> float:
        return _data.median([w[key] for w in runs[side]])

    def total(side: str, key: str) -> int:
        return sum(w[key] for w in runs[side])

    return [
        (what, f"{med('ours', 'points_per_s'):,.0f} pts/s", f"{med('mlflow', 'points_per_s'):,.0f} pts/s",
         f"{med('ours', 'points_per_s') / med('mlflow', 'points_per_s'):.1f}x", ">= 10x"),
        ("same: p99 per call / errors / lost points (both rounds)",
         f"{med('ours', 'p99_ms'):.1f} ms / {total('ours', 'errors')} / {total('ours', 'lost_points')}",
         f"{med('mlflow', 'p99_ms'):.1f} ms / {total('mlflow', 'errors')} / {total('mlflow', 'lost_points')}",
         "-", "0 errors, 0 lost"),
    ]


def _write_results(table: str) -> None:
    """Put this run's table into bench/RESULTS.md's PostgreSQL section (beside the SQLite
    table that ``make bench`` writes), with the date and machine."""
    import datetime as dt

    import run  # bench/run.py: the section markers and the machine description

    section = run.postgres_section(
        f"## PostgreSQL (issue 19)\n\nMeasured {dt.date.today().isoformat()} by `make bench-postgres`, both sides "
        f"in one run on one PostgreSQL 15 server started by the bench (fsync on): {run._machine()}; "
        f"{run._versions()}. Medians; read the ratios.\n\n{table}"
    )
    run.replace_section(run.PG_BEGIN, run.PG_END, section)


if __name__ == "__main__":
    main()
