"""The web UI of the tracking server: server-rendered pages at ``/`` and small JSON
endpoints under ``/ui-api/``; static files (our script and style, vendored uPlot) under
``/ui-static/``. ``install_ui(app)`` adds all three to an app built by ``create_app``.

It reads through the app's store (``app.state.store``) and artifact settings, like the
REST routes, so it shows exactly what the API serves. See the README's "Web UI" section.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from serving_tasks.tracking_server.ui.routes import api, pages

__all__ = ["STATIC_PREFIX", "UI_API_PREFIX", "install_ui"]

STATIC_PREFIX = "/ui-static"
UI_API_PREFIX = "/ui-api"


def install_ui(app: FastAPI) -> None:
    """Serve the web UI from ``app``: pages, ``/ui-api/*`` and ``/ui-static/*``."""
    app.include_router(api)
    app.mount(STATIC_PREFIX, StaticFiles(directory=str(Path(__file__).parent / "static")), name="ui-static")
    app.include_router(pages)
