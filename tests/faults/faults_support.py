"""Helpers of the fault-injection suite (``tests/faults``): things broken on purpose.

Every test here records what the fault cost (points, versions, requests) and asserts that
the answer is nothing. They run real processes and kill, stop or starve them for real, so
they are all marked ``slow`` (``make test`` runs them).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path


PROJECT_ROOT = Path(__file__).resolve().parents[2]


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child Python process: ours, with the project importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_MLOPS_")}
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def start_child(code: str, *, cwd: Path, **env: str) -> subprocess.Popen[str]:
    """Run ``code`` (dedented) in a new Python process; its stdout is a line protocol."""
    return subprocess.Popen(
        [sys.executable, "-u", "-c", textwrap.dedent(code)],
        cwd=cwd,
        env=child_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_until(process: subprocess.Popen[str], marker: str) -> list[str]:
    """Lines of the child's stdout up to and including the one starting with ``marker``."""
    assert process.stdout is not None
    lines: list[str] = []
    for line in process.stdout:
        lines.append(line.rstrip("\n"))
        if line.startswith(marker):
            return lines
    stderr = process.stderr.read() if process.stderr else ""
    raise AssertionError(f"child exited ({process.wait()}) before printing {marker!r}: {lines}\n{stderr[-3000:]}")


class DedicatedPostgres:
    """A PostgreSQL cluster of one test, which the test may restart or stop without
    disturbing the suite's shared cluster (``pg_server``)."""

    PG_BIN_CANDIDATES = ["/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/17/bin"]

    def __init__(self) -> None:
        import shutil
        import tempfile

        from support import free_port

        self.bin = next(Path(c) for c in self.PG_BIN_CANDIDATES if Path(c, "pg_ctl").exists())
        self.tmp = Path(tempfile.mkdtemp(prefix="mlops-pg-fault-"))
        self.data = self.tmp / "data"
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.tmp, "postgres")
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")
        self._opts = f"-p {self.port} -k {self.tmp} -c listen_addresses=127.0.0.1 -c fsync=off"

    def _run(self, *args: str) -> None:
        cmd = ["runuser", "-u", "postgres", "--", *args] if self.as_root else list(args)
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)

    def pg_ctl(self, action: str, *extra: str) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), *extra, action)

    def start(self) -> None:
        self.pg_ctl("start", "-o", self._opts, "-l", str(self.tmp / "log"), "-w")

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: open connections are cut, in-flight transactions
        rolled back, then the server comes back on the same port."""
        self.pg_ctl("restart", "-m", "fast", "-w", "-o", self._opts, "-l", str(self.tmp / "log"))

    def stop(self) -> None:
        self.pg_ctl("stop", "-m", "fast", "-w")

    def destroy(self) -> None:
        import shutil

        try:
            self.pg_ctl("stop", "-m", "immediate")
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(self.tmp, ignore_errors=True)

    def url(self, dbname: str = "postgres", password: str | None = None) -> str:
        user = "postgres" if password is None else f"postgres:{password}"
        return f"postgresql+psycopg://{user}@127.0.0.1:{self.port}/{dbname}"
