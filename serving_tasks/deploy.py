"""Start, reuse, stop and probe long-running scoring servers (no Prefect here).

A server is ``python -m serving_tasks.server`` in its own session, so it outlives the flow
run that started it. Its pid, model URI, options and log file are kept in a small state
file per host:port under :func:`state_dir`, so that:

- a second :func:`start_server` for the same model URI, options and port reuses the
  running process instead of starting another (idempotent deployments);
- a different URI (or different options) on that port stops the old process and starts
  a new one;
- a port held by anything else is refused with :class:`Conflict` before starting;
- a server that dies during startup (a model that does not load, ...) is reported as
  :class:`BackendUnavailable` with the end of its log, and leaves no process behind.

Servers of ``models:/name@alias`` URIs follow the alias themselves (polling the registry
and listening for ``mlops.model.promoted``); :func:`wait_for_version` blocks until a newly
promoted version is the one answering ``GET /version``.

>>> server = start_server("models:/churn@champion", port=5000)   # doctest: +SKIP
>>> server.endpoint, server.pid, server.reused                    # doctest: +SKIP
('http://127.0.0.1:5000', 4242, False)
>>> stop_server(5000)                                             # doctest: +SKIP
True
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import httpx

from tracking_plugin.errors import BackendUnavailable, Conflict, InvalidArgument
from tracking_plugin.settings import MlopsSettings, get_settings
from tracking_plugin.urls import absolute_sqlite_uri

__all__ = [
    "ServerProcess",
    "server_version",
    "start_server",
    "state_dir",
    "stop_server",
    "wait_for_version",
]

_SERVER_MODULE = "serving_tasks.server"
# The project root, so the server subprocess imports this very code even when the
# package is used from a checkout rather than installed.
_PROJECT_ROOT = str(Path(__file__).resolve().parents[1])


@dataclass(frozen=True)
class ServerProcess:
    """A scoring server started (or found running) by :func:`start_server`."""

    model_uri: str
    host: str
    port: int
    pid: int
    log_file: str
    reused: bool = False

    @property
    def endpoint(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:5000``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def state_dir() -> Path:
    """Where server state and log files live (``PREFECT_MLOPS_SERVING_STATE_DIR`` overrides)."""
    path = Path(
        os.environ.get("PREFECT_MLOPS_SERVING_STATE_DIR") or Path(tempfile.gettempdir()) / "prefect-mlops-serving"
    )
    path.mkdir(parents=True, exist_ok=True)
    return path


def _slot(host: str, port: int) -> str:
    return f"{host.replace(':', '_')}-{port}"


def _state_file(host: str, port: int) -> Path:
    return state_dir() / f"{_slot(host, port)}.json"


# ---------------------------------------------------------------- processes


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as dead (and is reaped here)
        waited, _ = os.waitpid(pid, os.WNOHANG)
        return waited == 0
    except ChildProcessError:
        pass
    try:  # someone else's zombie: dead too, whenever its parent gets round to reaping it
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _is_scoring_server(pid: int) -> bool:
    """True if ``pid`` runs ``python -m serving_tasks.server`` (a pid may be reused)."""
    if not _alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # no procfs (macOS): trust the state file
    except OSError:
        return True
    return _SERVER_MODULE.encode() in cmdline


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _terminate(pid: int, timeout: float) -> None:
    """SIGTERM the server's process group, then SIGKILL what is left after ``timeout``."""
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            _signal_group(pid, signal.SIGKILL)  # uvicorn workers left behind, if any
            return
        time.sleep(0.05)
    _signal_group(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def _healthy(endpoint: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(f"{endpoint}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def _port_free(host: str, port: int) -> bool:
    """Whether the server could bind ``host:port`` now (uvicorn sets SO_REUSEADDR too)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise InvalidArgument(f"Cannot serve on {host}:{port}: {exc}. Check the host name.") from exc
    return True


# ---------------------------------------------------------------- state files


@contextlib.contextmanager
def _slot_lock(host: str, port: int) -> Iterator[None]:
    """One deployment at a time per host:port, across processes on this machine."""
    with open(state_dir() / f"{_slot(host, port)}.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_state(host: str, port: int) -> tuple[ServerProcess, str] | None:
    try:
        data = json.loads(_state_file(host, port).read_text())
        server = ServerProcess(**{k: data[k] for k in ("model_uri", "host", "port", "pid", "log_file")})
        return server, str(data.get("config", ""))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_state(server: ServerProcess, config: str) -> None:
    path = _state_file(server.host, server.port)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({**asdict(server), "config": config, "started_at": time.time()}))
    tmp.replace(path)


def _config_digest(options: dict[str, Any]) -> str:
    # A digest, not the values: ``env`` may hold secrets and the state file is plain text.
    return hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()


# ---------------------------------------------------------------- environment


def _server_env(extra: dict[str, str] | None, settings: MlopsSettings | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if settings is not None:
        # Exactly this backend (e.g. a flow's block): the server must not resolve another.
        env["PREFECT_MLOPS_BLOCK"] = ""
        for name in ("database_password", "s3_region", "aws_access_key_id", "aws_secret_access_key"):
            value = getattr(settings, name)
            if value is not None:
                env[f"PREFECT_MLOPS_{name.upper()}"] = value if isinstance(value, str) else value.get_secret_value()
    else:
        settings = get_settings()
    # The server must see the same backend as the caller, even when the caller's settings
    # came from defaults resolved against its working directory.
    env["PREFECT_MLOPS_TRACKING_URI"] = absolute_sqlite_uri(settings.tracking_uri)
    env["PREFECT_MLOPS_ARTIFACT_ROOT"] = _absolute_path(settings.artifact_root)
    if settings.s3_endpoint_url:
        env["PREFECT_MLOPS_S3_ENDPOINT_URL"] = settings.s3_endpoint_url
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if _PROJECT_ROOT not in paths:
        env["PYTHONPATH"] = os.pathsep.join([_PROJECT_ROOT, *paths])
    env.update(extra or {})
    return env


def _absolute_path(root: str) -> str:
    if "://" in root:
        return root
    return str(Path(root).expanduser().resolve())


def _absolute_model_uri(model_uri: str) -> str:
    # A relative model path must mean the same to a server started in this directory
    # and to a later call made from another one.
    if "://" in model_uri or model_uri.startswith(("runs:/", "models:/")):
        return model_uri
    return str(Path(model_uri).expanduser().resolve())


# ---------------------------------------------------------------- public API


def start_server(
    model_uri: str,
    *,
    port: int,
    host: str = "127.0.0.1",
    workers: int = 1,
    token_env: str | None = None,
    max_batch_size: int | None = None,
    max_wait_ms: float | None = None,
    poll_interval: float | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 90.0,
    settings: MlopsSettings | None = None,
) -> ServerProcess:
    """Start a server for ``model_uri`` on ``host:port``, or reuse the one already there.

    The server reads the backend in ``settings`` (default: this process's environment),
    given to it as ``PREFECT_MLOPS_*`` variables, plus any ``env``.

    Returns once ``GET /health`` answers 200. The same URI and options on the same port
    reuse the running server (``reused=True``, same pid); anything different replaces it.

    Raises :class:`Conflict` when a process this function did not start holds the port,
    and :class:`BackendUnavailable` (with the end of the server's log) when the server
    exits or is not healthy within ``timeout`` seconds; no process is left behind then.
    """
    if not isinstance(model_uri, str) or not model_uri.strip():
        raise InvalidArgument(f"Invalid model URI {model_uri!r}: pass e.g. 'models:/churn@champion'.")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InvalidArgument(f"Invalid port {port!r}: use an integer from 1 to 65535.")
    model_uri = _absolute_model_uri(model_uri)
    args = ["-m", model_uri, "-p", str(port), "--host", host, "--workers", str(workers)]
    for flag, value in (
        ("--token-env", token_env),
        ("--max-batch-size", max_batch_size),
        ("--max-wait-ms", max_wait_ms),
        ("--poll-interval", poll_interval),
    ):
        if value is not None:
            args += [flag, str(value)]
    server_env = _server_env(env, settings)
    # Same arguments and same backend (and extra env) = the same deployment.
    config = _config_digest(
        {
            "args": args,
            "backend": [server_env["PREFECT_MLOPS_TRACKING_URI"], server_env["PREFECT_MLOPS_ARTIFACT_ROOT"]],
            "env": sorted((env or {}).items()),
        }
    )
    with _slot_lock(host, port):
        found = _read_state(host, port)
        if found is not None:
            existing, existing_config = found
            if _is_scoring_server(existing.pid):
                if existing_config == config and _wait_healthy(existing.endpoint, existing.pid, min(timeout, 30.0)):
                    return replace(existing, reused=True)
                _terminate(existing.pid, timeout=10.0)
            _state_file(host, port).unlink(missing_ok=True)
        if not _port_free(host, port):
            raise Conflict(
                f"Port {port} on {host} is in use by a process that deploy_model did not start "
                f"(or whose state file is gone). Choose another port, or stop that process."
            )
        server = ServerProcess(
            model_uri=model_uri, host=host, port=port, pid=0, log_file=str(state_dir() / f"{_slot(host, port)}.log")
        )
        return _launch(server, args, server_env, config, timeout)


def _launch(server: ServerProcess, args: list[str], env: dict[str, str], config: str, timeout: float) -> ServerProcess:
    """Start the process, record it, and wait for /health; clean up on any failure."""
    model_uri, host, port, log_file = server.model_uri, server.host, server.port, server.log_file
    cmd = [sys.executable, "-m", _SERVER_MODULE, *args]
    with open(log_file, "wb") as log:  # one log per start: its tail is about this start
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, start_new_session=True,
        )
    server = replace(server, pid=proc.pid)
    try:
        _write_state(server, config)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                _signal_group(proc.pid, signal.SIGKILL)  # anything it spawned before dying
                _state_file(host, port).unlink(missing_ok=True)
                raise BackendUnavailable(
                    f"The scoring server for {model_uri!r} exited with code {proc.returncode} before "
                    f"it was healthy{_cause(log_file)}\nEnd of its log ({log_file}):\n{_tail(log_file)}"
                )
            if _healthy(server.endpoint, timeout=1.0):
                return server
            time.sleep(0.2)
    except BaseException:
        # Interrupted (or failed) while waiting: do not leave a half-started server behind.
        if proc.poll() is None:
            _terminate(proc.pid, timeout=10.0)
            proc.poll()
            _state_file(host, port).unlink(missing_ok=True)
        raise
    _terminate(proc.pid, timeout=10.0)
    proc.poll()
    _state_file(host, port).unlink(missing_ok=True)
    raise BackendUnavailable(
        f"The scoring server for {model_uri!r} on {server.endpoint} was not healthy after {timeout:.0f} s "
        f"and was stopped. End of its log ({log_file}):\n{_tail(log_file)}"
    )


def _wait_healthy(endpoint: str, pid: int, timeout: float) -> bool:
    """A running server of ours that is still loading gets ``timeout`` s to become healthy."""
    deadline = time.monotonic() + timeout
    while True:
        if _healthy(endpoint, timeout=1.0):
            return True
        if time.monotonic() > deadline or not _alive(pid):
            return False
        time.sleep(0.2)


def stop_server(port: int, *, host: str = "127.0.0.1", timeout: float = 10.0) -> bool:
    """Stop the server :func:`start_server` started on ``host:port``; True if one was running.

    Only a process recorded in the state file and still running the scoring server is
    signalled (its whole process group: SIGTERM, then SIGKILL after ``timeout``).
    """
    with _slot_lock(host, port):
        found = _read_state(host, port)
        _state_file(host, port).unlink(missing_ok=True)
        if found is None or not _is_scoring_server(found[0].pid):
            return False
        _terminate(found[0].pid, timeout)
        return True


def server_version(endpoint: str, *, headers: dict[str, str] | None = None, timeout: float = 5.0) -> dict[str, Any]:
    """The JSON of ``GET /version``: ``model_uri``, ``source_uri``, ``name``, ``version``
    (an int, None outside the registry), ``alias``, ``run_id``, ``model_uuid``,
    ``server_version``."""
    response = httpx.get(f"{endpoint}/version", headers=headers, timeout=timeout)
    response.raise_for_status()
    return response.json()  # type: ignore[no-any-return]


def wait_for_version(
    endpoint: str, version: int, *, timeout: float = 60.0, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """Block until ``/version`` reports ``version``; return that JSON.

    Raises :class:`BackendUnavailable` as soon as the server reports that it refused that
    version (it failed to load or to score its input example; ``/metadata`` lists it under
    ``refused_versions``), or after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    problem = ""
    while True:
        try:
            last = server_version(endpoint, headers=headers)
            if last.get("version") is not None and int(last["version"]) == int(version):
                return last
            refused = _refusal(endpoint, version, headers)
            if refused is not None:
                raise BackendUnavailable(
                    f"{endpoint} refused version {version} and keeps serving version "
                    f"{last.get('version')!r}: {refused}"
                )
            problem = ""
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code in (401, 403):
                raise InvalidArgument(
                    f"{endpoint} requires a bearer token for /version: pass the headers "
                    "(or token_env) the server was started with."
                ) from exc
            problem = f" (last answer: HTTP {exc.response.status_code})"
        except httpx.HTTPError as exc:
            problem = f" (last error: {exc})"
        if time.monotonic() > deadline:
            raise BackendUnavailable(
                f"{endpoint} still serves version {last.get('version')!r} after {timeout:.0f} s, "
                f"expected {version}{problem}. The new version may have failed to load: see the server log."
            )
        time.sleep(0.2)


def _refusal(endpoint: str, version: int, headers: dict[str, str] | None) -> str | None:
    response = httpx.get(f"{endpoint}/metadata", headers=headers, timeout=5.0)
    if response.status_code != 200:
        return None
    for refused in response.json().get("refused_versions") or []:
        if str(refused.get("version")) == str(version):
            return str(refused.get("reason") or "no reason given")
    return None


def _cause(path: Path | str) -> str:
    """``": <the last exception line of the log>"``, or empty when there is none."""
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        head = line.split(":", 1)[0]
        if line[:1].isspace() or not head or " " in head or head in ("ERROR", "INFO", "WARNING", "Traceback"):
            continue
        if ": " in line:
            return f": {line.strip()}"
    return ""


def _tail(path: Path | str, lines: int = 30) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
