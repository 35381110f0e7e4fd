"""Fixtures for the pipeline flows: the session's real Prefect API (``prefect_harness``), a
fresh SQLite backend and artifact folder per test (set through ``PREFECT_MLOPS_*`` as a
user would), and helpers that read back what a flow run left in Prefect.

Only the pipeline tests use these; the data/validation/drift unit tests need none.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
from support import artifacts_of, events_of, free_port, poll, reset_tracking  # noqa: F401 - the `helpers` fixture exposes them

#: Small, quick batches and models: the pipeline's behaviour, not its accuracy, is tested.
N_ROWS = 1500
FAST = {"n_estimators": 15, "max_depth": 6}


def source(day: int = 0, *, drift: float = 0.0, corrupt: bool = False, seed: int = 0, n_rows: int = N_ROWS) -> str:
    """A generator URI for one day's batch."""
    return (
        f"generator://churn?seed={seed}&day={day}&n_rows={n_rows}&drift={drift:g}"
        f"&corrupt={'true' if corrupt else 'false'}"
    )


@dataclass(frozen=True)
class Backend:
    """Where a test's pipeline records: paths and clients on them."""

    root: Path
    tracking_uri: str
    artifact_root: Path
    serving_state: Path

    def registry(self) -> Any:
        from registry_tasks import RegistryClient

        return RegistryClient()

    def tracking(self) -> Any:
        from tracking_plugin.client import TrackingClient

        return TrackingClient()


@pytest.fixture
def backend(prefect_harness: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    """A fresh SQLite database, artifact folder and serving state directory in tmp_path."""
    from tracking_plugin import fluent

    for name in fluent._ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    tracking_uri = f"sqlite:///{tmp_path / 'mlops.db'}"
    monkeypatch.setenv("PREFECT_MLOPS_TRACKING_URI", tracking_uri)
    monkeypatch.setenv("PREFECT_MLOPS_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    monkeypatch.setenv("PREFECT_MLOPS_SERVING_STATE_DIR", str(tmp_path / "serving"))
    monkeypatch.chdir(tmp_path)
    reset_tracking()
    yield Backend(
        root=tmp_path, tracking_uri=tracking_uri, artifact_root=tmp_path / "artifacts",
        serving_state=tmp_path / "serving",
    )
    reset_tracking()


def count_events(flow_run_id: str, name: str) -> int:
    """How many ``name`` events related to the flow run the API holds now."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter

    event_filter = EventFilter(
        event=EventNameFilter(name=[name]),
        related=EventRelatedFilter(id=[f"prefect.flow-run.{flow_run_id}"]),
    )
    with get_client(sync_client=True) as client:
        return len(client.read_events(filter=event_filter, limit=50).events)




def task_runs_of(flow_run_id: str, expect: tuple[str, ...] = (), timeout: float = 30.0) -> dict[str, list[Any]]:
    """task name -> its task runs in the flow run (read from the API), once they settle.

    Prefect 3 records task runs from the events their engine emits, so the server may not
    have the last ones yet when the flow call returns: read until every name in ``expect``
    is there, every task run is in a final state, and two reads 0.5 s apart agree.
    """
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    def read() -> list[Any]:
        with get_client(sync_client=True) as client:
            return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))

    deadline = time.monotonic() + timeout
    runs = read()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        again = read()
        seen = {run.name.rsplit("-", 1)[0] for run in again}
        settled = {(r.id, r.state_type) for r in runs} == {(r.id, r.state_type) for r in again}
        final = all(r.state is not None and r.state.is_final() for r in again)
        runs = again
        if settled and final and seen >= set(expect):
            break
    by_name: dict[str, list[Any]] = {}
    for run in runs:
        by_name.setdefault(run.name.rsplit("-", 1)[0], []).append(run)
    return by_name


@pytest.fixture
def helpers() -> Any:
    """The module's helper functions (``source``, ``events_of``, ``artifacts_of``, ...)."""
    import sys

    return sys.modules[__name__]
