"""Fixtures for the tracking API: a configured backend per test, clean fluent state.

``tracking_env`` points the settings (environment variables, as a user would) at a fresh
database from the suite's ``db_uri`` fixture (SQLite and PostgreSQL) and a local artifact
folder; ``full_env`` also runs over both artifact roots (local and S3 on moto).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from support import reset_tracking
from tracking_plugin import fluent


@dataclass(frozen=True)
class Env:
    tracking_uri: str
    artifact_root: str
    cwd: Path


def _configure(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, db_uri: str, artifact_root: str) -> Env:
    cwd = tmp_path / "cwd"
    cwd.mkdir(exist_ok=True)
    monkeypatch.chdir(cwd)
    for name in fluent._ENV_NAMES:
        if name not in ("PREFECT_MLOPS_S3_ENDPOINT_URL",):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PREFECT_MLOPS_TRACKING_URI", db_uri)
    monkeypatch.setenv("PREFECT_MLOPS_ARTIFACT_ROOT", artifact_root)
    reset_tracking(end_runs=True, dispose_stores=False)
    return Env(db_uri, artifact_root, cwd)


@pytest.fixture
def tracking_env(db_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    """SQLite or PostgreSQL, artifacts in a local folder, configured through the environment."""
    env = _configure(monkeypatch, tmp_path, db_uri, str(tmp_path / "artifacts"))
    yield env
    reset_tracking(end_runs=True)


@pytest.fixture
def full_env(db_uri: str, artifact_root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    """Every database x every artifact root (local folder, S3 over HTTP on moto)."""
    env = _configure(monkeypatch, tmp_path, db_uri, artifact_root)
    yield env
    reset_tracking(end_runs=True)


@pytest.fixture
def sqlite_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    """SQLite only: for behaviour that does not depend on the database."""
    env = _configure(monkeypatch, tmp_path, f"sqlite:///{tmp_path / 'mlops.db'}", str(tmp_path / "artifacts"))
    yield env
    reset_tracking(end_runs=True)


@pytest.fixture
def no_config_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A new user's situation: no PREFECT_MLOPS_* settings, an empty working directory."""
    monkeypatch.chdir(tmp_path)
    for name in fluent._ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    reset_tracking(end_runs=True, dispose_stores=False)
    yield tmp_path
    reset_tracking(end_runs=True)
