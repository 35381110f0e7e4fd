"""``/health``, ``/version`` (plain text) and ``/api/3.0/mlflow/server-info``."""

from __future__ import annotations

from importlib import metadata

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse, Response

from serving_tasks.tracking_server import wire
from serving_tasks.tracking_server.routing import OrjsonRoute

router = APIRouter(tags=["server"], route_class=OrjsonRoute)


def server_version() -> str:
    try:
        return metadata.version("prefect-mlops")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"


@router.get("/health", response_class=PlainTextResponse)
async def health() -> str:
    """``OK`` while the process serves requests (it checks no backend: a load balancer
    must not take every replica out when the database blips)."""
    return "OK"


@router.get("/version", response_class=PlainTextResponse)
async def version() -> str:
    """The prefect-mlops version of this server."""
    return server_version()


@router.get("/api/3.0/mlflow/server-info")
async def server_info() -> Response:
    """What the mlflow 3 client asks before using optional features: none are on here."""
    return wire.json_response(
        {
            "store_type": "SqlStore",
            "workspaces_enabled": False,
            "trace_archival_enabled": False,
            "multipart_uploads_enabled": False,
            "multipart_downloads_enabled": False,
            "presigned_upload_run_id_supported": False,
            "presigned_upload_model_id_supported": False,
            "features_enabled": {"gateway": False},
        }
    )
