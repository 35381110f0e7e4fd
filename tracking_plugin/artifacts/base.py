"""The artifact repository interface, URI helpers and the scheme dispatcher.

A repository is rooted at one URI (a local path, ``file://`` URI or ``s3://bucket/prefix``);
every ``artifact_path`` is relative to that root and is checked by
:func:`tracking_plugin.validation.validate_artifact_path` before any I/O.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path
from typing import Iterator, Protocol, runtime_checkable
from urllib.parse import quote, urlsplit, urlunsplit

from tracking_plugin.entities import FileInfo
from tracking_plugin.errors import InvalidArgument
from tracking_plugin.settings import MlopsSettings, get_settings
from tracking_plugin.validation import validate_artifact_path

__all__ = ["ArtifactRepository", "get_artifact_repository", "join_artifact_uri"]

SUPPORTED_SCHEMES = ("a plain path", "file://", "s3://", "mlflow-artifacts:/ (a tracking server's proxy)")


@runtime_checkable
class ArtifactRepository(Protocol):
    """Files of one run or model version, under ``artifact_uri``.

    Paths passed in and returned (``FileInfo.path``) are POSIX paths relative to the root.

    >>> import tempfile
    >>> repo = get_artifact_repository(tempfile.mkdtemp())
    >>> repo.log_bytes(b"hello", "notes/greeting.txt")
    >>> [f.path for f in repo.list_artifacts()], repo.read_bytes("notes/greeting.txt")
    (['notes'], b'hello')
    """

    artifact_uri: str

    def log_artifact(self, local_file: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        """Copy one local file to ``<artifact_path>/<file name>``."""

    def log_artifacts(self, local_dir: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        """Copy the contents of a local directory, recursively, under ``artifact_path``."""

    def log_bytes(self, data: bytes, artifact_file: str) -> None:
        """Write ``data`` as the file ``artifact_file`` (replacing it if present)."""

    def read_bytes(self, artifact_file: str) -> bytes:
        """Return a file's content; :class:`~tracking_plugin.errors.NotFound` if absent."""

    def list_artifacts(self, path: str | None = None) -> list[FileInfo]:
        """List one level under ``path`` (like MLflow), sorted; ``[]`` if it is no directory."""

    def download_artifacts(
        self, artifact_path: str = "", dst_path: str | os.PathLike[str] | None = None
    ) -> str:
        """Download a file or directory (recursively) to ``dst_path/<artifact_path>``.

        ``dst_path`` defaults to a new temporary directory. Returns the local path.
        """

    def delete_artifacts(self, artifact_path: str | None = None) -> None:
        """Delete a file or subtree (everything when None); absent paths are ignored."""

    def copy_to(self, dest: ArtifactRepository, artifact_path: str = "") -> None:
        """Copy the subtree ``artifact_path`` (or that single file) to the root of ``dest``."""


def get_artifact_repository(uri: str, settings: MlopsSettings | None = None) -> ArtifactRepository:
    """Return the repository for ``uri``: a plain path or ``file://`` URI, ``s3://``, or a
    tracking server's proxy (``mlflow-artifacts:/...``, resolved against the server URL
    that is the tracking URI of ``settings``).

    S3 clients and the server are taken from ``settings`` (default: the ``PREFECT_MLOPS_*``
    environment; code that follows a flow's backend or ``set_tracking_uri()`` passes that
    backend's settings, e.g. ``tracking_plugin.fluent.current_client().settings``: this
    layer sits below the resolver).

    >>> import tempfile
    >>> get_artifact_repository(tempfile.mkdtemp()).list_artifacts()
    []
    """
    if not isinstance(uri, (str, os.PathLike)):
        raise InvalidArgument(f"Invalid artifact URI {uri!r}: it must be a string or path.")
    uri = os.fspath(uri)
    scheme = _scheme(uri)
    if scheme in ("", "file"):
        from tracking_plugin.artifacts.local import LocalArtifactRepository

        return LocalArtifactRepository(uri)
    if scheme == "s3":
        from tracking_plugin.artifacts.s3 import S3ArtifactRepository

        if settings is None:
            settings = get_settings()
        return S3ArtifactRepository(uri, settings=settings)
    if scheme == "mlflow-artifacts" or (scheme in ("http", "https") and "/api/2.0/mlflow-artifacts/" in uri):
        from tracking_plugin.artifacts.http import proxy_repository

        return proxy_repository(uri, settings if settings is not None else get_settings())
    raise InvalidArgument(
        f"Unsupported artifact URI scheme {scheme + '://'!r} in {uri!r}: use "
        f"{', '.join(SUPPORTED_SCHEMES)} (e.g. PREFECT_MLOPS_ARTIFACT_ROOT=s3://bucket/prefix)."
    )


def join_artifact_uri(base: str, *parts: str | None) -> str:
    """Append relative path parts to a local path or URI; each part is validated.

    >>> join_artifact_uri("s3://bucket/mlops", "1/abc", "artifacts")
    's3://bucket/mlops/1/abc/artifacts'
    >>> join_artifact_uri("file:///srv/mlops/", "model")
    'file:///srv/mlops/model'
    >>> join_artifact_uri("file:///srv/mlops", "100%25.txt")   # names stay literal
    'file:///srv/mlops/100%2525.txt'
    """
    cleaned = [p for p in (validate_artifact_path(part) for part in parts) if p]
    if not cleaned:
        return base
    scheme = _scheme(base)
    if scheme == "":
        return os.path.join(base, *cleaned)
    if scheme == "s3":
        # S3 keys are literal text after the bucket (as for the AWS CLI): '%', '?' and '#'
        # in a name are part of the key, not URL syntax.
        return posixpath.join(base.rstrip("/"), *cleaned)
    split = urlsplit(base)
    if scheme == "file":
        # A file:// URI is URL-decoded when read back: encode the names so they stay literal.
        cleaned = [quote(part, safe="/") for part in cleaned]
    path = posixpath.join(split.path.rstrip("/") or "/", *cleaned)
    if not split.netloc and split.scheme not in ("file", "mlflow-artifacts"):
        path = path.lstrip("/")
    return urlunsplit(split._replace(path=path))


def _scheme(uri: str) -> str:
    scheme = urlsplit(uri).scheme.lower()
    # "C:\\data" parses with scheme "c": a drive letter, not a URI scheme.
    return "" if len(scheme) == 1 else scheme


def artifact_subpath(artifact_path: str | None) -> str:
    """Validate ``artifact_path``; return it POSIX-normalised, ``""`` for the root."""
    return validate_artifact_path(artifact_path) or ""


def required_file_path(artifact_file: str) -> str:
    """Like :func:`artifact_subpath` but the root is refused: a file name is needed."""
    path = artifact_subpath(artifact_file)
    if not path:
        raise InvalidArgument(
            f"Invalid artifact file {artifact_file!r}: give a file path relative to the "
            "artifact root, e.g. 'metrics/summary.json'."
        )
    return path


def local_file_to_upload(local_file: str | os.PathLike[str]) -> Path:
    """Check that ``local_file`` (a caller's file) exists and is a regular file."""
    path = Path(local_file)
    if not path.is_file():
        what = "is a directory (use log_artifacts)" if path.is_dir() else "does not exist"
        raise InvalidArgument(f"Cannot log {os.fspath(local_file)!r}: it {what}.")
    return path


def local_files_to_upload(local_dir: str | os.PathLike[str]) -> list[tuple[Path, str]]:
    """(file, relative POSIX path) for every file under a caller's directory, sorted.

    Symlinked files are copied as their content; symlinked directories are not entered
    (a link cycle would never end). The list is built before any write, so copying a
    directory into a destination inside itself terminates.
    """
    root = Path(local_dir)
    if not root.is_dir():
        what = "is a file (use log_artifact)" if root.exists() else "does not exist"
        raise InvalidArgument(f"Cannot log directory {os.fspath(local_dir)!r}: it {what}.")
    return sorted(iter_files(root), key=lambda item: item[1])


def iter_files(root: Path) -> Iterator[tuple[Path, str]]:
    """(file, path relative to root) for every file below root; directory links not entered."""
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath, name)
            if path.is_file():
                yield path, path.relative_to(root).as_posix()


def contained_target(base: Path, relative: str) -> Path:
    """``base / relative`` resolved, refused unless it stays inside ``base``.

    A second line of defence after ``validate_artifact_path``: it also catches symlinks in
    the destination that point outside ``base``.
    """
    checked = artifact_subpath(relative)
    base_resolved = base.resolve()
    target = (base_resolved / checked).resolve()
    if not target.is_relative_to(base_resolved):
        raise InvalidArgument(
            f"Invalid artifact path {relative!r}: it resolves to {str(target)!r}, outside "
            f"{str(base_resolved)!r} (through a symlink). Remove the link or use another path."
        )
    return target
