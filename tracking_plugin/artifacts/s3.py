"""Artifacts in S3 or an S3-compatible store (MinIO, Ceph, moto), through boto3.

Endpoint and credentials: ``PREFECT_MLOPS_S3_ENDPOINT_URL`` for S3-compatible stores
(path-style addressing is then used, which they all support), explicit keys and region from
:class:`~tracking_plugin.settings.MlopsSettings` when set, otherwise boto3's usual chain
(``AWS_*`` environment, ``AWS_PROFILE``, instance role). Files of 8 MB and more go up and
down in 8 MB parts through boto3's transfer manager.
"""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar
from urllib.parse import urlsplit

import boto3
import s3transfer.exceptions
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectionError as BotoConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)
from s3transfer.manager import TransferManager
from s3transfer.subscribers import BaseSubscriber

from tracking_plugin.artifacts.base import (
    ArtifactRepository,
    artifact_subpath,
    contained_target,
    local_file_to_upload,
    local_files_to_upload,
    required_file_path,
)
from tracking_plugin.entities import FileInfo
from tracking_plugin.errors import BackendUnavailable, InvalidArgument, MlopsError, NotFound
from tracking_plugin.settings import MlopsSettings

__all__ = ["S3ArtifactRepository"]

MB = 1024 * 1024
S3_KEY_MAX_BYTES = 1024  # S3's limit on an object key
# One transfer manager per operation moves all files of a directory, and the parts of big
# files, through at most `max_concurrency` requests at a time.
TRANSFER_CONFIG = TransferConfig(
    multipart_threshold=8 * MB, multipart_chunksize=8 * MB, max_concurrency=10
)
# Short connect timeout and 3 attempts: a wrong endpoint fails in seconds, not minutes,
# while a throttled or briefly flaky store still gets two retries with backoff.
_CLIENT_CONFIG: dict[str, Any] = dict(
    connect_timeout=5,
    read_timeout=60,
    retries={"max_attempts": 3, "mode": "standard"},
    max_pool_connections=64,
)

_T = TypeVar("_T")
_TRANSFER_ERRORS = (
    BotoCoreError,
    ClientError,
    Boto3Error,
    s3transfer.exceptions.RetriesExceededError,
    s3transfer.exceptions.S3UploadFailedError,
    s3transfer.exceptions.S3DownloadFailedError,
    s3transfer.exceptions.S3CopyFailedError,
)


@dataclass(frozen=True)
class _ClientKey:
    endpoint_url: str | None
    region: str | None
    access_key_id: str | None
    secret_access_key: str | None

    @classmethod
    def from_settings(cls, settings: MlopsSettings) -> _ClientKey:
        key_id, secret = settings.aws_access_key_id, settings.aws_secret_access_key
        if (key_id is None) != (secret is None):
            raise InvalidArgument(
                "Only one of PREFECT_MLOPS_AWS_ACCESS_KEY_ID and PREFECT_MLOPS_AWS_SECRET_ACCESS_KEY "
                "is set: set both, or neither to use boto3's credential chain."
            )
        return cls(
            endpoint_url=settings.s3_endpoint_url or None,
            region=settings.s3_region or None,
            access_key_id=key_id.get_secret_value() if key_id else None,
            secret_access_key=secret.get_secret_value() if secret else None,
        )


_clients: dict[_ClientKey, Any] = {}
_clients_lock = threading.Lock()


def _client_for(key: _ClientKey) -> Any:
    """One client per configuration: clients are thread-safe, building them is not."""
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            s3_options = {"addressing_style": "path"} if key.endpoint_url else None
            # A private Session: boto3's default session is shared and not thread-safe.
            client = boto3.session.Session().client(
                "s3",
                endpoint_url=key.endpoint_url,
                region_name=key.region,
                aws_access_key_id=key.access_key_id,
                aws_secret_access_key=key.secret_access_key,
                config=Config(s3=s3_options, **_CLIENT_CONFIG),
            )
            _clients[key] = client
        return client


class S3ArtifactRepository:
    """Artifacts under ``s3://bucket/prefix``.

    ``page_size`` is the number of keys asked for per listing request (S3's maximum is 1000).

    >>> repo = S3ArtifactRepository("s3://my-bucket/mlops/1/abc/artifacts", settings=MlopsSettings())
    >>> repo.artifact_uri
    's3://my-bucket/mlops/1/abc/artifacts'
    """

    def __init__(self, artifact_uri: str, *, settings: MlopsSettings, page_size: int = 1000) -> None:
        split = urlsplit(artifact_uri)
        if split.scheme.lower() != "s3" or not split.netloc:
            raise InvalidArgument(
                f"Invalid S3 artifact URI {artifact_uri!r}: use s3://<bucket>/<prefix>."
            )
        if not 1 <= page_size <= 1000:
            raise InvalidArgument(f"Invalid page_size {page_size!r}: S3 lists 1 to 1000 keys per request.")
        self.bucket = split.netloc
        # Everything after the bucket is the key prefix, literally: '?', '#' and '%' are
        # characters of S3 keys, not URL syntax (as for the AWS CLI).
        self.prefix = artifact_uri[len("s3://") + len(split.netloc) :].strip("/")
        self.artifact_uri = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.page_size = page_size
        self._client_key = _ClientKey.from_settings(settings)
        self._client = _client_for(self._client_key)

    def __repr__(self) -> str:
        return f"S3ArtifactRepository({self.artifact_uri!r})"

    def log_artifact(self, local_file: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        source = local_file_to_upload(local_file)
        relative = artifact_subpath(posixpath.join(artifact_subpath(artifact_path), source.name))
        with self._s3_errors(relative):
            self._transfer([(str(source), self._key(relative))], self._upload)

    def log_artifacts(self, local_dir: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        base = artifact_subpath(artifact_path)
        # Validate every key before the first upload, so a refused name changes nothing.
        uploads = [
            (str(src), self._key(artifact_subpath(posixpath.join(base, rel))))
            for src, rel in local_files_to_upload(local_dir)
        ]
        with self._s3_errors(base):
            self._transfer(uploads, self._upload)

    def log_bytes(self, data: bytes, artifact_file: str) -> None:
        relative = required_file_path(artifact_file)
        with self._s3_errors(relative):
            self._transfer([(io.BytesIO(data), self._key(relative))], self._upload)

    def read_bytes(self, artifact_file: str) -> bytes:
        relative = required_file_path(artifact_file)
        with self._s3_errors(relative):
            response = self._client.get_object(Bucket=self.bucket, Key=self._key(relative))
            return response["Body"].read()  # type: ignore[no-any-return]

    def list_artifacts(self, path: str | None = None) -> list[FileInfo]:
        relative = artifact_subpath(path)
        infos: list[FileInfo] = []
        with self._s3_errors(relative):
            for page in self._pages(relative, delimiter="/"):
                for common in page.get("CommonPrefixes", []):
                    infos.append(FileInfo(path=self._relative(common["Prefix"].rstrip("/")), is_dir=True))
                for obj in page.get("Contents", []):
                    if not obj["Key"].endswith("/"):  # folder markers made by other tools
                        path = self._relative(obj["Key"])
                        infos.append(FileInfo(path=path, is_dir=False, file_size=obj["Size"]))
        return sorted(infos, key=lambda info: info.path)

    def download_artifacts(
        self, artifact_path: str = "", dst_path: str | os.PathLike[str] | None = None
    ) -> str:
        relative = artifact_subpath(artifact_path)
        dst_root = Path(dst_path if dst_path is not None else tempfile.mkdtemp(prefix="mlops-dl-"))
        dst_root.mkdir(parents=True, exist_ok=True)
        target = contained_target(dst_root, relative)
        with self._s3_errors(relative):
            objects = self._objects_under(relative)
            if objects or not relative:
                start = len(self._dir_prefix(relative))
                # Each relative key is validated and kept inside target, whoever wrote the bucket.
                downloads = [(obj, contained_target(target, obj.key[start:])) for obj in objects]
                target.mkdir(parents=True, exist_ok=True)
            else:
                downloads = [(_Object(self._key(relative)), target)]
            self._transfer(downloads, self._download)
        return str(target)

    def delete_artifacts(self, artifact_path: str | None = None) -> None:
        relative = artifact_subpath(artifact_path)
        with self._s3_errors(relative):
            keys = [obj.key for obj in self._objects_under(relative)]
            if relative:
                keys.append(self._key(relative))  # the file itself, if it is one
            for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
                batch = [{"Key": key} for key in keys[start : start + 1000]]
                response = self._client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                )
                if response.get("Errors"):
                    first = response["Errors"][0]
                    raise BackendUnavailable(
                        f"S3 did not delete {len(response['Errors'])} objects under {self._uri(relative)}, "
                        f"e.g. {first.get('Key')!r}: {first.get('Code')} {first.get('Message')}. Retry the delete."
                    )

    def copy_to(self, dest: ArtifactRepository, artifact_path: str = "") -> None:
        relative = artifact_subpath(artifact_path)
        if not (isinstance(dest, S3ArtifactRepository) and dest._client_key == self._client_key):
            with tempfile.TemporaryDirectory(prefix="mlops-copy-") as tmp:
                local = Path(self.download_artifacts(relative, tmp))
                if local.is_file():
                    dest.log_artifact(local)
                else:
                    dest.log_artifacts(local)
            return
        # Same endpoint and credentials: copy server-side, no bytes through this machine.
        with self._s3_errors(relative):
            objects = self._objects_under(relative)
            if objects or not relative:
                start = len(self._dir_prefix(relative))
                copies = [
                    (obj, dest.bucket, dest._key(artifact_subpath(obj.key[start:]))) for obj in objects
                ]
            else:
                name = posixpath.basename(relative)
                copies = [(_Object(self._key(relative)), dest.bucket, dest._key(name))]
            self._transfer(copies, self._copy)

    # -- helpers -------------------------------------------------------------------------

    def _key(self, relative: str) -> str:
        key = posixpath.join(self.prefix, relative) if self.prefix and relative else self.prefix or relative
        if len(key.encode("utf-8")) > S3_KEY_MAX_BYTES:
            raise InvalidArgument(
                f"Invalid artifact path {relative!r}: its S3 key under {self.artifact_uri} would be "
                f"{len(key.encode('utf-8'))} bytes, S3 allows {S3_KEY_MAX_BYTES}. Use shorter names."
            )
        return key

    def _dir_prefix(self, relative: str) -> str:
        key = self._key(relative)
        return key + "/" if key else ""

    def _relative(self, key: str) -> str:
        return key[len(self._dir_prefix("")) :]

    def _uri(self, relative: str) -> str:
        return f"{self.artifact_uri}/{relative}" if relative else self.artifact_uri

    def _pages(self, relative: str, *, delimiter: str | None = None) -> Iterator[dict[str, Any]]:
        """Every listing page under ``relative``; the paginator follows continuation tokens."""
        options = {"Delimiter": delimiter} if delimiter else {}
        return self._client.get_paginator("list_objects_v2").paginate(  # type: ignore[no-any-return]
            Bucket=self.bucket,
            Prefix=self._dir_prefix(relative),
            PaginationConfig={"PageSize": self.page_size},
            **options,
        )

    def _objects_under(self, relative: str) -> list[_Object]:
        """Every object below ``relative``, recursively."""
        return [
            _Object(obj["Key"], obj["Size"], obj["ETag"])
            for page in self._pages(relative)
            for obj in page.get("Contents", [])
            if not obj["Key"].endswith("/")
        ]

    def _transfer(self, items: Sequence[_T], submit: Callable[[TransferManager, _T], Any]) -> None:
        """Run every transfer through one manager; raise the first failure.

        Leaving the ``with`` block on an error cancels the transfers still queued.
        """
        with create_transfer_manager(self._client, TRANSFER_CONFIG) as manager:
            futures = [submit(manager, item) for item in items]
            for future in futures:
                future.result()

    def _upload(self, manager: TransferManager, item: tuple[Any, str]) -> Any:
        source, key = item
        return manager.upload(source, self.bucket, key)

    def _download(self, manager: TransferManager, item: tuple[_Object, Path]) -> Any:
        obj, target = item
        target.parent.mkdir(parents=True, exist_ok=True)
        # s3transfer writes to a temporary name and renames, so no half file is left behind.
        return manager.download(self.bucket, obj.key, str(target), subscribers=obj.subscribers())

    def _copy(self, manager: TransferManager, item: tuple[_Object, str, str]) -> Any:
        obj, dest_bucket, dest_key = item
        source = {"Bucket": self.bucket, "Key": obj.key}
        return manager.copy(source, dest_bucket, dest_key, subscribers=obj.subscribers())

    @contextlib.contextmanager
    def _s3_errors(self, relative: str) -> Iterator[None]:
        try:
            yield
        except _TRANSFER_ERRORS as exc:
            endpoint = self._client.meta.endpoint_url
            raise _translate(exc, uri=self._uri(relative), bucket=self.bucket, endpoint=endpoint) from exc


@dataclass(frozen=True)
class _Object:
    """An S3 object; size and ETag are known when it came from a listing."""

    key: str
    size: int | None = None
    etag: str | None = None

    def subscribers(self) -> list[BaseSubscriber]:
        return [_KnownObject(self.size, self.etag)] if self.size is not None and self.etag else []


class _KnownObject(BaseSubscriber):  # type: ignore[misc]
    """Gives s3transfer the size and ETag from the listing, so it skips a HeadObject per file
    (and a multipart download still checks that the object did not change meanwhile)."""

    def __init__(self, size: int, etag: str) -> None:
        self._size, self._etag = size, etag

    def on_queued(self, future: Any, **kwargs: Any) -> None:
        future.meta.provide_transfer_size(self._size)
        future.meta.provide_object_etag(self._etag)


def _translate(exc: BaseException, *, uri: str, bucket: str, endpoint: str) -> MlopsError:
    """The one place where boto3/botocore errors become this package's errors."""
    # The transfer layers wrap the real error: boto3's S3UploadFailedError (raised inside
    # `except ClientError`, so in __context__), s3transfer's RetriesExceededError, ...
    for _ in range(5):
        if isinstance(exc, (BotoCoreError, ClientError)):
            break
        inner = getattr(exc, "last_exception", None) or exc.__cause__ or exc.__context__
        if inner is None:
            break
        exc = inner
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code, message = str(error.get("Code", "")), error.get("Message", "")
        if code == "NoSuchBucket":
            name = error.get("BucketName", bucket)
            return NotFound(
                f"S3 bucket {name!r} does not exist at {endpoint} (artifact URI {uri}). Create the "
                "bucket, or point PREFECT_MLOPS_ARTIFACT_ROOT at an existing one."
            )
        if code in ("NoSuchKey", "404", "NotFound"):
            return NotFound(f"Artifact {uri} does not exist; list what is there with list_artifacts().")
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"):
            return BackendUnavailable(
                f"S3 at {endpoint} refused access to {uri} ({code}: {message}). Check the credentials "
                "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or PREFECT_MLOPS_AWS_ACCESS_KEY_ID/"
                "PREFECT_MLOPS_AWS_SECRET_ACCESS_KEY) and the bucket policy."
            )
        return BackendUnavailable(f"S3 at {endpoint} failed on {uri} ({code}: {message}). Retry later.")
    if isinstance(exc, (BotoConnectionError, ReadTimeoutError, ConnectionClosedError)):
        return BackendUnavailable(
            f"Cannot reach the S3 endpoint {endpoint} for {uri}: {exc}. Check that the store is "
            "running and reachable, and PREFECT_MLOPS_S3_ENDPOINT_URL (set it for S3-compatible "
            "stores such as MinIO, leave it unset for AWS)."
        )
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return BackendUnavailable(
            f"No usable S3 credentials for {uri} ({exc}). Set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or PREFECT_MLOPS_AWS_ACCESS_KEY_ID and "
            "PREFECT_MLOPS_AWS_SECRET_ACCESS_KEY."
        )
    return BackendUnavailable(f"S3 at {endpoint} failed on {uri}: {exc}. Retry later.")
