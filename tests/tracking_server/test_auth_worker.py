"""A worker that holds only a token: the CT pipeline against ``prefect-mlops server --auth``
in a subprocess whose environment has the server URL and ``MLFLOW_TRACKING_TOKEN`` (no
database URI, no S3 keys, no password); the scoring server ``deploy_model`` starts from it
gets the token (still valid after the server is stopped), and a caller with only a password
gives its scoring server a new token, never the password, revoked when that server is
stopped. Secrets never reach the serving state folder or its logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest
from support import free_port
from tracking_server.conftest import ServerProcess

ADMIN, ADMIN_PW = "worker-admin", "worker-admin-pw-0123"
WORKER, WORKER_PW = "ci-worker", "ci-worker-pw-98765"
M, X = "/api/2.0/mlflow", "/api/2.0/mlops"
DROPPED = ("PREFECT_MLOPS_", "AWS_", "MLFLOW_", "PREFECT_API_", "PREFECT_SERVER_")
SOURCE = "generator://churn?seed=0&day=0&n_rows=1500&drift=0&corrupt=false"

WORKER_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from prefect.testing.utilities import prefect_test_harness
    from prefect_mlops.flows.ct_pipeline import ct_pipeline

    with prefect_test_harness(server_startup_timeout=120):
        state = ct_pipeline(source=sys.argv[1], model_name=sys.argv[2], n_estimators=15, max_depth=6,
                            serve_port=int(sys.argv[3]), return_state=True)
        if not state.is_completed():
            sys.exit(f"pipeline failed: {state.message}")
        result = state.result()
        print("RESULT " + json.dumps({k: result[k] for k in ("model_version", "promoted", "champion_version")}))
    """
)


def _failure(done: subprocess.CompletedProcess) -> str:  # type: ignore[type-arg]
    """What went wrong in a worker subprocess, without Prefect's shutdown noise."""
    wanted = [line for line in done.stderr.splitlines() if "atexit" not in line and "EventsWorker" not in line]
    return done.stdout[-3000:] + "\n" + "\n".join(wanted)[:8000]


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(DROPPED)}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def auth_server(backend: dict[str, Any], start_server: Callable[..., ServerProcess]) -> ServerProcess:
    """SQLite + folder, or PostgreSQL + S3 (the worker holds no S3 keys: the server proxies)."""
    env = {**backend["env"], "PREFECT_MLOPS_AUTH_ADMIN_USERNAME": ADMIN, "PREFECT_MLOPS_AUTH_ADMIN_PASSWORD": ADMIN_PW}
    server = start_server(backend["db_uri"], backend["artifact_root"], "--auth", env=env)
    r = httpx.post(server.url + f"{M}/users/create", json={"username": WORKER, "password": WORKER_PW},
                   auth=(ADMIN, ADMIN_PW), timeout=30)
    assert r.status_code == 200, r.text
    return server


@pytest.fixture
def admin(auth_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=auth_server.url, auth=(ADMIN, ADMIN_PW), timeout=30) as c:
        yield c


def _stop_scoring_server(port: int, state_dir: Path) -> None:
    subprocess.run(
        [sys.executable, "-c", f"from serving_tasks.deploy import stop_server; stop_server({port})"],
        env=_clean_env(PREFECT_MLOPS_SERVING_STATE_DIR=str(state_dir)), check=True, timeout=60,
    )


def _assert_no_secret_in(folder: Path, *secrets: str) -> None:
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert files, f"nothing in {folder}"
    for path in files:
        data = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, f"a secret is written in {path}"


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def _token_status(server: ServerProcess, token: str) -> int:
    return httpx.get(f"{server.url}{X}/users/current", headers={"Authorization": f"Bearer {token}"}, timeout=30).status_code


def _scores(endpoint: str) -> None:
    from prefect_mlops.flows.data import source_from_uri

    rows = source_from_uri(SOURCE).load().drop(columns=["customer_id", "batch_date", "churn"]).head(3)
    body = {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}
    r = httpx.post(f"{endpoint}/invocations", json=body, timeout=30)
    assert r.status_code == 200, r.text
    assert len(r.json()["predictions"]) == 3


@pytest.mark.slow
def test_the_ct_pipeline_on_a_worker_that_holds_only_a_token(
    auth_server: ServerProcess, admin: httpx.Client, tmp_path: Path
) -> None:
    created = admin.post(f"{X}/tokens/create", json={"username": WORKER, "name": "ci worker"})
    assert created.status_code == 200, created.text
    token = created.json()["token"]
    model, port, state_dir, workdir = f"churn-{uuid.uuid4().hex[:6]}", free_port(), tmp_path / "serving", tmp_path / "w"
    workdir.mkdir()
    env = _clean_env(PREFECT_MLOPS_TRACKING_URI=auth_server.url, MLFLOW_TRACKING_TOKEN=token,
                     PREFECT_MLOPS_SERVING_STATE_DIR=str(state_dir))
    done = subprocess.run([sys.executable, "-c", WORKER_SCRIPT, SOURCE, model, str(port)], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=900)
    try:
        assert done.returncode == 0, _failure(done)
        result = json.loads(done.stdout.split("RESULT ", 1)[1].splitlines()[0])
        assert (result["model_version"], result["champion_version"]) == (1, 1), result
        # registered and promoted by the token's user: every audit row names it
        history = admin.get(f"{X}/registered-models/history", params={"name": model}).json()["transitions"]
        assert history and {t["actor"] for t in history} == {WORKER}, history
        assert any(t["subject"] == "champion" and t["to_value"] == "1" for t in history)
        # the scoring server deploy_model started got the worker's token (and reads the registry with it)
        state = json.loads(next(state_dir.glob("*.json")).read_text())
        server_env = _environ(int(state["pid"]))
        assert server_env.get("MLFLOW_TRACKING_TOKEN") == token
        assert not any(k in server_env for k in ("MLFLOW_TRACKING_PASSWORD", "AWS_SECRET_ACCESS_KEY"))
        _scores(f"http://127.0.0.1:{port}")
        _assert_no_secret_in(state_dir, token)
        assert token not in done.stdout + done.stderr
    finally:
        _stop_scoring_server(port, state_dir)
    assert _token_status(auth_server, token) == 200  # the worker's own token: never revoked by us

    # A caller holding only a password: its scoring server gets a new token, not the password.
    port2 = free_port()
    env = _clean_env(PREFECT_MLOPS_TRACKING_URI=auth_server.url, MLFLOW_TRACKING_USERNAME=WORKER,
                     MLFLOW_TRACKING_PASSWORD=WORKER_PW, PREFECT_MLOPS_SERVING_STATE_DIR=str(state_dir))
    started = subprocess.run(
        [sys.executable, "-c", "import sys; from serving_tasks.deploy import start_server; "
         f"s = start_server('models:/{model}@champion', port={port2}); print('PID', s.pid)"],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=300,
    )
    try:
        assert started.returncode == 0, started.stdout[-4000:] + started.stderr[-4000:]
        server_env = _environ(int(started.stdout.split("PID ", 1)[1].split()[0]))
        assert "MLFLOW_TRACKING_PASSWORD" not in server_env and "MLFLOW_TRACKING_USERNAME" not in server_env
        new_token = server_env["MLFLOW_TRACKING_TOKEN"]
        assert new_token.startswith("mlops_") and new_token != token
        listed = admin.get(f"{X}/tokens/list", params={"username": WORKER}).json()["tokens"]
        assert f"scoring-server 127.0.0.1:{port2}" in {t["name"] for t in listed}
        _scores(f"http://127.0.0.1:{port2}")
        _assert_no_secret_in(state_dir, token, new_token, WORKER_PW)
    finally:
        _stop_scoring_server(port2, state_dir)
    # created for that server, revoked with it (by a stop with no credentials: the token revokes itself)
    assert _token_status(auth_server, new_token) == 401
