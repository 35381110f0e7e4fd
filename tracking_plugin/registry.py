"""Model registration: copy a model into registry-owned storage and record it as a version.

:func:`register_model` is MLflow's ``mlflow.register_model``: it takes a model URI
(``runs:/<run_id>/model``, ``models:/<name>/<version>``, ``s3://...``, a local path) and a
registered model name, and returns the new :class:`~tracking_plugin.entities.ModelVersion`.
Unlike MLflow it copies the model's files to ``<artifact root>/registry/<key>/<version>``
(see :func:`registry_location`), so the version keeps working after the run or its
artifacts are deleted. Each version records where its files are (``storage_location``),
so versions registered under an earlier folder layout keep loading.

The steps, each visible in the version's status:

1. the source must be a model directory (an ``MLmodel`` file at its top) whose files all
   have acceptable names and whose ``MLmodel`` names no path outside it (no absolute path,
   no ``..``, no symlink out of a local folder), else
   :class:`~tracking_plugin.errors.InvalidArgument` or
   :class:`~tracking_plugin.errors.ModelLoadRefused` and nothing is recorded;
2. the store allocates the next version number under a row lock: ``PENDING_REGISTRATION``;
3. the files are copied to a folder that holds no files yet (a registration never writes
   into another version's files: when the usual folder is taken, e.g. by a deleted or
   renamed model, a fresh sibling ``<version>-<random>`` is used) and the copy is checked:
   every source file arrived with its size, and when the model has a sha256 manifest
   (``manifest.json``) every copied file matches it;
4. the version becomes ``READY`` with ``storage_location`` set to the copy. If step 3 fails
   for any reason (the store goes away mid-copy, a tampered file, ...) the partial copy is
   removed, the version becomes ``FAILED_REGISTRATION`` with a message naming the cause,
   and the error is re-raised. Aliases and stages are never touched here, so the current
   champion stays as it was.

This module imports no Prefect; the Prefect task in ``registry_tasks`` wraps it.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from tracking_plugin._lineage import user_name
from tracking_plugin.artifacts import get_artifact_repository, join_artifact_uri
from tracking_plugin.backend import get_store
from tracking_plugin.entities import ModelVersion, ModelVersionStatus
from tracking_plugin.errors import BackendUnavailable, InvalidArgument, MlopsError, ModelLoadRefused, NotFound
from tracking_plugin.fluent import current_client
from tracking_plugin.models import (
    MANIFEST_FILE,
    ModelMetadata,
    ModelUriKind,
    check_model_paths,
    check_model_tree,
    parse_model_uri,
    read_manifest,
    verify_manifest,
)
from tracking_plugin.validation import validate_artifact_path, validate_model_name

if TYPE_CHECKING:
    from tracking_plugin.artifacts import ArtifactRepository
    from tracking_plugin.settings import MlopsSettings
    from tracking_plugin.store.base import Store

__all__ = ["register_model", "registry_key", "registry_location"]

MLMODEL_FILE = "MLmodel"
# Names used as folder names as they are; never contain '~', which marks a hashed key.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,99}")
_SLUG_LEN = 48


def register_model(
    model_uri: str,
    name: str,
    *,
    tags: dict[str, str] | None = None,
    description: str | None = None,
    store: Store | None = None,
    artifact_root: str | None = None,
    settings: MlopsSettings | None = None,
) -> ModelVersion:
    """Register the model at ``model_uri`` as the next version of ``name`` (created if new).

    ``store``, ``artifact_root`` and ``settings`` (S3 endpoint and credentials) default to
    the backend in use (:func:`tracking_plugin.fluent.current_client`: a tracked flow's,
    else ``set_tracking_uri()``, else ``PREFECT_MLOPS_BLOCK`` or ``PREFECT_MLOPS_*``).

    >>> version = register_model(f"runs:/{run_id}/model", "churn")  # doctest: +SKIP
    >>> version.version, version.status.value                        # doctest: +SKIP
    (1, 'READY')
    """

    validate_model_name(name)
    if settings is None:

        settings = current_client().settings
    if store is None:
        store = _default_store(settings)
    root = artifact_root if artifact_root is not None else settings.artifact_root

    location, run_id = _resolve_source(model_uri, store)
    source = get_artifact_repository(location, settings)
    # Everything the input decides is checked before a version number is taken: a refused
    # model leaves no FAILED_REGISTRATION version behind, and is not retried.
    expected = _check_model_source(source, model_uri, location)
    # A bad root is refused before a number is taken; a relative local root is made
    # absolute so the stored location works from any working directory.
    root = get_artifact_repository(root, settings).artifact_uri
    _check_destination_lengths(root, name, expected)

    version = store.create_model_version(
        name, model_uri, run_id=run_id, tags=tags, description=description, user_id=user_name()
    )
    destination = registry_location(root, name, version.version)
    copy: ArtifactRepository | None = None
    try:
        destination, copy = _empty_destination(destination, settings)
        source.copy_to(copy)
        _verify_copy(expected, copy)
    except BaseException as exc:
        if copy is not None:
            _discard(copy)
        _mark_failed(store, name, version.version, model_uri, destination, exc)
        if isinstance(exc, ModelLoadRefused):
            raise ModelLoadRefused(
                f"Refusing to register {model_uri!r} as version {version.version} of {name!r}: "
                f"{exc.message}"
            ) from exc
        if isinstance(exc, OSError):
            raise BackendUnavailable(
                f"Copying {model_uri!r} to {destination} failed: {exc}. Version {version.version} of "
                f"{name!r} is FAILED_REGISTRATION; register the model again."
            ) from exc
        raise
    return store.finish_model_version(
        name, version.version, status=ModelVersionStatus.READY, storage_location=destination
    )


def registry_location(artifact_root: str, name: str, version: int) -> str:
    """Where version ``version`` of ``name`` is stored: ``<root>/registry/<key>/<version>``.

    ``key`` is the name itself when it is a short, plain file name (letters, digits, '_',
    '-', '.'; at most 100 characters); any other name is spelled as a readable slug, '~'
    and the full sha256 of the name. '~' never occurs in a plain name, so distinct names
    never share a folder, and the key is at most 113 characters whatever the name's length.
    (A registration whose folder already holds files uses a fresh sibling instead.)

    >>> registry_location("s3://bucket/mlops", "churn", 3)
    's3://bucket/mlops/registry/churn/3'
    >>> registry_location("s3://bucket/mlops", "churn v2", 1).split("/")[-2][:20]
    'churn_v2~92fbbc5d899'
    """

    return join_artifact_uri(artifact_root, "registry", registry_key(name), str(int(version)))


def registry_key(name: str) -> str:
    """The folder name of a registered model's versions (see :func:`registry_location`)."""
    if _PLAIN_NAME.fullmatch(name):
        return name
    slug = re.sub(r"[^A-Za-z0-9_.\-]+", "_", name).strip("._-")[:_SLUG_LEN] or "model"
    return f"{slug}~{hashlib.sha256(name.encode('utf-8')).hexdigest()}"


# ---------------------------------------------------------------- steps


def _default_store(settings: MlopsSettings) -> Store:
    # The process-wide store: relative SQLite paths resolved, schema migrated once.

    return get_store(settings)


def _resolve_source(model_uri: str, store: Store) -> tuple[str, str | None]:
    """The artifact location of the model directory and the run it came from (if known)."""
    parsed = parse_model_uri(model_uri)
    if parsed.kind is ModelUriKind.RUNS:
        assert parsed.run_id is not None
        run = store.get_run(parsed.run_id)
        return join_artifact_uri(run.info.artifact_uri, parsed.path or None), parsed.run_id
    if parsed.kind is ModelUriKind.MODELS:
        assert parsed.name is not None
        if parsed.version is not None:
            version = store.get_model_version(parsed.name, parsed.version)
        elif parsed.alias is not None:
            version = store.get_model_version_by_alias(parsed.name, parsed.alias)
        else:
            stages = [parsed.stage] if parsed.stage is not None else None
            candidates = store.get_latest_versions(parsed.name, stages)
            if not candidates:

                where = f"in stage {parsed.stage.value!r}" if parsed.stage is not None else "that is READY"
                raise NotFound(
                    f"Registered model {parsed.name!r} has no version {where}, so {model_uri!r} "
                    "points nowhere. Use models:/<name>/<version> or register a version first."
                )
            version = max(candidates, key=lambda v: v.version)
        if version.status is not ModelVersionStatus.READY:
            raise InvalidArgument(
                f"Cannot register {model_uri!r}: version {version.version} of {version.name!r} is "
                f"{version.status.value}, its files may be incomplete. Use a READY version."
            )
        location = version.storage_location or version.source
        if location.startswith("runs:"):
            return _resolve_source(location, store)[0], version.run_id
        return location, version.run_id
    return model_uri, None


def _check_model_source(source: ArtifactRepository, model_uri: str, location: str) -> dict[str, int | None]:
    """Refuse what cannot be registered; return every source file with its size."""

    shown = repr(model_uri) if model_uri == location else f"{model_uri!r} ({location})"
    local_root = _local_path(source)
    if local_root is not None and local_root.is_dir():
        check_model_tree(local_root, where=shown)  # before listing: no symlink out of the folder
    expected = _file_sizes(source)
    if MLMODEL_FILE not in expected:
        raise InvalidArgument(
            f"Cannot register {shown}: not a model directory (no {MLMODEL_FILE} file at its top). "
            "Point at the folder written by log_model/save_model, e.g. runs:/<run_id>/model."
        )
    for path in expected:
        try:
            validate_artifact_path(path)
        except InvalidArgument as exc:
            raise InvalidArgument(f"Cannot register {shown}: its file {path!r} has a name that cannot be stored ({exc.message})") from exc
    try:
        text = source.read_bytes(MLMODEL_FILE).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelLoadRefused(f"Cannot register {shown}: its {MLMODEL_FILE} file is not UTF-8 text.") from exc
    meta = ModelMetadata.from_yaml(text, where=shown)
    check_model_paths(local_root, meta, where=shown)
    return expected


def _check_destination_lengths(root: str, name: str, expected: dict[str, int | None]) -> None:
    """Refuse, before a number is taken, a copy whose paths the store could not hold."""

    longest = max(expected, key=lambda p: len(p.encode("utf-8")))
    # The longest folder a version can get: a 10-digit number and a fresh-folder suffix.
    sample = join_artifact_uri(registry_location(root, name, 10**9), longest)
    sample = sample.replace("/1000000000/", "/1000000000-0123456789ab/")
    if sample.startswith("s3://"):
        size, limit, what = len(sample.encode("utf-8")) - len(urlsplit(sample).netloc) - 6, 1024, "S3 key"
    else:
        size, limit, what = len(os.fsencode(sample)), 4000, "file path"
    if size > limit:
        raise InvalidArgument(
            f"Cannot register {longest!r} under {root}: its {what} in the registry would be about "
            f"{size} bytes, the limit is {limit}. Use a shorter artifact root or shorter file names."
        )


def _empty_destination(destination: str, settings: MlopsSettings) -> tuple[str, ArtifactRepository]:
    """The repository to copy into: ``destination``, or a fresh sibling if it holds files.

    Files there belong to someone else (a deleted or renamed model, another tool): they
    are never overwritten or deleted.
    """

    copy = get_artifact_repository(destination, settings)
    if not copy.list_artifacts():
        return destination, copy
    fresh = f"{destination.rstrip('/')}-{uuid.uuid4().hex[:12]}"
    return fresh, get_artifact_repository(fresh, settings)


def _discard(copy: ArtifactRepository) -> None:
    """Remove a partial copy (the folder was empty before); a failure here is not the story."""
    try:
        copy.delete_artifacts()
    except Exception:  # noqa: BLE001 - the original error is the one to raise
        pass


def _file_sizes(repo: ArtifactRepository) -> dict[str, int | None]:
    """Every file under the repository root with its size, walking the listing."""
    sizes: dict[str, int | None] = {}
    pending = [""]
    while pending:
        for info in repo.list_artifacts(pending.pop() or None):
            if info.is_dir:
                pending.append(info.path)
            else:
                sizes[info.path] = info.file_size
    return sizes


def _verify_copy(expected: dict[str, int | None], copy: ArtifactRepository) -> None:
    """Every source file arrived with its size; with a manifest, every hash matches."""

    copied = _file_sizes(copy)
    missing = sorted(path for path in expected if path not in copied)
    if missing:
        raise BackendUnavailable(
            f"The copy at {copy.artifact_uri} is incomplete: {', '.join(map(repr, missing[:5]))} "
            f"did not arrive ({len(missing)} of {len(expected)} files). Register the model again."
        )
    changed = sorted(p for p, size in expected.items() if size is not None and copied[p] not in (None, size))
    if changed:
        raise BackendUnavailable(
            f"The copy at {copy.artifact_uri} differs from the source in size for "
            f"{', '.join(map(repr, changed[:5]))}. Register the model again."
        )
    if MANIFEST_FILE not in copied:
        return  # e.g. a model saved by MLflow: sizes are all we can check
    local_root = _local_path(copy)
    if local_root is not None:
        _check_manifest(local_root)
        return
    with tempfile.TemporaryDirectory(prefix="mlops-verify-") as tmp:
        _check_manifest(Path(copy.download_artifacts("", tmp)))


def _check_manifest(root: Path) -> None:

    entries = read_manifest(root)
    if entries is not None:
        verify_manifest(root, entries)


def _local_path(repo: ArtifactRepository) -> Path | None:
    root = getattr(repo, "root", None)
    return root if isinstance(root, Path) else None


def _mark_failed(
    store: Store, name: str, version: int, model_uri: str, destination: str, exc: BaseException
) -> None:
    """Record FAILED_REGISTRATION; never let a second failure hide the first one."""
    cause = exc.message if isinstance(exc, MlopsError) else f"{type(exc).__name__}: {exc}"
    message = f"Copying {model_uri} to {destination} failed: {cause}"
    try:
        store.finish_model_version(
            name, version, status=ModelVersionStatus.FAILED_REGISTRATION, status_message=message
        )
    except Exception as second:  # noqa: BLE001 - the original error is the one to raise
        exc.add_note(
            f"Version {version} of {name!r} could not be marked FAILED_REGISTRATION either "
            f"({second}); it stays PENDING_REGISTRATION."
        )


