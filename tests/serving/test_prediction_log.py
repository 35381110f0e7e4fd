"""Prediction logging (``--log-predictions``): real scoring servers over sockets, real
models, Parquet read back from a local folder and from S3 (moto over HTTP).

- N requests -> N logged rows, with the inputs sent, the predictions answered, the
  probabilities of the model's ``predict_proba``, and each response's ``X-Request-ID``;
  partitioned ``model=/version=/date=``; written on shutdown.
- A full queue drops and counts rows (``/metadata``) and requests do not wait for it.
- A write that fails (missing bucket) keeps its rows and writes them once it can; so does
  a writer process that dies (a new one is started).
"""

from __future__ import annotations

import datetime as dt
import io
import statistics
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import numpy as np
import orjson
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from support import free_port, poll

from serving_tasks._payload import ParsedPayload
from serving_tasks._prediction_log import PredictionLogger, partition_path
from serving_tasks._served_model import ServedModel
from tracking_plugin.errors import InvalidArgument


@pytest.fixture(scope="module")
def label_model(tmp_path_factory: pytest.TempPathFactory, churn_data: Any, make_churn_pipeline: Any) -> tuple[str, Any]:
    """The churn pipeline saved with its plain predict (labels); returns (path, pipeline)."""
    from tracking_plugin.models import save_model

    X, y = churn_data
    pipeline = make_churn_pipeline(X, y)
    path = tmp_path_factory.mktemp("labels") / "churn"
    save_model(pipeline, path, input_example=X.head(3))
    return str(path), pipeline


def _read_log(root: str | Path) -> pd.DataFrame:
    return ds.dataset(str(root), format="parquet", partitioning="hive").to_table().to_pandas()


def _today() -> str:
    return dt.datetime.now(dt.timezone.utc).date().isoformat()


def test_every_request_is_logged_with_its_rows_predictions_and_request_id(
    label_model: tuple[str, Any], churn_data: Any, start_scoring_server: Any, tmp_path: Path
) -> None:
    model_path, pipeline = label_model
    X, _ = churn_data
    artifact_root = tmp_path / "artifacts"
    # No --prediction-log-uri: the log goes under the artifact root.
    server = start_scoring_server(
        model_path, tmp_path, env={"PREFECT_MLOPS_ARTIFACT_ROOT": str(artifact_root)}, args=["--log-predictions", "1"]
    )
    sent: dict[str, pd.DataFrame] = {}
    answered: dict[str, list[Any]] = {}
    try:
        with server.client() as client:
            for i in range(12):
                rows = X.iloc[i * 3 : i * 3 + 1 + i % 3]
                headers = {"X-Request-ID": f"order-{i}"} if i % 2 == 0 else {}
                if i == 5:
                    headers = {"X-Request-ID": "not a valid id; " + "x" * 200}  # replaced by a fresh one
                body = {"dataframe_split": rows.to_dict(orient="split")}
                body["dataframe_split"].pop("index")
                response = client.post("/invocations", json=body, headers=headers)
                assert response.status_code == 200, response.text
                request_id = response.headers["X-Request-ID"]
                if i % 2 == 0:
                    assert request_id == f"order-{i}"
                else:
                    assert len(request_id) == 32 and request_id not in sent
                sent[request_id] = rows.reset_index(drop=True)
                answered[request_id] = response.json()["predictions"]
            # Errors and other routes carry an id too.
            bad = client.post("/invocations", json={"dataframe_split": {"columns": ["nope"], "data": [[1]]}})
            assert bad.status_code == 400 and bad.headers["X-Request-ID"]
            assert client.get("/version", headers={"X-Request-ID": "probe-1"}).headers["X-Request-ID"] == "probe-1"
            meta = client.get("/metadata").json()["prediction_log"]
            n_rows = sum(len(r) for r in sent.values())
            assert meta["sample_rate"] == 1.0 and meta["dropped_rows"] == 0
            assert meta["logged_rows"] + meta["queued_rows"] == n_rows
            assert meta["uri"] == str(artifact_root / "prediction-logs")
    finally:
        server.stop()  # SIGTERM: the server writes what is still queued

    log_root = artifact_root / "prediction-logs"
    files = sorted(log_root.rglob("*.parquet"))
    assert files and all(f.parent.relative_to(log_root).as_posix() == f"model=_unregistered/version=0/date={_today()}" for f in files)
    logged = _read_log(log_root)
    assert len(logged) == n_rows
    assert set(logged["request_id"]) == set(sent)
    for request_id, rows in sent.items():
        mine = logged[logged["request_id"] == request_id].sort_values("row").reset_index(drop=True)
        assert list(mine["row"]) == list(range(len(rows)))
        pd.testing.assert_frame_equal(mine[list(rows.columns)], rows, check_dtype=False)
        assert list(mine["prediction"]) == answered[request_id]
        np.testing.assert_allclose(mine["probability"], pipeline.predict_proba(rows)[:, 1], rtol=1e-9)
    assert (logged["model_name"] == "_unregistered").all() and (logged["model_version"] == 0).all()
    assert logged["logged_at"].dt.tz is not None


def test_probability_models_log_their_own_output_and_sampling_logs_a_share(
    churn_model_dir: str, churn_data: Any, start_scoring_server: Any, tmp_path: Path
) -> None:
    X, _ = churn_data
    log_root = tmp_path / "log"
    server = start_scoring_server(
        churn_model_dir, tmp_path, args=["--log-predictions", "0.5", "--prediction-log-uri", str(log_root)]
    )
    try:
        with server.client() as client:
            answers = {}
            for i in range(60):
                response = client.post("/invocations", json={"dataframe_records": X.iloc[[i]].to_dict(orient="records")})
                assert response.status_code == 200
                answers[response.headers["X-Request-ID"]] = response.json()["predictions"][0]
            meta = client.get("/metadata").json()["prediction_log"]
    finally:
        server.stop()
    logged = _read_log(log_root)
    # Half the requests, give or take chance (binomial(60, 0.5) is in [15, 45] but for 1e-4).
    assert 15 <= len(logged) <= 45
    assert meta["sampled_out_requests"] + len(logged) == 60
    for request_id, prediction, probability in zip(logged["request_id"], logged["prediction"], logged["probability"]):
        assert list(prediction) == pytest.approx(answers[request_id])
        assert probability == pytest.approx(answers[request_id][1])


def test_prediction_log_to_s3(label_model: tuple[str, Any], churn_data: Any, start_scoring_server: Any, tmp_path: Path, s3_bucket: str, s3_env: str) -> None:
    import boto3

    model_path, _ = label_model
    X, _ = churn_data
    server = start_scoring_server(
        model_path, tmp_path, args=["--log-predictions", "1", "--prediction-log-uri", f"s3://{s3_bucket}/logs"]
    )
    ids = []
    try:
        with server.client() as client:
            for i in range(5):
                response = client.post("/invocations", json={"dataframe_records": X.iloc[i : i + 2].to_dict(orient="records")})
                assert response.status_code == 200
                ids.append(response.headers["X-Request-ID"])
    finally:
        server.stop()
    s3 = boto3.client("s3", endpoint_url=s3_env, region_name="us-east-1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix="logs/")["Contents"]]
    assert keys and all(k.startswith(f"logs/model=_unregistered/version=0/date={_today()}/part-") for k in keys)
    frames = [pq.read_table(io.BytesIO(s3.get_object(Bucket=s3_bucket, Key=k)["Body"].read())).to_pandas() for k in keys]
    logged = pd.concat(frames, ignore_index=True)
    assert len(logged) == 10 and sorted(set(logged["request_id"])) == sorted(ids)


class _InProcessServer:
    """create_app under a real uvicorn server on a socket, in a thread of this process."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "_InProcessServer":
        self.thread.start()
        poll(lambda: self.server.started, timeout=120, what="uvicorn started")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(60)
        assert not self.thread.is_alive()


def _p50_ms(client: httpx.Client, body: dict[str, Any], n: int) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        response = client.post("/invocations", json=body)
        times.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200
    return statistics.median(times)


@pytest.fixture
def two_servers(label_model: tuple[str, Any], tmp_path: Path) -> Iterator[tuple[_InProcessServer, _InProcessServer, Path]]:
    from serving_tasks.app import create_app

    model_path, _ = label_model
    log_root = tmp_path / "log"
    # A queue of 10 rows that is never flushed during the test: it fills at once.
    logging_app = create_app(
        model_path, poll_interval=None, log_predictions=1.0, prediction_log_uri=str(log_root),
        prediction_log_queue_rows=10, prediction_log_flush_s=3600,
    )
    plain_app = create_app(model_path, poll_interval=None)
    with _InProcessServer(logging_app) as on, _InProcessServer(plain_app) as off:
        yield on, off, log_root


def test_a_full_queue_drops_and_counts_without_slowing_requests(two_servers: Any, churn_data: Any) -> None:
    on, off, log_root = two_servers
    X, _ = churn_data
    body = {"dataframe_records": X.iloc[:2].to_dict(orient="records")}
    with httpx.Client(base_url=on.url, timeout=60) as c_on, httpx.Client(base_url=off.url, timeout=60) as c_off:
        _p50_ms(c_on, body, 10)
        _p50_ms(c_off, body, 10)  # warm both
        p50_off = _p50_ms(c_off, body, 100)
        p50_on = _p50_ms(c_on, body, 100)
        meta = c_on.get("/metadata").json()["prediction_log"]
    # 110 requests of 2 rows: the first 5 fill the queue, the other 105 are dropped.
    assert meta["queued_rows"] == 10 and meta["dropped_rows"] == 210 and meta["logged_rows"] == 0
    # Loose on purpose (a shared 2-core machine): dropping must not make requests wait.
    assert p50_on < 2 * p50_off + 5, (p50_on, p50_off)
    # On shutdown (leaving the fixture) the 10 queued rows are written.


def test_queued_rows_are_written_on_shutdown(two_servers: Any, churn_data: Any) -> None:
    on, off, log_root = two_servers
    X, _ = churn_data
    with httpx.Client(base_url=on.url, timeout=60) as client:
        for i in range(3):
            assert client.post("/invocations", json={"dataframe_records": X.iloc[[i]].to_dict(orient="records")}).status_code == 200
    assert not log_root.exists()  # the flush interval is an hour: nothing written yet
    on.__exit__(None, None, None)
    assert len(_read_log(log_root)) == 3


def _served(model_path: str) -> ServedModel:
    from tracking_plugin.models import load_model

    return ServedModel.wrap(load_model(model_path), model_path, name="churn", version=7)


def test_a_failed_write_keeps_its_rows_until_the_store_is_back(label_model: tuple[str, Any], churn_data: Any, s3_env: str) -> None:
    import boto3

    model_path, pipeline = label_model
    X, _ = churn_data
    bucket = "later-" + str(free_port())
    log = PredictionLogger(f"s3://{bucket}/p", flush_interval=3600)
    served = _served(model_path)
    rows = X.iloc[:4].reset_index(drop=True)
    payload = ParsedPayload(n_rows=4, columns={c: rows[c].tolist() for c in rows.columns})
    log.offer(served, payload, b"[0,1,1,0]", "req-1")
    log.flush()  # the bucket does not exist yet
    stats = log.stats()
    assert stats["write_errors"] == 1 and stats["queued_rows"] == 4 and stats["logged_rows"] == 0
    assert bucket in stats["last_error"]
    boto3.client("s3", endpoint_url=s3_env, region_name="us-east-1").create_bucket(Bucket=bucket)
    log.stop()
    assert log.stats()["logged_rows"] == 4 and log.stats()["queued_rows"] == 0
    s3 = boto3.client("s3", endpoint_url=s3_env, region_name="us-east-1")
    (key,) = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert key.startswith("p/" + partition_path("churn", 7, dt.datetime.now(dt.timezone.utc).date()) + "/")
    table = pq.read_table(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read())).to_pandas()
    assert list(table["prediction"]) == [0, 1, 1, 0] and set(table["request_id"]) == {"req-1"}
    assert list(table["model_name"]) == ["churn"] * 4 and list(table["model_version"]) == [7] * 4
    np.testing.assert_allclose(table["probability"], pipeline.predict_proba(rows)[:, 1])


def test_an_input_column_named_like_a_log_column_is_kept_apart(label_model: tuple[str, Any], tmp_path: Path) -> None:
    log = PredictionLogger(str(tmp_path), flush_interval=3600)
    served = ServedModel.wrap(object(), "somewhere")  # no registry identity, no predict_proba
    log.offer(served, ParsedPayload(n_rows=2, columns={"prediction": [1.5, 2.5], "x": ["a", 3]}), b'["p","q"]', "r")
    log.stop()
    logged = _read_log(tmp_path)
    assert list(logged["input.prediction"]) == [1.5, 2.5] and list(logged["prediction"]) == ["p", "q"]
    assert list(logged["x"]) == ["a", "3"]  # a mixed column is kept as text
    assert "probability" not in logged.columns


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"sample_rate": 0}, "sampling rate 0"),
        ({"sample_rate": 1.5}, "sampling rate 1.5"),
        ({"sample_rate": True}, "sampling rate True"),
        ({"max_queue_rows": 0}, "max_queue_rows=0"),
    ],
)
def test_bad_settings_are_refused_naming_the_value(tmp_path: Path, kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(InvalidArgument, match=needle):
        PredictionLogger(str(tmp_path), **kwargs)


def test_bad_uri_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="ftp://"):
        PredictionLogger("ftp://host/logs")


@pytest.mark.parametrize(("args", "needle"), [(["--log-predictions", "0"], "--log-predictions"), (["--prediction-log-uri", "x"], "--log-predictions RATE")])
def test_the_cli_refuses_bad_flags(args: list[str], needle: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from serving_tasks.cli import serve_app

    result = CliRunner().invoke(serve_app, ["-m", str(tmp_path), *args])
    assert result.exit_code == 2
    assert needle in result.output


def test_several_worker_processes_log_every_request_once(
    label_model: tuple[str, Any], churn_data: Any, start_scoring_server: Any, tmp_path: Path
) -> None:
    """--workers 2: each process writes its own files; concurrent clients' requests are
    all logged, once, with the id each response carried (written on shutdown)."""
    from concurrent.futures import ThreadPoolExecutor

    model_path, _ = label_model
    X, _ = churn_data
    log_root = tmp_path / "log"
    server = start_scoring_server(
        model_path, tmp_path, args=["--workers", "2", "--log-predictions", "1", "--prediction-log-uri", str(log_root)]
    )

    def client_run(k: int) -> list[str]:
        ids = []
        with server.client() as client:
            for i in range(15):
                response = client.post("/invocations", json={"dataframe_records": X.iloc[[k * 15 + i]].to_dict(orient="records")})
                assert response.status_code == 200
                ids.append(response.headers["X-Request-ID"])
        return ids

    try:
        with ThreadPoolExecutor(4) as pool:
            ids = [i for batch in pool.map(client_run, range(4)) for i in batch]
    finally:
        server.stop()
    logged = _read_log(log_root)
    assert len(ids) == len(set(ids)) == 60
    assert sorted(logged["request_id"]) == sorted(ids)


def _writer_processes() -> list[int]:
    """This test process's prediction log writer processes (children running the writer)."""
    import os

    pids = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                if b"_prediction_writer" in Path(f"/proc/{child}/cmdline").read_bytes():
                    pids.append(int(child))
            except FileNotFoundError:  # exited meanwhile
                pass
    return pids


def test_a_killed_writer_process_loses_no_rows_and_is_replaced(label_model: tuple[str, Any], churn_data: Any, tmp_path: Path) -> None:
    """Encoding and writing run in a writer process; if it dies (OOM killer, a crash), the
    rows it held are requeued and the next flush starts another one."""
    import os
    import signal

    model_path, pipeline = label_model
    X, _ = churn_data
    log = PredictionLogger(str(tmp_path), flush_interval=3600)
    log.start()
    served = _served(model_path)
    rows = X.iloc[:6].reset_index(drop=True)

    def send(i: int) -> None:
        body = rows.iloc[[i]].to_json(orient="split", index=False).encode()
        payload = ParsedPayload(n_rows=1, columns={c: [rows[c][i].item()] for c in rows.columns})
        log.offer(served, payload, orjson.dumps([int(pipeline.predict(rows.iloc[[i]])[0])]), f"r{i}",
                  body=b'{"dataframe_split": ' + body + b"}", media_type="application/json")

    for i in range(3):
        send(i)
    log.flush()
    assert log.stats()["logged_rows"] == 3
    [writer] = _writer_processes()
    os.kill(writer, signal.SIGKILL)
    poll(lambda: writer not in _writer_processes(), timeout=30, what="the writer process gone")
    for i in range(3, 6):
        send(i)
    # This flush finds the process dead and starts another, or (if it has not been reaped
    # yet) loses its pipe and requeues the rows; stop() writes whatever is left.
    log.flush()
    log.stop()
    stats = log.stats()
    assert stats["logged_rows"] == 6 and stats["queued_rows"] == 0 and stats["dropped_rows"] == 0
    assert stats["files_written"] >= 2 and stats["write_errors"] <= 1
    assert _writer_processes() == []  # stop() ends it
    logged = _read_log(tmp_path).sort_values("request_id").reset_index(drop=True)
    assert list(logged["request_id"]) == [f"r{i}" for i in range(6)]
    pd.testing.assert_frame_equal(logged[list(rows.columns)], rows, check_dtype=False)
    np.testing.assert_allclose(logged["probability"], pipeline.predict_proba(rows)[:, 1], rtol=1e-9)
