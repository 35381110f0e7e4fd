"""Fixtures of the fault-injection suite (``tests/faults``): things broken on purpose.

Every test here records what the fault cost (points, versions, requests) and asserts that
the answer is nothing. They run real processes and kill, stop or starve them for real, so
they are all marked ``slow`` (``make test`` runs them).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from faults.faults_support import start_child


@pytest.fixture
def child():  # type: ignore[no-untyped-def]
    """``child(code, cwd=..., **env)`` starts a child process, killed after the test."""
    started: list[subprocess.Popen[str]] = []

    def start(code: str, *, cwd: Path, **env: str) -> subprocess.Popen[str]:
        process = start_child(code, cwd=cwd, **env)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(30)
