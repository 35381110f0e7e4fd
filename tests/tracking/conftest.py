"""Fixtures for the tracking API: a configured backend per test, clean fluent state.

``tracking_env`` points the settings (environment variables, as a user would) at a fresh
database from the suite's ``db_uri`` fixture (SQLite and PostgreSQL) and a local artifact
folder; ``full_env`` also runs over both artifact roots (local and S3 on moto).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from tracking_plugin import _buffer, _context, client as client_module, fluent


@dataclass(frozen=True)
class Env:
    tracking_uri: str
    artifact_root: str
    cwd: Path


def _reset_fluent_state() -> None:
    while _context.active_run_stack():
        with contextlib.suppress(Exception):
            _context.end_active_run("KILLED")
        _context.pop_active_run()
    with contextlib.suppress(Exception):
        _buffer.get_buffer().flush(timeout=30)
    fluent.set_tracking_uri(None)
    fluent._active_experiment = None
    fluent._clients.clear()
    _context._LAST_ACTIVE[0] = None


def _dispose_stores() -> None:
    # Each test gets a fresh database; close its pooled connections so PostgreSQL's
    # connection limit is never reached over a long session.
    for store in list(client_module._STORES.values()):
        with contextlib.suppress(Exception):
            store.db.dispose()  # type: ignore[attr-defined]
    client_module._STORES.clear()


def _configure(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, db_uri: str, artifact_root: str) -> Env:
    cwd = tmp_path / "cwd"
    cwd.mkdir(exist_ok=True)
    monkeypatch.chdir(cwd)
    for name in fluent._ENV_NAMES:
        if name not in ("PREFECT_MLOPS_S3_ENDPOINT_URL",):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PREFECT_MLOPS_TRACKING_URI", db_uri)
    monkeypatch.setenv("PREFECT_MLOPS_ARTIFACT_ROOT", artifact_root)
    _reset_fluent_state()
    return Env(db_uri, artifact_root, cwd)


@pytest.fixture
def tracking_env(db_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    """SQLite or PostgreSQL, artifacts in a local folder, configured through the environment."""
    env = _configure(monkeypatch, tmp_path, db_uri, str(tmp_path / "artifacts"))
    yield env
    _reset_fluent_state()
    _dispose_stores()


@pytest.fixture
def full_env(db_uri: str, artifact_root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    """Every database x every artifact root (local folder, S3 over HTTP on moto)."""
    env = _configure(monkeypatch, tmp_path, db_uri, artifact_root)
    yield env
    _reset_fluent_state()
    _dispose_stores()


@pytest.fixture
def sqlite_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    """SQLite only: for behaviour that does not depend on the database."""
    env = _configure(monkeypatch, tmp_path, f"sqlite:///{tmp_path / 'mlops.db'}", str(tmp_path / "artifacts"))
    yield env
    _reset_fluent_state()
    _dispose_stores()


@pytest.fixture
def no_config_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A new user's situation: no PREFECT_MLOPS_* settings, an empty working directory."""
    monkeypatch.chdir(tmp_path)
    for name in fluent._ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    _reset_fluent_state()
    yield tmp_path
    _reset_fluent_state()
    _dispose_stores()
