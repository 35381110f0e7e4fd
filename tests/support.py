"""Plain helpers shared by the test folders (``pythonpath = ["tests"]`` makes this module
importable as ``support`` from any test or conftest)."""

from __future__ import annotations

import contextlib
import socket
import time
import uuid


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def poll(predicate, timeout: float = 60.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Call ``predicate`` until it returns something truthy; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not seen within {timeout} s")
        time.sleep(0.25)


def create_pg_database(admin_url: str) -> str:
    """Create a fresh database on the server and return its SQLAlchemy URL."""
    import sqlalchemy as sa

    name = "t_" + uuid.uuid4().hex[:12]
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return admin_url.rsplit("/", 1)[0] + "/" + name


def events_of(flow_run_id: str, name: str, *, expect: int = 1, timeout: float = 60.0) -> list:  # type: ignore[type-arg]
    """The ``name`` events related to a flow run, read back from the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter

    def read() -> list | None:  # type: ignore[type-arg]
        event_filter = EventFilter(
            event=EventNameFilter(name=[name]),
            related=EventRelatedFilter(id=[f"prefect.flow-run.{flow_run_id}"]),
        )
        with get_client(sync_client=True) as client:
            # The server accepts at most 50 per page (the client's default of 100 is refused).
            events = client.read_events(filter=event_filter, limit=50).events
        return events if len(events) >= expect else None

    return poll(read, timeout, f"{expect} {name} event(s) of flow run {flow_run_id}")


def prefect_artifacts(flow_run_id: str) -> list:  # type: ignore[type-arg]
    """The flow run's Prefect artifacts, read back from the API after ``flush()`` (a
    tracked flow's artifacts are posted in the background)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    import tracking_plugin

    tracking_plugin.flush(timeout=60)
    with get_client(sync_client=True) as client:
        return list(
            client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
            )
        )


def artifacts_of(flow_run_id: str) -> dict[str, str]:
    """key -> content of the flow run's keyed Prefect artifacts."""
    return {a.key: str(a.data) for a in prefect_artifacts(flow_run_id) if a.key}


def reset_tracking(*, dispose_stores: bool = True, end_runs: bool = False) -> None:
    """Forget the process-wide tracking state between tests: active runs (``end_runs``:
    ended as KILLED first), the last ended run, buffered points, the fluent API's
    URI/experiment/clients, ``@track``'s caches and (``dispose_stores``) the cached stores
    with their database engines."""
    import tracking_plugin.prefect as tp
    from tracking_plugin import _buffer, _context, backend, fluent
    from tracking_plugin import client as client_module

    while _context.active_run_stack():
        if end_runs:
            depth = len(_context.active_run_stack())
            with contextlib.suppress(Exception):
                _context.end_active_run("KILLED")
            if len(_context.active_run_stack()) < depth:
                continue  # ended and popped
        _context.pop_active_run()
    _context._LAST_ACTIVE[0] = None
    with contextlib.suppress(Exception):
        _buffer.get_buffer().flush(timeout=30)
    fluent.set_tracking_uri(None)
    fluent._active_experiment = None
    client_module.reset_default_clients()
    tp._EXPERIMENT_IDS.clear()
    tp._EXPERIMENT_NAMES.clear()
    backend.reset_caches(dispose=dispose_stores)


def insert_old_run(conn, run_id: str, status: str = "RUNNING") -> None:  # type: ignore[no-untyped-def]
    """An experiment 'old' and a run ``run_id`` in it, inserted by plain SQL on ``conn``
    (a SQLAlchemy connection), as rows logged under an older schema before a migration."""
    import sqlalchemy as sa

    conn.execute(sa.text(
        "INSERT INTO experiments (name, artifact_location, lifecycle_stage, creation_time, last_update_time) "
        "VALUES ('old', '/a', 'active', 1, 1)"
    ))
    conn.execute(sa.text(
        "INSERT INTO runs (run_uuid, name, experiment_id, user_id, status, start_time, artifact_uri, "
        "lifecycle_stage) SELECT :r, 'r', experiment_id, 'u', :status, 5, '/a', 'active' FROM experiments"
    ), {"r": run_id, "status": status})
