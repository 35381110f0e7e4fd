"""Our own client over HTTP: ``PREFECT_MLOPS_TRACKING_URI=http://...`` and nothing else.

A real ``prefect-mlops server`` subprocess (SQLite + a local folder; one test on
PostgreSQL + S3 on the moto server) and our fluent API, ``TrackingClient``, ``@track``,
autolog, models and the registry in this process with only the server's URL: nothing is
written next to the client, no database is opened, errors are our typed errors with the
server's message, what the mlflow client logs we read and the other way round.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import pytest
from support import free_port, reset_tracking

from tracking_plugin.entities import Metric, ModelVersionStatus, Param, RunStatus, RunTag
from tracking_plugin.errors import BackendUnavailable, Conflict, InvalidArgument, NotFound

mlflow = pytest.importorskip("mlflow")


@pytest.fixture(scope="module")
def http_server(start_server: Callable[..., Any], tmp_path_factory: pytest.TempPathFactory) -> Any:
    base = tmp_path_factory.mktemp("our-client-server")
    return start_server(f"sqlite:///{base / 'mlops.db'}", str(base / "artifacts"))


def use_only_the_url(monkeypatch: pytest.MonkeyPatch, workdir: Path, url: str) -> None:
    """The client's environment: the server URL, no database or storage settings."""
    for name in list(os.environ):
        if name.startswith("PREFECT_MLOPS_") or name.startswith("AWS_") or name.startswith("MLFLOW_TRACKING_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PREFECT_MLOPS_TRACKING_URI", url)
    monkeypatch.chdir(workdir)
    reset_tracking()


@pytest.fixture
def url_only(http_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    workdir = tmp_path / "client"
    workdir.mkdir()
    use_only_the_url(monkeypatch, workdir, http_server.url)
    yield http_server.url
    reset_tracking(end_runs=True)
    # Nothing was written where the client runs: no mlops.db, no ./mlops-artifacts.
    assert sorted(p.name for p in workdir.iterdir()) == []


def _data(seed: int = 0, n: int = 80) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    return X, (X["a"] - X["b"] > 0).astype(int)


def _new_dir(path: Path) -> Path:
    path.mkdir()
    return path


# ------------------------------------------------------------------- tracking


def test_fluent_api_and_client_over_http(url_only: str, tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import tracking_plugin as mlops
    from tracking_plugin import TrackingClient

    notes = tmp_path / "notes.txt"
    notes.write_text("trained on the March extract")
    folder = tmp_path / "reports"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.csv").write_text("x\n1\n")
    (folder / "sub" / "b.txt").write_text("b")
    figure, axes = plt.subplots()
    axes.plot([0, 1], [1, 0])

    assert mlops.get_tracking_uri() == url_only
    mlops.set_experiment("over-http")
    with mlops.start_run(run_name="parent") as parent:
        mlops.log_param("model", "logreg")
        mlops.log_params({"C": 0.5})
        for step in range(3):
            mlops.log_metric("loss", 1 / (step + 1), step=step)
        mlops.log_metric("unstable", float("nan"))
        mlops.set_tag("team", "risk")
        mlops.log_artifact(str(notes), artifact_path="docs")
        mlops.log_artifacts(str(folder), artifact_path="reports")
        mlops.log_dict({"features": ["a", "b"]}, "config/features.json")
        mlops.log_text("hello", "notes/hello.txt")
        mlops.log_figure(figure, "plots/curve.png")
        with mlops.start_run(run_name="child", nested=True) as child:
            mlops.log_metric("auc", 0.8)
    plt.close(figure)

    client = TrackingClient()
    assert client.tracking_uri == url_only
    run = client.get_run(parent.info.run_id)
    assert run.info.status is RunStatus.FINISHED and run.info.run_name == "parent"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    assert run.data.params == {"model": "logreg", "C": "0.5"}
    assert run.data.metrics["loss"] == pytest.approx(1 / 3) and np.isnan(run.data.metrics["unstable"])
    assert run.data.tags["team"] == "risk"
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(s, pytest.approx(1 / (s + 1))) for s in range(3)]
    assert client.get_run(child.info.run_id).info.parent_run_id == parent.info.run_id

    assert [f.path for f in client.list_artifacts(run.info.run_id)] == ["config", "docs", "notes", "plots", "reports"]
    assert [(f.path, f.is_dir) for f in client.list_artifacts(run.info.run_id, "reports")] == [
        ("reports/a.csv", False), ("reports/sub", True),
    ]
    downloaded = Path(client.download_artifacts(run.info.run_id, "reports", tmp_path / "dl"))
    assert (downloaded / "sub" / "b.txt").read_text() == "b" and (downloaded / "a.csv").read_text() == "x\n1\n"
    assert Path(client.download_artifacts(run.info.run_id, "docs/notes.txt", tmp_path / "dl2")).read_text() == notes.read_text()
    assert json.loads(Path(client.download_artifacts(run.info.run_id, "config/features.json", tmp_path / "dl3")).read_text()) == {
        "features": ["a", "b"]
    }
    png = Path(client.download_artifacts(run.info.run_id, "plots/curve.png", tmp_path / "dl4")).read_bytes()
    assert png.startswith(b"\x89PNG")

    frame = mlops.search_runs(experiment_names=["over-http"], filter_string="params.model = 'logreg'")
    assert list(frame["run_id"]) == [parent.info.run_id]
    found = client.search_runs([run.info.experiment_id], order_by=["attributes.start_time ASC"])
    assert [r.info.run_id for r in found] == [parent.info.run_id, child.info.run_id]
    assert found[1].info.parent_run_id == parent.info.run_id  # the parent comes back in searches too


def test_log_batch_over_the_limits_is_split_and_a_replay_adds_no_point(url_only: str) -> None:
    from tracking_plugin import TrackingClient

    client = TrackingClient()
    run = client.create_run(client.create_experiment("batches"))
    run_id = run.info.run_id
    metrics = [Metric("loss", 1.0 / (i + 1), 1_700_000_000_000 + i, i) for i in range(2_500)]
    params = [Param(f"p{i}", str(i)) for i in range(150)]
    tags = [RunTag(f"t{i}", "x") for i in range(30)]

    client.log_batch(run_id, metrics=metrics, params=params, tags=tags)
    client.log_batch(run_id, metrics=metrics, params=params, tags=tags)  # a retried batch

    history = client.get_metric_history(run_id, "loss")
    assert [(m.step, m.value, m.timestamp) for m in history] == [(m.step, m.value, m.timestamp) for m in metrics]
    data = client.get_run(run_id).data
    assert len(data.params) == 150 and {f"t{i}" for i in range(30)} <= set(data.tags)


def test_buffered_logging_over_http(url_only: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from tracking_plugin import TrackingClient

    monkeypatch.setenv("PREFECT_MLOPS_ASYNC_LOGGING", "true")
    with TrackingClient() as client:
        run_id = client.create_run(client.create_experiment("buffered")).info.run_id
        for step in range(3_000):
            client.log_metric(run_id, "x", float(step), step=step)
        client.flush(timeout=60)
        assert [m.step for m in client.get_metric_history(run_id, "x")] == list(range(3_000))


def test_errors_are_typed_with_the_servers_message(url_only: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from registry_tasks import RegistryClient
    from tracking_plugin import TrackingClient

    client = TrackingClient()
    with pytest.raises(NotFound, match="Run 'no-such-run' does not exist"):
        client.get_run("no-such-run")
    with pytest.raises(NotFound, match="no-such-model"):
        RegistryClient().get_version("no-such-model", 1)
    experiment_id = client.create_experiment("dup")
    with pytest.raises(Exception) as taken:
        client.create_experiment("dup")
    assert type(taken.value).__name__ == "AlreadyExists" and "dup" in str(taken.value)
    with pytest.raises(InvalidArgument, match="metric"):
        client.log_metric(client.create_run(experiment_id).info.run_id, "bad", "not a number")
    assert client.get_experiment_by_name("never-created") is None

    down = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("PREFECT_MLOPS_RETRY_DEADLINE", "5")
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as excinfo:
        TrackingClient(down).get_run("whatever")
    assert down in str(excinfo.value) and "prefect-mlops server" in str(excinfo.value)
    waited = time.monotonic() - started
    # Retried with backoff while the next pause still ends before the deadline; not for minutes.
    assert 2.5 < waited < 8, waited


def test_what_the_mlflow_client_logs_we_read_and_the_other_way_round(url_only: str, tmp_path: Path) -> None:
    import tracking_plugin as mlops
    from tracking_plugin import TrackingClient

    mlflow.set_tracking_uri(url_only)
    mlflow.set_registry_uri(url_only)
    theirs = mlflow.MlflowClient(url_only)
    experiment_id = mlflow.create_experiment("interop")
    with mlflow.start_run(experiment_id=experiment_id, run_name="by-mlflow") as mlflow_run:
        mlflow.log_param("lr", 0.1)
        for step in range(4):
            mlflow.log_metric("loss", 1.0 - step / 10, step=step)
        mlflow.log_dict({"from": "mlflow"}, "meta.json")

    client = TrackingClient()
    ours = client.get_run(mlflow_run.info.run_id)
    assert ours.data.params == {"lr": "0.1"} and ours.info.run_name == "by-mlflow"
    assert [m.value for m in client.get_metric_history(ours.info.run_id, "loss")] == pytest.approx([1.0, 0.9, 0.8, 0.7])
    assert Path(client.download_artifacts(ours.info.run_id, "meta.json", tmp_path / "a")).read_text().count("mlflow") == 1

    mlops.set_experiment("interop")
    with mlops.start_run(run_name="by-us") as our_run:
        mlops.log_param("depth", 3)
        mlops.log_metrics({"auc": 0.9, "f1": 0.8})
        mlops.log_text("ours", "ours.txt")
    seen = theirs.get_run(our_run.info.run_id)
    assert seen.data.params == {"depth": "3"} and seen.data.metrics == {"auc": 0.9, "f1": 0.8}
    assert seen.info.experiment_id == experiment_id and seen.info.status == "FINISHED"
    local = mlflow.artifacts.download_artifacts(run_id=our_run.info.run_id, artifact_path="ours.txt", dst_path=str(tmp_path / "b"))
    assert Path(local).read_text() == "ours"


# ------------------------------------------------------------------- models and registry


def test_models_and_registry_over_http(url_only: str, tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    import tracking_plugin as mlops
    from registry_tasks import EvaluationGate, RegistryClient
    from tracking_plugin.models import log_model

    X, y = _data()
    gate = EvaluationGate("accuracy", min_improvement=0.01)
    registry = RegistryClient()
    models = []
    for accuracy, C in ((0.80, 1.0), (0.90, 0.01)):
        with mlops.start_run() as run:
            mlops.log_metric("accuracy", accuracy)
            model = LogisticRegression(C=C).fit(X, y)
            log_model(model, "model", input_example=X.head(2))
        models.append(model)
        version = registry.register(f"runs:/{run.info.run_id}/model", "churn-http")
        assert version.status is ModelVersionStatus.READY
        assert version.storage_location == f"mlflow-artifacts:/registry/churn-http/{version.version}"
        decision = registry.evaluate("churn-http", version.version, gate)
        assert decision.passed, decision.reason
        promoted = registry.promote("churn-http", version.version, reason=f"accuracy {accuracy}")
        assert promoted.aliases == ("champion",) and promoted.gate_decision_id == decision.decision_id

    champion = mlops.load_model("models:/churn-http@champion", dst_path=_new_dir(tmp_path / "champion"))
    np.testing.assert_array_equal(np.asarray(champion.predict(X.head(10))).ravel(), models[1].predict(X.head(10)))

    # A failed gate: promotion refused with the server's reason, nothing moves.
    with mlops.start_run() as run:
        mlops.log_metric("accuracy", 0.5)
        log_model(LogisticRegression().fit(X, y), "model")
    worse = registry.register(f"runs:/{run.info.run_id}/model", "churn-http")
    assert not registry.evaluate("churn-http", worse.version, gate).passed
    with pytest.raises(Conflict, match="gate"):
        registry.promote("churn-http", worse.version)
    assert registry.get_by_alias("churn-http").version == 2

    rolled = registry.rollback("churn-http", reason="bad day")
    assert rolled.version == 1
    moves = [(r.from_value, r.to_value, r.reason) for r in registry.history("churn-http") if r.kind == "alias"]
    assert moves == [(None, "1", "accuracy 0.8"), ("1", "2", "accuracy 0.9"), ("2", "1", "bad day")]
    loaded = mlops.load_model("models:/churn-http@champion", dst_path=_new_dir(tmp_path / "rolled"))
    np.testing.assert_array_equal(np.asarray(loaded.predict(X.head(10))).ravel(), models[0].predict(X.head(10)))

    # The unmodified mlflow client loads the version we registered, through the server.
    mlflow.set_tracking_uri(url_only)
    mlflow.set_registry_uri(url_only)
    theirs = mlflow.pyfunc.load_model("models:/churn-http/2")
    np.testing.assert_array_equal(np.asarray(theirs.predict(X.head(10))).ravel(), models[1].predict(X.head(10)))


def test_registry_tasks_and_track_over_http(url_only: str, prefect_harness: None) -> None:
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE
    from sklearn.linear_model import LogisticRegression

    import tracking_plugin as mlops
    from registry_tasks import EvaluationGate, RegistryClient, evaluate_gate, promote, register_model, rollback
    from tracking_plugin.models import log_model
    from tracking_plugin.prefect import track

    X, y = _data(1)
    model_runs: list[str] = []

    @track
    @task(cache_policy=NO_CACHE)
    def fit(C: float) -> dict[str, float]:
        model = LogisticRegression(C=C).fit(X, y)
        log_model(model, "model", input_example=X.head(2))
        model_runs.append(mlops.active_run().info.run_id)  # the task's own (child) run
        return {"accuracy": float((model.predict(X) == y).mean())}

    @track(experiment="release-http")
    @flow
    def release(C: float, reason: str, held_out_accuracy: float, champion_accuracy: float | None = None) -> dict[str, Any]:
        from prefect.runtime import flow_run

        fit(C)
        model_uri = f"runs:/{model_runs[-1]}/model"
        version = register_model(model_uri, "release-http")
        decision = evaluate_gate("release-http", version.version, EvaluationGate("accuracy", min_improvement=0.01),
                                 candidate_metrics={"accuracy": held_out_accuracy},
                                 champion_metrics=None if champion_accuracy is None else {"accuracy": champion_accuracy})
        promote("release-http", version.version, reason=reason)
        return {"version": float(version.version), "passed": float(decision.passed), "flow_run_id": str(flow_run.id)}

    first = release(1.0, "first", 0.8)
    second = release(0.5, "second", 0.9, 0.8)
    assert (first["version"], second["version"]) == (1.0, 2.0)

    @flow
    def undo() -> int:
        return rollback("release-http", reason="incident").version

    assert undo() == 1
    registry = RegistryClient()
    assert registry.get_by_alias("release-http").version == 1
    alias_rows = [r for r in registry.history("release-http") if r.kind == "alias"]
    assert [(r.from_value, r.to_value, r.reason) for r in alias_rows] == [
        (None, "1", "first"), ("1", "2", "second"), ("2", "1", "incident"),
    ]
    assert alias_rows[1].prefect_flow_run_id == second["flow_run_id"]

    client = mlops.TrackingClient()
    run = client.get_run_by_prefect_id(flow_run_id=second["flow_run_id"])
    assert run is not None and run.info.status is RunStatus.FINISHED
    assert run.data.params == {"C": "0.5", "reason": "second", "held_out_accuracy": "0.9", "champion_accuracy": "0.8"}
    children = client.search_runs([run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    [task_run] = children
    assert task_run.info.prefect_task_run_id and task_run.data.metrics["accuracy"] > 0.5


def test_autolog_over_http(url_only: str) -> None:
    from sklearn.linear_model import LogisticRegression

    import tracking_plugin as mlops
    from tracking_plugin import sklearn as sk_autolog

    X, y = _data(2)
    sk_autolog.autolog()
    try:
        model = LogisticRegression(C=0.3).fit(X, y)
    finally:
        sk_autolog.autolog(disable=True)
    client = mlops.TrackingClient()
    [run] = client.search_runs([client.get_experiment_by_name("Default").experiment_id], filter_string="params.C = '0.3'")
    assert run.data.metrics["training_accuracy_score"] == pytest.approx((model.predict(X) == y).mean())
    loaded = mlops.load_model(f"runs:/{run.info.run_id}/model")
    np.testing.assert_array_equal(np.asarray(loaded.predict(X.head(5))).ravel(), model.predict(X.head(5)))


# ------------------------------------------------------------------- a fresh process


def test_a_process_with_only_the_url_opens_no_database(http_server: Any, tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import json, sys
        import numpy as np
        from sklearn.linear_model import LogisticRegression
        import tracking_plugin as mlops
        from registry_tasks import RegistryClient
        from tracking_plugin.models import log_model

        X = np.arange(20, dtype=float).reshape(10, 2); y = (X[:, 0] > 9).astype(int)
        with mlops.start_run() as run:
            mlops.log_metric("m", 1.0)
            log_model(LogisticRegression().fit(X, y), "model")
        registry = RegistryClient()
        version = registry.register(f"runs:/{run.info.run_id}/model", "fresh")
        registry.store.set_registered_model_alias("fresh", "champion", version.version)
        model = mlops.load_model("models:/fresh@champion")
        print(json.dumps({
            "predictions": np.asarray(model.predict(X)).ravel().tolist(),
            "db_modules": sorted(m for m in sys.modules if m in ("tracking_plugin.store.db", "tracking_plugin.store.sql", "boto3")),
        }))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_MLOPS_", "AWS_", "MLFLOW_TRACKING_"))}
    env["PREFECT_MLOPS_TRACKING_URI"] = http_server.url
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["predictions"] == [0] * 5 + [1] * 5
    assert out["db_modules"] == []  # neither SQLAlchemy's store nor boto3 was loaded
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# ------------------------------------------------------------------- transport


class _Recorder(http.server.BaseHTTPRequestHandler):
    """A fake server answering from a script, recording what it was sent."""

    script: list[tuple[int, dict[str, Any]]] = []
    seen: list[tuple[str, str, str | None]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.seen.append((self.command, self.path, self.headers.get("Authorization")))
        status, payload = self.script.pop(0) if self.script else (200, {})
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[str, type[_Recorder]]]:
    handler = type("Handler", (_Recorder,), {"script": [], "seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_retries_only_what_may_be_repeated_and_sends_credentials(
    recorder: tuple[str, type[_Recorder]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tracking_plugin.store.rest import RestStore

    url, handler = recorder
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "s3cr3t-token")
    busy = (503, {"error_code": "TEMPORARILY_UNAVAILABLE", "message": "database is restarting"})
    store = RestStore(url)
    try:
        # A read is retried on 503 and succeeds.
        handler.script[:] = [busy, busy, (200, {"experiment": {"experiment_id": "1", "name": "e"}})]
        assert store.get_experiment("1").name == "e"
        assert len(handler.seen) == 3 and {auth for *_, auth in handler.seen} == {"Bearer s3cr3t-token"}

        # Creating a run is not repeated after a 503: it may have been applied.
        handler.seen.clear()
        handler.script[:] = [busy]
        with pytest.raises(BackendUnavailable, match="database is restarting") as excinfo:
            store.create_run("1", user_id="u", start_time=0)
        assert len(handler.seen) == 1 and "s3cr3t" not in str(excinfo.value) + repr(store)

        # A 4xx is never retried and keeps the server's message.
        handler.seen.clear()
        handler.script[:] = [(404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Run 'x' does not exist."})]
        with pytest.raises(NotFound, match="Run 'x' does not exist."):
            store.get_run("x")
        assert len(handler.seen) == 1
    finally:
        store.close()

    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pw")
    handler.seen.clear()
    handler.script[:] = [(200, {"experiment": {"experiment_id": "1", "name": "e"}})]
    basic = RestStore(url)
    try:
        basic.get_experiment("1")
    finally:
        basic.close()
    assert handler.seen[0][2] == "Basic YWxpY2U6cHc="  # alice:pw


# ------------------------------------------------------------------- PostgreSQL + S3


@pytest.mark.postgres
def test_core_round_trip_on_postgres_and_s3(
    start_server: Callable[..., Any], pg_server: str, s3_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3
    from support import create_pg_database
    from sklearn.linear_model import LogisticRegression

    import tracking_plugin as mlops
    from registry_tasks import RegistryClient
    from tracking_plugin.models import log_model

    bucket = "our-client-" + os.urandom(4).hex()
    boto3.client(
        "s3", endpoint_url=s3_server, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    ).create_bucket(Bucket=bucket)
    server_env = {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
        "PREFECT_MLOPS_S3_ENDPOINT_URL": s3_server,
    }
    server = start_server(create_pg_database(pg_server), f"s3://{bucket}/mlops", env=server_env)
    workdir = tmp_path / "client"
    workdir.mkdir()
    use_only_the_url(monkeypatch, workdir, server.url)
    try:
        X, y = _data(3)
        mlops.set_experiment("pg-s3")
        with mlops.start_run() as run:
            mlops.log_params({"C": 1.0})
            mlops.log_metrics({"accuracy": 0.9})
            mlops.log_dict({"k": 1}, "d.json")
            model = LogisticRegression().fit(X, y)
            log_model(model, "model", input_example=X.head(2))
        registry = RegistryClient()
        version = registry.register(f"runs:/{run.info.run_id}/model", "pg-s3")
        registry.store.set_registered_model_alias("pg-s3", "champion", version.version)
        loaded = mlops.load_model("models:/pg-s3@champion", dst_path=_new_dir(tmp_path / "m"))
        np.testing.assert_array_equal(np.asarray(loaded.predict(X.head(5))).ravel(), model.predict(X.head(5)))
        client = mlops.TrackingClient()
        assert client.get_run(run.info.run_id).data.metrics == {"accuracy": 0.9}
        assert [f.path for f in client.list_artifacts(run.info.run_id)] == ["d.json", "model"]
        # The files are in the server's bucket; the client never held a key for it.
        s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
        assert any(k.endswith("/artifacts/d.json") for k in keys) and any("/registry/pg-s3/1/MLmodel" in k for k in keys)
    finally:
        reset_tracking(end_runs=True)
    assert sorted(p.name for p in workdir.iterdir()) == []


# ------------------------------------------------------------------- README and block


def test_readme_our_client_over_http_runs(url_only: str, readme_section: Any) -> None:
    import re

    text = readme_section("Our client over HTTP")
    [example] = re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)
    written = re.search(r'set_tracking_uri\("([^"]+)"\)', example).group(1)  # type: ignore[union-attr]
    namespace: dict[str, Any] = {"__name__": "__readme__"}
    exec(compile(example.replace(written, url_only), "README.md[our client over HTTP]", "exec"), namespace)
    assert list(namespace["champion"].predict([[2.5]])) == [1]
    assert namespace["version"].storage_location.startswith("mlflow-artifacts:/registry/churn-ours/")


def test_a_block_holding_only_the_server_url(url_only: str, prefect_harness: None, monkeypatch: pytest.MonkeyPatch) -> None:
    import tracking_plugin as mlops
    from tracking_plugin.blocks import MlopsBackend

    MlopsBackend(tracking_uri=url_only).save("http-team", overwrite=True)
    monkeypatch.delenv("PREFECT_MLOPS_TRACKING_URI")
    monkeypatch.setenv("PREFECT_MLOPS_BLOCK", "http-team")
    reset_tracking()
    mlops.set_experiment("from-a-block")
    with mlops.start_run() as run:
        mlops.log_metric("rows", 1000.0)
        mlops.log_text("done", "status.txt")
    assert mlops.TrackingClient().settings.artifact_root == "mlflow-artifacts:/"
    seen = mlops.TrackingClient(url_only).get_run(run.info.run_id)
    assert seen.data.metrics == {"rows": 1000.0} and seen.info.artifact_uri.startswith("mlflow-artifacts:/")


def test_proxied_artifact_uris_need_a_server_and_a_clean_path(url_only: str) -> None:
    import doctest

    import tracking_plugin.artifacts.http as http_artifacts
    from tracking_plugin.artifacts import get_artifact_repository
    from tracking_plugin.settings import MlopsSettings

    assert doctest.testmod(http_artifacts, raise_on_error=True).attempted > 0
    with pytest.raises(InvalidArgument, match="set the tracking URI to the server's|Set the tracking URI to the server's"):
        get_artifact_repository("mlflow-artifacts:/1/run/artifacts", MlopsSettings(tracking_uri="sqlite:///x.db"))
    repo = get_artifact_repository("mlflow-artifacts:/escape-test")
    for bad in ("../outside.txt", "a/%2e%2e/b.txt", "/etc/passwd"):
        with pytest.raises(InvalidArgument):
            repo.log_bytes(b"x", bad)
    with pytest.raises(NotFound):
        repo.read_bytes("never-written.txt")
    repo.log_bytes(b"kept", "kept.txt")
    repo.delete_artifacts()
    assert repo.list_artifacts() == []


def test_a_large_file_streams_both_ways(url_only: str, tmp_path: Path) -> None:
    import hashlib

    import tracking_plugin as mlops

    big = tmp_path / "weights.bin"
    big.write_bytes(os.urandom(3 * 1024 * 1024) * 4)  # 12 MiB: many upload and download chunks
    with mlops.start_run() as run:
        mlops.log_artifact(str(big), artifact_path="model")
    client = mlops.TrackingClient()
    [info] = client.list_artifacts(run.info.run_id, "model")
    assert (info.path, info.file_size) == ("model/weights.bin", big.stat().st_size)
    back = Path(client.download_artifacts(run.info.run_id, "model", _new_dir(tmp_path / "back")))
    assert hashlib.sha256((back / "weights.bin").read_bytes()).digest() == hashlib.sha256(big.read_bytes()).digest()
    assert sorted(p.name for p in back.iterdir()) == ["weights.bin"]  # no partial file left behind
