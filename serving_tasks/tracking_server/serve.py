"""Run the tracking server under uvicorn (what ``prefect-mlops server`` and ``ui`` call)."""

from __future__ import annotations

import os

from serving_tasks.tracking_server.settings import ServerSettings

__all__ = ["run_server"]

_ENV_PREFIX = "PREFECT_MLOPS_SERVER_"


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
