"""The whole README runs as written, in order, in one fresh folder.

The folder is a copy of the repository (the README's commands run from its root: `make
run`, `deployments/prefect.yaml`, `python -m deployments.serve`) whose ``.venv`` is this
test run's virtualenv. Python blocks run in this interpreter, one namespace for all (the
Prefect API is the session's test harness); bash blocks run with bash in that folder, with
a fresh ``PREFECT_HOME`` and no ``PREFECT_MLOPS_*`` / ``PREFECT_API_URL`` settings, as on a
new machine. Which blocks run and how: see ``tests/readme_blocks.py`` (blocks marked
long-running are started and stopped in a bounded way; blocks marked skip name why).
New README sections are picked up without changing this test.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
from readme_blocks import Block, blocks, commands, runs_until_stopped
from support import reset_tracking

REPO_ROOT = Path(__file__).resolve().parents[1]
#: A command that runs until stopped and names no port counts as started when it is still
#: running after this many seconds (one that fails early fails the test).
GRACE_SECONDS = 15.0
#: How long a long-running command may take to listen on the ports it names.
READY_SECONDS = 240.0
BLOCK_TIMEOUT = 1800
_PORT = re.compile(r"(?:(?:-p|--port)[ =]|127\.0\.0\.1:|localhost:)(\d{2,5})\b")


def test_readme_markers_are_known_and_shell_blocks_say_which_binary() -> None:
    found = blocks()
    assert sum(b.runs for b in found) >= 20
    for block in found:
        if block.marker is not None:
            assert block.skip_reason or block.long_running, f"unknown readme-test marker {block.marker!r} at {block.where()}"
        # A command that runs until Ctrl-C says so, and only in a block marked long-running.
        servers = [c for c in commands(block.code) if runs_until_stopped(c)] if block.language == "bash" else []
        assert bool(servers) == block.long_running, f"{block.where()}: long-running marker and 'runs until Ctrl-C' disagree"
        if block.language == "bash":
            for command in commands(block.code):
                program = command.split()[0]
                # Bare `prefect` / `python` would be whatever is on PATH, not the project's venv.
                assert program.startswith(".venv/bin/") or program in ("make", "export", "source"), (
                    f"{block.where()}: {command!r} should call .venv/bin/{program}"
                )
    # Skipping is for what cannot run on one machine (the suite itself, a team's hosts).
    skipped = [b for b in found if b.skip_reason]
    assert all(len(b.skip_reason or "") >= 15 for b in skipped), [b.where() for b in skipped]
    assert len(skipped) <= len(found) // 6, [b.where() for b in skipped]


class _Background:
    """Commands left running by long-running blocks, each stopped after its last block."""

    def __init__(self) -> None:
        self.procs: list[tuple[int, subprocess.Popen[bytes], Path, str]] = []

    def add(self, until_block: int, proc: subprocess.Popen[bytes], log: Path, command: str) -> None:
        self.procs.append((until_block, proc, log, command))

    def stop(self, after_block: int | None = None) -> None:
        keep = []
        for until, proc, log, command in self.procs:
            if after_block is not None and until > after_block:
                keep.append((until, proc, log, command))
                continue
            _stop(proc)
        self.procs = keep


def _stop(proc: subprocess.Popen[bytes]) -> None:
    # Ctrl-C first, as a user stops a server; then harder.
    for sig, wait in ((signal.SIGINT, 30), (signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _fresh_folder(tmp_path: Path) -> Path:
    """A copy of the repository's files (mtimes kept, so make's stamps still hold) with
    ``.venv`` pointing at this interpreter's virtualenv."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    folder = tmp_path / "repo"
    for name in filter(None, listed):
        source = REPO_ROOT / name
        if source.is_file():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, folder / name)
    (folder / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    # `make run` must find the venv up to date: reinstalling from the copy would point the
    # editable install at this temporary folder.
    stale = subprocess.run(["make", "-q", ".venv/.installed-run"], cwd=folder, capture_output=True)
    if stale.returncode != 0:
        if (REPO_ROOT / ".venv").resolve() == Path(sys.prefix).resolve():
            subprocess.run(["make", ".venv/.installed-run"], cwd=REPO_ROOT, check=True, capture_output=True)
        stale = subprocess.run(["make", "-q", ".venv/.installed-run"], cwd=folder, capture_output=True)
        assert stale.returncode == 0, "the virtualenv is older than pyproject.toml: run `make setup` first"
    return folder


@pytest.fixture
def readme_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_harness: None) -> Iterator[tuple[Path, dict[str, str]]]:
    folder = _fresh_folder(tmp_path)
    for name in list(os.environ):
        if name.startswith("PREFECT_MLOPS_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(folder)
    reset_tracking(end_runs=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_MLOPS_", "PREFECT_API_URL", "PREFECT_API_KEY"))}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    try:
        yield folder, env
    finally:
        reset_tracking(end_runs=True)


def _run_bash(block: Block, folder: Path, env: dict[str, str]) -> None:
    result = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", block.code], cwd=folder, env=env,
        capture_output=True, text=True, timeout=BLOCK_TIMEOUT,
    )
    assert result.returncode == 0, f"{block.where()} failed ({result.returncode}):\n{block.code}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


def _earlier(logs: list[Path]) -> str:
    return "".join(f"\n--- {log.name} (earlier command of the block):\n{log.read_text()[-1500:]}" for log in logs)


def _run_long_running(block: Block, index: int, folder: Path, env: dict[str, str], background: _Background, logs: Path) -> None:
    seen: list[Path] = []
    for number, command in enumerate(commands(block.code)):
        log = logs / f"block{index}-{number}.log"
        seen.append(log)
        if not runs_until_stopped(command):  # a one-shot command: it must finish, and succeed
            with open(log, "wb") as out:
                done = subprocess.run(["bash", "-c", command], cwd=folder, env=env, stdout=out,
                                      stderr=subprocess.STDOUT, timeout=BLOCK_TIMEOUT)
            assert done.returncode == 0, (
                f"{block.where()}: {command!r} exited {done.returncode}:\n{log.read_text()[-4000:]}{_earlier(seen[:-1])}"
            )
            continue
        with open(log, "wb") as out:
            proc = subprocess.Popen(["bash", "-c", command], cwd=folder, env=env, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        ports = [int(p) for p in _PORT.findall(command)]
        deadline = time.monotonic() + (READY_SECONDS if ports else GRACE_SECONDS)
        while time.monotonic() < deadline and proc.poll() is None:
            if ports and all(_listening(p) for p in ports):
                break
            time.sleep(0.25)
        if proc.poll() is not None:
            assert proc.returncode == 0, (
                f"{block.where()}: {command!r} exited {proc.returncode}:\n{log.read_text()[-4000:]}{_earlier(seen[:-1])}"
            )
            continue
        if ports and not all(_listening(p) for p in ports):
            _stop(proc)
            pytest.fail(f"{block.where()}: {command!r} did not listen on {ports} within {READY_SECONDS} s:\n{log.read_text()[-4000:]}")
        background.add(index + block.kept_for, proc, log, command)


@pytest.mark.slow
@pytest.mark.timeout(2400)  # the suite's 600 s is per test; this one runs the whole README (~12 min)
def test_every_readme_block_runs_as_written_in_order(readme_folder: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    folder, env = readme_folder
    to_run = [b for b in blocks() if b.runs]
    busy = sorted({
        int(p) for b in to_run if b.long_running for c in commands(b.code) if runs_until_stopped(c)
        for p in _PORT.findall(c) if _listening(int(p))
    })
    assert not busy, f"ports {busy} are in use; the README's commands need them free"
    logs = tmp_path / "logs"
    logs.mkdir()
    namespace: dict[str, object] = {"__name__": "__readme__"}
    background = _Background()
    try:
        for index, block in enumerate(to_run):
            started = time.monotonic()
            if block.language == "python":
                try:
                    exec(compile(block.code, block.where(), "exec"), namespace)
                except Exception as exc:
                    raise AssertionError(f"{block.where()} failed:\n{block.code}") from exc
            elif block.long_running:
                _run_long_running(block, index, folder, env, background, logs)
            else:
                _run_bash(block, folder, env)
            background.stop(after_block=index)
            print(f"{block.where()}: {time.monotonic() - started:.1f} s")
    finally:
        background.stop()

    # What the blocks promise, seen from outside: `make run` and the registry examples
    # recorded into the folder's defaults, the weak candidate was gated out.
    assert (folder / "mlops.db").is_file() and (folder / "mlops-artifacts").is_dir()
    assert namespace["result"]["promoted"] == 0.0  # type: ignore[index]
    assert namespace["response"].status_code == 200  # type: ignore[attr-defined]
