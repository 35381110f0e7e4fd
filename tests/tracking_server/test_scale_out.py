"""Several server processes on one PostgreSQL + S3 act as one; many client processes
logging through one server lose no point."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest

API = "/api/2.0/mlflow"


@pytest.mark.postgres
def test_two_servers_on_one_postgres_and_s3_act_as_one(
    start_server: Callable[..., Any], pg_server: str, s3_server: str
) -> None:
    import boto3
    from support import create_pg_database

    mlflow = pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    bucket = "two-" + uuid.uuid4().hex[:10]
    boto3.client(
        "s3", endpoint_url=s3_server, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    ).create_bucket(Bucket=bucket)
    db_uri = create_pg_database(pg_server)
    env = {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
        "PREFECT_MLOPS_S3_ENDPOINT_URL": s3_server,
    }
    a, b = (start_server(db_uri, f"s3://{bucket}/mlops", env=env) for _ in range(2))
    # registry_uri given: without it the client takes the registry from the global tracking URI.
    via_a, via_b = (MlflowClient(s.url, registry_uri=s.url) for s in (a, b))

    experiment_id = via_a.create_experiment("shared")
    assert via_b.get_experiment_by_name("shared").experiment_id == experiment_id
    run_id = via_b.create_run(experiment_id, run_name="split").info.run_id
    via_a.log_metric(run_id, "loss", 0.5, step=0)
    via_b.log_metric(run_id, "loss", 0.25, step=1)
    via_a.log_param(run_id, "lr", "0.1")
    assert [m.value for m in via_b.get_metric_history(run_id, "loss")] == [0.5, 0.25]
    assert via_b.get_run(run_id).data.params == {"lr": "0.1"}

    # An artifact uploaded through one replica is downloaded through the other.
    mlflow.set_tracking_uri(a.url)
    mlflow.set_experiment(experiment_id=experiment_id)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_text("from replica a", "notes/a.txt")
    mlflow.set_tracking_uri(b.url)
    assert mlflow.artifacts.load_text(f"runs:/{run_id}/notes/a.txt") == "from replica a"

    # The registry too: register through b, read the alias through a.
    via_b.create_registered_model("shared-model")
    via_b.create_model_version("shared-model", f"runs:/{run_id}/notes", run_id=run_id)
    via_b.set_registered_model_alias("shared-model", "champion", 1)
    assert via_a.get_model_version_by_alias("shared-model", "champion").run_id == run_id


MLFLOW_WORKER = textwrap.dedent(
    """
    import sys, time
    from mlflow import MlflowClient
    from mlflow.entities import Metric
    url, run_id, worker = sys.argv[1], sys.argv[2], int(sys.argv[3])
    client = MlflowClient(url)
    for step in range(100):
        client.log_metric(run_id, f"w{worker}", float(step), step=step)
    now = int(time.time() * 1000)
    for chunk in range(2):
        client.log_batch(run_id, metrics=[
            Metric(f"w{worker}", float(i), now + i, 100 + chunk * 500 + i) for i in range(500)])
    """
)

HTTP_WORKER = textwrap.dedent(
    """
    import sys, time, httpx
    url, run_id, worker = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with httpx.Client(base_url=url + "/api/2.0/mlflow") as http:
        now = int(time.time() * 1000)
        for step in range(100):
            r = http.post("/runs/log-metric", json={"run_id": run_id, "key": f"w{worker}", "value": step,
                                                   "timestamp": now + step, "step": step})
            r.raise_for_status()
        for chunk in range(2):
            r = http.post("/runs/log-batch", json={"run_id": run_id, "metrics": [
                {"key": f"w{worker}", "value": i, "timestamp": now + i, "step": 100 + chunk * 500 + i}
                for i in range(500)]})
            r.raise_for_status()
    """
)


# Our client, with only the server URL in its environment (no database, no S3 keys):
# synchronous log_metric calls, buffered ones (log-batch calls from the background
# thread), then log_batch calls of 500 points.
OURS_WORKER = textwrap.dedent(
    """
    import os, sys, time
    url, run_id, worker = sys.argv[1], sys.argv[2], int(sys.argv[3])
    os.environ["PREFECT_MLOPS_TRACKING_URI"] = url
    from tracking_plugin.client import TrackingClient
    from tracking_plugin.entities import Metric
    client = TrackingClient()
    assert client.store.__class__.__name__ == "RestStore", client.store
    for step in range(50):
        client.log_metric(run_id, f"w{worker}", float(step), step=step)
    for step in range(50, 100):
        client.log_metric(run_id, f"w{worker}", float(step), step=step, synchronous=False)
    client.flush()
    now = int(time.time() * 1000)
    for chunk in range(2):
        client.log_batch(run_id, metrics=[
            Metric(f"w{worker}", float(i), now + i, 100 + chunk * 500 + i) for i in range(500)])
    """
)


@pytest.mark.slow
def test_eight_client_processes_lose_no_point(start_server: Callable[..., Any], tmp_path: Path) -> None:
    server = start_server(f"sqlite:///{tmp_path / 'mlops.db'}", str(tmp_path / "artifacts"), "--workers", "2")
    with httpx.Client(base_url=server.url + API) as http:
        experiment = http.post("/experiments/create", json={"name": "crowd"}).json()["experiment_id"]
        run_id = http.post("/runs/create", json={"experiment_id": experiment}).json()["run"]["info"]["run_id"]
    scripts = {"mlflow": tmp_path / "mlflow_worker.py", "http": tmp_path / "http_worker.py", "ours": tmp_path / "ours_worker.py"}
    scripts["mlflow"].write_text(MLFLOW_WORKER)
    scripts["http"].write_text(HTTP_WORKER)
    scripts["ours"].write_text(OURS_WORKER)
    # Three processes of the mlflow client, three of ours, two of raw HTTP. Ours get an
    # environment without any database URI or S3 key: the server URL is all they know.
    kinds = ["mlflow", "ours", "http"] * 3
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_MLOPS_", "AWS_", "MLFLOW_TRACKING"))}
    workers = [
        subprocess.Popen([sys.executable, str(scripts[kinds[w]]), server.url, run_id, str(w)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
        for w in range(8)
    ]
    for w, proc in enumerate(workers):
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, (w, out.decode()[-2000:])
    with httpx.Client(base_url=server.url + API) as http:
        for w in range(8):
            history = http.get("/metrics/get-history", params={"run_id": run_id, "metric_key": f"w{w}"}).json()["metrics"]
            assert sorted(p["step"] for p in history) == list(range(1100)), w
