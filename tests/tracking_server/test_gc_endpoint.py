"""``POST /api/2.0/mlops/gc``: prefect-mlops gc on the server's backend, for admins only.

A real ``prefect-mlops server --auth`` subprocess on SQLite + local folder and on
PostgreSQL + S3 (moto), spoken to over a socket: a run logged and uploaded through the
server, deleted, then garbage-collected through the endpoint.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator

import httpx
import pytest

ADMIN, ADMIN_PW = "gc-admin", "gc-admin-pw-0123456789"
USER, USER_PW = "gc-user", "gc-user-pw-0123456789"
M, X, A = "/api/2.0/mlflow", "/api/2.0/mlops", "/api/2.0/mlflow-artifacts"


def ok(r: httpx.Response) -> Any:
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def gc_server(backend: dict[str, Any], start_server: Callable[..., Any]) -> Any:
    env = {**backend["env"], "PREFECT_MLOPS_AUTH_ADMIN_USERNAME": ADMIN, "PREFECT_MLOPS_AUTH_ADMIN_PASSWORD": ADMIN_PW}
    return start_server(backend["db_uri"], backend["artifact_root"], "--auth", env=env)


@pytest.fixture(scope="module")
def admin(gc_server: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gc_server.url, auth=(ADMIN, ADMIN_PW), timeout=60) as client:
        yield client


def test_gc_endpoint_is_admin_only_and_removes_a_deleted_run(gc_server: Any, admin: httpx.Client) -> None:
    ok(admin.post(f"{M}/users/create", json={"username": USER, "password": USER_PW}))
    eid = ok(admin.post(f"{M}/experiments/create", json={"name": f"gc-{time.time_ns()}"}))["experiment_id"]
    # The user may manage the experiment, and still may not run gc.
    ok(admin.post(f"{M}/experiments/permissions/create",
                  json={"experiment_id": eid, "username": USER, "permission": "MANAGE"}))
    with httpx.Client(base_url=gc_server.url, auth=(USER, USER_PW), timeout=60) as user:
        run = ok(user.post(f"{M}/runs/create", json={"experiment_id": eid}))["run"]["info"]
        run_id = run["run_id"]
        ok(user.post(f"{M}/runs/log-parameter", json={"run_id": run_id, "key": "k", "value": "v"}))
        path = run["artifact_uri"].split("mlflow-artifacts:/", 1)[1].lstrip("/")
        ok(user.put(f"{A}/artifacts/{path}/notes.txt", content=b"n" * 500))
        ok(user.post(f"{M}/runs/delete", json={"run_id": run_id}))
        time.sleep(0.01)
        refused = user.post(f"{X}/gc", json={"older_than": "0s"})
        assert refused.status_code == 403, refused.text
    assert httpx.post(gc_server.url + f"{X}/gc", json={"older_than": "0s"}).status_code == 401
    ok(admin.get(f"{M}/runs/get", params={"run_id": run_id}))  # refused calls removed nothing

    dry = ok(admin.post(f"{X}/gc", json={"older_than": "0s", "experiment_ids": [eid], "dry_run": True}))
    assert dry["dry_run"] and dry["runs_removed"] == 1 and dry["bytes_removed"] == 500
    ok(admin.get(f"{M}/runs/get", params={"run_id": run_id}))

    bad = admin.post(f"{X}/gc", json={"older_than": "a while"})
    assert bad.status_code == 400 and "'a while'" in bad.json()["message"], bad.text

    done = ok(admin.post(f"{X}/gc", json={"older_than": "0s", "experiment_ids": [eid]}))
    assert not done["dry_run"] and [i["id"] for i in done["removed"]] == [run_id]
    gone = admin.get(f"{M}/runs/get", params={"run_id": run_id})
    assert gone.status_code == 404 and "garbage-collected" in gone.json()["message"], gone.text
    assert admin.get(f"{A}/artifacts/{path}/notes.txt").status_code == 404
