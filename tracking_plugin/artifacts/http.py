"""Artifacts through a tracking server's proxy (``mlflow-artifacts:/...`` URIs).

Runs created through ``prefect-mlops server`` (or ``mlflow server``) that serves artifacts
have ``mlflow-artifacts:/<path>`` artifact URIs: the files live wherever the server keeps
them (a folder, S3) and clients read and write them through
``/api/2.0/mlflow-artifacts/artifacts/<path>`` with only the server's URL, no storage
credentials. URIs are resolved against the tracking server URL of the backend in use;
``mlflow-artifacts://host:port/<path>`` names the server itself, and
``http(s)://host/api/2.0/mlflow-artifacts/artifacts/<path>`` is accepted as well.

Uploads and downloads stream (a file is never held in memory whole); requests share the
store's keep-alive connections, retries and error translation
(:class:`tracking_plugin.store.rest.RestSession`).
"""

from __future__ import annotations

import os
import posixpath
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from tracking_plugin.artifacts.base import (
    ArtifactRepository,
    artifact_subpath,
    contained_target,
    local_file_to_upload,
    local_files_to_upload,
    required_file_path,
)
from tracking_plugin.entities import FileInfo
from tracking_plugin.errors import InvalidArgument
from tracking_plugin.store.rest import RestStore
from tracking_plugin.store.rest_session import RestSession

if TYPE_CHECKING:
    from tracking_plugin.settings import MlopsSettings

__all__ = ["PROXY_PATH", "PROXY_SCHEME", "HttpArtifactRepository", "proxy_repository", "split_proxy_uri"]

PROXY_SCHEME = "mlflow-artifacts"
PROXY_PATH = "/api/2.0/mlflow-artifacts/artifacts"
_CHUNK = 1024 * 1024


def split_proxy_uri(uri: str, tracking_uri: str | None) -> tuple[str, str]:
    """``(server URL, path under the proxy root)`` of an artifact URI served by a server.

    >>> split_proxy_uri("mlflow-artifacts:/1/run/artifacts", "http://srv:5000")
    ('http://srv:5000', '1/run/artifacts')
    >>> split_proxy_uri("https://srv/api/2.0/mlflow-artifacts/artifacts/1/run", None)
    ('https://srv', '1/run')
    """
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        prefix, found, rest = parts.path.partition(PROXY_PATH)
        if not found or (rest and not rest.startswith("/")):
            raise InvalidArgument(
                f"Unsupported artifact URI {uri!r}: an http(s) artifact URI must point into a tracking "
                f"server's proxy ({PROXY_PATH}/...)."
            )
        return f"{scheme}://{parts.netloc}{prefix}", rest.strip("/")
    if scheme != PROXY_SCHEME:
        raise InvalidArgument(f"Not a proxied artifact URI: {uri!r}.")
    path = parts.path.strip("/")
    if not tracking_uri or urlsplit(tracking_uri).scheme.lower() not in ("http", "https"):
        raise InvalidArgument(
            f"Cannot resolve {uri!r}: mlflow-artifacts:/ URIs are served by a tracking server, and the "
            f"tracking URI in use ({tracking_uri!r}) is not one. Set the tracking URI to the server's "
            "http(s):// URL (set_tracking_uri or PREFECT_MLOPS_TRACKING_URI)."
        )
    server = tracking_uri.rstrip("/")
    if parts.netloc:  # mlflow-artifacts://host:port/path: that server, with the tracking scheme
        server = f"{urlsplit(tracking_uri).scheme}://{parts.netloc}"
    return server, path


def proxy_repository(uri: str, settings: MlopsSettings) -> HttpArtifactRepository:
    """The repository for a proxied ``uri``, on the connections of the tracking store of
    ``settings`` when it is the same server (else on a connection of its own)."""
    server, path = split_proxy_uri(uri, settings.tracking_uri)
    session: RestSession | None = None
    if server.rstrip("/") == settings.tracking_uri.rstrip("/"):
        from tracking_plugin.backend import get_store

        store = get_store(settings)
        if isinstance(store, RestStore):
            session = store.session
    if session is None:
        session = _other_server_session(server)
    return HttpArtifactRepository(uri, session=session, root_path=path)


_SESSIONS: dict[tuple[int, str], RestSession] = {}


def _other_server_session(server: str) -> RestSession:
    key = (os.getpid(), server)
    session = _SESSIONS.get(key)
    if session is None:
        if len(_SESSIONS) >= 16:
            _SESSIONS.pop(next(iter(_SESSIONS))).close()
        session = _SESSIONS[key] = RestSession(server)
    return session


class HttpArtifactRepository:
    """Files under ``artifact_uri`` (``mlflow-artifacts:/...``), read and written over HTTP.

    Args:
        artifact_uri: the repository root, ``mlflow-artifacts:/<path>`` or
            ``http(s)://server/api/2.0/mlflow-artifacts/artifacts/<path>``.
        session: the connection to the server (normally the tracking store's).
        root_path: the root's path under the server's proxy.
    """

    def __init__(self, artifact_uri: str, *, session: RestSession, root_path: str) -> None:
        self.artifact_uri = artifact_uri
        self.session = session
        self.root_path = artifact_subpath(root_path) if root_path else ""

    def __repr__(self) -> str:
        return f"HttpArtifactRepository({self.artifact_uri!r})"

    # ------------------------------------------------------------------ helpers

    def _full(self, relative: str) -> str:
        return posixpath.join(self.root_path, relative) if self.root_path else relative

    def _url(self, relative: str) -> str:
        return f"{PROXY_PATH}/{quote(self._full(relative), safe='/')}"

    def _put_file(self, local: Path, relative: str) -> None:
        # An explicit length: httpx then streams the chunks without chunked encoding.
        headers = {"Content-Length": str(local.stat().st_size), "Content-Type": "application/octet-stream"}
        self.session.send(
            "PUT", self._url(relative), content=lambda: _ChunkedFile(local), headers=headers, idempotent=True
        ).close()

    # ------------------------------------------------------------------ writing

    def log_artifact(self, local_file: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        path = local_file_to_upload(local_file)
        self._put_file(path, posixpath.join(artifact_subpath(artifact_path), path.name))

    def log_artifacts(self, local_dir: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        base = artifact_subpath(artifact_path)
        for file, relative in local_files_to_upload(local_dir):
            self._put_file(file, posixpath.join(base, relative) if base else relative)

    def log_bytes(self, data: bytes, artifact_file: str) -> None:
        relative = required_file_path(artifact_file)
        self.session.send("PUT", self._url(relative), content=lambda: data, idempotent=True).close()

    def delete_artifacts(self, artifact_path: str | None = None) -> None:
        relative = artifact_subpath(artifact_path)
        if not self._full(relative):
            # The proxy refuses to delete its whole root: delete what is in it.
            for info in self.list_artifacts():
                self.delete_artifacts(info.path)
            return
        self.session.send("DELETE", self._url(relative), idempotent=True).close()

    # ------------------------------------------------------------------ reading

    def read_bytes(self, artifact_file: str) -> bytes:
        relative = required_file_path(artifact_file)
        response = self.session.send("GET", self._url(relative), idempotent=True)
        return response.content

    def list_artifacts(self, path: str | None = None) -> list[FileInfo]:
        relative = artifact_subpath(path)
        full = self._full(relative)
        params = {"path": full} if full else None
        out = self.session.call("GET", PROXY_PATH, params=params)
        infos = []
        for entry in out.get("files", ()):
            name = entry["path"]
            infos.append(
                FileInfo(
                    path=posixpath.join(relative, name) if relative else name,
                    is_dir=bool(entry.get("is_dir", False)),
                    file_size=None if entry.get("is_dir") else _int_or_none(entry.get("file_size")),
                )
            )
        return sorted(infos, key=lambda info: info.path)

    def download_artifacts(
        self, artifact_path: str = "", dst_path: str | os.PathLike[str] | None = None
    ) -> str:
        relative = artifact_subpath(artifact_path)
        dst_root = Path(dst_path if dst_path is not None else tempfile.mkdtemp(prefix="mlops-dl-"))
        dst_root.mkdir(parents=True, exist_ok=True)
        target = contained_target(dst_root, relative) if relative else dst_root.resolve()
        listing = self.list_artifacts(relative or None)
        if relative and not listing:
            self._download_file(relative, target)
            return str(target)
        target.mkdir(parents=True, exist_ok=True)
        pending = listing
        while pending:
            info = pending.pop()
            if info.is_dir:
                pending.extend(self.list_artifacts(info.path))
            else:
                inner = posixpath.relpath(info.path, relative) if relative else info.path
                self._download_file(info.path, contained_target(target, inner))
        return str(target)

    def _download_file(self, relative: str, target: Path) -> None:
        response = self.session.send("GET", self._url(relative), idempotent=True, stream=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.part")
        try:
            with partial.open("wb") as out:
                for chunk in response.iter_bytes(_CHUNK):
                    out.write(chunk)
            os.replace(partial, target)
        finally:
            response.close()
            partial.unlink(missing_ok=True)

    def copy_to(self, dest: ArtifactRepository, artifact_path: str = "") -> None:
        relative = artifact_subpath(artifact_path)
        with tempfile.TemporaryDirectory(prefix="mlops-copy-") as tmp:
            local = Path(self.download_artifacts(relative, tmp))
            if local.is_file():
                dest.log_artifact(local)
            else:
                dest.log_artifacts(local)


class _ChunkedFile:
    """A file opened for one upload attempt, read by httpx in chunks (streamed, not loaded)."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def __iter__(self) -> Any:
        with self._path.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                yield chunk


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)
