"""``deploy_model`` / ``smoke_test`` (Prefect tasks in real flow runs) and the process
management under them (``serving_tasks.deploy``): real ``python -m serving_tasks.cli``
processes on real ports, spoken to over HTTP. Every server started here is stopped, and
the tests check that no process is left behind."""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import numpy as np
import pytest
from support import free_port

from serving_tasks.deploy import ServerProcess, start_server, state_dir, stop_server
from serving_tasks.tasks import deploy_model, smoke_test
from tracking_plugin.errors import BackendUnavailable, Conflict, InvalidArgument

# Server startup imports scikit-learn, skops and uvicorn; on a busy 2-core machine that
# can take a while.
STARTUP_TIMEOUT = float(os.environ.get("MLOPS_TEST_SERVER_STARTUP_TIMEOUT", "240"))


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def server_processes(port: int) -> list[int]:
    """Pids of scoring-server processes for ``port`` on this machine (from /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serving_tasks.cli" in argv and b"-p" in argv and str(port).encode() in argv:
            pids.append(int(entry.name))
    return pids


@pytest.fixture(scope="module")
def serving_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A backend and a server state folder of this module's own (PREFECT_MLOPS_*)."""
    root = tmp_path_factory.mktemp("serving-tasks")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PREFECT_MLOPS_TRACKING_URI", f"sqlite:///{root / 'mlops.db'}")
        patch.setenv("PREFECT_MLOPS_ARTIFACT_ROOT", str(root / "artifacts"))
        patch.setenv("PREFECT_MLOPS_SERVING_STATE_DIR", str(root / "state"))
        yield root


@pytest.fixture(scope="module")
def started(serving_env: Path) -> Iterator[list[ServerProcess]]:
    """Every server a test of this module started; all stopped (and checked gone) at the end."""
    servers: list[ServerProcess] = []
    yield servers
    for server in servers:
        stop_server(server.port, host=server.host)
    leftovers = {s.pid for s in servers if not pid_gone(s.pid)}
    leftovers |= {pid for s in servers for pid in server_processes(s.port)}
    assert not leftovers, f"scoring servers left running: {sorted(leftovers)}"


@pytest.fixture(scope="module")
def deployed(prefect_harness: None, churn_model_dir: str, started: list[ServerProcess]) -> dict[str, Any]:
    """One server deployed by a flow (deploy_model then smoke_test), shared by the module."""
    from prefect import flow

    port = free_port()

    @flow
    def release() -> tuple[ServerProcess, Any]:
        server = deploy_model(churn_model_dir, port, timeout=STARTUP_TIMEOUT, poll_interval=None)
        started.append(server)
        return server, smoke_test(server.endpoint)

    server, smoke = release()
    return {"server": server, "smoke": smoke, "port": port, "release": release}


def test_deploy_then_smoke_test_serves_the_model(deployed: dict[str, Any], churn_data: Any) -> None:
    server, smoke = deployed["server"], deployed["smoke"]
    assert not server.reused
    assert server.endpoint == f"http://127.0.0.1:{deployed['port']}"
    assert httpx.get(server.endpoint + "/health").status_code == 200

    # The smoke test posted the model's own 3-row input example and got one answer per row.
    assert smoke.rows == 3 and len(smoke.predictions) == 3
    X, _ = churn_data
    from tracking_plugin.models import load_model

    expected = load_model(server.model_uri).predict(X.head(3))
    np.testing.assert_allclose(np.asarray(smoke.predictions, dtype=float), np.asarray(expected, dtype=float))


def test_deploying_the_same_model_again_reuses_the_running_server(deployed: dict[str, Any]) -> None:
    first = deployed["server"]
    again, smoke = deployed["release"]()
    assert again.reused
    assert again.pid == first.pid
    assert server_processes(first.port) == [first.pid]
    assert smoke.rows == 3


@pytest.mark.slow
def test_a_different_model_on_the_same_port_replaces_the_server(
    serving_env: Path, churn_model_dir: str, started: list[ServerProcess]
) -> None:
    other_model = serving_env / "churn-copy"
    shutil.copytree(churn_model_dir, other_model)
    port = free_port()
    # Two deployments of the same model racing for the port: one starts it, one reuses it.
    with ThreadPoolExecutor(2) as pool:
        racing = list(pool.map(
            lambda _: start_server(churn_model_dir, port=port, timeout=STARTUP_TIMEOUT, poll_interval=0), range(2)
        ))
    started.extend(racing)
    assert len({s.pid for s in racing}) == 1 and sorted(s.reused for s in racing) == [False, True]
    first = racing[0]
    assert server_processes(port) == [first.pid]

    second = start_server(str(other_model), port=port, timeout=STARTUP_TIMEOUT, poll_interval=0)
    started.append(second)

    assert (second.pid != first.pid, second.reused) == (True, False)
    assert pid_gone(first.pid)
    assert server_processes(port) == [second.pid]
    assert httpx.get(second.endpoint + "/version").json()["model_uri"] == str(other_model)

    # Different options are a different deployment too.
    third = start_server(str(other_model), port=port, timeout=STARTUP_TIMEOUT, poll_interval=0, max_batch_size=8)
    started.append(third)
    assert third.pid != second.pid and pid_gone(second.pid)
    assert httpx.get(third.endpoint + "/metadata").json()["batching"]["max_batch_size"] == 8


def test_a_port_held_by_a_foreign_process_is_a_conflict(serving_env: Path, churn_model_dir: str) -> None:
    with socket.socket() as foreign:
        foreign.bind(("127.0.0.1", 0))
        foreign.listen()
        port = foreign.getsockname()[1]
        with pytest.raises(Conflict, match=rf"Port {port} on 127.0.0.1 is in use.*another port"):
            start_server(churn_model_dir, port=port, timeout=STARTUP_TIMEOUT)
    assert server_processes(port) == []
    assert not (state_dir() / f"127.0.0.1-{port}.json").exists()
    assert stop_server(port) is False  # nothing of ours to stop; the foreign process was not touched


def test_a_server_that_crashes_at_startup_is_reported_with_its_log_and_leaves_nothing(
    serving_env: Path,
) -> None:
    port = free_port()
    missing = serving_env / "no-such-model"
    started_at = time.monotonic()
    with pytest.raises(BackendUnavailable) as caught:
        start_server(str(missing), port=port, timeout=STARTUP_TIMEOUT)
    message = str(caught.value)
    assert "exited with code" in message and "End of its log" in message
    summary, log_tail = message.split("End of its log", 1)
    assert "No model directory" in summary and "no-such-model" in summary  # the cause, first
    assert "Traceback" in log_tail or "no-such-model" in log_tail
    assert time.monotonic() - started_at < STARTUP_TIMEOUT  # it failed fast, not by timing out
    assert server_processes(port) == []
    assert not (state_dir() / f"127.0.0.1-{port}.json").exists()


def test_a_server_not_healthy_in_time_is_stopped_and_reported(serving_env: Path, churn_model_dir: str) -> None:
    port = free_port()
    with pytest.raises(BackendUnavailable, match=r"was not healthy after 0 s and was stopped") as caught:
        start_server(churn_model_dir, port=port, timeout=0.3)
    assert "End of its log" in str(caught.value)
    assert server_processes(port) == []
    assert not (state_dir() / f"127.0.0.1-{port}.json").exists()


def test_bad_arguments_are_refused_before_starting_anything(serving_env: Path, churn_model_dir: str) -> None:
    with pytest.raises(InvalidArgument, match="Invalid port 70000"):
        start_server(churn_model_dir, port=70000)
    with pytest.raises(InvalidArgument, match="Invalid model URI ''"):
        start_server("", port=free_port())


# ------------------------------------------------------------------------------ smoke_test


class _NotAScoringServer(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(404)
        self.end_headers()
        self.wfile.write(b"not here")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def other_http_server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotAScoringServer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_smoke_test_fails_clearly_on_a_wrong_endpoint(prefect_harness: None, other_http_server: str) -> None:
    from prefect import flow

    @flow
    def check(endpoint: str) -> Any:
        return smoke_test(endpoint, timeout=5)

    nothing_there = f"http://127.0.0.1:{free_port()}"
    state = check(nothing_there, return_state=True)
    with pytest.raises(BackendUnavailable, match=rf"cannot reach {nothing_there}.*server\.endpoint"):
        state.result()

    state = check(other_http_server, return_state=True)
    with pytest.raises(BackendUnavailable, match=r"/metadata answered HTTP 404.*scoring server"):
        state.result()


# ---------------------------------------------------------------------- alias + expect_version


@pytest.mark.slow
def test_deploy_with_expect_version_waits_for_the_promoted_version(
    prefect_harness: None,
    serving_env: Path,
    started: list[ServerProcess],
    churn_data: Any,
    make_churn_pipeline: Callable[..., Any],
) -> None:
    from prefect import flow

    from registry_tasks import RegistryClient
    from tracking_plugin.models import save_model

    registry = RegistryClient()
    X, y = churn_data
    for i, labels in enumerate((y, 1 - y)):
        path = serving_env / f"alias-model-{i}"
        save_model(make_churn_pipeline(X, labels), path, input_example=X.head(2))
        registry.register(str(path), "churn-served")
    registry.promote("churn-served", 1, require_passed_gate=False)
    port = free_port()

    @flow
    def roll_out(version: int) -> ServerProcess:
        server = deploy_model(
            "models:/churn-served@champion", port, expect_version=version, poll_interval=0.2, timeout=STARTUP_TIMEOUT
        )
        started.append(server)
        return server

    first = roll_out(1)
    assert httpx.get(first.endpoint + "/version").json()["version"] == 1

    registry.promote("churn-served", 2, require_passed_gate=False)
    second = roll_out(2)  # the same server follows the alias; the task waits for the swap
    assert (second.reused, second.pid) == (True, first.pid)
    assert httpx.get(second.endpoint + "/version").json()["version"] == 2

    # A version that never comes is reported, naming what is served instead.
    from serving_tasks.deploy import wait_for_version

    with pytest.raises(BackendUnavailable, match="still serves version 2 after 1 s, expected 3"):
        wait_for_version(second.endpoint, 3, timeout=1)

    # A version the server refuses (its files were damaged after registration) fails the
    # wait at once, with the server's reason, while version 2 keeps serving.
    path = serving_env / "alias-model-2"
    save_model(make_churn_pipeline(X, y, C=0.5), path, input_example=X.head(2))
    third = registry.register(str(path), "churn-served")
    with open(Path(third.storage_location) / "model.skops", "ab") as handle:
        handle.write(b"damaged")
    registry.promote("churn-served", 3, require_passed_gate=False)
    started_at = time.monotonic()
    with pytest.raises(BackendUnavailable, match=r"refused version 3 and keeps serving version 2: .*model\.skops"):
        wait_for_version(second.endpoint, 3, timeout=120)
    assert time.monotonic() - started_at < 60
    assert httpx.get(second.endpoint + "/version").json()["version"] == 2
