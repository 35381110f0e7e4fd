"""Fault 6: a model's file is deleted, or corrupted, under a running alias-following
scoring server while the alias is moved to that version (a promotion).

Promise: the broken version is refused (the server says why in ``/metadata``), the old
version keeps serving, and a client loop running all along sees 0 failed requests; a good
version promoted afterwards is swapped in.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import numpy as np
import pytest
from serving.conftest import ServingServer, churn_frame, churn_pipeline, start_server

from tracking_plugin.client import TrackingClient
from tracking_plugin.models import load_model, save_model

pytestmark = pytest.mark.slow


def _wait(predicate: Callable[[], Any], timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"condition not met within {timeout} s")


class ClientLoop:
    """Threads posting the same rows in a loop, recording every outcome."""

    def __init__(self, url: str, body: dict[str, Any], threads: int = 3) -> None:
        self.url, self.body = url, body
        self.outcomes: list[tuple[int, Any]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while not self._stop.is_set():
                try:
                    response = client.post("/invocations", json=self.body)
                    ok = response.status_code == 200
                    self.outcomes.append((response.status_code, response.json()["predictions"] if ok else response.text))
                except httpx.HTTPError as exc:  # a dropped connection is a failed request too
                    self.outcomes.append((-1, repr(exc)))

    def __enter__(self) -> "ClientLoop":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[dict[str, Any]]:
    env = {
        "PREFECT_MLOPS_TRACKING_URI": f"sqlite:///{tmp_path / 'mlops.db'}",
        "PREFECT_MLOPS_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
    }
    client = TrackingClient(env["PREFECT_MLOPS_TRACKING_URI"], artifact_root=env["PREFECT_MLOPS_ARTIFACT_ROOT"])
    yield {"root": tmp_path, "env": env, "client": client}
    client.close()


def test_a_broken_model_file_is_refused_during_a_promotion_without_a_failed_request(registry: dict[str, Any]) -> None:
    X, y = churn_frame()
    client = registry["client"]

    def register(labels: Any, C: float) -> int:
        path = registry["root"] / f"model-{time.monotonic_ns()}"
        save_model(churn_pipeline(X, labels, C=C), path, input_example=X.head(3), pyfunc_predict_fn="predict_proba")
        return int(client.create_model_version("churn", str(path)).version)

    def stored_file(version: int) -> Path:
        location = client.get_model_version("churn", version).storage_location.removeprefix("file://")
        return next(Path(location).glob("model.*"))

    v1 = register(y, 1.0)
    deleted, corrupted, good = register(1 - y, 0.05), register(1 - y, 0.1), register(1 - y, 0.2)
    client.set_registered_model_alias("churn", "champion", v1)
    rows = X.iloc[20:24]
    expected = {
        v: np.asarray(load_model(client.get_model_version("churn", v).storage_location).predict(rows), dtype=float)
        for v in (v1, good)
    }
    stored_file(deleted).unlink()
    broken = stored_file(corrupted)
    broken.write_bytes(broken.read_bytes()[: len(broken.read_bytes()) // 2])

    server: ServingServer = start_server(
        "models:/churn@champion", registry["root"], env=registry["env"], args=["--poll-interval", "0.2"]
    )
    try:
        def serving() -> int:
            return int(httpx.get(server.url + "/version", timeout=30).json()["version"])

        def refused() -> dict[int, str]:
            meta = httpx.get(server.url + "/metadata", timeout=30).json()
            return {int(r["version"]): r["reason"] for r in meta["refused_versions"]}

        body = {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}
        with ClientLoop(server.url, body) as loop:
            _wait(lambda: len(loop.outcomes) >= 20)
            for version in (deleted, corrupted):
                client.set_registered_model_alias("churn", "champion", version)  # the promotion
                _wait(lambda: version in refused())
                assert serving() == v1
            during_refusals = len(loop.outcomes)
            _wait(lambda: len(loop.outcomes) >= during_refusals + 20)
            client.set_registered_model_alias("churn", "champion", good)
            _wait(lambda: serving() == good)
            swapped = len(loop.outcomes)
            _wait(lambda: len(loop.outcomes) >= swapped + 20)

        failed = [(code, body) for code, body in loop.outcomes if code != 200]
        assert failed == [], f"{len(failed)} failed requests: {failed[:3]}"

        def origin(predictions: Any) -> str:
            got = np.asarray(predictions, dtype=float)
            return next((f"v{v}" for v, e in expected.items() if got.shape == e.shape and np.allclose(got, e)), "?")

        origins = [origin(p) for _, p in loop.outcomes]
        assert "?" not in origins and origins[:during_refusals] == [f"v{v1}"] * during_refusals
        assert origins[-1] == f"v{good}"
        reasons = refused()
        assert "ModelLoadRefused" in reasons[deleted] and "ModelLoadRefused" in reasons[corrupted], reasons
    finally:
        server.stop()
