"""The ``mlops.model.promoted`` Prefect event makes the server swap at once, with polling off:
the real ``registry_tasks.promote`` task in a flow, a real Prefect server (test harness)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest


@pytest.mark.slow
def test_promoted_event_swaps_the_served_version_without_polling(
    prefect_harness: None,
    start_scoring_server: Any,
    tmp_path: Path,
    churn_data: Any,
    make_churn_pipeline: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect import flow
    from prefect.settings import PREFECT_API_URL

    from registry_tasks.tasks import promote
    from tracking_plugin.client import TrackingClient
    from tracking_plugin.models import save_model

    backend = {
        "PREFECT_MLOPS_TRACKING_URI": f"sqlite:///{tmp_path / 'mlops.db'}",
        "PREFECT_MLOPS_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
    }
    for key, value in backend.items():
        monkeypatch.setenv(key, value)
    client = TrackingClient()
    X, y = churn_data
    versions = []
    for i, labels in enumerate((y, 1 - y)):
        path = tmp_path / f"model-{i}"
        save_model(make_churn_pipeline(X, labels), path, input_example=X.head(2))
        versions.append(int(client.create_model_version("churn", str(path)).version))
    client.set_registered_model_alias("churn", "champion", versions[0])

    server = start_scoring_server(
        "models:/churn@champion",
        tmp_path,
        env={**backend, "PREFECT_API_URL": str(PREFECT_API_URL.value())},
        args=["--poll-interval", "0"],  # never poll: only the event can move it
    )
    try:
        meta = httpx.get(server.url + "/metadata").json()
        assert meta["version"] == versions[0]
        assert meta["alias_follow"] == {"poll_interval_s": None, "promotion_events": True, "last_registry_error": None}

        # Promote only once the server is subscribed, so that the swap can only come from
        # the event (on connecting, the server checks the registry once by itself).
        deadline = time.monotonic() + 120
        while "listening for mlops.model.promoted" not in server.log():
            assert time.monotonic() < deadline, "the server never subscribed to events:\n" + server.log()
            time.sleep(0.2)

        @flow
        def promote_v2() -> None:
            promote("churn", versions[1], require_passed_gate=False)

        promote_v2()
        deadline = time.monotonic() + 90
        while httpx.get(server.url + "/version").json()["version"] != versions[1]:
            assert time.monotonic() < deadline, "the promoted event did not reach the server:\n" + server.log()
            time.sleep(0.2)
    finally:
        server.stop()
