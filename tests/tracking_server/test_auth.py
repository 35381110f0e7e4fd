"""``prefect-mlops server --auth``: credentials, the rule table, the mlflow client, secrets.

One authenticated server per backend (SQLite + folder, PostgreSQL + S3), started as a user
would (the console script, first admin from the environment), spoken to over a socket.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest
from tracking_server.conftest import CONSOLE_SCRIPT, ServerProcess

ADMIN, ADMIN_PW = "root-admin", "admin-pw-0123456789"
ROLES = ("NO_PERMISSIONS", "READ", "EDIT", "MANAGE")
M = "/api/2.0/mlflow"
X = "/api/2.0/mlops"


def _pw(role: str) -> str:
    return f"pw-{role.lower()}-5f3a9c"


def _user(role: str) -> str:
    return f"u-{role.lower()}"


@pytest.fixture(scope="module")
def auth_server(backend: dict[str, Any], start_server: Callable[..., ServerProcess]) -> ServerProcess:
    env = {**backend["env"], "PREFECT_MLOPS_AUTH_ADMIN_USERNAME": ADMIN, "PREFECT_MLOPS_AUTH_ADMIN_PASSWORD": ADMIN_PW}
    server = start_server(backend["db_uri"], backend["artifact_root"], "--auth", env=env)
    admin = httpx.Client(base_url=server.url, auth=(ADMIN, ADMIN_PW), timeout=30)
    for role in ROLES:
        r = admin.post(f"{M}/users/create", json={"username": _user(role), "password": _pw(role)})
        assert r.status_code == 200, r.text
    return server


@pytest.fixture(scope="module")
def admin(auth_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=auth_server.url, auth=(ADMIN, ADMIN_PW), timeout=30) as c:
        yield c


def as_role(server: ServerProcess, role: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, auth=(_user(role), _pw(role)), timeout=30)


def ok(r: httpx.Response) -> Any:
    assert r.status_code == 200, r.text
    return r.json()


# ------------------------------------------------------------------ credentials


def test_missing_bad_and_malformed_credentials_are_401(auth_server: ServerProcess) -> None:
    url = auth_server.url + f"{M}/experiments/search"
    body = {"max_results": 1}
    cases = {
        "none": {},
        "wrong password": {"Authorization": httpx.BasicAuth(ADMIN, "wrong-password")._auth_header},
        "unknown user": {"Authorization": httpx.BasicAuth("nobody-here", "whatever-pw")._auth_header},
        "no colon": {"Authorization": "Basic " + __import__("base64").b64encode(b"admin-no-colon").decode()},
        "not base64": {"Authorization": "Basic %%%not-base64%%%"},
        "bad scheme": {"Authorization": "Digest abc"},
        "empty bearer": {"Authorization": "Bearer"},
        "two bearer words": {"Authorization": "Bearer a b"},
        "unknown token": {"Authorization": "Bearer mlops_0000_notatoken"},
        "10 KB header": {"Authorization": "Bearer " + "x" * 10_240},
        "unicode user": {"Authorization": httpx.BasicAuth("ユーザー", "pässwörd-123")._auth_header},
    }
    for case, headers in cases.items():
        r = httpx.post(url, json=body, headers=headers, timeout=30)
        assert r.status_code == 401, (case, r.status_code, r.text)
        assert r.json()["error_code"] == "UNAUTHENTICATED", case
        assert "wrong-password" not in r.text and "x" * 100 not in r.text
    # health checks and the version stay public
    assert httpx.get(auth_server.url + "/health").text == "OK"


def test_failed_logins_are_rate_limited_per_user_and_address(auth_server: ServerProcess, admin: httpx.Client) -> None:
    name = f"victim-{uuid.uuid4().hex[:6]}"
    ok(admin.post(f"{M}/users/create", json={"username": name, "password": "correct-horse-1"}))
    url = auth_server.url + f"{M}/experiments/search"
    statuses = [httpx.post(url, json={}, auth=(name, f"guess-{i}-xxxx")).status_code for i in range(7)]
    assert statuses[:5] == [401] * 5 and statuses[5:] == [429, 429], statuses
    r = httpx.post(url, json={}, auth=(name, "correct-horse-1"))
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1, r.text  # even the right one, for now
    assert httpx.post(url, json={}, auth=(ADMIN, ADMIN_PW)).status_code == 200  # other users are unaffected


def test_api_tokens_create_list_revoke_expire(auth_server: ServerProcess) -> None:
    reader = as_role(auth_server, "READ")
    created = ok(reader.post(f"{X}/tokens/create", json={"name": "ci"}))
    token, info = created["token"], created["token_info"]
    assert token.startswith("mlops_") and info["username"] == _user("READ")
    bearer = {"Authorization": f"Bearer {token}"}
    assert httpx.post(auth_server.url + f"{M}/experiments/search", json={}, headers=bearer).status_code == 200
    listed = ok(reader.get(f"{X}/tokens/list"))["tokens"]
    assert [t["token_id"] for t in listed if t["name"] == "ci"] == [info["token_id"]]
    assert token not in str(listed)
    # another (non-admin) user may not revoke it; its owner may
    other = as_role(auth_server, "EDIT")
    assert other.post(f"{X}/tokens/revoke", json={"token_id": info["token_id"]}).status_code == 403
    ok(reader.post(f"{X}/tokens/revoke", json={"token_id": info["token_id"]}))  # also leaves the server's cache
    r = httpx.post(auth_server.url + f"{M}/experiments/search", json={}, headers=bearer)
    assert r.status_code == 401 and r.json()["error_code"] == "UNAUTHENTICATED"
    # an expired token
    short = ok(reader.post(f"{X}/tokens/create", json={"name": "short", "expires_in_seconds": 1}))["token"]
    time.sleep(1.3)
    r = httpx.post(auth_server.url + f"{M}/experiments/search", json={}, headers={"Authorization": f"Bearer {short}"})
    assert r.status_code == 401


def test_last_admin_cannot_be_removed_and_bad_grants_change_nothing(admin: httpx.Client) -> None:
    r = admin.request("DELETE", f"{M}/users/delete", json={"username": ADMIN})
    assert r.status_code == 400 and "last admin" in r.json()["message"]
    r = admin.patch(f"{M}/users/update-admin", json={"username": ADMIN, "is_admin": False})
    assert r.status_code == 400
    assert ok(admin.get(f"{M}/users/get", params={"username": ADMIN}))["user"]["is_admin"] is True
    r = admin.post(f"{M}/experiments/permissions/create",
                   json={"experiment_id": "987654", "username": _user("READ"), "permission": "READ"})
    assert r.status_code == 404 and "987654" in r.json()["message"]
    r = admin.post(f"{M}/users/create", json={"username": "bad:name", "password": "long-enough-pw"})
    assert r.status_code == 400
    uni = "Jürgen-ユーザー"
    ok(admin.post(f"{M}/users/create", json={"username": uni, "password": "long-enough-pw"}))
    assert httpx.post(str(admin.base_url) + f"{M}/experiments/search", json={},
                      auth=httpx.BasicAuth(uni, "long-enough-pw")).status_code == 200


# ---------------------------------------------------------------- permission matrix


def _fixture(admin: httpx.Client, *, decision: bool = False) -> dict[str, str]:
    """A fresh experiment, run, logged model and registered model, with each role's grant
    (and with ``decision``, version 1 of the model with a passed gate decision)."""
    tag = uuid.uuid4().hex[:8]
    eid = ok(admin.post(f"{M}/experiments/create", json={"name": f"matrix-{tag}"}))["experiment_id"]
    run = ok(admin.post(f"{M}/runs/create", json={"experiment_id": eid}))["run"]["info"]
    run_id, run_folder = run["run_id"], run["artifact_uri"].removeprefix("mlflow-artifacts:/").strip("/")
    lm = ok(admin.post(f"{M}/logged-models", json={"experiment_id": eid, "name": "m"}))["model"]["info"]["model_id"]
    name = f"matrix-model-{tag}"
    ok(admin.post(f"{M}/registered-models/create", json={"name": name}))
    for role in ROLES:
        ok(admin.post(f"{M}/experiments/permissions/create",
                      json={"experiment_id": eid, "username": _user(role), "permission": role}))
        ok(admin.post(f"{M}/registered-models/permissions/create",
                      json={"name": name, "username": _user(role), "permission": role}))
    token_id = ok(admin.post(f"{X}/tokens/create", json={"name": "matrix"}))["token_info"]["token_id"]
    decision_id = "no-such-decision"
    if decision:
        ok(admin.post(f"{M}/model-versions/create",
                      json={"name": name, "source": f"mlflow-artifacts:/{run_folder}", "run_id": run_id}))
        decision_id = ok(admin.post(f"{X}/store/gate-decisions/record", json={
            "name": name, "version": "1", "passed": True, "reason": "ok", "details": {}}))["gate_decision"]["id"]
    return {"experiment_id": eid, "run_id": run_id, "model_id": lm, "name": name, "token_id": token_id,
            "experiment_name": f"matrix-{tag}", "artifact_path": f"{run_folder}/f.txt",
            "path": run_folder, "tag_key": "t", "id": decision_id}


def _call(client: httpx.Client, method: str, template: str, res: dict[str, str], username: str | None) -> httpx.Response:
    path = template.replace("{artifact_path:path}", res["artifact_path"])
    for key in ("model_id", "tag_key", "experiment_id", "run_id", "name"):
        path = path.replace("{" + key + "}", res[key])
    path = path.replace("{version}", "1")
    fields = {k: res[k] for k in ("experiment_id", "run_id", "name", "token_id", "experiment_name", "path", "id")}
    fields.update(run_ids=res["run_id"], runs=res["run_id"], run=res["run_id"], key="acc")
    if username:
        fields["username"] = username
    if method == "GET":
        return client.get(path, params=fields)
    if method == "PUT":
        return client.put(path, content=b"hello")
    body = {**fields, "experiment_ids": [res["experiment_id"]], "run_ids": [res["run_id"]]}
    return client.request(method, path, params={"path": res["path"]} if "artifacts" in path else None, json=body)


def _expected(rule: Any, role: str | None) -> str:
    from serving_tasks.tracking_server.auth import Access, Permission

    if rule.access is Access.PUBLIC:
        return "allowed"
    if role is None:
        return "401"
    if role == "admin":
        return "allowed"
    if rule.access in (Access.AUTHENTICATED, Access.SELF_OR_ADMIN, Access.SEARCHED_EXPERIMENTS):
        return "allowed"  # SEARCHED_EXPERIMENTS: unreadable experiments are left out of the search
    if rule.access is Access.RUN_BY_PREFECT_ID:
        return "allowed"  # no run of the fixture has a Prefect id: nothing to protect, the route answers 4xx
    if rule.access in (Access.ADMIN, Access.TOKEN_OWNER):
        return "403"
    return "allowed" if Permission(role).allows(rule.permission) else "403"


def _routes(server: ServerProcess) -> list[tuple[str, str]]:
    """Every route of the app the server runs (built in this process on the same settings)."""
    from fastapi.routing import APIRoute

    from serving_tasks.tracking_server import ServerSettings, create_app
    from serving_tasks.tracking_server.auth import AuthSettings

    app = create_app(
        ServerSettings(backend_store_uri=server.db_uri, default_artifact_root=server.artifact_root),
        auth=AuthSettings(enabled=True),
    )

    def walk(routes: list[Any]) -> Iterator[APIRoute]:
        for route in routes:
            if isinstance(route, APIRoute):
                yield route
            elif hasattr(route, "original_router"):  # FastAPI >= 0.140 keeps included routers whole
                yield from walk(route.original_router.routes)
            elif hasattr(route, "routes"):
                yield from walk(route.routes)

    found = sorted({(m, r.path) for r in walk(app.routes) for m in r.methods})
    from tracking_plugin.backend import release_store

    release_store(app.state.store)
    assert len(found) > 80, found
    return found


def test_every_route_has_a_rule_and_unknown_routes_are_denied(auth_server: ServerProcess, admin: httpx.Client) -> None:
    from serving_tasks.tracking_server.auth import RULES, rule_for

    routes = _routes(auth_server)
    assert [r for r in routes if rule_for(*r) is None] == [], "routes without a permission rule"
    assert sorted(set(RULES) - set(routes)) == [], "rules naming no route"
    r = admin.get("/api/2.0/mlflow/no-such-thing")
    assert r.status_code == 404


def test_permission_matrix(auth_server: ServerProcess, admin: httpx.Client) -> None:
    from serving_tasks.tracking_server.auth import rule_for

    shared = _fixture(admin, decision=True)
    clients: dict[str | None, httpx.Client] = {
        None: httpx.Client(base_url=auth_server.url, timeout=30),
        **{role: as_role(auth_server, role) for role in ROLES}, "admin": admin,
    }
    wrong: list[str] = []
    for method, template in _routes(auth_server):
        rule = rule_for(method, template)
        destructive = method == "DELETE" or template.endswith(("/delete", "/restore", "/revoke"))
        # Roles go from least to most privileged: denied calls change nothing, so on a
        # fresh fixture the first allowed call is the first to change anything, and the
        # admin after it is allowed whatever state it left.
        res = _fixture(admin) if destructive else shared
        for role, client in clients.items():
            username = None if role is None else ADMIN if role == "admin" else _user(role)
            r = _call(client, method, template, res, username)
            got = "401" if r.status_code == 401 else "403" if r.status_code == 403 else "allowed"
            want = _expected(rule, role)
            if got != want:
                wrong.append(f"{method} {template} as {role}: want {want}, got {r.status_code} {r.text[:150]}")
            if r.status_code >= 500:
                wrong.append(f"{method} {template} as {role}: {r.status_code} {r.text[:150]}")
    assert wrong == [], "\n".join(wrong)


def test_searches_return_only_what_the_caller_may_read(auth_server: ServerProcess, admin: httpx.Client) -> None:
    res = _fixture(admin)
    for role in ROLES:
        client = as_role(auth_server, role)
        experiments = client.post(f"{M}/experiments/search", json={"max_results": 1000}).json().get("experiments", [])
        models = client.get(f"{M}/registered-models/search", params={"max_results": 1000}).json()
        names = [m["name"] for m in models.get("registered_models", [])]
        readable = role != "NO_PERMISSIONS"
        assert (res["experiment_id"] in [e["experiment_id"] for e in experiments]) is readable, role
        assert (res["name"] in names) is readable, role
        runs = ok(client.post(f"{M}/runs/search", json={"experiment_ids": [res["experiment_id"]]})).get("runs", [])
        assert ([r["info"]["run_id"] for r in runs] == [res["run_id"]]) is readable, role


def test_run_and_logged_model_searches_leave_unreadable_experiments_out(
    auth_server: ServerProcess, admin: httpx.Client
) -> None:
    """As MLflow's search_runs: the experiments named that the caller may not read are
    left out of the search (no error, nothing of theirs returned); admins see all."""
    hidden = _fixture(admin)  # NO_PERMISSIONS holds NO_PERMISSIONS on it
    shown = _fixture(admin)
    ok(admin.patch(f"{M}/experiments/permissions/update", json={
        "experiment_id": shown["experiment_id"], "username": _user("NO_PERMISSIONS"), "permission": "READ"}))
    both = {"experiment_ids": [hidden["experiment_id"], shown["experiment_id"]]}
    with as_role(auth_server, "NO_PERMISSIONS") as client:
        runs = ok(client.post(f"{M}/runs/search", json={**both, "max_results": 10})).get("runs", [])
        assert [r["info"]["run_id"] for r in runs] == [shown["run_id"]]
        models = ok(client.post(f"{M}/logged-models/search", json=both)).get("models", [])
        assert [m["info"]["model_id"] for m in models] == [shown["model_id"]]
        only_hidden = {"experiment_ids": [hidden["experiment_id"]]}
        assert ok(client.post(f"{M}/runs/search", json=only_hidden)).get("runs", []) == []
        assert ok(client.post(f"{M}/logged-models/search", json=only_hidden)).get("models", []) == []
        assert ok(client.post(f"{X}/store/runs/search", json=only_hidden)).get("runs", []) == []
        # the mlflow client's filter and order still apply to what is left
        filtered = ok(client.post(f"{M}/runs/search", json={**both, "filter": "attributes.status = 'RUNNING'"}))
        assert [r["info"]["run_id"] for r in filtered.get("runs", [])] == [shown["run_id"]]
    runs = ok(admin.post(f"{M}/runs/search", json=both)).get("runs", [])
    assert {r["info"]["run_id"] for r in runs} == {hidden["run_id"], shown["run_id"]}


def test_search_pages_skip_what_the_caller_may_not_read(auth_server: ServerProcess, admin: httpx.Client) -> None:
    """Filtered pages may be short, but their tokens still reach every readable item, once."""
    tag = uuid.uuid4().hex[:8]
    hidden_experiments, hidden_models, all_experiments, all_models = set(), set(), [], []
    for i in range(7):
        eid = ok(admin.post(f"{M}/experiments/create", json={"name": f"page-{tag}-{i}"}))["experiment_id"]
        name = f"page-{tag}-{i}"
        ok(admin.post(f"{M}/registered-models/create", json={"name": name}))
        all_experiments.append(eid)
        all_models.append(name)
        if i % 3 != 1:  # u-read (default READ) is denied 5 of the 7
            ok(admin.post(f"{M}/experiments/permissions/create",
                          json={"experiment_id": eid, "username": _user("READ"), "permission": "NO_PERMISSIONS"}))
            ok(admin.post(f"{M}/registered-models/permissions/create",
                          json={"name": name, "username": _user("READ"), "permission": "NO_PERMISSIONS"}))
            hidden_experiments.add(eid)
            hidden_models.add(name)
    reader = as_role(auth_server, "READ")

    def pages(method: str, path: str, key: str, ident: str, body: dict[str, Any]) -> list[list[str]]:
        out, token = [], None
        for _ in range(20):
            args = {**body, **({"page_token": token} if token else {})}
            data = ok(reader.post(path, json=args) if method == "POST" else reader.get(path, params=args))
            out.append([item[ident] for item in data.get(key, [])])
            token = data.get("next_page_token")
            if not token:
                return out
        raise AssertionError(f"paging did not end: {out}")

    got = pages("POST", f"{M}/experiments/search", "experiments", "experiment_id",
                {"max_results": 2, "filter": f"name LIKE 'page-{tag}-%'"})
    assert sorted(sum(got, [])) == sorted(set(all_experiments) - hidden_experiments), got
    assert all(len(p) <= 2 for p in got) and any(len(p) < 2 for p in got)
    got = pages("GET", f"{M}/registered-models/search", "registered_models", "name",
                {"max_results": 2, "filter": f"name LIKE 'page-{tag}-%'"})
    assert sorted(sum(got, [])) == sorted(set(all_models) - hidden_models), got
    # the admin pages through all of them
    data = ok(admin.post(f"{M}/experiments/search", json={"max_results": 100, "filter": f"name LIKE 'page-{tag}-%'"}))
    assert sorted(e["experiment_id"] for e in data["experiments"]) == sorted(all_experiments)
    # the UI's list pages show the same
    home, models = reader.get("/").text, reader.get("/models", params={"q": f"page-{tag}"}).text
    for i in range(7):
        assert (f"page-{tag}-{i}<" in home) is (i % 3 == 1), (i, "experiments page")
        assert (f"page-{tag}-{i}<" in models) is (i % 3 == 1), (i, "models page")
    assert f"page-{tag}-0<" in admin.get("/").text


def test_model_versions_search_and_gate_decisions_need_read_on_the_model(
    auth_server: ServerProcess, admin: httpx.Client
) -> None:
    res = _fixture(admin, decision=True)
    for role in ROLES:
        client = as_role(auth_server, role)
        readable = role != "NO_PERMISSIONS"
        found = ok(client.get(f"{M}/model-versions/search", params={"filter": f"name = '{res['name']}'"}))
        assert (len(found.get("model_versions", [])) == 1) is readable, (role, found)
        r = client.get(f"{X}/store/gate-decisions/get", params={"id": res["id"]})
        assert r.status_code == (200 if readable else 403), (role, r.text)
        r = client.get(f"{X}/model-versions/gate-decision", params={"name": res["name"], "version": "1"})
        assert r.status_code == (200 if readable else 403), (role, r.text)
        r = client.get(f"{X}/registered-models/history", params={"name": res["name"]})
        assert r.status_code == (200 if readable else 403), (role, r.text)
        models = ok(client.post(f"{M}/logged-models/search", json={"experiment_ids": [res["experiment_id"]]}))
        assert ([m["info"]["model_id"] for m in models.get("models", [])] == [res["model_id"]]) is readable, role
    r = admin.get(f"{X}/store/gate-decisions/get", params={"id": "0" * 36})
    assert r.status_code == 404


def test_the_api_docs_need_a_login_and_static_assets_do_not(auth_server: ServerProcess) -> None:
    anonymous = httpx.Client(base_url=auth_server.url, timeout=30)
    for path in ("/docs", "/openapi.json"):
        r = anonymous.get(path)
        assert r.status_code == 401 and r.json()["error_code"] == "UNAUTHENTICATED", (path, r.text)
    reader = as_role(auth_server, "NO_PERMISSIONS")
    assert "/api/2.0/mlflow/runs/create" in ok(reader.get("/openapi.json"))["paths"]
    docs = reader.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    page = reader.get("/").text
    assets = [part.split('"', 1)[0] for part in page.split('src="')[1:] + page.split('href="')[1:]]
    static = [a for a in assets if a.startswith("/ui-static/")]
    assert static, page[:500]
    for asset in static:
        assert anonymous.get(asset).status_code == 200, asset


def test_failed_logins_are_counted_across_replicas(
    auth_server: ServerProcess, admin: httpx.Client, start_server: Callable[..., ServerProcess]
) -> None:
    """Two server processes on one database share the failed-login count (the same holds
    for the workers of one ``--workers N`` server: they are processes alike)."""
    name = f"target-{uuid.uuid4().hex[:6]}"
    ok(admin.post(f"{M}/users/create", json={"username": name, "password": "correct-horse-2"}))
    replica = start_server(auth_server.db_uri, auth_server.artifact_root, "--auth", env=auth_server.env)
    urls = [auth_server.url, replica.url] * 4
    statuses = [httpx.post(u + f"{M}/experiments/search", json={}, auth=(name, f"guess-{i}-yyyy")).status_code
                for i, u in enumerate(urls[:7])]
    assert statuses == [401] * 5 + [429, 429], statuses
    for url in (auth_server.url, replica.url):
        r = httpx.post(url + f"{M}/experiments/search", json={}, auth=(name, "correct-horse-2"))
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1, r.text
    replica.stop()


def test_creator_gets_manage(auth_server: ServerProcess) -> None:
    editor = as_role(auth_server, "EDIT")
    eid = ok(editor.post(f"{M}/experiments/create", json={"name": f"mine-{uuid.uuid4().hex[:6]}"}))["experiment_id"]
    grant = ok(editor.get(f"{M}/experiments/permissions/get", params={"experiment_id": eid, "username": _user("EDIT")}))
    assert grant["experiment_permission"]["permission"] == "MANAGE"
    ok(editor.post(f"{M}/experiments/permissions/create",
                   json={"experiment_id": eid, "username": _user("READ"), "permission": "EDIT"}))
    reader = as_role(auth_server, "READ")
    ok(reader.post(f"{M}/runs/create", json={"experiment_id": eid}))


def test_a_new_runs_calls_are_checked_against_its_own_experiment(auth_server: ServerProcess) -> None:
    """The server remembers the experiment of each run it creates (its next calls are then
    checked without a lookup): every user's grant on that experiment still decides."""
    editor, reader, nobody = (as_role(auth_server, r) for r in ("EDIT", "READ", "NO_PERMISSIONS"))
    mine = ok(editor.post(f"{M}/experiments/create", json={"name": f"new-run-{uuid.uuid4().hex[:6]}"}))["experiment_id"]
    open_to_reader = ok(editor.post(f"{M}/experiments/create", json={"name": f"shared-{uuid.uuid4().hex[:6]}"}))[
        "experiment_id"]
    ok(editor.post(f"{M}/experiments/permissions/create",
                   json={"experiment_id": mine, "username": _user("NO_PERMISSIONS"), "permission": "NO_PERMISSIONS"}))
    ok(editor.post(f"{M}/experiments/permissions/create",
                   json={"experiment_id": open_to_reader, "username": _user("READ"), "permission": "EDIT"}))
    run_id = ok(editor.post(f"{M}/runs/create", json={"experiment_id": mine}))["run"]["info"]["run_id"]
    shared_run = ok(editor.post(f"{M}/runs/create", json={"experiment_id": open_to_reader}))["run"]["info"]["run_id"]
    batch = {"metrics": [{"key": "k", "value": 1.0, "timestamp": 0, "step": 0}]}
    ok(editor.post(f"{M}/runs/log-batch", json={"run_id": run_id, **batch}))
    assert reader.post(f"{M}/runs/log-batch", json={"run_id": run_id, **batch}).status_code == 403  # default READ
    assert reader.get(f"{M}/runs/get", params={"run_id": run_id}).status_code == 200
    ok(reader.post(f"{M}/runs/log-batch", json={"run_id": shared_run, **batch}))  # EDIT there
    assert nobody.get(f"{M}/runs/get", params={"run_id": run_id}).status_code == 403
    assert nobody.post(f"{M}/runs/update", json={"run_id": run_id, "status": "FINISHED"}).status_code == 403
    ok(editor.post(f"{M}/runs/update", json={"run_id": run_id, "status": "FINISHED"}))


def test_a_first_version_under_a_new_name_creates_the_model_for_its_creator(
    auth_server: ServerProcess, admin: httpx.Client
) -> None:
    """Our store creates the registered model with its first version: any user may, and
    becomes its manager; a version of an existing model still needs EDIT on it."""
    res = _fixture(admin)
    reader = as_role(auth_server, "READ")
    source = f"mlflow-artifacts:/{res['path']}"
    for route in (f"{M}/model-versions/create", f"{X}/store/model-versions/create"):
        name = f"new-{uuid.uuid4().hex[:8]}"
        created = ok(reader.post(route, json={"name": name, "source": source, "run_id": res["run_id"]}))
        assert created["model_version"]["version"] == "1", created
        grant = ok(admin.get(f"{M}/registered-models/permissions/get", params={"name": name, "username": _user("READ")}))
        assert grant["registered_model_permission"]["permission"] == "MANAGE"
        ok(reader.post(route, json={"name": name, "source": source, "run_id": res["run_id"]}))  # its own model
        r = as_role(auth_server, "EDIT").post(route, json={"name": name, "source": source, "run_id": res["run_id"]})
        assert r.status_code == 403, r.text  # default READ on someone else's model
        r = reader.post(route, json={"name": res["name"], "source": source, "run_id": res["run_id"]})
        assert r.status_code == 403 and r.json()["error_code"] == "PERMISSION_DENIED", r.text


def test_registered_versions_files_follow_the_models_permission(
    auth_server: ServerProcess, admin: httpx.Client
) -> None:
    """The proxy's ``registry/<model>/<version>/`` folders: READ on the model to read, EDIT to write."""
    res = _fixture(admin)
    A = "/api/2.0/mlflow-artifacts/artifacts"
    path = f"registry/{res['name']}/1/MLmodel"
    ok(admin.put(f"{A}/{path}", content=b"by admin"))
    for role in ROLES:
        client = as_role(auth_server, role)
        r = client.put(f"{A}/{path}", content=f"by {role}".encode())
        assert r.status_code == (200 if role in ("EDIT", "MANAGE") else 403), (role, r.text)
        r = client.get(f"{A}/{path}")
        assert r.status_code == (200 if role != "NO_PERMISSIONS" else 403), (role, r.text)
        r = client.get(A, params={"path": f"registry/{res['name']}/1"})
        assert r.status_code == (200 if role != "NO_PERMISSIONS" else 403), (role, r.text)
    r = as_role(auth_server, "MANAGE").get(f"{A}/registry/no-such-model/1/MLmodel")
    assert r.status_code == 403 and "registered model's folder" in r.json()["message"]
    assert admin.get(f"{A}/{path}").content == b"by MANAGE"


def test_grant_changes_apply_at_once_despite_the_grant_cache(auth_server: ServerProcess, admin: httpx.Client) -> None:
    """Checks answer from a short cache of grants; a change made through the server clears it."""
    res = _fixture(admin)
    reader = as_role(auth_server, "READ")
    metric = {"run_id": res["run_id"], "key": "k", "value": 1.0, "timestamp": 0, "step": 0}
    for _ in range(3):  # READ, now cached
        assert reader.get(f"{M}/runs/get", params={"run_id": res["run_id"]}).status_code == 200
        assert reader.post(f"{M}/runs/log-metric", json=metric).status_code == 403
    ok(admin.patch(f"{M}/experiments/permissions/update",
                   json={"experiment_id": res["experiment_id"], "username": _user("READ"), "permission": "EDIT"}))
    assert reader.post(f"{M}/runs/log-metric", json=metric).status_code == 200
    ok(admin.patch(f"{M}/experiments/permissions/update", json={
        "experiment_id": res["experiment_id"], "username": _user("READ"), "permission": "NO_PERMISSIONS"}))
    assert reader.get(f"{M}/runs/get", params={"run_id": res["run_id"]}).status_code == 403
    ok(admin.request("DELETE", f"{M}/experiments/permissions/delete",
                     json={"experiment_id": res["experiment_id"], "username": _user("READ")}))
    assert reader.get(f"{M}/runs/get", params={"run_id": res["run_id"]}).status_code == 200  # the default: READ
    assert reader.post(f"{M}/runs/log-metric", json=metric).status_code == 403


def test_promotion_without_a_passed_gate_needs_an_admin(auth_server: ServerProcess, admin: httpx.Client) -> None:
    res = _fixture(admin)
    manager = as_role(auth_server, "MANAGE")
    r = manager.post(f"{X}/registered-models/promote",
                     json={"name": res["name"], "version": "1", "require_passed_gate": False})
    assert r.status_code == 403 and "admin" in r.json()["message"], r.text
    r = as_role(auth_server, "EDIT").post(f"{M}/registered-models/alias",
                                          json={"name": res["name"], "alias": "champion", "version": "1"})
    assert r.status_code == 403 and r.json()["error_code"] == "PERMISSION_DENIED"


# ------------------------------------------------------------------ mlflow client


def test_unmodified_mlflow_client_with_password_and_token(
    auth_server: ServerProcess, admin: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    mlflow = pytest.importorskip("mlflow")
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", _user("EDIT"))
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", _pw("EDIT"))
    client = MlflowClient(auth_server.url)
    eid = client.create_experiment(f"mlflow-auth-{uuid.uuid4().hex[:6]}")
    run = client.create_run(eid)
    client.log_metric(run.info.run_id, "acc", 0.9)
    assert client.get_metric_history(run.info.run_id, "acc")[0].value == 0.9

    res = _fixture(admin)
    with pytest.raises(MlflowException) as denied:
        client.delete_experiment(res["experiment_id"])  # EDIT on it, deleting needs MANAGE
    assert denied.value.error_code == "PERMISSION_DENIED"

    token = ok(as_role(auth_server, "READ").post(f"{X}/tokens/create", json={"name": "mlflow"}))["token"]
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", token)
    with_token = MlflowClient(auth_server.url)
    assert with_token.get_run(res["run_id"]).info.experiment_id == res["experiment_id"]
    with pytest.raises(MlflowException) as denied:
        with_token.log_metric(res["run_id"], "acc", 1.0)
    assert denied.value.error_code == "PERMISSION_DENIED"

    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN")
    with pytest.raises(MlflowException) as anonymous:
        MlflowClient(auth_server.url).get_run(res["run_id"])
    assert anonymous.value.error_code == "UNAUTHENTICATED"
    del mlflow


# ------------------------------------------------------------------ secrets


def test_passwords_and_tokens_are_never_stored_or_logged_in_clear(auth_server: ServerProcess) -> None:
    reader = as_role(auth_server, "READ")
    token = ok(reader.post(f"{X}/tokens/create", json={"name": "grep-me"}))["token"]
    secrets = [ADMIN_PW, _pw("READ"), token, token.rsplit("_", 1)[1]]
    assert secrets[2] not in repr(reader.get(f"{X}/tokens/list").json())
    log = auth_server.log.read_bytes()
    assert not [s for s in secrets if s.encode() in log]
    import sqlalchemy as sa

    engine = sa.create_engine(auth_server.db_uri.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            rows = [str(tuple(r)) for t in ("auth_users", "auth_tokens") for r in conn.execute(sa.text(f"SELECT * FROM {t}"))]
    finally:
        engine.dispose()
    assert rows and not [s for s in secrets if any(s in row for row in rows)]
    assert all("$argon2" in row for row in rows if _user("READ") in row)
    if auth_server.db_uri.startswith("sqlite:///"):
        raw = Path(auth_server.db_uri[len("sqlite:///"):]).read_bytes()
        wal = Path(auth_server.db_uri[len("sqlite:///"):] + "-wal")
        raw += wal.read_bytes() if wal.exists() else b""
        assert not [s for s in secrets if s.encode() in raw]
    from serving_tasks.tracking_server.auth.credentials import BasicCredentials, BearerCredentials

    assert token not in repr(BearerCredentials(token)) and ADMIN_PW not in repr(BasicCredentials(ADMIN, ADMIN_PW))


# ------------------------------------------------------------------ starting


def test_auth_without_an_admin_refuses_to_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_MLOPS_AUTH")}
    done = subprocess.run(
        [CONSOLE_SCRIPT, "server", "--auth", "--backend-store-uri", f"sqlite:///{tmp_path / 'm.db'}",
         "--default-artifact-root", str(tmp_path / "a"), "--port", "1"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert "PREFECT_MLOPS_AUTH_ADMIN_USERNAME" in done.stderr and "no default password" in done.stderr


def test_a_public_host_without_auth_warns(tmp_path: Path, start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(f"sqlite:///{tmp_path / 'w.db'}", str(tmp_path / "a"), "--host", "0.0.0.0")
    server.stop()
    assert "--auth" in server.log.read_text()


def test_audit_rows_name_the_authenticated_user_not_the_claimed_one(
    auth_server: ServerProcess, admin: httpx.Client
) -> None:
    res = _fixture(admin)
    name, source = res["name"], f"mlflow-artifacts:/{res['path']}"
    for _ in range(2):
        ok(admin.post(f"{M}/model-versions/create", json={"name": name, "source": source, "run_id": res["run_id"]}))
    for version in ("1", "2"):
        ok(admin.post(f"{X}/registered-models/promote",
                      json={"name": name, "version": version, "require_passed_gate": False, "actor": "ci-bot"}))
    manager = as_role(auth_server, "MANAGE")
    ok(manager.post(f"{X}/registered-models/rollback", json={"name": name, "actor": "someone-else", "reason": "bad"}))
    history = ok(admin.get(f"{X}/registered-models/history", params={"name": name}))["transitions"]
    promoted = [t for t in history if t["kind"] == "alias" and t["claimed_actor"] == "ci-bot"]
    assert len(promoted) == 2 and {t["actor"] for t in promoted} == {ADMIN}, history
    rollback = [t for t in history if t["actor"] == _user("MANAGE")]
    assert rollback and rollback[-1]["claimed_actor"] == "someone-else" and rollback[-1]["reason"] == "bad", rollback
    assert "someone-else" not in {t["actor"] for t in history}
    # the REST store's audited routes (our client's) record the claim the same way
    ok(manager.post(f"{X}/store/registered-models/alias",
                    json={"name": name, "alias": "canary", "version": "1", "actor": "os-user-claim"}))
    canary = [t for t in ok(admin.get(f"{X}/registered-models/history", params={"name": name}))["transitions"]
              if t["subject"] == "canary"]
    assert [(t["actor"], t["claimed_actor"]) for t in canary] == [(_user("MANAGE"), "os-user-claim")]
    # the UI's audit timeline shows both, the claim marked as such
    page = admin.get(f"/models/{name}/versions/2").text
    assert "ci-bot" in page and "unverified" in page
    # MLflow's own alias and stage calls are audited under the authenticated user too
    ok(manager.post(f"{M}/registered-models/alias", json={"name": name, "alias": "shadow", "version": "1"}))
    ok(manager.post(f"{M}/model-versions/transition-stage",
                    json={"name": name, "version": "2", "stage": "Staging", "archive_existing_versions": False}))
    history = ok(admin.get(f"{X}/registered-models/history", params={"name": name}))["transitions"]
    moved = [t for t in history if t["subject"] == "shadow" or t["to_value"] == "Staging"]
    assert len(moved) == 2 and {t["actor"] for t in moved} == {_user("MANAGE")}, moved


def test_our_client_with_only_the_url_and_a_token(
    auth_server: ServerProcess, admin: httpx.Client, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from support import reset_tracking

    import tracking_plugin as mlops
    from tracking_plugin.errors import InvalidArgument

    token = ok(as_role(auth_server, "EDIT").post(f"{X}/tokens/create", json={"name": "worker"}))["token"]
    for name in list(os.environ):
        if name.startswith(("PREFECT_MLOPS_", "MLFLOW_TRACKING_", "AWS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PREFECT_MLOPS_TRACKING_URI", auth_server.url)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", token)
    monkeypatch.chdir(tmp_path)
    reset_tracking()
    try:
        client = mlops.TrackingClient(auth_server.url)
        eid = client.create_experiment(f"worker-{uuid.uuid4().hex[:6]}")
        run = client.create_run(eid)
        client.log_metric(run.info.run_id, "acc", 0.75)
        assert [m.value for m in client.get_metric_history(run.info.run_id, "acc")] == [0.75]
        assert ok(admin.get(f"{M}/experiments/permissions/get",
                            params={"experiment_id": eid, "username": _user("EDIT")}))["experiment_permission"][
            "permission"] == "MANAGE"
        res = _fixture(admin)  # EDIT on it: deleting needs MANAGE
        with pytest.raises(InvalidArgument, match="HTTP 403"):
            client.delete_experiment(res["experiment_id"])
        client.close()
    finally:
        reset_tracking()


def test_our_client_takes_credentials_from_our_settings_and_the_block(
    auth_server: ServerProcess, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """PREFECT_MLOPS_TRACKING_TOKEN (or _USERNAME / _PASSWORD) and the block's SecretStr
    fields work like MLflow's variables and win over them; no repr shows them."""
    from pydantic import SecretStr
    from support import reset_tracking

    import tracking_plugin as mlops
    from tracking_plugin.blocks import MlopsBackend
    from tracking_plugin.errors import InvalidArgument
    from tracking_plugin.settings import get_settings

    token = ok(as_role(auth_server, "EDIT").post(f"{X}/tokens/create", json={"name": "settings"}))["token"]
    for name in list(os.environ):
        if name.startswith(("PREFECT_MLOPS_", "MLFLOW_TRACKING_", "AWS_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREFECT_MLOPS_TRACKING_URI", auth_server.url)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "not-a-valid-token")  # ours wins over it
    monkeypatch.setenv("PREFECT_MLOPS_TRACKING_TOKEN", token)
    reset_tracking()
    try:
        assert token not in repr(get_settings())
        client = mlops.TrackingClient()
        eid = client.create_experiment(f"settings-{uuid.uuid4().hex[:6]}")
        assert client.get_experiment(eid).name.startswith("settings-")
        client.close()

        reset_tracking()
        monkeypatch.delenv("PREFECT_MLOPS_TRACKING_TOKEN")
        monkeypatch.setenv("PREFECT_MLOPS_TRACKING_USERNAME", _user("READ"))
        monkeypatch.setenv("PREFECT_MLOPS_TRACKING_PASSWORD", _pw("READ"))
        reader = mlops.TrackingClient()
        assert reader.get_experiment(eid).experiment_id == eid  # the default permission: READ
        with pytest.raises(InvalidArgument, match="HTTP 403"):
            reader.delete_experiment(eid)
        reader.close()

        reset_tracking()
        monkeypatch.delenv("PREFECT_MLOPS_TRACKING_USERNAME")
        monkeypatch.delenv("PREFECT_MLOPS_TRACKING_PASSWORD")
        block = MlopsBackend(tracking_uri=auth_server.url, tracking_token=SecretStr(token))
        assert token not in repr(block) and token not in repr(block.to_settings())
        with block.get_client() as by_block:
            assert by_block.get_experiment(eid).experiment_id == eid
            by_block.delete_experiment(eid)  # the token's user created it: MANAGE
        wrong = MlopsBackend(tracking_uri=auth_server.url, tracking_username=_user("READ"),
                             tracking_password=SecretStr("wrong-password"))
        with wrong.get_client() as refused, pytest.raises(InvalidArgument, match="HTTP 401"):
            refused.search_experiments()
    finally:
        reset_tracking()


def test_the_environment_variable_turns_auth_on(tmp_path: Path, start_server: Callable[..., ServerProcess]) -> None:
    env = {"PREFECT_MLOPS_AUTH": "true", "PREFECT_MLOPS_AUTH_ADMIN_USERNAME": "env-admin",
           "PREFECT_MLOPS_AUTH_ADMIN_PASSWORD": "env-admin-password"}
    server = start_server(f"sqlite:///{tmp_path / 'e.db'}", str(tmp_path / "a"), "--host", "0.0.0.0", env=env)
    r = httpx.post(server.url + f"{M}/experiments/search", json={})
    assert r.status_code == 401 and r.json()["error_code"] == "UNAUTHENTICATED"
    assert httpx.post(server.url + f"{M}/experiments/search", json={},
                      auth=("env-admin", "env-admin-password")).status_code == 200
    server.stop()
    assert "--auth" not in server.log.read_text()  # no warning: auth is on
