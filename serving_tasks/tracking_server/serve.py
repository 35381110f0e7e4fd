"""Run the tracking server under uvicorn (what ``prefect-mlops server`` and ``ui`` call)."""

from __future__ import annotations

import os

from serving_tasks.tracking_server.settings import ServerSettings

__all__ = ["run_server", "worker_pool_sizes"]

_ENV_PREFIX = "PREFECT_MLOPS_SERVER_"
# PostgreSQL connections the whole server may hold (its default max_connections is 100):
# shared among the worker processes, at most 15 each (5 kept + 10 under load).
SERVER_DB_CONNECTIONS = 60


def worker_pool_sizes(workers: int) -> tuple[int, int]:
    """(pool_size, max_overflow) of each of ``workers`` processes, so that together they
    hold at most ``SERVER_DB_CONNECTIONS`` (and each at least 1 + 1)."""
    per_worker = min(15, max(2, SERVER_DB_CONNECTIONS // max(1, workers)))
    pool = max(1, per_worker // 3)
    return pool, per_worker - pool


def run_server(settings: ServerSettings, *, host: str = "127.0.0.1", port: int = 5000, workers: int = 1) -> None:
    """Serve until interrupted. Settings reach every worker process through the
    environment (uvicorn starts workers from an import string)."""
    import uvicorn

    for name, value in settings.model_dump().items():
        key = _ENV_PREFIX + name.upper()
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = str(value)
    if workers > 1:  # unless set, each worker's pool gets its share of the connections
        pool, overflow = worker_pool_sizes(workers)
        os.environ.setdefault("PREFECT_MLOPS_DB_POOL_SIZE", str(pool))
        os.environ.setdefault("PREFECT_MLOPS_DB_MAX_OVERFLOW", str(overflow))
    # Open the store (and migrate the schema) once here, so workers do not race to do it
    # and a bad URI fails before uvicorn starts.
    from serving_tasks.tracking_server.app import create_app

    create_app(settings)
    uvicorn.run(
        "serving_tasks.tracking_server.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        http="httptools",
        loop="uvloop",
        log_level="warning",
        access_log=False,
    )
