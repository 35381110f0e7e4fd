"""Artifacts in a local folder, given as a plain path or a ``file://`` URI."""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlsplit
from urllib.request import url2pathname

from tracking_plugin.artifacts.base import (
    ArtifactRepository,
    iter_files,
    artifact_subpath,
    contained_target,
    local_file_to_upload,
    local_files_to_upload,
    required_file_path,
)
from tracking_plugin.entities import FileInfo
from tracking_plugin.errors import BackendUnavailable, Conflict, InvalidArgument, NotFound

__all__ = ["LocalArtifactRepository"]


class LocalArtifactRepository:
    """Artifacts under a local directory; nothing is ever written outside it.

    The root is made absolute when the repository is built, so a later ``os.chdir`` does
    not move it. Files are written to a temporary name and renamed into place, so a reader
    never sees half a file.

    >>> import tempfile
    >>> repo = LocalArtifactRepository(tempfile.mkdtemp())
    >>> repo.log_bytes(b"{}", "config.json")
    >>> repo.read_bytes("config.json")
    b'{}'
    """

    def __init__(self, artifact_uri: str) -> None:
        self.root = _path_from_uri(artifact_uri).resolve()
        is_uri = urlsplit(artifact_uri).scheme.lower() == "file"
        self.artifact_uri = self.root.as_uri() if is_uri else str(self.root)

    def __repr__(self) -> str:
        return f"LocalArtifactRepository({self.artifact_uri!r})"

    def log_artifact(self, local_file: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        source = local_file_to_upload(local_file)
        relative = posixpath.join(artifact_subpath(artifact_path), source.name)
        target = contained_target(self.root, relative)
        with self._os_errors(relative):
            _atomic_write(target, lambda fh: _copy_into(source, fh))

    def log_artifacts(self, local_dir: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        base = artifact_subpath(artifact_path)
        files = local_files_to_upload(local_dir)
        # Check every destination before writing any, so a refused path changes nothing.
        targets = [(src, contained_target(self.root, posixpath.join(base, rel))) for src, rel in files]
        written: list[Path] = []
        with self._os_errors(base):
            try:
                for source, target in targets:
                    existed = target.exists()
                    _atomic_write(target, lambda fh, source=source: _copy_into(source, fh))
                    if not existed:
                        written.append(target)
            except BaseException:
                # Half a folder (a model without its weights) must not look logged: take
                # back the files this call added, then report the failure.
                for target in written:
                    with contextlib.suppress(OSError):
                        target.unlink()
                raise

    def log_bytes(self, data: bytes, artifact_file: str) -> None:
        relative = required_file_path(artifact_file)
        target = contained_target(self.root, relative)
        with self._os_errors(relative):
            _atomic_write(target, lambda fh: fh.write(data))

    def read_bytes(self, artifact_file: str) -> bytes:
        relative = required_file_path(artifact_file)
        source = contained_target(self.root, relative)
        if source.is_dir():
            raise InvalidArgument(
                f"Artifact {self._uri(relative)} is a directory; read a file in it "
                "(see list_artifacts) or use download_artifacts."
            )
        with self._os_errors(relative):
            return source.read_bytes()

    def list_artifacts(self, path: str | None = None) -> list[FileInfo]:
        relative = artifact_subpath(path)
        directory = contained_target(self.root, relative)
        if not directory.is_dir():
            return []
        with self._os_errors(relative):
            infos = [
                FileInfo(
                    path=posixpath.join(relative, entry.name),
                    is_dir=entry.is_dir(),
                    file_size=None if entry.is_dir() else entry.stat().st_size,
                )
                for entry in os.scandir(directory)
            ]
        return sorted(infos, key=lambda info: info.path)

    def download_artifacts(
        self, artifact_path: str = "", dst_path: str | os.PathLike[str] | None = None
    ) -> str:
        relative = artifact_subpath(artifact_path)
        source = self._existing(relative)
        dst_root = Path(dst_path if dst_path is not None else tempfile.mkdtemp(prefix="mlops-dl-"))
        with self._os_errors(relative):
            dst_root.mkdir(parents=True, exist_ok=True)
            target = contained_target(dst_root, relative)
            if source.is_file():
                _atomic_write(target, lambda fh: _copy_into(source, fh))
                return str(target)
            target.mkdir(parents=True, exist_ok=True)
            for file, rel in sorted(iter_files(source), key=lambda item: item[1]):
                contained_target(self.root, posixpath.join(relative, rel))  # no links out of the root
                out = contained_target(target, rel)
                _atomic_write(out, lambda fh, file=file: _copy_into(file, fh))
        return str(target)

    def delete_artifacts(self, artifact_path: str | None = None) -> None:
        relative = artifact_subpath(artifact_path)
        # Check the parent, then delete the entry itself: a link, not what it points to.
        parent = contained_target(self.root, posixpath.dirname(relative))
        target = parent / posixpath.basename(relative)
        with self._os_errors(relative):
            if not relative:
                children = list(self.root.iterdir()) if self.root.is_dir() else []
            else:
                children = [target] if target.exists() or target.is_symlink() else []
            # Idempotent, as on S3: what another deleter (a concurrent gc) removes meanwhile
            # counts as deleted.
            for child in children:
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, onerror=_raise_unless_missing)
                else:
                    child.unlink(missing_ok=True)

    def copy_to(self, dest: ArtifactRepository, artifact_path: str = "") -> None:
        relative = artifact_subpath(artifact_path)
        source = self._existing(relative)
        if source.is_file():
            dest.log_artifact(source)
        elif source.exists():
            dest.log_artifacts(source)

    # -- helpers -------------------------------------------------------------------------

    def _uri(self, relative: str) -> str:
        return posixpath.join(self.artifact_uri, relative) if relative else self.artifact_uri

    def _existing(self, relative: str) -> Path:
        """The path of ``relative`` in the root; NotFound unless it exists (or is the root)."""
        source = contained_target(self.root, relative)
        if relative and not source.exists():
            raise NotFound(
                f"Artifact {self._uri(relative)} does not exist; list what is there with "
                "list_artifacts()."
            )
        return source

    @contextlib.contextmanager
    def _os_errors(self, relative: str) -> Iterator[None]:
        """Translate filesystem errors into this package's errors, in one place."""
        uri = self._uri(relative)
        try:
            yield
        except FileNotFoundError as exc:
            raise NotFound(f"Artifact {uri} does not exist ({exc.strerror}: {exc.filename}).") from exc
        except (IsADirectoryError, NotADirectoryError, FileExistsError) as exc:
            raise Conflict(
                f"Cannot write artifact {uri}: a file and a directory would share a path "
                f"({exc.strerror}: {exc.filename}). Choose another artifact path."
            ) from exc
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise BackendUnavailable(
                    f"Cannot write artifact {uri}: no space left for the artifact root {self.root} "
                    f"({_free_space(self.root)}). Nothing of it was kept; free space there, or set "
                    "PREFECT_MLOPS_ARTIFACT_ROOT to a larger volume, and log it again."
                ) from exc
            if exc.errno == errno.ENAMETOOLONG:
                raise InvalidArgument(
                    f"Cannot write artifact {uri}: the path is longer than this file system allows "
                    f"({exc.strerror}). Use shorter artifact names or a shorter artifact root."
                ) from exc
            raise BackendUnavailable(
                f"Local artifact store {self.artifact_uri} failed on {uri}: {exc}. Check the folder's "
                "permissions and free space, or set PREFECT_MLOPS_ARTIFACT_ROOT elsewhere."
            ) from exc


def _free_space(path: Path) -> str:
    """``"123,456 bytes free of 2,097,152"`` for the file system holding ``path``."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        usage = shutil.disk_usage(probe)
    except OSError:
        return "free space unknown"
    return f"{usage.free:,} bytes free of {usage.total:,}"


def _path_from_uri(uri: str) -> Path:
    split = urlsplit(uri)
    if split.scheme.lower() != "file" or len(split.scheme) == 1:
        return Path(uri).expanduser()
    if split.netloc not in ("", "localhost"):
        raise InvalidArgument(
            f"Invalid artifact URI {uri!r}: file:// URIs must name a local path "
            f"(file:///abs/path), not the host {split.netloc!r}."
        )
    return Path(url2pathname(split.path))


def _copy_into(source: Path, fh: object) -> None:
    with source.open("rb") as src:
        shutil.copyfileobj(src, fh)  # type: ignore[arg-type]


def _atomic_write(target: Path, write: Callable[..., object]) -> None:
    """Write through a temporary file in the same folder, then rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    # A fixed-length name: any name the validator accepts (up to 255 bytes) can be written.
    tmp_name = target.parent / f".mlops-{uuid.uuid4().hex}.tmp"
    # os.open with 0o666 lets the umask decide permissions, as for any new file
    # (tempfile.mkstemp would make every artifact private to its writer: 0o600).
    fd = os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise


def _raise_unless_missing(function: object, path: str, exc_info: tuple[type[BaseException], BaseException, object]) -> None:
    """``shutil.rmtree``'s error handler: an entry already gone is fine, anything else raises."""
    if not isinstance(exc_info[1], FileNotFoundError):
        raise exc_info[1]
