"""Bad input over HTTP: every refusal is a 4xx with MLflow's error JSON naming the field,
nothing outside the artifact root is touched, and the server keeps serving."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

import httpx
import pytest

API = "/api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
JSON_LIMIT = 64 * 1024
ARTIFACT_LIMIT = 256 * 1024


@pytest.fixture(scope="module")
def small_server(start_server: Callable[..., Any], tmp_path_factory: pytest.TempPathFactory) -> Any:
    base = tmp_path_factory.mktemp("bad-input")
    (base / "outside.txt").write_text("secret")
    root = base / "root"
    return start_server(
        f"sqlite:///{base / 'mlops.db'}", str(root),
        env={
            "PREFECT_MLOPS_SERVER_MAX_JSON_BODY_BYTES": str(JSON_LIMIT),
            "PREFECT_MLOPS_SERVER_MAX_ARTIFACT_BYTES": str(ARTIFACT_LIMIT),
        },
    )


@pytest.fixture(scope="module")
def http(small_server: Any) -> httpx.Client:
    with httpx.Client(base_url=small_server.url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def run_id(http: httpx.Client) -> str:
    experiment = http.post(f"{API}/experiments/create", json={"name": "bad-input"}).json()["experiment_id"]
    return http.post(f"{API}/runs/create", json={"experiment_id": experiment, "start_time": 1}).json()["run"]["info"]["run_id"]


def _error(response: httpx.Response, status: int, code: str, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error_code"] == code, body
    for word in words:
        assert word in body["message"], body


def test_malformed_json_wrong_types_and_missing_fields(http: httpx.Client, run_id: str) -> None:
    headers = {"Content-Type": "application/json"}
    _error(http.post(f"{API}/runs/log-metric", content=b"{not json", headers=headers), 400, "INVALID_PARAMETER_VALUE", "JSON")
    _error(http.post(f"{API}/runs/log-metric", content=b"[1, 2]", headers=headers), 400, "INVALID_PARAMETER_VALUE")
    _error(http.post(f"{API}/runs/log-metric", json={"run_id": run_id, "key": "m", "value": 1.0}), 400,
           "INVALID_PARAMETER_VALUE", "'timestamp'")
    _error(http.post(f"{API}/runs/log-metric", json={"run_id": run_id, "key": "m", "value": "high", "timestamp": 1}), 400,
           "INVALID_PARAMETER_VALUE", "'value'")
    _error(http.post(f"{API}/runs/log-metric", json={"run_id": run_id, "key": "m", "value": 1, "timestamp": 2**70}), 400,
           "INVALID_PARAMETER_VALUE", "'timestamp'")
    _error(http.post(f"{API}/runs/log-metric", json={"key": "m", "value": 1, "timestamp": 1}), 400,
           "INVALID_PARAMETER_VALUE", "'run_id'")
    _error(http.post(f"{API}/runs/log-parameter", json={"run_id": run_id, "key": "p", "value": ["a"]}), 400,
           "INVALID_PARAMETER_VALUE", "'value'")
    _error(http.post(f"{API}/runs/log-parameter", json={"run_id": run_id, "key": "bad key!", "value": "1"}), 400,
           "INVALID_PARAMETER_VALUE", "bad key!")
    _error(http.post(f"{API}/experiments/create", json={"name": 5}), 400, "INVALID_PARAMETER_VALUE", "'name'")
    _error(http.post(f"{API}/runs/update", json={"run_id": run_id, "status": "DONE"}), 400, "INVALID_PARAMETER_VALUE", "'status'")
    _error(http.get(f"{API}/metrics/get-history", params={"run_id": run_id}), 400, "INVALID_PARAMETER_VALUE", "metric_key")
    _error(http.get(f"{API}/model-versions/get", params={"name": "x", "version": "one"}), 400, "INVALID_PARAMETER_VALUE", "'version'")
    _error(http.post(f"{API}/runs/search", json={"experiment_ids": ["1"], "filter": "metrics.acc >>> 1"}), 400,
           "INVALID_PARAMETER_VALUE")
    _error(http.post(f"{API}/runs/search", json={"experiment_ids": ["1"], "page_token": "garbage!"}), 400,
           "INVALID_PARAMETER_VALUE", "page_token")
    _error(http.get(f"{API}/no-such-endpoint"), 404, "ENDPOINT_NOT_FOUND")
    # The NaN spellings of proto JSON are values, not errors.
    ok = http.post(f"{API}/runs/log-metric", json={"run_id": run_id, "key": "nan", "value": "NaN", "timestamp": 1})
    assert ok.status_code == 200, ok.text
    history = http.get(f"{API}/metrics/get-history", params={"run_id": run_id, "metric_key": "nan"}).json()["metrics"]
    assert history == [{"key": "nan", "value": "NaN", "timestamp": 1, "step": 0}]


def test_unknown_run_and_model_and_conflicts(http: httpx.Client, run_id: str) -> None:
    _error(http.get(f"{API}/runs/get", params={"run_id": "f" * 32}), 404, "RESOURCE_DOES_NOT_EXIST", "f" * 32)
    _error(http.post(f"{API}/runs/log-batch", json={"run_id": "f" * 32, "metrics": []}), 404, "RESOURCE_DOES_NOT_EXIST")
    _error(http.get(f"{API}/registered-models/get", params={"name": "ghost"}), 404, "RESOURCE_DOES_NOT_EXIST", "ghost")
    _error(http.get(f"{API}/experiments/get-by-name", params={"experiment_name": "ghost"}), 404, "RESOURCE_DOES_NOT_EXIST")
    _error(http.post(f"{API}/experiments/create", json={"name": "bad-input"}), 400, "RESOURCE_ALREADY_EXISTS", "bad-input")
    assert http.post(f"{API}/runs/log-parameter", json={"run_id": run_id, "key": "lr", "value": "0.1"}).status_code == 200
    _error(http.post(f"{API}/runs/log-parameter", json={"run_id": run_id, "key": "lr", "value": "0.2"}), 400, "INVALID_STATE", "lr")


def test_over_limit_batches_and_bodies(http: httpx.Client, run_id: str) -> None:
    params = [{"key": f"p{i}", "value": "1"} for i in range(60)]
    tags = [{"key": f"t{i}", "value": "1"} for i in range(41)]
    _error(http.post(f"{API}/runs/log-batch", json={"run_id": run_id, "params": params, "tags": tags}), 400,
           "INVALID_PARAMETER_VALUE", "100")
    logged = http.get(f"{API}/runs/get", params={"run_id": run_id}).json()["run"]["data"]
    assert not any(p["key"] == "p0" for p in logged.get("params", [])) and not any(t["key"] == "t0" for t in logged["tags"])
    big = b'{"name": "' + b"x" * (JSON_LIMIT + 10) + b'"}'
    _error(http.post(f"{API}/experiments/create", content=big, headers={"Content-Type": "application/json"}), 413,
           "RESOURCE_EXHAUSTED", str(JSON_LIMIT))

    def chunks():  # no Content-Length: the limit is enforced while reading
        yield b'{"name": "'
        for _ in range(JSON_LIMIT // 1024 + 2):
            yield b"y" * 1024
        yield b'"}'

    _error(http.post(f"{API}/experiments/create", content=chunks(), headers={"Content-Type": "application/json"}), 413,
           "RESOURCE_EXHAUSTED")
    upload = http.put(f"{ARTIFACTS}/big.bin", content=b"z" * (ARTIFACT_LIMIT + 1))
    _error(upload, 413, "RESOURCE_EXHAUSTED")
    assert http.get(f"{ARTIFACTS}/big.bin").status_code == 404


def test_hot_routes_refuse_bad_bodies_like_every_route(http: httpx.Client, run_id: str) -> None:
    """The mlflow client's hot calls (answered by the server's fast path) keep the body
    limit, name the bad field of a batch, and write nothing of a refused batch."""
    wide = b"w" * 200  # 300 points of ~260 bytes: over the limit, within the 1,000 points

    def chunks():  # no Content-Length: cut off while reading
        yield b'{"run_id": "' + run_id.encode() + b'", "metrics": ['
        for i in range(300):
            yield b'{"key": "%s", "value": 1.0, "timestamp": 1, "step": %d},' % (wide, i)
        yield b'{"key": "big", "value": 1.0, "timestamp": 1, "step": 0}]}'

    headers = {"Content-Type": "application/json"}
    _error(http.post(f"{API}/runs/log-batch", content=chunks(), headers=headers), 413, "RESOURCE_EXHAUSTED")
    metrics = [{"key": "typed", "value": 1.0, "timestamp": 1, "step": i} for i in range(600)]
    metrics[500] = {"key": "typed", "value": 1.0, "timestamp": 1, "step": "five hundred"}
    _error(http.post(f"{API}/runs/log-batch", json={"run_id": run_id, "metrics": metrics}), 400,
           "INVALID_PARAMETER_VALUE", "metrics.500.step")
    _error(http.post(f"{API}/runs/log-batch", json={"metrics": metrics[:3]}), 400, "INVALID_PARAMETER_VALUE", "'run_id'")
    _error(http.post(f"{API}/runs/update", json={"run_id": run_id, "status": "SLEEPING"}), 400,
           "INVALID_PARAMETER_VALUE", "status")
    _error(http.get(f"{API}/runs/get", params={"run_id": ""}), 400, "INVALID_PARAMETER_VALUE", "run_id")
    _error(http.post(f"{API}/runs/search", json={"experiment_ids": "1", "max_results": "many"}), 400,
           "INVALID_PARAMETER_VALUE", "max_results")
    for key in ("big", "w" * 200, "typed"):
        history = http.get(f"{API}/metrics/get-history", params={"run_id": run_id, "metric_key": key}).json()
        assert history.get("metrics", []) == []
    # Proto JSON spellings the fast check leaves to the schema are still accepted.
    lax = {"run_id": run_id, "metrics": [{"key": "lax", "value": "NaN", "timestamp": "7", "step": 1}, {"key": "lax", "value": 2, "timestamp": 8}]}
    assert http.post(f"{API}/runs/log-batch", json=lax).status_code == 200
    history = http.get(f"{API}/metrics/get-history", params={"run_id": run_id, "metric_key": "lax"}).json()["metrics"]
    assert sorted((m["step"], m["timestamp"], m["value"]) for m in history) == [(0, 8, 2.0), (1, 7, "NaN")]


def test_log_batch_points_the_fast_check_refuses_go_to_the_schema(http: httpx.Client, run_id: str) -> None:
    """The fast path checks a batch column by column; a point it cannot take (a field
    missing, a step beyond int64, not an object) is the schema's to refuse, naming the
    point, and nothing of the batch is written; an omitted step (proto JSON drops a 0) is
    step 0 and an empty metrics list with a param is a batch like any other."""
    good = {"key": "cols", "value": 1.0, "timestamp": 5, "step": 1}
    for bad, field in (
        ({"value": 1.0, "timestamp": 5, "step": 2}, "metrics.1.key"),
        ({"key": "cols", "timestamp": 5, "step": 2}, "metrics.1.value"),
        ({"key": "cols", "value": 1.0, "timestamp": 5, "step": 2**63}, "metrics.1.step"),
        ({"key": "cols", "value": 1.0, "timestamp": -(2**63) - 1, "step": 2}, "metrics.1.timestamp"),
        (["cols", 1.0, 5, 2], "metrics.1"),
    ):
        _error(http.post(f"{API}/runs/log-batch", json={"run_id": run_id, "metrics": [good, bad, good]}), 400,
               "INVALID_PARAMETER_VALUE", field)
    history = http.get(f"{API}/metrics/get-history", params={"run_id": run_id, "metric_key": "cols"}).json()
    assert history.get("metrics", []) == []
    ok = {"run_id": run_id, "metrics": [good, {"key": "cols", "value": 2.5, "timestamp": 6}]}
    assert http.post(f"{API}/runs/log-batch", json=ok).status_code == 200
    assert http.post(f"{API}/runs/log-batch", json={"run_id": run_id, "metrics": [], "params": [{"key": "p", "value": "v"}]}).status_code == 200
    history = http.get(f"{API}/metrics/get-history", params={"run_id": run_id, "metric_key": "cols"}).json()["metrics"]
    assert sorted((m["step"], m["timestamp"], m["value"]) for m in history) == [(0, 6, 2.5), (1, 5, 1.0)]
    run = http.get(f"{API}/runs/get", params={"run_id": run_id}).json()["run"]
    assert {"key": "p", "value": "v"} in run["data"]["params"]


def test_plain_log_batches_go_to_the_store_as_columns_and_keep_its_checks(http: httpx.Client, run_id: str) -> None:
    """A batch of plain points (float values, no NaN) reaches the store as columns off
    the wire; the store still refuses a bad key name (naming it, nothing of the batch
    written, small and 1,000-point batches alike) and a replayed batch adds no point."""
    for size in (3, 1000):
        # values with short spellings: 1,000 points stay under this server's 64 KB body limit
        points = [{"key": f"plain{size}", "value": i / 4, "timestamp": 10 + i, "step": i} for i in range(size)]
        bad = [*points[:-1], {"key": "../escape", "value": 1.0, "timestamp": 10, "step": 0}]
        _error(http.post(f"{API}/runs/log-batch", json={"run_id": run_id, "metrics": bad}), 400,
               "INVALID_PARAMETER_VALUE", "'../escape'")
        for _ in range(2):  # the second call is a client's retry after a lost response
            assert http.post(f"{API}/runs/log-batch", json={"run_id": run_id, "metrics": points}).status_code == 200
        history = http.get(f"{API}/metrics/get-history",
                           params={"run_id": run_id, "metric_key": f"plain{size}", "max_results": 5000}).json()["metrics"]
        assert sorted((m["step"], m["timestamp"], m["value"]) for m in history) == [
            (i, 10 + i, i / 4) for i in range(size)
        ]
    run = http.get(f"{API}/runs/get", params={"run_id": run_id}).json()["run"]
    latest = {m["key"]: (m["value"], m["step"]) for m in run["data"]["metrics"]}
    assert latest["plain1000"] == (999 / 4, 999) and latest["plain3"] == (2 / 4, 2)
    assert "../escape" not in latest


def test_log_batch_limit_is_enforced_by_count(small_server: Any, start_server: Callable[..., Any], tmp_path: Path) -> None:
    roomy = start_server(f"sqlite:///{tmp_path / 'm.db'}", str(tmp_path / "a"))
    with httpx.Client(base_url=roomy.url) as http:
        experiment = http.post(f"{API}/experiments/create", json={"name": "limits"}).json()["experiment_id"]
        run = http.post(f"{API}/runs/create", json={"experiment_id": experiment}).json()["run"]["info"]["run_id"]
        metrics = [{"key": "m", "value": 1.0, "timestamp": 1, "step": i} for i in range(1001)]
        _error(http.post(f"{API}/runs/log-batch", json={"run_id": run, "metrics": metrics}), 400,
               "INVALID_PARAMETER_VALUE", "1000")
        assert http.get(f"{API}/metrics/get-history", params={"run_id": run, "metric_key": "m"}).json().get("metrics", []) == []
        assert http.post(f"{API}/runs/log-batch", json={"run_id": run, "metrics": metrics[:1000]}).status_code == 200


def test_replayed_log_batch_leaves_history_unchanged(http: httpx.Client, run_id: str) -> None:
    batch = {
        "run_id": run_id,
        "metrics": [{"key": "replay", "value": v, "timestamp": 1000 + i, "step": i} for i, v in enumerate([0.5, "NaN", 0.25])],
    }
    for _ in range(3):  # the client retried twice after lost responses
        assert http.post(f"{API}/runs/log-batch", json=batch).status_code == 200
    single = {"run_id": run_id, "key": "replay", "value": 0.125, "timestamp": 2000, "step": 3}
    for _ in range(2):
        assert http.post(f"{API}/runs/log-metric", json=single).status_code == 200
    history = http.get(f"{API}/metrics/get-history", params={"run_id": run_id, "metric_key": "replay"}).json()["metrics"]
    assert [(p["step"], p["value"]) for p in history] == [(0, 0.5), (1, "NaN"), (2, 0.25), (3, 0.125)]
    # A new point at a logged step and time with another value is new data, and kept.
    assert http.post(f"{API}/runs/log-metric", json={**single, "value": 0.2}).status_code == 200
    history = http.get(f"{API}/metrics/get-history", params={"run_id": run_id, "metric_key": "replay"}).json()["metrics"]
    assert len(history) == 5


TRAVERSALS = [
    "../outside.txt",
    "..%2foutside.txt",
    "%2e%2e/outside.txt",
    "%2E%2E%2Foutside.txt",
    "%252e%252e/outside.txt",
    "%25252e%25252e%25252foutside.txt",
    "..%5coutside.txt",
    "..\\outside.txt",
    "a/../../outside.txt",
    "/etc/passwd",
    "%2fetc%2fpasswd",
    "C:%5cWindows%5cwin.ini",
    "x/%2e%2e/%2e%2e/outside.txt",
    "..%00/outside.txt",
    "..%23/outside.txt",
    "..%3f/outside.txt",
]


def _raw(url: str, method: str, path: str, body: bytes = b"") -> int:
    """Send the request line exactly as written (no client-side normalisation)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(
            f"{method} {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode() + body
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1])


@pytest.mark.parametrize("spelling", TRAVERSALS)
def test_artifact_proxy_refuses_traversal(small_server: Any, spelling: str) -> None:
    root = Path(small_server.artifact_root)
    base = root.parent
    before = sorted(p for p in base.rglob("*") if root not in p.parents and p != root)
    for method, body in (("PUT", b"pwned"), ("GET", b""), ("DELETE", b"")):
        status = _raw(small_server.url, method, f"{ARTIFACTS}/{spelling}", body)
        assert status in (400, 403, 404), (method, spelling, status)
    listing = _raw(small_server.url, "GET", f"{ARTIFACTS}?path={spelling}")
    assert listing in (400, 403, 404), (spelling, listing)
    after = sorted(p for p in base.rglob("*") if root not in p.parents and p != root)
    assert after == before and (base / "outside.txt").read_text() == "secret"
    assert httpx.get(small_server.url + "/health").text == "OK"


def test_artifact_proxy_round_trip_and_symlink_escape(small_server: Any, http: httpx.Client) -> None:
    name = f"{ARTIFACTS}/exp/run/artifacts/a%20b/c%23d.txt"  # 'a b/c#d.txt', encoded as clients do
    assert http.put(name, content=b"hello").status_code == 200
    assert http.get(name).content == b"hello"
    files = http.get(ARTIFACTS, params={"path": "exp/run/artifacts/a b"}).json()["files"]
    assert files == [{"path": "c#d.txt", "is_dir": False, "file_size": 5}]
    assert http.delete(name).status_code == 200
    assert http.get(name).status_code == 404
    root = Path(small_server.artifact_root)
    (root / "link").symlink_to(root.parent)
    assert http.put(f"{ARTIFACTS}/link/escaped.txt", content=b"x").status_code in (400, 403, 404)
    assert not (root.parent / "escaped.txt").exists()


def test_server_still_serves_after_bad_requests(small_server: Any, http: httpx.Client) -> None:
    assert small_server.alive()
    assert http.get("/health").text == "OK"
    assert http.post(f"{API}/experiments/search", json={}).status_code == 200
