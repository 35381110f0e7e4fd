"""A server without auth and with batching off (--max-batch-size 1), and a schemathesis run
against its published OpenAPI schema."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

import httpx
import numpy as np
import pandas as pd
import pytest



@pytest.fixture(scope="module")
def plain_model_dir(tmp_path_factory: pytest.TempPathFactory, churn_data: tuple[pd.DataFrame, pd.Series]) -> str:
    """A plain logistic regression: defined for every finite input, so any schema-valid
    request must get a 200 (what schemathesis checks)."""
    from sklearn.linear_model import LogisticRegression

    from tracking_plugin.models import save_model

    X, y = churn_data
    path = tmp_path_factory.mktemp("models") / "plain"
    save_model(LogisticRegression(max_iter=1000).fit(X, y), path, input_example=X.head(2))
    return str(path)


@pytest.fixture(scope="module")
def server(start_scoring_server: Any, plain_model_dir: str, server_workdir: Path) -> Iterator[Any]:
    srv = start_scoring_server(plain_model_dir, server_workdir, args=["--max-batch-size", "1"])
    yield srv
    srv.stop()


def test_no_token_needed_when_auth_is_off(server: Any, churn_data: Any, plain_model_dir: str) -> None:
    from tracking_plugin.models import load_model

    X, _ = churn_data
    rows = X.head(5)
    response = httpx.post(server.url + "/invocations", json={"dataframe_split": json.loads(rows.to_json(orient="split", index=False))})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == load_model(plain_model_dir).predict(rows).tolist()
    # W3C Server-Timing names the model's share of the latency.
    timing = response.headers["Server-Timing"]
    name, _, duration = timing.partition(";dur=")
    assert name == "predict" and 0 < float(duration) < 60_000, timing


def test_batching_off_predicts_each_request_alone(server: Any, churn_data: Any) -> None:
    X, _ = churn_data
    before = httpx.get(server.url + "/metadata").json()["batching"]
    sizes: list[int] = []
    barrier = threading.Barrier(16)

    def call(i: int) -> None:
        barrier.wait()
        response = httpx.post(server.url + "/invocations", json={"dataframe_records": json.loads(X.iloc[[i]].to_json(orient="records"))}, timeout=60)
        assert response.status_code == 200, response.text
        sizes.append(int(response.headers["X-Batch-Size"]))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = httpx.get(server.url + "/metadata").json()["batching"]
    assert after["max_batch_size"] == 1
    assert sizes == [1] * 16
    assert after["predict_calls"] - before["predict_calls"] == 16


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_on_valid_input(server: Any, tmp_path: Path) -> None:
    # The CLI of the installed schemathesis, next to this interpreter.
    cli = Path(sys.executable).with_name("schemathesis")
    result = subprocess.run(
        [
            str(cli),
            "run",
            server.url + "/openapi.json",
            "--checks",
            "not_a_server_error",
            "--mode",
            "positive",
            "--max-examples",
            "40",
            "--seed",
            "7",
            "--no-color",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "No issues found" in result.stdout
    served = httpx.get(server.url + "/metadata").json()["batching"]["predict_calls"]
    assert served > 20, "schemathesis never got a request through to the model"


@pytest.mark.slow
def test_several_worker_processes_serve_the_same_model(
    start_scoring_server: Any, plain_model_dir: str, server_workdir: Path, churn_data: Any
) -> None:
    from tracking_plugin.models import load_model

    X, _ = churn_data
    srv = start_scoring_server(plain_model_dir, server_workdir, args=["--workers", "2"])
    try:
        expected = load_model(plain_model_dir).predict(X.head(20)).tolist()
        with httpx.Client(base_url=srv.url, timeout=60) as client:
            for _ in range(10):  # new connections land on either worker
                response = client.post("/invocations", json={"dataframe_split": json.loads(X.head(20).to_json(orient="split", index=False))}, headers={"Connection": "close"})
                assert response.status_code == 200, response.text
                assert response.json()["predictions"] == expected
    finally:
        srv.stop()


def test_mlflows_own_scoring_client_works_against_our_server(server: Any, churn_data: Any, plain_model_dir: str) -> None:
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient  # compatibility only

    from tracking_plugin.models import load_model

    X, _ = churn_data
    host, port = server.url.removeprefix("http://").split(":")
    client = ScoringServerClient(host, int(port))
    client.wait_server_ready(timeout=30)
    predictions = client.invoke(X.head(7)).get_predictions()
    expected = load_model(plain_model_dir).predict(X.head(7))
    assert np.asarray(predictions).ravel().tolist() == expected.tolist()
