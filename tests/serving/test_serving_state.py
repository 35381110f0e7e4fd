"""Deployed scoring servers' state folder under attack (issue 14 item 5), stopping a
deployed server (issue 21: ``prefect-mlops serve stop`` and ``stop_model_server``), and
``prefect-mlops serve`` with a model that is not there (issue 21).

Real ``python -m serving_tasks.server`` processes on real ports; the "attacker" plants
files and processes the way another local user (uid 65534 here) or a stale file would.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from support import free_port

from serving_tasks.deploy import start_server, state_dir, stop_server
from tracking_plugin.errors import BackendUnavailable, Conflict

STARTUP_TIMEOUT = float(os.environ.get("MLOPS_TEST_SERVER_STARTUP_TIMEOUT", "240"))
REPO_ROOT = Path(__file__).resolve().parents[2]
OTHER_UID = 65534  # "nobody": the tests run as root and hand files to another user


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def private_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A backend and a state folder of this test's own."""
    monkeypatch.setenv("PREFECT_MLOPS_TRACKING_URI", f"sqlite:///{tmp_path / 'mlops.db'}")
    monkeypatch.setenv("PREFECT_MLOPS_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    monkeypatch.setenv("PREFECT_MLOPS_SERVING_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


# The folder itself -----------------------------------------------------------------------------


def test_the_default_state_folder_is_private_to_the_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_MLOPS_SERVING_STATE_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where gettempdir() points
    folder = state_dir()
    assert folder == tmp_path / f"prefect-mlops-serving-{os.geteuid()}"
    info = os.lstat(folder)
    assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == os.geteuid()
    assert state_dir() == folder  # an existing private folder of ours is fine


def test_a_state_folder_someone_else_created_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_MLOPS_SERVING_STATE_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    planted = tmp_path / f"prefect-mlops-serving-{os.geteuid()}"
    planted.mkdir(mode=0o700)
    os.chown(planted, OTHER_UID, OTHER_UID)
    with pytest.raises(Conflict, match=rf"belongs to user id {OTHER_UID}.*PREFECT_MLOPS_SERVING_STATE_DIR"):
        state_dir()


def test_a_state_folder_open_to_others_or_a_symlink_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("PREFECT_MLOPS_SERVING_STATE_DIR", str(shared))
    with pytest.raises(Conflict, match=r"open to other users \(mode 777\).*chmod 700"):
        state_dir()
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(target)
    monkeypatch.setenv("PREFECT_MLOPS_SERVING_STATE_DIR", str(tmp_path / "link"))
    with pytest.raises(Conflict, match="not a directory"):
        state_dir()


def test_a_planted_log_symlink_is_replaced_not_followed(private_state: Path) -> None:
    port = free_port()
    victim = private_state.parent / "precious.txt"
    victim.write_text("do not truncate me")
    state_dir()
    (private_state / f"127.0.0.1-{port}.log").symlink_to(victim)
    with pytest.raises(BackendUnavailable, match="No model directory"):
        start_server(str(private_state.parent / "no-such-model"), port=port, timeout=STARTUP_TIMEOUT)
    assert victim.read_text() == "do not truncate me"
    log = private_state / f"127.0.0.1-{port}.log"
    info = os.lstat(log)
    assert stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
    assert "no-such-model" in log.read_text()


# Planted state files ---------------------------------------------------------------------------


@pytest.fixture
def foreign_server(private_state: Path, churn_model_dir: str) -> Iterator[dict[str, Any]]:
    """A scoring server deploy did not start, on a port whose state file was taken from a
    genuine deployment (so its config digest matches what deploy would compute)."""
    port = free_port()
    genuine = start_server(churn_model_dir, port=port, timeout=STARTUP_TIMEOUT, poll_interval=0)
    state = json.loads((private_state / f"127.0.0.1-{port}.json").read_text())
    assert stop_server(port)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("PREFECT_MLOPS_SERVE_INSTANCE_KEY", None)
    log = open(private_state.parent / "foreign.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "serving_tasks.cli", "-m", churn_model_dir, "-p", str(port), "--poll-interval", "0"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "the foreign server did not start"
            time.sleep(0.2)
        yield {"port": port, "proc": proc, "state": {**state, "pid": proc.pid, "key": "planted"}, "genuine": genuine}
    finally:
        stop_server(port)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        log.close()


def _plant(private_state: Path, port: int, state: dict[str, Any], owner: int | None = None) -> Path:
    path = private_state / f"127.0.0.1-{port}.json"
    path.write_text(json.dumps(state))
    if owner is not None:
        os.chown(path, owner, owner)
    return path


@pytest.mark.slow
def test_a_planted_state_file_never_makes_deploy_reuse_a_foreign_server(
    private_state: Path, churn_model_dir: str, foreign_server: dict[str, Any]
) -> None:
    port, proc = foreign_server["port"], foreign_server["proc"]
    # Written by another user: ignored, so the port counts as held by a foreign process.
    _plant(private_state, port, foreign_server["state"], owner=OTHER_UID)
    with pytest.raises(Conflict, match=rf"Port {port} on 127.0.0.1 is in use"):
        start_server(churn_model_dir, port=port, timeout=STARTUP_TIMEOUT, poll_interval=0)
    assert proc.poll() is None, "a server named by someone else's state file was stopped"
    assert stop_server(port) is False and proc.poll() is None

    # Ours, with everything right but the instance key: the server cannot prove it is the
    # one recorded, so it is replaced, never handed out as "reused".
    _plant(private_state, port, foreign_server["state"])
    server = start_server(churn_model_dir, port=port, timeout=STARTUP_TIMEOUT, poll_interval=0)
    try:
        assert not server.reused and server.pid != proc.pid
        assert httpx.get(server.endpoint + "/health").status_code == 200
        again = start_server(churn_model_dir, port=port, timeout=STARTUP_TIMEOUT, poll_interval=0)
        assert again.reused and again.pid == server.pid  # its own deployment is still reused
    finally:
        assert stop_server(port)


def test_a_state_file_naming_another_process_does_not_get_it_signalled(private_state: Path) -> None:
    state_dir()
    port = free_port()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        _plant(private_state, port, {"model_uri": "x", "host": "127.0.0.1", "port": port, "pid": sleeper.pid,
                                     "log_file": "/etc/passwd", "config": "", "key": "k"})
        assert stop_server(port) is False
        assert _alive(sleeper.pid)
    finally:
        sleeper.kill()
        sleeper.wait()


# Stopping a deployed server --------------------------------------------------------------------


@pytest.mark.slow
def test_serve_stop_and_the_stop_task_stop_a_deployed_server(
    private_state: Path, churn_model_dir: str, prefect_harness: None
) -> None:
    from prefect import flow

    from serving_tasks.tasks import stop_model_server

    cli = [str(Path(sys.executable).parent / "prefect-mlops"), "serve", "stop"]
    port = free_port()
    server = start_server(churn_model_dir, port=port, timeout=STARTUP_TIMEOUT, poll_interval=0)
    stopped = subprocess.run([*cli, "-p", str(port)], capture_output=True, text=True, timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    assert f"Stopped the scoring server on 127.0.0.1:{port}" in stopped.stdout
    assert not _alive(server.pid)
    again = subprocess.run([*cli, "-p", str(port)], capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and "No scoring server" in again.stderr

    server = start_server(churn_model_dir, port=port, timeout=STARTUP_TIMEOUT, poll_interval=0)

    @flow
    def retire() -> tuple[bool, bool]:
        return stop_model_server(port), stop_model_server(port)

    assert retire() == (True, False)
    assert not _alive(server.pid)


# `prefect-mlops serve` with a model that is not there -------------------------------------------


def _serve(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    cli = str(Path(sys.executable).parent / "prefect-mlops")
    base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_MLOPS_")}
    return subprocess.run([cli, "serve", *args], cwd=cwd, env={**base, **env}, capture_output=True,
                          text=True, timeout=300)


def test_serve_without_the_database_says_so_in_one_line_and_creates_none(tmp_path: Path) -> None:
    result = _serve(["-m", "models:/churn@champion", "-p", str(free_port())], tmp_path, {})
    assert result.returncode == 3
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert f"the tracking database sqlite:///{tmp_path / 'mlops.db'} does not exist" in output
    assert not (tmp_path / "mlops.db").exists()


def test_serve_of_a_missing_model_names_the_database_it_searched(tmp_path: Path) -> None:
    from tracking_plugin.client import TrackingClient

    database = tmp_path / "team.db"
    TrackingClient(tracking_uri=f"sqlite:///{database}", artifact_root=str(tmp_path / "a")).create_experiment("x")
    result = _serve(["-m", "models:/churn@champion", "-p", str(free_port())], tmp_path,
                    {"PREFECT_MLOPS_TRACKING_URI": f"sqlite:///{database}"})
    assert result.returncode == 3
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    [line] = [line for line in output.splitlines() if line.startswith("Error:")]
    assert "'churn'" in line and f"searched the tracking database sqlite:///{database}" in line


def test_serve_hides_the_database_password(tmp_path: Path) -> None:
    uri = "postgresql+psycopg://mlops:hunter2secret@127.0.0.1:1/mlops"
    result = _serve(["-m", "models:/churn@champion", "-p", str(free_port())], tmp_path,
                    {"PREFECT_MLOPS_TRACKING_URI": uri})
    output = result.stdout + result.stderr
    assert result.returncode == 3, output
    assert "hunter2secret" not in output
    assert "Traceback" not in output
    assert "postgresql+psycopg://mlops:***@127.0.0.1:1/mlops" in output
