"""Our extensions under /api/2.0/mlops/: gate decisions, gated promotion, audit history,
rollback, and run <-> Prefect run lookups, over what our own store recorded."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest

from tracking_plugin.entities import ModelVersionStatus
from tracking_plugin.store.sql import SqlStore

MLOPS = "/api/2.0/mlops"


@pytest.fixture(scope="module")
def setup(start_server: Callable[..., Any], tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, SqlStore]:
    base = tmp_path_factory.mktemp("mlops-ext")
    db_uri = f"sqlite:///{base / 'mlops.db'}"
    server = start_server(db_uri, str(base / "artifacts"))
    return server, SqlStore.from_uri(db_uri)


def _version(store: SqlStore, name: str) -> int:
    mv = store.create_model_version(name, f"/models/{name}")
    store.finish_model_version(name, mv.version, status=ModelVersionStatus.READY, storage_location=f"/models/{name}")
    return mv.version


def test_gate_decision_promote_history_and_rollback(setup: tuple[Any, SqlStore]) -> None:
    server, store = setup
    name = "ext-" + uuid.uuid4().hex[:6]
    v1, v2, v3 = (_version(store, name) for _ in range(3))
    store.record_gate_decision(name, v1, passed=True, reason="auc 0.91 >= 0.85", details={"auc": 0.91})
    store.record_gate_decision(name, v2, passed=True, reason="auc 0.93 >= 0.85", details={"auc": 0.93})
    store.record_gate_decision(name, v3, passed=False, reason="auc 0.70 < 0.85", details={"auc": 0.70})
    with httpx.Client(base_url=server.url + MLOPS) as http:
        decision = http.get("/model-versions/gate-decision", params={"name": name, "version": v3}).json()["gate_decision"]
        assert decision["passed"] is False and decision["details"] == {"auc": 0.70} and decision["version"] == "3"

        for version in (v1, v2):
            r = http.post("/registered-models/promote", json={"name": name, "version": str(version), "reason": "nightly", "actor": "ci"})
            assert r.status_code == 200, r.text
            assert r.json()["model_version"]["aliases"] == ["champion"]
        refused = http.post("/registered-models/promote", json={"name": name, "version": str(v3)})
        assert refused.status_code == 400 and refused.json()["error_code"] == "INVALID_STATE", refused.text
        assert store.get_model_version_by_alias(name, "champion").version == v2  # unchanged by the refusal

        back = http.post("/registered-models/rollback", json={"name": name, "reason": "latency regression", "actor": "oncall"})
        assert back.status_code == 200, back.text
        assert back.json()["model_version"]["version"] == "1"
        history = http.get("/registered-models/history", params={"name": name}).json()["transitions"]
        moves = [(t["kind"], t["subject"], t["from_value"], t["to_value"], t["actor"], t["reason"]) for t in history]
        assert moves[-3:] == [
            ("alias", "champion", None, "1", "ci", "nightly"),
            ("alias", "champion", "1", "2", "ci", "nightly"),
            ("alias", "champion", "2", "1", "oncall", "latency regression"),
        ]
        only_v2 = http.get("/registered-models/history", params={"name": name, "version": "2"}).json()["transitions"]
        assert {t["version"] for t in only_v2} == {"2"}
        missing = http.get("/model-versions/gate-decision", params={"name": name, "version": "99"})
        assert missing.status_code == 404 and missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"


def test_run_and_prefect_run_lookups(setup: tuple[Any, SqlStore]) -> None:
    server, store = setup
    experiment_id = store.create_experiment("prefect-lookups-" + uuid.uuid4().hex[:6], "/tmp/unused")
    flow_run_id = str(uuid.uuid4())
    run = store.create_run(experiment_id, user_id="ana", start_time=1, prefect_flow_run_id=flow_run_id)
    with httpx.Client(base_url=server.url + MLOPS) as http:
        found = http.get("/runs/by-prefect-id", params={"flow_run_id": flow_run_id}).json()["run"]
        assert found["info"]["run_id"] == run.info.run_id
        info = http.get("/runs/get", params={"run_id": run.info.run_id}).json()["run"]["info"]
        assert info["prefect_flow_run_id"] == flow_run_id
        unknown = http.get("/runs/by-prefect-id", params={"flow_run_id": str(uuid.uuid4())})
        assert unknown.status_code == 404 and unknown.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
        both = http.get("/runs/by-prefect-id", params={"flow_run_id": "a", "task_run_id": "b"})
        assert both.status_code == 400 and "exactly one" in both.json()["message"]


def test_ui_command_serves_the_local_default_backend(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    from support import free_port

    port = free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("prefect-mlops")), "ui", "--port", str(port)],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).text == "OK":
                    break
            except httpx.HTTPError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
        created = httpx.post(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/create", json={"name": "local"})
        assert created.status_code == 200, created.text
        assert (tmp_path / "mlops.db").exists()
        run = httpx.post(f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/create",
                         json={"experiment_id": created.json()["experiment_id"]}).json()["run"]["info"]
        assert run["artifact_uri"].startswith("mlflow-artifacts:/")
        up = httpx.put(f"http://127.0.0.1:{port}/api/2.0/mlflow-artifacts/artifacts/"
                       + run["artifact_uri"].removeprefix("mlflow-artifacts:/") + "/hello.txt", content=b"hi")
        assert up.status_code == 200
        assert [p.read_bytes() for p in (tmp_path / "mlops-artifacts").rglob("hello.txt")] == [b"hi"]
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_server_command_has_mlflow_servers_flags() -> None:
    from typer.testing import CliRunner

    from prefect_mlops.deployments.cli import app

    result = CliRunner().invoke(app, ["server", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for flag in ("--backend-store-uri", "--default-artifact-root", "--artifacts-destination",
                 "--serve-artifacts", "--no-serve-artifacts", "--host", "--port", "--workers"):
        assert flag in result.output
    bad = CliRunner().invoke(app, ["server", "--backend-store-uri", "mysql://x/y", "--port", "5999"])
    assert bad.exit_code == 1 and "mysql" in bad.output and "sqlite" in bad.output
