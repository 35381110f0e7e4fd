"""The floor of ``bench/rest.py``: a server that answers every call of the benchmark at
once with a fixed body of the right shape (no database, no validation).

    python bench/rest_floor.py <port>   (``bench/rest.py floor <workdir>`` starts it)

What the benchmark measures against it is the unmodified mlflow client's own cost per
call (building and parsing protobuf JSON, requests, the socket): no server can be faster,
so ``mlflow_time / floor_time`` is the most any server can gain over ``mlflow server``.
Search answers carry as many runs as the real servers find for the benchmark's filter
(one metric, one param, two tags each, as theirs).
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path

import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _data  # noqa: E402

API = "/api/2.0/mlflow"
N_RUNS = int(os.environ.get("BENCH_REST_RUNS", "1500"))


def _run(run_id: str, acc: float = 0.9, model: str = "rf") -> dict:
    return {
        "info": {
            "run_id": run_id, "run_uuid": run_id, "run_name": "floor-run", "experiment_id": "1",
            "user_id": "bench", "status": "FINISHED", "start_time": 1_700_000_000_000,
            "end_time": 1_700_000_000_100, "lifecycle_stage": "active",
            "artifact_uri": f"mlflow-artifacts:/1/{run_id}/artifacts",
        },
        "data": {
            "metrics": [{"key": "acc", "value": acc, "timestamp": 1_700_000_000_000, "step": 0}],
            "params": [{"key": "model", "value": model}],
            "tags": [{"key": "mlflow.runName", "value": "floor-run"}, {"key": "mlflow.user", "value": "bench"}],
        },
    }


def _bodies() -> dict[str, bytes]:
    hits = [_run(uuid.uuid4().hex, acc, model) for _rid, acc, model in _data.search_rows(N_RUNS)
            if acc > 0.5 and model == "rf"]
    one = _run(uuid.uuid4().hex)
    return {
        f"{API}/experiments/create": b'{"experiment_id": "1"}',
        f"{API}/runs/create": json.dumps({"run": one}).encode(),
        f"{API}/runs/get": json.dumps({"run": one}).encode(),
        f"{API}/runs/update": json.dumps({"run_info": one["info"]}).encode(),
        f"{API}/runs/search": json.dumps({"runs": hits}).encode(),
        "/health": b"OK",
    }


BODIES = _bodies()


async def app(scope: dict, receive, send) -> None:  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    more = True
    while more:  # read the request body, as a real server must
        more = (await receive()).get("more_body", False)
    body = BODIES.get(scope["path"], b"{}")  # log-metric, log-batch: {}
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
