"""Schemathesis over /openapi.json: valid and invalid requests to every operation (MLflow
routes and our extensions), and not one answer is a 5xx."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest


@pytest.mark.slow
def test_schemathesis_finds_no_server_error(start_server: Callable[..., Any], tmp_path: Path) -> None:
    server = start_server(f"sqlite:///{tmp_path / 'mlops.db'}", str(tmp_path / "artifacts"))
    schema = httpx.get(server.url + "/openapi.json").json()
    paths = set(schema["paths"])
    # The schema covers MLflow's routes, the artifact proxy and our extensions.
    for expected in ("/api/2.0/mlflow/runs/log-batch", "/api/2.0/mlflow/logged-models/{model_id}",
                     "/api/2.0/mlflow-artifacts/artifacts/{artifact_path}", "/api/2.0/mlops/registered-models/rollback"):
        assert expected in paths
    cli = Path(sys.executable).with_name("schemathesis")
    result = subprocess.run(
        [str(cli), "run", server.url + "/openapi.json", "--checks", "not_a_server_error",
         "--max-examples", "15", "--seed", "7", "--no-color"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "Tested: %d" % len([op for p in schema["paths"].values() for op in p]) in result.stdout
    assert server.alive() and httpx.get(server.url + "/health").text == "OK"
