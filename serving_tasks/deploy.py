"""Start, reuse, stop and probe long-running scoring servers (no Prefect here).

A server is ``python -m serving_tasks.cli`` in its own session, so it outlives the flow
run that started it. Its pid, model URI, options, log file and a random instance key are
kept in a small state file per host:port under :func:`state_dir`, so that:

- a second :func:`start_server` for the same model URI, options and port reuses the
  running process instead of starting another (idempotent deployments);
- a different URI (or different options) on that port stops the old process and starts
  a new one;
- a port held by anything else is refused with :class:`Conflict` before starting;
- a server that dies during startup (a model that does not load, ...) is reported as
  :class:`BackendUnavailable` with the end of its log, and leaves no process behind.

Nothing in the state folder is trusted that this user did not write: the folder is
private (mode 0700, owned by this user, refused otherwise), log and state files are opened
without following symlinks and must be regular files owned by this user, a recorded pid
is only signalled when it is this user's scoring-server process, and a running server is
only reused when it proves it holds the instance key recorded at its start (it answers a
random challenge on ``/health`` with an HMAC of it). A planted state file therefore
cannot make :func:`start_server` hand out someone else's server.

Against a tracking server with ``--auth``, a caller holding a username and password gives
its server a new API token of that user named ``scoring-server HOST:PORT`` (never the
password); its id is kept in the state file, and the token is revoked when the server is
replaced or stopped here, or fails to start. A token the caller supplied
(``MLFLOW_TRACKING_TOKEN``, a block's token) is the caller's and is never revoked. When the
revocation fails (the tracking server is down, ...) a warning on the ``serving_tasks.deploy``
logger names the token id and how to revoke it; the redeploy or stop goes on.

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
import hmac
import json
import os
import secrets
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import httpx

from tracking_plugin.errors import BackendUnavailable, Conflict, InvalidArgument
from tracking_plugin.settings import MlopsSettings

from serving_tasks._server_env import (
    ServerToken,
    _absolute_model_uri,
    _environ,
    _revoke_server_token,
    _server_env,
    _token_not_password,
)

__all__ = [
    "ServerProcess",
    "server_version",
    "start_server",
    "state_dir",
    "stop_server",
    "wait_for_version",
]

_SERVER_MODULE = "serving_tasks.cli"
# The project root, so the server subprocess imports this very code even when the
# package is used from a checkout rather than installed.


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


_STATE_DIR_ENV = "PREFECT_MLOPS_SERVING_STATE_DIR"
# Mirrors serving_tasks.server.INSTANCE_KEY_ENV and the app's challenge headers; not
# imported from there so that this module stays free of uvicorn and FastAPI.
_INSTANCE_KEY_ENV = "PREFECT_MLOPS_SERVE_INSTANCE_KEY"
_CHALLENGE_HEADER = "X-Mlops-Instance-Challenge"
_PROOF_HEADER = "X-Mlops-Instance-Proof"


def state_dir() -> Path:
    """Where server state and log files live: a folder private to this user.

    ``PREFECT_MLOPS_SERVING_STATE_DIR`` if set, else ``<tmp>/prefect-mlops-serving-<uid>``.
    It is created with mode 0700; an existing one must be a real directory (not a
    symlink) owned by this user and closed to group and others, else
    :class:`~tracking_plugin.errors.Conflict` says what to do.
    """
    configured = os.environ.get(_STATE_DIR_ENV)
    path = Path(configured) if configured else Path(tempfile.gettempdir()) / f"prefect-mlops-serving-{os.geteuid()}"
    if configured:
        path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    info = os.lstat(path)
    where = f"The serving state folder {path}" + (f" ({_STATE_DIR_ENV})" if configured else "")
    if not stat.S_ISDIR(info.st_mode):
        raise Conflict(
            f"{where} is not a directory (a symlink or a file): refusing to use it. Remove it, or set "
            f"{_STATE_DIR_ENV} to a private folder of yours."
        )
    if info.st_uid != os.geteuid():
        raise Conflict(
            f"{where} belongs to user id {info.st_uid}, not to you ({os.geteuid()}): someone else "
            f"created it, so its state files cannot be trusted. Remove it, or set {_STATE_DIR_ENV} "
            "to a private folder of yours."
        )
    if info.st_mode & 0o077:
        raise Conflict(
            f"{where} is open to other users (mode {stat.S_IMODE(info.st_mode):o}); its logs and "
            f"state must be private. Run `chmod 700 {path}` or set {_STATE_DIR_ENV} to a private folder."
        )
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
        proc_stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return proc_stat.rpartition(")")[2].split()[:1] != ["Z"]


def _is_scoring_server(pid: int) -> bool:
    """True if ``pid`` is this user's ``python -m serving_tasks.cli`` (a pid may be
    reused, and a state file may name anyone's process)."""
    if pid <= 1 or not _alive(pid):
        return False
    try:
        owner = os.stat(f"/proc/{pid}").st_uid
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        if Path("/proc/self").exists():
            return False  # gone meanwhile
        try:  # no procfs (macOS): signal 0 fails with EPERM for another user's process
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    except OSError:
        return False
    return owner == os.geteuid() and _SERVER_MODULE.encode() in cmdline


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


def _healthy(endpoint: str, key: str, timeout: float = 2.0) -> bool:
    """True when ``endpoint`` is healthy and proves it was started with instance ``key``."""
    challenge = secrets.token_hex(16)
    try:
        response = httpx.get(f"{endpoint}/health", timeout=timeout, headers={_CHALLENGE_HEADER: challenge})
    except httpx.HTTPError:
        return False
    expected = hmac.new(key.encode(), challenge.encode(), hashlib.sha256).hexdigest()
    proof = response.headers.get(_PROOF_HEADER, "")
    return response.status_code == 200 and bool(key) and hmac.compare_digest(proof, expected)


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


def _open_private(path: Path, flags: int) -> int:
    """``os.open`` that never follows a symlink and only returns a regular file of ours."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Conflict(f"{path} is a symlink: refusing to follow it. Remove it.") from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
        os.close(fd)
        raise Conflict(f"{path} is not a regular file of yours: refusing to use it. Remove it.")
    return fd


def _create_private(path: Path) -> int:
    """A new, empty file at ``path`` (mode 0600) whatever was there (a symlink is removed,
    never followed)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return _open_private(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)


@contextlib.contextmanager
def _slot_lock(host: str, port: int) -> Iterator[None]:
    """One deployment at a time per host:port, across processes on this machine."""
    fd = _open_private(state_dir() / f"{_slot(host, port)}.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


class _Record(NamedTuple):
    server: ServerProcess
    config: str
    key: str
    token: ServerToken | None  # the API token created for this server (to revoke with it)


def _read_state(host: str, port: int) -> _Record | None:
    """The server, config digest, instance key and created token recorded for
    ``host:port``, or None when there is no state file or it is not one this user wrote."""
    try:
        fd = _open_private(_state_file(host, port), os.O_RDONLY)
    except (OSError, Conflict):
        return None
    try:
        with os.fdopen(fd, "rb") as handle:
            data = json.loads(handle.read(1 << 16))
        server = ServerProcess(**{k: data[k] for k in ("model_uri", "host", "port", "pid", "log_file")})
        if not isinstance(server.pid, int) or (server.host, server.port) != (host, port):
            return None
        return _Record(server, str(data.get("config", "")), str(data.get("key", "")), ServerToken.from_json(data.get("token")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_state(server: ServerProcess, config: str, key: str, token: ServerToken | None) -> None:
    path = _state_file(server.host, server.port)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = _create_private(tmp)
    record = {**asdict(server), "config": config, "key": key, "started_at": time.time()}
    if token is not None:
        record["token"] = token.to_json()
    with os.fdopen(fd, "w") as handle:
        json.dump(record, handle)
    os.replace(tmp, path)  # replaces a symlink itself, never its target


def _config_digest(options: dict[str, Any]) -> str:
    # A digest, not the values: ``env`` may hold secrets and the state file is plain text.
    return hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()


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
    max_body_mb: float | None = None,
    max_rows: int | None = None,
    max_decoded_mb: float | None = None,
    poll_interval: float | None = None,
    log_predictions: float | None = None,
    prediction_log_uri: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 90.0,
    settings: MlopsSettings | None = None,
) -> ServerProcess:
    """Start a server for ``model_uri`` on ``host:port``, or reuse the one already there.

    The server reads the backend in ``settings`` (default: this process's environment),
    given to it as ``PREFECT_MLOPS_*`` variables, plus any ``env``. The options left None
    keep ``prefect-mlops serve``'s defaults (``max_body_mb``, ``max_rows`` and
    ``max_decoded_mb`` are its request limits; see the README). ``log_predictions`` (a
    share of requests) turns on prediction logging, to ``prediction_log_uri``.

    Returns once ``GET /health`` answers 200. The same URI and options on the same port
    reuse the running server (``reused=True``, same pid); anything different replaces it,
    and the API token created for the replaced server (see the module docstring) is revoked.

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
        ("--max-body-mb", max_body_mb),
        ("--max-rows", max_rows),
        ("--max-decoded-mb", max_decoded_mb),
        ("--poll-interval", poll_interval),
        ("--log-predictions", log_predictions),
        ("--prediction-log-uri", prediction_log_uri),
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
            existing, existing_config, key, old_token = found
            own = None
            if _is_scoring_server(existing.pid):
                if existing_config == config and _wait_healthy(existing.endpoint, key, existing.pid, min(timeout, 30.0)):
                    return replace(existing, reused=True)
                own = _environ(existing.pid) if old_token else None
                _terminate(existing.pid, timeout=10.0)
            if old_token is not None:
                _revoke_server_token(old_token, f"the scoring server replaced on {host}:{port}", own=own,
                                     caller=lambda: server_env)
        _state_file(host, port).unlink(missing_ok=True)
        if not _port_free(host, port):
            raise Conflict(
                f"Port {port} on {host} is in use by a process that deploy_model did not start "
                f"(or whose state file is gone). Choose another port, or stop that process."
            )
        server = ServerProcess(
            model_uri=model_uri, host=host, port=port, pid=0, log_file=str(state_dir() / f"{_slot(host, port)}.log")
        )
        env, token = _token_not_password(server_env, host, port)
        try:
            return _launch(server, args, env, token, config, timeout)
        except BaseException:
            if token is not None:  # no server holds it: do not leave it valid
                _revoke_server_token(token, f"the scoring server that failed to start on {host}:{port}", own=env,
                                     caller=None)
            raise


def _launch(
    server: ServerProcess, args: list[str], env: dict[str, str], token: ServerToken | None, config: str, timeout: float
) -> ServerProcess:
    """Start the process, record it, and wait for /health; clean up on any failure."""
    model_uri, host, port, log_file = server.model_uri, server.host, server.port, server.log_file
    cmd = [sys.executable, "-m", _SERVER_MODULE, *args]
    key = secrets.token_hex(32)  # the server proves it holds this on /health
    env = {**env, _INSTANCE_KEY_ENV: key}
    # One log per start (its tail is about this start), created anew: never through a symlink.
    with os.fdopen(_create_private(Path(log_file)), "wb") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, start_new_session=True,
        )
    server = replace(server, pid=proc.pid)
    try:
        _write_state(server, config, key, token)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                _signal_group(proc.pid, signal.SIGKILL)  # anything it spawned before dying
                _state_file(host, port).unlink(missing_ok=True)
                raise BackendUnavailable(
                    f"The scoring server for {model_uri!r} exited with code {proc.returncode} before "
                    f"it was healthy{_cause(log_file)}\nEnd of its log ({log_file}):\n{_tail(log_file)}"
                )
            if _healthy(server.endpoint, key, timeout=1.0):
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


def _wait_healthy(endpoint: str, key: str, pid: int, timeout: float) -> bool:
    """A running server of ours that is still loading gets ``timeout`` s to become healthy
    (and to prove it holds ``key``)."""
    if not key:  # recorded by an older version, or not by us: nothing to prove it with
        return False
    deadline = time.monotonic() + timeout
    while True:
        if _healthy(endpoint, key, timeout=1.0):
            return True
        if time.monotonic() > deadline or not _alive(pid):
            return False
        time.sleep(0.2)


def stop_server(
    port: int, *, host: str = "127.0.0.1", timeout: float = 10.0, settings: MlopsSettings | None = None
) -> bool:
    """Stop the server :func:`start_server` started on ``host:port``; True if one was running.

    Only a process recorded in this user's state file and still running this user's
    scoring server is signalled (its whole process group: SIGTERM, then SIGKILL after
    ``timeout``). The API token created for it (see the module docstring) is revoked,
    with the token itself or else the credentials of ``settings`` (default: this
    process's environment); if that fails, a warning says how to revoke it.
    ``prefect-mlops serve stop -p PORT`` and the ``stop_model_server`` task call this.
    """
    with _slot_lock(host, port):
        found = _read_state(host, port)
        running = found is not None and _is_scoring_server(found.server.pid)
        if found is not None:
            own = _environ(found.server.pid) if running and found.token else None
            if running:
                _terminate(found.server.pid, timeout)
            if found.token is not None:
                _revoke_server_token(found.token, f"the scoring server stopped on {host}:{port}", own=own,
                                     caller=lambda: _server_env(None, settings))
        _state_file(host, port).unlink(missing_ok=True)
        return running


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
        lines = _read_log(path).splitlines()
    except (OSError, Conflict):
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
        return "\n".join(_read_log(path).splitlines()[-lines:])
    except (OSError, Conflict):
        return "(no log)"


def _read_log(path: Path | str, limit: int = 1 << 20) -> str:
    """The last ``limit`` bytes of a server log of ours (never through a symlink)."""
    with os.fdopen(_open_private(Path(path), os.O_RDONLY), "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        handle.seek(max(0, size - limit))
        return handle.read().decode(errors="replace")
