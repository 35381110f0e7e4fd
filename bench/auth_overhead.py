"""The per-request cost of ``--auth``, in process: the same tracking-server app with and
without authentication, driven over ASGI (no sockets, no client library), in CPU time.

    python bench/auth_overhead.py <workdir>   -> prints one JSON object

End-to-end medians (``bench/rest.py ours DIR --auth``) carry the client's and the socket's
milliseconds and the machine's noise; this isolates what auth adds to one request on the
server: the credential cache lookup (sha256 of the header), the rule lookup, parsing the
request's parameters and, for a non-admin, the permission query (one indexed join per run
write). Each round sends ``N`` ``runs/log-metric`` requests to each app in turn (a
non-admin user who created the experiment, so the permission check runs; Basic and
Bearer), and the answer is the median over rounds of CPU microseconds per request
(``time.process_time``: waiting on a loaded machine does not count).

Keys: ``us_per_request_off``, ``us_per_request_basic``, ``us_per_request_token``,
``auth_cost_us_basic`` / ``auth_cost_us_token`` (the differences), ``first_login_ms`` (one
uncached password check: argon2, paid once per credential and cache period).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import statistics
import sys
import time
from pathlib import Path

N = int(os.environ.get("BENCH_AUTH_REQUESTS", "500"))
ROUNDS = int(os.environ.get("BENCH_AUTH_ROUNDS", "5"))
ADMIN, ADMIN_PW = "bench-admin", "bench-admin-password"
USER, USER_PW = "bench-user", "bench-user-password"


def _app(workdir: Path, auth: bool):  # type: ignore[no-untyped-def]
    from serving_tasks.tracking_server import ServerSettings, create_app
    from serving_tasks.tracking_server.auth import AuthSettings

    name = "auth" if auth else "off"
    settings = ServerSettings(backend_store_uri=f"sqlite:///{workdir / f'{name}.db'}",
                              default_artifact_root=str(workdir / f"{name}-artifacts"))
    return create_app(settings, auth=AuthSettings(enabled=auth, admin_username=ADMIN, admin_password=ADMIN_PW))


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def _setup(client, headers: dict[str, str]) -> str:  # type: ignore[no-untyped-def]
    eid = (await client.post("/api/2.0/mlflow/experiments/create", json={"name": "bench"}, headers=headers)).json()
    run = (await client.post("/api/2.0/mlflow/runs/create", json={"experiment_id": eid["experiment_id"]},
                             headers=headers)).json()
    return str(run["run"]["info"]["run_id"])


async def _round(client, run_id: str, headers: dict[str, str], key: str) -> float:  # type: ignore[no-untyped-def]
    start = time.process_time()
    for i in range(N):
        r = await client.post("/api/2.0/mlflow/runs/log-metric", headers=headers,
                              json={"run_id": run_id, "key": key, "value": float(i), "timestamp": 0, "step": i})
        if r.status_code != 200:
            raise RuntimeError(r.text)
    return (time.process_time() - start) / N * 1e6


async def main(workdir: Path) -> dict[str, float]:
    import httpx

    off_app, auth_app = _app(workdir, False), _app(workdir, True)
    async with (httpx.AsyncClient(transport=httpx.ASGITransport(app=off_app), base_url="http://off") as off,
                httpx.AsyncClient(transport=httpx.ASGITransport(app=auth_app), base_url="http://auth") as on):
        admin = _basic(ADMIN, ADMIN_PW)
        r = await on.post("/api/2.0/mlflow/users/create", json={"username": USER, "password": USER_PW}, headers=admin)
        r.raise_for_status()
        basic = _basic(USER, USER_PW)
        t = time.perf_counter()
        token = (await on.post("/api/2.0/mlops/tokens/create", json={"name": "bench"}, headers=basic)).json()["token"]
        first_login_ms = (time.perf_counter() - t) * 1000
        bearer = {"Authorization": f"Bearer {token}"}
        off_run, on_run = await _setup(off, {}), await _setup(on, basic)
        results: dict[str, list[float]] = {"off": [], "basic": [], "token": []}
        for _ in range(ROUNDS):
            results["off"].append(await _round(off, off_run, {}, "m"))
            results["basic"].append(await _round(on, on_run, basic, "m"))
            results["token"].append(await _round(on, on_run, bearer, "t"))
    med = {k: statistics.median(v) for k, v in results.items()}
    return {
        "requests_per_round": N, "rounds": ROUNDS,
        "us_per_request_off": med["off"], "us_per_request_basic": med["basic"], "us_per_request_token": med["token"],
        "auth_cost_us_basic": med["basic"] - med["off"], "auth_cost_us_token": med["token"] - med["off"],
        "first_login_ms": first_login_ms,
    }


if __name__ == "__main__":
    folder = Path(sys.argv[1]).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    print(json.dumps(asyncio.run(main(folder))))
