"""Connection pools that fit the server's worker count: ``--workers N`` shares a budget of
PostgreSQL connections among the workers, and the pool size reaches the engine from the
settings (``PREFECT_MLOPS_DB_POOL_SIZE`` / ``PREFECT_MLOPS_DB_MAX_OVERFLOW``)."""

from __future__ import annotations

import pydantic
import pytest

from serving_tasks.tracking_server.serve import SERVER_DB_CONNECTIONS, worker_pool_sizes
from serving_tasks.tracking_server.settings import ServerSettings
from tracking_plugin.backend import release_store
from tracking_plugin.errors import InvalidArgument
from tracking_plugin.settings import get_settings
from tracking_plugin.store.db import Database


@pytest.mark.parametrize("workers", [1, 2, 3, 4, 5, 8, 16, 30])
def test_workers_share_the_connection_budget(workers: int) -> None:
    pool, overflow = worker_pool_sizes(workers)
    assert pool >= 1 and overflow >= 1
    assert (pool + overflow) * workers <= SERVER_DB_CONNECTIONS
    assert pool + overflow <= 15  # one worker keeps the library's default (5 + 10)


def test_one_worker_keeps_the_default_pool() -> None:
    assert worker_pool_sizes(1) == (5, 10)


def test_the_pool_size_reaches_the_servers_engine(
    pg_server: str, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from support import create_pg_database

    from serving_tasks.tracking_server.app import create_app

    monkeypatch.setenv("PREFECT_MLOPS_DB_POOL_SIZE", "3")
    monkeypatch.setenv("PREFECT_MLOPS_DB_MAX_OVERFLOW", "2")
    app = create_app(ServerSettings(backend_store_uri=create_pg_database(pg_server),
                                    default_artifact_root=str(tmp_path / "artifacts")))
    store = app.state.store
    try:
        assert store.db.engine.pool.size() == 3
        assert store.db.engine.pool._max_overflow == 2
    finally:
        release_store(store)


def test_a_bad_pool_size_is_refused_with_its_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_MLOPS_DB_POOL_SIZE", "0")
    with pytest.raises(pydantic.ValidationError, match="db_pool_size"):
        get_settings()
    with pytest.raises(InvalidArgument, match="pool size 0"):
        Database("postgresql+psycopg://u@127.0.0.1:1/x", pool_size=0)
