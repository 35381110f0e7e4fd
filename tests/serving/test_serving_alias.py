"""Serving ``models:/churn@champion`` from a real registry: the server follows the alias,
swaps without failing a request, and refuses versions that do not load or fail their own
input example."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import numpy as np
import pandas as pd
import pytest


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("registry")
    env = {
        "PREFECT_MLOPS_TRACKING_URI": f"sqlite:///{root / 'mlops.db'}",
        "PREFECT_MLOPS_ARTIFACT_ROOT": str(root / "artifacts"),
    }
    from tracking_plugin.client import TrackingClient

    client = TrackingClient(env["PREFECT_MLOPS_TRACKING_URI"], artifact_root=env["PREFECT_MLOPS_ARTIFACT_ROOT"])
    return {"root": root, "env": env, "client": client}


def _register(registry: dict[str, Any], model: Any, example: pd.DataFrame, **save_kwargs: Any) -> int:
    from tracking_plugin.models import save_model

    path = registry["root"] / f"model-{time.monotonic_ns()}"
    save_model(model, path, input_example=example, pyfunc_predict_fn="predict_proba", **save_kwargs)
    return int(registry["client"].create_model_version("churn", str(path)).version)


def _load_version(registry: dict[str, Any], version: int) -> Any:
    from tracking_plugin.models import load_model

    mv = registry["client"].get_model_version("churn", version)
    return load_model(mv.storage_location)


@pytest.fixture(scope="module")
def versions(registry: dict[str, Any], churn_data: Any, make_churn_pipeline: Callable[..., Any]) -> dict[str, int]:
    X, y = churn_data
    v1 = _register(registry, make_churn_pipeline(X, y, C=1.0), X.head(3))
    # v2 learned the opposite labels: its probabilities differ visibly from v1's.
    v2 = _register(registry, make_churn_pipeline(X, 1 - y, C=0.05), X.head(3))
    registry["client"].set_registered_model_alias("churn", "champion", v1)
    return {"v1": v1, "v2": v2}


@pytest.fixture(scope="module")
def server(start_scoring_server: Any, registry: dict[str, Any], versions: dict[str, int], server_workdir: Path) -> Iterator[Any]:
    srv = start_scoring_server(
        "models:/churn@champion", server_workdir, env=registry["env"], args=["--poll-interval", "0.2"]
    )
    yield srv
    srv.stop()


def _wait(predicate: Callable[[], Any], timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"condition not met within {timeout} s")


def _serving_version(server: Any) -> int:
    return int(httpx.get(server.url + "/version", timeout=30).json()["version"])


class _Stream:
    """Four threads posting the same rows in a loop, recording every outcome."""

    def __init__(self, server: Any, rows: pd.DataFrame, threads: int = 4) -> None:
        self.body = {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}
        self.server = server
        self.outcomes: list[tuple[float, int, Any]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        with httpx.Client(base_url=self.server.url, timeout=60) as client:
            while not self._stop.is_set():
                try:
                    response = client.post("/invocations", json=self.body)
                    payload = response.json()["predictions"] if response.status_code == 200 else response.text
                    self.outcomes.append((time.monotonic(), response.status_code, payload))
                except httpx.HTTPError as exc:  # a dropped connection is a failed request too
                    self.outcomes.append((time.monotonic(), -1, repr(exc)))

    def __enter__(self) -> "_Stream":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()


def _matches(predictions: Any, expected: np.ndarray) -> bool:
    got = np.asarray(predictions, dtype=float)
    return got.shape == expected.shape and np.allclose(got, expected, rtol=1e-12, atol=0)


@pytest.mark.slow
def test_alias_move_is_followed_without_a_failed_request(
    server: Any, registry: dict[str, Any], versions: dict[str, int], churn_data: Any, make_churn_pipeline: Callable[..., Any]
) -> None:
    X, y = churn_data
    rows = X.iloc[20:24]
    expected = {v: np.asarray(_load_version(registry, versions[v]).predict(rows), dtype=float) for v in ("v1", "v2")}
    assert not np.allclose(expected["v1"], expected["v2"])
    assert _serving_version(server) == versions["v1"]

    with _Stream(server, rows) as stream:
        _wait(lambda: len(stream.outcomes) >= 20)
        registry["client"].set_registered_model_alias("churn", "champion", versions["v2"])
        _wait(lambda: _serving_version(server) == versions["v2"])
        swapped_at = time.monotonic()
        _wait(lambda: sum(1 for t, _, _ in stream.outcomes if t > swapped_at + 0.2) >= 20)

    failed = [(code, body) for _, code, body in stream.outcomes if code != 200]
    assert failed == []
    labels = ["v1" if _matches(p, expected["v1"]) else "v2" if _matches(p, expected["v2"]) else "?" for _, _, p in stream.outcomes]
    assert "?" not in labels
    assert "v1" in labels and "v2" in labels
    # Once /version says v2, responses (sent after it) come from v2.
    assert all(label == "v2" for (t, _, _), label in zip(stream.outcomes, labels) if t > swapped_at + 0.2)

    meta = httpx.get(server.url + "/metadata").json()
    assert meta["version"] == versions["v2"] and meta["alias"] == "champion" and meta["name"] == "churn"
    assert meta["source_uri"] == f"models:/churn/{versions['v2']}"

    # v3 fails its own input example (a plan it never saw in training): not swapped in.
    from tracking_plugin.models import infer_signature

    bad_example = rows.head(1).assign(plan=9)
    v3 = _register(registry, make_churn_pipeline(X, y), bad_example, signature=infer_signature(X))
    # v4 is tampered with after registration: its files fail the manifest check on load.
    v4 = _register(registry, make_churn_pipeline(X, y), X.head(3))
    stored = Path(registry["client"].get_model_version("churn", v4).storage_location.removeprefix("file://"))
    model_file = next(stored.glob("model.*"))
    model_file.write_bytes(model_file.read_bytes()[:-16] + b"\0" * 16)

    with _Stream(server, rows, threads=2) as stream:
        for broken in (v3, v4):
            registry["client"].set_registered_model_alias("churn", "champion", broken)
            refused = _wait(lambda: {r["version"]: r["reason"] for r in httpx.get(server.url + "/metadata").json()["refused_versions"]}.get(broken))
            assert refused
            assert _serving_version(server) == versions["v2"]
    assert [code for _, code, _ in stream.outcomes if code != 200] == []
    assert all(_matches(p, expected["v2"]) for _, _, p in stream.outcomes)
    reasons = {r["version"]: r["reason"] for r in httpx.get(server.url + "/metadata").json()["refused_versions"]}
    assert "unknown categories" in reasons[v3]
    assert "ModelLoadRefused" in reasons[v4]
    assert "churn" in server.log() and f"not swapping in churn version {v3}" in server.log()

    # After refusals the server still follows the alias to a good version.
    registry["client"].set_registered_model_alias("churn", "champion", versions["v1"])
    _wait(lambda: _serving_version(server) == versions["v1"])
    response = httpx.post(server.url + "/invocations", json={"dataframe_split": json.loads(rows.to_json(orient="split", index=False))})
    assert _matches(response.json()["predictions"], expected["v1"])
