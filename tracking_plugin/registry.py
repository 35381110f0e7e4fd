"""Model registration: copy a model into registry-owned storage and record it as a version.

:func:`register_model` is MLflow's ``mlflow.register_model``: it takes a model URI
(``runs:/<run_id>/model``, ``models:/<name>/<version>``, ``s3://...``, a local path) and a
registered model name, and returns the new :class:`~tracking_plugin.entities.ModelVersion`.
Unlike MLflow it copies the model's files to ``<artifact root>/registry/<name>/<version>``,
so the version keeps working after the run or its artifacts are deleted.

The steps, each visible in the version's status:

1. the source must be a model directory (an ``MLmodel`` file at its top), else
   :class:`~tracking_plugin.errors.InvalidArgument` and nothing is recorded;
2. the store allocates the next version number under a row lock: ``PENDING_REGISTRATION``;
3. the files are copied and the copy checked: every source file arrived with its size, and
   when the model has a sha256 manifest (``manifest.json``) every copied file matches it;
4. the version becomes ``READY`` with ``storage_location`` set to the copy. If step 3 fails
   for any reason (the store goes away mid-copy, a tampered file, ...) the version becomes
   ``FAILED_REGISTRATION`` with a message naming the cause, and the error is re-raised.
   Aliases and stages are never touched here, so the current champion stays as it was.

This module imports no Prefect; the Prefect task in ``registry_tasks`` wraps it.
"""

from __future__ import annotations

import getpass
import hashlib
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from tracking_plugin.entities import ModelVersion, ModelVersionStatus
from tracking_plugin.errors import BackendUnavailable, InvalidArgument, MlopsError, ModelLoadRefused
from tracking_plugin.validation import validate_model_name

if TYPE_CHECKING:
    from tracking_plugin.artifacts import ArtifactRepository
    from tracking_plugin.settings import MlopsSettings
    from tracking_plugin.store.base import Store

__all__ = ["register_model", "registry_location"]

MLMODEL_FILE = "MLmodel"
_SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


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
    from tracking_plugin.artifacts import get_artifact_repository

    validate_model_name(name)
    if settings is None:
        from tracking_plugin.fluent import current_client

        settings = current_client().settings
    if store is None:
        store = _default_store(settings)
    root = artifact_root if artifact_root is not None else settings.artifact_root

    location, run_id = _resolve_source(model_uri, store)
    source = get_artifact_repository(location, settings)
    _require_model_directory(source, model_uri, location)
    # A bad root is refused before a number is taken; a relative local root is made
    # absolute so the stored location works from any working directory.
    root = get_artifact_repository(root, settings).artifact_uri

    version = store.create_model_version(
        name, model_uri, run_id=run_id, tags=tags, description=description, user_id=_current_user()
    )
    destination = registry_location(root, name, version.version)
    try:
        copy = get_artifact_repository(destination, settings)
        # A deleted model of the same name may have left files for this number behind.
        copy.delete_artifacts()
        source.copy_to(copy)
        _verify_copy(source, copy)
    except BaseException as exc:
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
    """Where the files of version ``version`` of ``name`` live: ``<root>/registry/<name>/<version>``.

    Names that are not safe as one path segment (spaces, '%', '?', '..') are spelled with
    '_' plus a short hash of the exact name, so two names never share a folder.

    >>> registry_location("s3://bucket/mlops", "churn", 3)
    's3://bucket/mlops/registry/churn/3'
    """
    from tracking_plugin.artifacts import join_artifact_uri

    return join_artifact_uri(artifact_root, "registry", _name_segment(name), str(int(version)))


# ---------------------------------------------------------------- steps


def _default_store(settings: MlopsSettings) -> Store:
    # The process-wide store: relative SQLite paths resolved, schema migrated once.
    from tracking_plugin.backend import get_store

    return get_store(settings)


def _resolve_source(model_uri: str, store: Store) -> tuple[str, str | None]:
    """The artifact location of the model directory and the run it came from (if known)."""
    from tracking_plugin.artifacts import join_artifact_uri
    from tracking_plugin.models import ModelUriKind, parse_model_uri

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
                from tracking_plugin.errors import NotFound

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


def _require_model_directory(source: ArtifactRepository, model_uri: str, location: str) -> None:
    names = {info.path for info in source.list_artifacts() if not info.is_dir}
    if MLMODEL_FILE not in names:
        shown = repr(model_uri) if model_uri == location else f"{model_uri!r} ({location})"
        raise InvalidArgument(
            f"Cannot register {shown}: not a model directory (no {MLMODEL_FILE} file at its top). "
            "Point at the folder written by log_model/save_model, e.g. runs:/<run_id>/model."
        )


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


def _verify_copy(source: ArtifactRepository, copy: ArtifactRepository) -> None:
    """Every source file arrived with its size; with a manifest, every hash matches."""
    from tracking_plugin.models import MANIFEST_FILE

    expected, copied = _file_sizes(source), _file_sizes(copy)
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
    from tracking_plugin.models import read_manifest, verify_manifest

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


def _name_segment(name: str) -> str:
    if _SAFE_SEGMENT.match(name) and name not in (".", ".."):
        return name
    slug = re.sub(r"[^A-Za-z0-9_.\-]+", "_", name).strip("._") or "model"
    return f"{slug}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def _current_user() -> str | None:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers; it is optional
        return None
