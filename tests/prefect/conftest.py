"""Fixtures for the Prefect integration: the session's real Prefect API (``prefect_harness``)
and a fresh tracking backend per test, configured through the environment as a user would.

``tracking`` is SQLite in ``tmp_path``; ``tracking_any_db`` runs over SQLite and PostgreSQL
(the suite's ``db_uri``). Both return a :class:`TrackingClient` on that backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from support import reset_tracking

from tracking_plugin import fluent
from tracking_plugin.client import TrackingClient
from tracking_plugin.entities import Run


def configure(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, uri: str) -> TrackingClient:
    for name in fluent._ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PREFECT_MLOPS_TRACKING_URI", uri)
    monkeypatch.setenv("PREFECT_MLOPS_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    monkeypatch.chdir(tmp_path)
    reset_tracking(dispose_stores=False)
    return TrackingClient()


@pytest.fixture
def tracking(prefect_harness: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TrackingClient]:
    """A fresh SQLite backend (``PREFECT_MLOPS_*`` set) and a client on it."""
    yield configure(monkeypatch, tmp_path, f"sqlite:///{tmp_path / 'mlops.db'}")
    reset_tracking()


@pytest.fixture
def tracking_any_db(prefect_harness: None, db_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TrackingClient]:
    """The same over SQLite and PostgreSQL."""
    yield configure(monkeypatch, tmp_path, db_uri)
    reset_tracking()


def _runs_in(client: TrackingClient, experiment: str) -> list[Run]:
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"experiment {experiment!r} was not created"
    return sorted(client.search_runs([found.experiment_id], max_results=1000), key=lambda r: r.info.start_time)


@pytest.fixture
def runs_in():  # type: ignore[no-untyped-def]
    """``runs_in(client, experiment_name)``: every run of the experiment, oldest first."""
    return _runs_in
