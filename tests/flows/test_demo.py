"""``prefect-mlops demo`` (what ``make run`` runs) as a user runs it: a subprocess in an
empty directory with a fresh PREFECT_HOME and no configuration, so SQLite, a local
folder and Prefect's ephemeral API. It must exit 0 with the summary and leave no process
behind; run again, it trains on the next day's batch."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest


def _processes_with(marker: str) -> list[str]:
    """Command lines of live processes whose environment mentions ``marker``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if marker.encode() in (proc / "environ").read_bytes():
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _demo(cwd: Path, env: dict[str, str], port: int) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("prefect-mlops")
    return subprocess.run(
        [str(script), "demo", "--port", str(port)], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_demo_runs_the_pipeline_prints_a_summary_and_leaves_nothing_running(tmp_path: Path, helpers: Any) -> None:
    workdir = tmp_path / "clone"
    workdir.mkdir()
    home = tmp_path / "prefect-home"
    serving = tmp_path / "serving-state"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLOPS_"))}
    env.update(PREFECT_HOME=str(home), PREFECT_MLOPS_SERVING_STATE_DIR=str(serving))
    port = helpers.free_port()

    started = time.monotonic()
    first = _demo(workdir, env, port)
    took = time.monotonic() - started
    assert first.returncode == 0, f"{first.stdout}\n{first.stderr[-5000:]}"
    out = first.stdout
    assert "=== prefect-mlops demo: done ===" in out
    assert "churn version 1: promoted to @champion" in out
    assert f"version 1 at http://127.0.0.1:{port} answered" in out
    assert "Tracking database sqlite:///mlops.db" in out
    assert str(workdir / "mlops-artifacts") in out
    assert "prefect server start" in out
    # The embedded defaults: everything in the working directory and PREFECT_HOME.
    assert (workdir / "mlops.db").is_file() and (workdir / "mlops-artifacts" / "registry" / "churn" / "1").is_dir()
    assert (home / "prefect.db").is_file()  # the flow runs, for `prefect server start` to show
    print(f"demo on a fresh PREFECT_HOME: {took:.1f} s")

    # Nothing left running: not the scoring server, not Prefect's ephemeral API.
    assert not _port_open(port)
    assert not list(serving.glob("*.json")), "the scoring server's state file is still there"
    time.sleep(1)  # let the stopped processes be reaped
    assert _processes_with(str(home)) == []

    # Again: the next day's batch, a second version, the gate decides; still exits 0.
    second = _demo(workdir, env, port)
    assert second.returncode == 0, f"{second.stdout}\n{second.stderr[-5000:]}"
    assert "day=1" in second.stdout and "churn version 2:" in second.stdout
    assert "2 in experiment 'churn-ct-pipeline'" in second.stdout
    assert not _port_open(port)
    time.sleep(1)
    assert _processes_with(str(home)) == []
