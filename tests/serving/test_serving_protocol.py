"""The scoring protocol over HTTP against a real server process: formats, errors, auth,
micro-batching. One server (with a bearer token) serves the whole module."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path
from typing import Any, Iterator

import httpx
import numpy as np
import pandas as pd
import pytest


FEATURES = ["plan", "tenure", "charges"]
TOKEN = "s3cret-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def server(start_scoring_server: Any, churn_model_dir: str, server_workdir: Path) -> Iterator[Any]:
    srv = start_scoring_server(
        churn_model_dir,
        server_workdir,
        env={"MLOPS_TEST_SCORING_TOKEN": TOKEN},
        args=["--token-env", "MLOPS_TEST_SCORING_TOKEN", "--max-body-mb", "1", "--max-wait-ms", "5"],
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server: Any) -> Iterator[httpx.Client]:
    with server.client(headers=AUTH) as c:
        yield c


@pytest.fixture(scope="module")
def loaded(churn_model_dir: str) -> Any:
    from tracking_plugin.models import load_model

    return load_model(churn_model_dir)


@pytest.fixture(scope="module")
def rows(churn_data: tuple[pd.DataFrame, pd.Series]) -> pd.DataFrame:
    X, _ = churn_data
    return X.iloc[10:17].reset_index(drop=True)


def _predictions(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["predictions"], dtype=float)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return json.loads(frame.to_json(orient="records"))


def _split(frame: pd.DataFrame) -> dict[str, Any]:
    return {"columns": list(frame.columns), "data": json.loads(frame.to_json(orient="values"))}


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


# Payload formats -------------------------------------------------------------------------

FORMATS = {
    "dataframe_split": lambda f: ("application/json", json.dumps({"dataframe_split": _split(f)})),
    "dataframe_split_with_index": lambda f: (
        "application/json",
        json.dumps({"dataframe_split": {**_split(f), "index": list(range(len(f)))}}),
    ),
    "dataframe_records": lambda f: ("application/json", json.dumps({"dataframe_records": _records(f)})),
    "instances_records": lambda f: ("application/json", json.dumps({"instances": _records(f)})),
    "instances_rows": lambda f: ("application/json", json.dumps({"instances": _split(f)["data"]})),
    "inputs_columns": lambda f: (
        "application/json",
        json.dumps({"inputs": {c: json.loads(f[c].to_json(orient="values")) for c in f.columns}}),
    ),
    "inputs_records": lambda f: ("application/json", json.dumps({"inputs": _records(f)})),
    "json_with_charset_and_params": lambda f: (
        "application/json; charset=utf-8",
        json.dumps({"dataframe_split": _split(f), "params": {}}),
    ),
    "csv": lambda f: ("text/csv", f.to_csv(index=False)),
    "parquet": lambda f: ("application/vnd.apache.parquet", _parquet(f)),
    "parquet_x_alias": lambda f: ("application/x-parquet", _parquet(f)),
}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_payload_format_gives_load_model_predictions(
    client: httpx.Client, loaded: Any, rows: pd.DataFrame, fmt: str
) -> None:
    content_type, body = FORMATS[fmt](rows)
    response = client.post("/invocations", content=body, headers={"Content-Type": content_type})
    expected = np.asarray(loaded.predict(rows), dtype=float)
    got = _predictions(response)
    assert got.shape == expected.shape == (len(rows), 2)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)


def test_columns_in_any_order_and_ints_for_double_columns(client: httpx.Client, loaded: Any, rows: pd.DataFrame) -> None:
    shuffled = rows[["charges", "plan", "tenure"]].copy()
    shuffled["tenure"] = shuffled["tenure"].round().astype(int)  # JSON ints for a double column
    response = client.post("/invocations", json={"dataframe_records": _records(shuffled)})
    expected = loaded.predict(shuffled[FEATURES].astype({"tenure": float}))
    np.testing.assert_allclose(_predictions(response), expected, rtol=1e-12)


def test_zero_rows_give_empty_predictions(client: httpx.Client) -> None:
    response = client.post("/invocations", json={"dataframe_split": {"columns": FEATURES, "data": []}})
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": []}


def test_metadata_describes_the_model_and_its_example_scores(client: httpx.Client, loaded: Any) -> None:
    meta = client.get("/metadata")
    assert meta.status_code == 200, meta.text
    body = meta.json()
    assert body["model_uuid"] == loaded.metadata.model_uuid
    assert [c["name"] for c in body["signature"]["inputs"]] == FEATURES
    assert body["version"] is None and body["alias"] is None  # a path, not the registry
    # The published input example is a ready-to-send dataframe_split.
    scored = client.post("/invocations", json={"dataframe_split": body["input_example"]})
    np.testing.assert_allclose(_predictions(scored), loaded.predict(loaded.input_example), rtol=1e-12)
    version = client.get("/version").json()
    assert version["model_uuid"] == loaded.metadata.model_uuid


def test_openapi_schema_describes_invocations(server: Any) -> None:
    schema = httpx.get(server.url + "/openapi.json", headers=AUTH).json()
    body = schema["paths"]["/invocations"]["post"]["requestBody"]
    assert set(body["content"]) == {"application/json", "text/csv", "application/vnd.apache.parquet"}
    variants = {v["title"]: v for v in body["content"]["application/json"]["schema"]["oneOf"]}
    assert set(variants) == {"dataframe_split", "dataframe_records", "instances", "inputs"}
    record = variants["dataframe_records"]["properties"]["dataframe_records"]["items"]
    assert record["required"] == FEATURES
    assert record["properties"]["plan"]["type"] == "integer"
    assert schema["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


# Bad input ------------------------------------------------------------------------------

BAD_JSON = [
    ("malformed_json", b'{"dataframe_split": {"columns": ["plan"', "not valid JSON"),
    ("not_an_object", b"[1, 2, 3]", "must be an object"),
    ("unknown_key", b'{"dataframe_splitt": {"columns": [], "data": []}}', "'dataframe_splitt'"),
    ("two_keys", b'{"instances": [{"plan": 1}], "inputs": {"plan": [1]}}', "'instances' and 'inputs'"),
    ("no_data_key", b'{"params": {}}', "none of"),
    (
        "missing_column",
        b'{"dataframe_records": [{"plan": 1, "tenure": 2.0}]}',
        "'charges'",
    ),
    (
        "extra_column",
        b'{"dataframe_records": [{"plan": 1, "tenure": 2.0, "charges": 3.0, "coupon": 1}]}',
        "'coupon'",
    ),
    (
        "uncastable_text",
        b'{"dataframe_split": {"columns": ["plan", "tenure", "charges"], "data": [[1, "long", 3.0]]}}',
        "'tenure'",
    ),
    (
        "float_for_long_column",
        b'{"dataframe_split": {"columns": ["plan", "tenure", "charges"], "data": [[1.5, 2.0, 3.0]]}}',
        "'plan'",
    ),
    (
        "ragged_rows",
        b'{"dataframe_split": {"columns": ["plan", "tenure", "charges"], "data": [[1, 2.0]]}}',
        "row 0 has 2 values for 3 columns",
    ),
    ("record_missing_required", b'{"dataframe_records": [{"plan": 1, "tenure": 2.0, "charges": 3.0}, {"plan": 1, "tenure": 2.0}]}', "'charges'"),
    ("rows_wrong_width", b'{"instances": [[1, 2.0]]}', "expects 3 columns"),
    ("params_not_object", b'{"dataframe_records": [{"plan": 1, "tenure": 2.0, "charges": 3.0}], "params": [1]}', "'params'"),
    ("duplicate_column", b'{"dataframe_split": {"columns": ["plan", "plan", "charges"], "data": [[1, 2, 3.0]]}}', "'plan' appears twice"),
    ("not_utf8", b'{"dataframe_records": [{"plan": "\xff"}]}', "not valid JSON"),
]


@pytest.mark.parametrize("case, body, fragment", BAD_JSON, ids=[c[0] for c in BAD_JSON])
def test_bad_json_input_is_400_naming_the_problem(client: httpx.Client, case: str, body: bytes, fragment: str) -> None:
    response = client.post("/invocations", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["error_code"] in ("BAD_REQUEST", "INVALID_PARAMETER_VALUE")
    assert fragment in error["message"]


def test_bad_csv_and_parquet_are_400(client: httpx.Client) -> None:
    csv = client.post("/invocations", content=b"plan,tenure,charges\n1,abc,3\n", headers={"Content-Type": "text/csv"})
    assert csv.status_code == 400 and "'tenure'" in csv.json()["message"]
    empty_csv = client.post("/invocations", content=b"", headers={"Content-Type": "text/csv"})
    assert empty_csv.status_code == 400 and "empty" in empty_csv.json()["message"]
    parquet = client.post("/invocations", content=b"PAR1 not really", headers={"Content-Type": "application/vnd.apache.parquet"})
    assert parquet.status_code == 400 and "Parquet" in parquet.json()["message"]


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/xml", "application/x-www-form-urlencoded", "application/json; charset=latin-1"],
)
def test_unsupported_content_type_is_415(client: httpx.Client, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post("/invocations", content=b'{"instances": [[1, 2.0, 3.0]]}', headers=headers)
    assert response.status_code == 415, response.text
    assert "application/json" in response.json()["message"] or "UTF-8" in response.json()["message"]


def test_body_over_the_limit_is_413_and_the_server_carries_on(client: httpx.Client, rows: pd.DataFrame) -> None:
    big = json.dumps({"dataframe_records": _records(rows) * 20_000}).encode()  # ~1.5 MB > 1 MB limit
    assert len(big) > 2**20
    response = client.post("/invocations", content=big, headers={"Content-Type": "application/json"})
    assert response.status_code == 413, response.text
    assert "limit" in response.json()["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the server must count as it reads
        for start in range(0, len(big), 64 * 1024):
            yield big[start : start + 64 * 1024]

    chunked = client.post("/invocations", content=chunks(), headers={"Content-Type": "application/json"})
    assert chunked.status_code == 413, chunked.text
    ok = client.post("/invocations", json={"dataframe_records": _records(rows)})
    assert ok.status_code == 200, ok.text


def test_model_raising_inside_predict_is_500_with_request_id_and_server_survives(
    client: httpx.Client, server: Any, rows: pd.DataFrame
) -> None:
    unseen_plan = {"dataframe_records": [{"plan": 7, "tenure": 3.0, "charges": 50.0}]}
    response = client.post("/invocations", json=unseen_plan)
    assert response.status_code == 500, response.text
    body = response.json()
    request_id = response.headers["X-Request-ID"]
    assert body["request_id"] == request_id and request_id in body["message"]
    assert "unknown categories" in body["message"]
    assert request_id in server.log()  # the traceback is logged under the same id

    given = client.post("/invocations", json=unseen_plan, headers={"X-Request-ID": "trace-42"})
    assert given.status_code == 500 and given.headers["X-Request-ID"] == "trace-42"
    ok = client.post("/invocations", json={"dataframe_records": _records(rows)})
    assert ok.status_code == 200, ok.text


def test_one_failing_request_does_not_fail_its_batch_mates(client: httpx.Client, loaded: Any, churn_data: Any) -> None:
    X, _ = churn_data
    results: dict[int, httpx.Response] = {}
    barrier = threading.Barrier(12)

    def call(i: int) -> None:
        row = X.iloc[[i]]
        payload = {"dataframe_records": _records(row)}
        if i == 5:
            payload = {"dataframe_records": [{"plan": 9, "tenure": 1.0, "charges": 1.0}]}
        barrier.wait()
        results[i] = client.post("/invocations", json=payload)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results[5].status_code == 500
    for i, response in results.items():
        if i != 5:
            np.testing.assert_allclose(_predictions(response), loaded.predict(X.iloc[[i]]), rtol=1e-12)


# Auth ------------------------------------------------------------------------------------


def test_bearer_token_is_required_on_scoring_and_metadata(server: Any, rows: pd.DataFrame) -> None:
    body = {"dataframe_records": _records(rows)}
    with server.client() as anonymous:
        for method, path in [("POST", "/invocations"), ("GET", "/metadata"), ("GET", "/version")]:
            response = anonymous.request(method, path, json=body if method == "POST" else None)
            assert response.status_code == 401, (path, response.text)
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert response.json()["error_code"] == "UNAUTHENTICATED"
        wrong = anonymous.post("/invocations", json=body, headers={"Authorization": "Bearer " + TOKEN[:-1] + "X"})
        assert wrong.status_code == 401 and 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]
        basic = anonymous.post("/invocations", json=body, headers={"Authorization": "Basic " + TOKEN})
        assert basic.status_code == 401
        # Only the probes stay open, for load balancers.
        assert anonymous.get("/ping").status_code == 200
        assert anonymous.get("/health").status_code == 200
        right = anonymous.post("/invocations", json=body, headers=AUTH)
        assert right.status_code == 200, right.text


# Micro-batching --------------------------------------------------------------------------


def test_concurrent_requests_are_batched_and_each_gets_its_own_rows(
    client: httpx.Client, loaded: Any, churn_data: Any
) -> None:
    X, _ = churn_data
    n_threads, rounds = 32, 3
    expected = np.asarray(loaded.predict(X), dtype=float)
    failures: list[str] = []
    batch_sizes: list[int] = []
    barrier = threading.Barrier(n_threads)

    def worker(t: int) -> None:
        for r in range(rounds):
            # Each request: 1-3 distinct rows, in a shape chosen by thread, so batches mix
            # sizes and formats (JSON bodies of the same columns share a predict).
            start = (t * rounds + r) * 3 % (len(X) - 3)
            count = 1 + (t + r) % 3
            part = X.iloc[start : start + count]
            payload = {"dataframe_split": _split(part)} if t % 2 else {"dataframe_records": _records(part)}
            barrier.wait()
            response = client.post("/invocations", json=payload)
            try:
                np.testing.assert_allclose(_predictions(response), expected[start : start + count], rtol=1e-12)
                batch_sizes.append(int(response.headers["X-Batch-Size"]))
            except AssertionError as exc:
                failures.append(f"thread {t} round {r}: {exc}")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert len(batch_sizes) == n_threads * rounds
    assert max(batch_sizes) > 1, "32 simultaneous requests were never coalesced"
    meta = client.get("/metadata").json()["batching"]
    assert meta["predict_calls"] < meta["requests"]


def test_the_saved_serving_input_example_scores_as_is(client: httpx.Client, loaded: Any, churn_model_dir: str) -> None:
    # save_model writes serving_input_example.json in MLflow's format: it must work verbatim.
    body = (Path(churn_model_dir) / "serving_input_example.json").read_bytes()
    response = client.post("/invocations", content=body, headers={"Content-Type": "application/json"})
    np.testing.assert_allclose(_predictions(response), loaded.predict(loaded.input_example), rtol=1e-12)
