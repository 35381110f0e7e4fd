"""Our pipeline with only the tracking server's URL: ``ct_pipeline`` records, registers,
gates and promotes through ``prefect-mlops server``, then ``prefect-mlops serve -m
models:/<name>@champion`` (a subprocess holding only the URL) serves the champion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest
from support import free_port

CONSOLE_SCRIPT = str(Path(sys.executable).with_name("prefect-mlops"))
WORKER_ENV_DROPPED = ("PREFECT_MLOPS_", "AWS_", "MLFLOW_TRACKING_")


def use_only_the_url(monkeypatch: pytest.MonkeyPatch, workdir: Path, url: str) -> None:
    """The worker's environment: the server URL, no database or storage settings."""
    from support import reset_tracking

    for name in list(os.environ):
        if name.startswith(WORKER_ENV_DROPPED):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PREFECT_MLOPS_TRACKING_URI", url)
    monkeypatch.chdir(workdir)
    reset_tracking()


@pytest.mark.slow
def test_ct_pipeline_then_serve_with_only_the_server_url(
    start_server: Callable[..., Any], prefect_harness: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect_mlops.flows.ct_pipeline import ct_pipeline
    from prefect_mlops.flows.data import source_from_uri
    from registry_tasks import RegistryClient
    from support import reset_tracking

    server_root = tmp_path / "server"
    server = start_server(f"sqlite:///{server_root / 'mlops.db'}", str(server_root / "artifacts"))
    workdir = tmp_path / "worker"
    workdir.mkdir()
    use_only_the_url(monkeypatch, workdir, server.url)
    monkeypatch.setenv("PREFECT_MLOPS_SERVING_STATE_DIR", str(tmp_path / "serving"))
    source = "generator://churn?seed=0&day=0&n_rows=1500&drift=0&corrupt=false"
    try:
        state = ct_pipeline(source=source, model_name="churn-http", n_estimators=15, max_depth=6, serve_port=None,
                            return_state=True)
        assert state.is_completed(), state.message
        result = state.result()
        assert (result["model_version"], result["promoted"], result["champion_version"]) == (1, 1.0, 1)

        registry = RegistryClient()
        version = registry.get_version("churn-http", 1)
        assert "champion" in version.aliases and version.storage_location.startswith("mlflow-artifacts:/")
        decision = registry.decision_for("churn-http", 1)
        assert decision is not None and decision.passed
        assert version.tags["validation.result_uri"].startswith("mlflow-artifacts:/")
        assert (server_root / "artifacts" / "registry" / "churn-http" / "1" / "MLmodel").is_file()
    finally:
        reset_tracking(end_runs=True)
    assert sorted(p.name for p in workdir.iterdir()) == []

    # The scoring server, in a process that holds only the tracking server's URL.
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(WORKER_ENV_DROPPED)}
    env["PREFECT_MLOPS_TRACKING_URI"] = server.url
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [CONSOLE_SCRIPT, "serve", "-m", "models:/churn-http@champion", "-p", str(port), "--poll-interval", "0"],
            cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        rows = source_from_uri(source).load().drop(columns=["customer_id", "batch_date", "churn"]).head(3)
        body = {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}
        response = httpx.post(f"http://127.0.0.1:{port}/invocations", json=body, timeout=30)
        assert response.status_code == 200, response.text
        assert len(response.json()["predictions"]) == 3
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert sorted(p.name for p in workdir.iterdir()) == []
