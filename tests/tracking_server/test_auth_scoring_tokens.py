"""The API tokens ``deploy_model`` / ``start_server`` create for scoring servers do not
outlive them: against a real ``prefect-mlops server --auth`` (SQLite) and real scoring
server processes, a redeploy revokes the replaced server's token (the tracking server
answers 401 to it) and leaves one live token per deployment, a stop revokes it even with
no credentials at hand (the token revokes itself), a server that fails to start leaves no
live token, a token the caller supplied is never revoked, and a tracking server that is
down turns the revocation into a warning that names the token and how to revoke it."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import numpy as np
import pandas as pd
import pytest
from pydantic import SecretStr
from support import free_port, poll
from tracking_server.conftest import CONSOLE_SCRIPT, ServerProcess

from serving_tasks.deploy import start_server as deploy
from serving_tasks.deploy import stop_server
from tracking_plugin.errors import BackendUnavailable
from tracking_plugin.settings import MlopsSettings

ADMIN, ADMIN_PW = "tok-admin", "tok-admin-pw-0123"
USER, USER_PW = "deployer", "deployer-pw-98765"
X = "/api/2.0/mlops"
STARTUP = 180.0


def _auth_server(start: Callable[..., ServerProcess], base: Path) -> ServerProcess:
    env = {"PREFECT_MLOPS_AUTH_ADMIN_USERNAME": ADMIN, "PREFECT_MLOPS_AUTH_ADMIN_PASSWORD": ADMIN_PW}
    server = start(f"sqlite:///{base / 'mlops.db'}", str(base / "artifacts"), "--auth", env=env)
    r = httpx.post(server.url + "/api/2.0/mlflow/users/create", json={"username": USER, "password": USER_PW},
                   auth=(ADMIN, ADMIN_PW), timeout=30)
    assert r.status_code == 200, r.text
    return server


@pytest.fixture(scope="module")
def auth_server(start_server: Callable[..., ServerProcess], tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    return _auth_server(start_server, tmp_path_factory.mktemp("tok-backend"))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    from sklearn.linear_model import LogisticRegression

    from tracking_plugin.models import save_model

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.uniform(0, 1, 60), "b": rng.uniform(0, 1, 60)})
    y = (X["a"] > X["b"]).astype(int)
    path = tmp_path_factory.mktemp("tok-model") / "m"
    save_model(LogisticRegression().fit(X, y), path, input_example=X.head(2))
    return str(path)


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    folder = tmp_path / "serving"
    monkeypatch.setenv("PREFECT_MLOPS_SERVING_STATE_DIR", str(folder))
    yield folder
    for state in folder.glob("*.json") if folder.exists() else ():  # a failed test leaves no server running
        stop_server(json.loads(state.read_text())["port"], settings=MlopsSettings(tracking_uri="sqlite://"))


def _password(server: ServerProcess) -> MlopsSettings:
    return MlopsSettings(tracking_uri=server.url, tracking_username=USER, tracking_password=SecretStr(USER_PW))


def _token_settings(server: ServerProcess, token: str) -> MlopsSettings:
    return MlopsSettings(tracking_uri=server.url, tracking_token=SecretStr(token))


def _server_token(pid: int) -> str:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    env = dict(item.decode().split("=", 1) for item in raw if b"=" in item)
    assert "MLFLOW_TRACKING_PASSWORD" not in env
    return env["MLFLOW_TRACKING_TOKEN"]


def _status(server: ServerProcess, token: str) -> int:
    return httpx.get(f"{server.url}{X}/users/current", headers={"Authorization": f"Bearer {token}"}, timeout=30).status_code


def _server_tokens(server: ServerProcess, port: int) -> list[dict[str, Any]]:
    """The user's tokens named for the scoring server on ``port``, revoked or not."""
    listed = httpx.get(f"{server.url}{X}/tokens/list", params={"username": USER}, auth=(ADMIN, ADMIN_PW), timeout=30)
    assert listed.status_code == 200, listed.text
    return [t for t in listed.json()["tokens"] if t["name"] == f"scoring-server 127.0.0.1:{port}"]


def _live_tokens(server: ServerProcess, port: int) -> list[dict[str, Any]]:
    return [t for t in _server_tokens(server, port) if t["revoked_time"] is None]


def _token_id(token: str) -> str:
    return token.split("_")[1]  # mlops_<id>_<secret>


def test_a_redeploy_revokes_the_replaced_servers_token_and_a_stop_revokes_the_last(
    auth_server: ServerProcess, model_dir: str, state_dir: Path
) -> None:
    port = free_port()
    first = deploy(model_dir, port=port, settings=_password(auth_server), timeout=STARTUP)
    first_token = _server_token(first.pid)
    assert _status(auth_server, first_token) == 200
    assert [t["token_id"] for t in _live_tokens(auth_server, port)] == [_token_id(first_token)]
    # the deployment records the token's id, never the token
    record = json.loads(next(state_dir.glob("*.json")).read_text())
    assert record["token"] == {"token_id": _token_id(first_token), "tracking_uri": auth_server.url}
    assert first_token not in json.dumps(record)

    second = deploy(model_dir, port=port, settings=_password(auth_server), max_batch_size=8, timeout=STARTUP)
    assert second.pid != first.pid and not second.reused
    second_token = _server_token(second.pid)
    assert second_token != first_token
    assert _status(auth_server, first_token) == 401
    assert _status(auth_server, second_token) == 200
    assert [t["token_id"] for t in _live_tokens(auth_server, port)] == [_token_id(second_token)]

    # Reusing the running deployment keeps its token.
    again = deploy(model_dir, port=port, settings=_password(auth_server), max_batch_size=8, timeout=STARTUP)
    assert again.reused and again.pid == second.pid
    assert _status(auth_server, second_token) == 200

    # Stopped from a shell with no credentials at all: the token revokes itself.
    assert stop_server(port, settings=MlopsSettings(tracking_uri=auth_server.url)) is True
    assert _status(auth_server, second_token) == 401
    assert _live_tokens(auth_server, port) == []
    assert not list(state_dir.glob("*.json"))


def test_a_token_the_caller_supplied_is_never_revoked(
    auth_server: ServerProcess, model_dir: str, state_dir: Path
) -> None:
    created = httpx.post(f"{auth_server.url}{X}/tokens/create", json={"name": "ci"}, auth=(USER, USER_PW), timeout=30)
    assert created.status_code == 200, created.text
    caller_token = created.json()["token"]
    port = free_port()
    # A deployment made with a password, replaced by one made with the caller's own token:
    # the created token goes, the caller's stays (and is not recorded as ours).
    minted = _server_token(deploy(model_dir, port=port, settings=_password(auth_server), timeout=STARTUP).pid)
    server = deploy(model_dir, port=port, settings=_token_settings(auth_server, caller_token),
                          max_batch_size=4, timeout=STARTUP)
    assert _server_token(server.pid) == caller_token
    assert _status(auth_server, minted) == 401
    assert "token" not in json.loads(next(state_dir.glob("*.json")).read_text())

    replaced = deploy(model_dir, port=port, settings=_token_settings(auth_server, caller_token),
                            max_batch_size=8, timeout=STARTUP)
    assert replaced.pid != server.pid
    assert _status(auth_server, caller_token) == 200
    assert stop_server(port, settings=_token_settings(auth_server, caller_token)) is True
    assert _status(auth_server, caller_token) == 200
    assert _live_tokens(auth_server, port) == []


def test_a_server_that_fails_to_start_leaves_no_live_token(
    auth_server: ServerProcess, state_dir: Path, tmp_path: Path
) -> None:
    port = free_port()
    with pytest.raises(BackendUnavailable, match="exited"):
        deploy(str(tmp_path / "no-such-model"), port=port, settings=_password(auth_server), timeout=STARTUP)
    ours = _server_tokens(auth_server, port)
    assert len(ours) == 1 and ours[0]["revoked_time"] is not None, ours


def test_a_crashed_servers_token_is_revoked_with_the_callers_credentials(
    auth_server: ServerProcess, model_dir: str, state_dir: Path
) -> None:
    port = free_port()
    crashed = deploy(model_dir, port=port, settings=_password(auth_server), timeout=STARTUP)
    token = _server_token(crashed.pid)
    os.killpg(crashed.pid, signal.SIGKILL)  # gone: its own token cannot be read from it any more
    os.waitpid(crashed.pid, 0)  # a child of this process (start_server launched it here)
    assert stop_server(port, settings=_password(auth_server)) is False  # nothing was running
    assert _status(auth_server, token) == 401
    assert _live_tokens(auth_server, port) == []


def test_a_tracking_server_that_is_down_turns_the_revocation_into_a_warning_that_says_how(
    start_server: Callable[..., ServerProcess], model_dir: str, state_dir: Path, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    base = tmp_path / "backend"
    base.mkdir()
    tracking = _auth_server(start_server, base)
    port = free_port()
    token = _server_token(deploy(model_dir, port=port, settings=_password(tracking), timeout=STARTUP).pid)
    tracking.stop()

    with caplog.at_level(logging.WARNING, logger="serving_tasks.deploy"):
        assert stop_server(port, settings=_password(tracking)) is True  # stopped all the same
    warning = caplog.text
    token_id = _token_id(token)
    assert f"Could not revoke API token {token_id}" in warning and "could not be reached" in warning
    assert f"prefect-mlops tokens revoke {token_id}" in warning and f"{X}/tokens/revoke" in warning
    assert token not in warning and USER_PW not in warning
    assert not list(state_dir.glob("*.json"))

    # The command the warning gives revokes it.
    db = f"sqlite:///{base / 'mlops.db'}"
    done = subprocess.run([CONSOLE_SCRIPT, "tokens", "revoke", token_id, "--backend-store-uri", db],
                          capture_output=True, text=True, timeout=120, env={**os.environ})
    assert done.returncode == 0, done.stdout + done.stderr
    restarted = start_server(db, str(base / "artifacts"), "--auth", env=tracking.env)
    assert _status(restarted, token) == 401



@pytest.mark.slow
def test_the_prefect_tasks_revoke_too_and_put_the_warning_in_the_task_runs_log(
    start_server: Callable[..., ServerProcess], model_dir: str, state_dir: Path, tmp_path: Path,
    prefect_harness: None, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect import flow

    from serving_tasks.tasks import deploy_model, stop_model_server

    base = tmp_path / "backend"
    base.mkdir()
    tracking = _auth_server(start_server, base)
    for name, value in (("TRACKING_URI", tracking.url), ("TRACKING_USERNAME", USER), ("TRACKING_PASSWORD", USER_PW)):
        monkeypatch.setenv(f"PREFECT_MLOPS_{name}", value)
    monkeypatch.delenv("PREFECT_MLOPS_BLOCK", raising=False)
    port = free_port()

    @flow
    def release(options: dict[str, Any]) -> int:
        return deploy_model(model_dir, port, poll_interval=None, timeout=STARTUP, **options).pid

    @flow
    def retire() -> bool:
        return stop_model_server(port)

    first = _server_token(release({}))
    second = _server_token(release({"max_batch_size": 8}))
    assert _status(tracking, first) == 401 and _status(tracking, second) == 200
    assert retire() is True
    assert _status(tracking, second) == 401

    third = _server_token(release({}))
    tracking.stop()
    state = retire(return_state=True)
    assert state.result() is True  # stopped all the same
    # the warning is in the flow run's log (the Prefect UI), not only on stderr
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # send the queued logs

    def run_warnings() -> list[str]:
        with get_client(sync_client=True) as client:
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id])))
        return [log.message for log in logs if log.level == logging.WARNING and log.task_run_id is not None]

    wanted = f"Could not revoke API token {_token_id(third)}"
    found = poll(lambda: [m for m in run_warnings() if wanted in m], timeout=30, what="the warning in the run log")
    assert "tokens revoke" in found[0] and third not in found[0] and USER_PW not in found[0]
