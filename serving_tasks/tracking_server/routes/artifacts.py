"""``/api/2.0/mlflow-artifacts/artifacts``: the artifact proxy (``mlflow-artifacts:/`` URIs).

Paths are relative to the server's artifact storage root (``--artifacts-destination``,
else ``--default-artifact-root``), local or S3. Every path goes through
:func:`tracking_plugin.validation.validate_artifact_path`, which refuses absolute paths
and ``..`` in any spelling (URL-encoded, double-encoded, backslashes), and the local
store also refuses paths that leave the root through a symlink: nothing is read or
written outside the root. Uploads are bounded by ``max_artifact_bytes`` (413 above).
"""

from __future__ import annotations

import mimetypes
import posixpath
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from tracking_plugin.artifacts import ArtifactRepository
from tracking_plugin.errors import InvalidArgument
from tracking_plugin.validation import validate_artifact_path

from serving_tasks.tracking_server import wire
from serving_tasks.tracking_server.deps import get_artifact_root, get_server_settings
from serving_tasks.tracking_server.limits import read_body
from serving_tasks.tracking_server.routes.experiments import ok
from serving_tasks.tracking_server.settings import ServerSettings
from serving_tasks.tracking_server.routing import OrjsonRoute

router = APIRouter(prefix="/api/2.0/mlflow-artifacts", tags=["artifacts"], route_class=OrjsonRoute)
Root = Annotated[ArtifactRepository, Depends(get_artifact_root)]
Settings = Annotated[ServerSettings, Depends(get_server_settings)]


def _checked(artifact_path: str | None) -> str | None:
    """``validate_artifact_path``, plus the ``#``/``?`` tricks: a segment that reads as
    ``..`` once cut at a ``#`` or ``?`` (where another client or proxy may cut the URL)."""
    path = validate_artifact_path(artifact_path)
    if path is not None:
        for segment in path.split("/"):
            if segment.split("#", 1)[0].split("?", 1)[0] in ("..", "."):
                raise InvalidArgument(
                    f"Invalid artifact path {artifact_path!r}: the segment {segment!r} reads as "
                    f"{segment[:2]!r} where a URL is cut at '#' or '?'; rename it."
                )
    return path


def _file_path(artifact_path: str) -> str:
    path = _checked(artifact_path)
    if path is None:
        raise InvalidArgument(f"Invalid artifact path {artifact_path!r}: name a file under the artifact root.")
    return path


@router.get("/artifacts")
def list_artifacts(root: Root, path: str | None = None) -> Response:
    """One level of the tree under ``path``; paths in the answer are relative to it."""
    base = _checked(path) if path else None
    files = []
    for info in root.list_artifacts(base):
        name = posixpath.relpath(info.path, base) if base else info.path
        entry: dict[str, object] = {"path": name, "is_dir": info.is_dir}
        if not info.is_dir and info.file_size is not None:
            entry["file_size"] = info.file_size
        files.append(entry)
    return wire.json_response({"files": files})


@router.get("/artifacts/{artifact_path:path}")
def download_artifact(artifact_path: str, root: Root) -> Response:
    path = _file_path(artifact_path)
    data = root.read_bytes(path)
    media_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    return Response(data, media_type=media_type)


@router.put("/artifacts/{artifact_path:path}")
async def upload_artifact(artifact_path: str, request: Request, root: Root, settings: Settings) -> Response:
    path = _file_path(artifact_path)
    data = await read_body(request, settings.max_artifact_bytes)
    await run_in_threadpool(root.log_bytes, data, path)
    return ok()


@router.delete("/artifacts/{artifact_path:path}")
def delete_artifact(artifact_path: str, root: Root) -> Response:
    root.delete_artifacts(_file_path(artifact_path))
    return ok()
