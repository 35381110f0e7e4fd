"""Model URIs, with MLflow's spellings.

=================================  ==========================================================
``/path/to/model``, ``file:///..``  a local model directory, read in place
``s3://bucket/prefix/model``        a model directory in an artifact store (downloaded)
``runs:/<run_id>/<path>``           ``<path>`` under the run's artifact root
``models:/<name>/<version>``        a registered version (its storage location)
``models:/<name>/<stage>``          the newest version in a stage (``Production``, ...)
``models:/<name>/latest``           the newest version in any stage
``models:/<name>@<alias>``          the version an alias points to
=================================  ==========================================================

:func:`parse_model_uri` is pure; :func:`resolve_model_uri` asks the tracking client.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from tracking_plugin.artifacts import join_artifact_uri
from tracking_plugin.entities import Stage
from tracking_plugin.fluent import current_client
from tracking_plugin.errors import InvalidArgument, NotFound
from tracking_plugin.validation import (
    validate_alias,
    validate_artifact_path,
    validate_model_name,
    validate_run_id,
)

__all__ = ["ModelUri", "ModelUriKind", "parse_model_uri", "resolve_model_uri"]



class ModelUriKind(str, enum.Enum):
    LOCAL = "local"  # plain path or file:// URI
    ARTIFACT = "artifact"  # s3:// (or another artifact-store scheme)
    RUNS = "runs"
    MODELS = "models"


@dataclass(frozen=True)
class ModelUri:
    """A parsed model URI. For ``models:/`` exactly one of version/stage/alias/latest is set."""

    uri: str
    kind: ModelUriKind
    name: str | None = None
    version: int | None = None
    stage: Stage | None = None
    alias: str | None = None
    latest: bool = False
    run_id: str | None = None
    path: str | None = None  # run-relative path (runs:/), or the location itself


def parse_model_uri(model_uri: str) -> ModelUri:
    """Split a model URI into its parts; refuse malformed ones with the expected shapes.

    >>> parse_model_uri("models:/churn@champion").alias
    'champion'
    >>> parse_model_uri("models:/churn/Production").stage
    <Stage.PRODUCTION: 'Production'>
    >>> parse_model_uri("runs:/0a1b2c/model").path
    'model'
    """
    if not isinstance(model_uri, str) or not model_uri.strip():
        raise InvalidArgument(f"Invalid model URI {model_uri!r}: give a path or a runs:/, models:/ or s3:// URI.")
    scheme = urlsplit(model_uri).scheme.lower()
    if scheme == "runs":
        return _parse_runs(model_uri)
    if scheme == "models":
        return _parse_models(model_uri)
    if scheme in ("", "file") or len(scheme) == 1:  # one letter: a Windows drive, not a scheme
        return ModelUri(uri=model_uri, kind=ModelUriKind.LOCAL, path=model_uri)
    return ModelUri(uri=model_uri, kind=ModelUriKind.ARTIFACT, path=model_uri)


def _parse_runs(model_uri: str) -> ModelUri:
    rest = model_uri[len("runs:") :].lstrip("/")
    run_id, _, path = rest.partition("/")
    if not run_id:
        raise InvalidArgument(f"Invalid model URI {model_uri!r}: expected runs:/<run_id>/<artifact path>.")
    validate_run_id(run_id)
    return ModelUri(uri=model_uri, kind=ModelUriKind.RUNS, run_id=run_id, path=validate_artifact_path(path) or "")


def _parse_models(model_uri: str) -> ModelUri:
    rest = model_uri[len("models:") :]
    if not rest.startswith("/") or rest.startswith("//"):
        raise InvalidArgument(
            f"Invalid model URI {model_uri!r}: expected models:/<name>/<version|stage|latest> or "
            "models:/<name>@<alias>."
        )
    rest = rest[1:]
    if "/" not in rest and "@" in rest:
        name, _, alias = rest.rpartition("@")
        return ModelUri(uri=model_uri, kind=ModelUriKind.MODELS, name=validate_model_name(name), alias=validate_alias(alias))
    name, _, selector = rest.partition("/")
    if not name or not selector or "/" in selector:
        raise InvalidArgument(
            f"Invalid model URI {model_uri!r}: expected models:/<name>/<version|stage|latest> or "
            "models:/<name>@<alias> (e.g. models:/churn/3, models:/churn/Production, models:/churn@champion)."
        )
    validate_model_name(name)
    if re.fullmatch(r"[0-9]+", selector):
        return ModelUri(uri=model_uri, kind=ModelUriKind.MODELS, name=name, version=int(selector))
    if selector.lower() == "latest":
        return ModelUri(uri=model_uri, kind=ModelUriKind.MODELS, name=name, latest=True)
    stage = Stage.find(selector)
    if stage is None:
        raise InvalidArgument(
            f"Invalid model URI {model_uri!r}: {selector!r} is neither a version number, 'latest', nor "
            f"a stage ({', '.join(s.value for s in Stage)}). For an alias write models:/{name}@{selector}."
        )
    return ModelUri(uri=model_uri, kind=ModelUriKind.MODELS, name=name, stage=stage)


def resolve_model_uri(model_uri: str) -> str:
    """Turn a model URI into the artifact location of the model directory.

    Paths and artifact-store URIs come back unchanged; ``runs:/`` and ``models:/`` are
    looked up in the backend in use (:func:`tracking_plugin.fluent.current_client`: a
    tracked flow's, else ``set_tracking_uri``, else the configured one).
    """
    parsed = parse_model_uri(model_uri)
    if parsed.kind in (ModelUriKind.LOCAL, ModelUriKind.ARTIFACT):
        return model_uri
    client = current_client()
    if parsed.kind is ModelUriKind.RUNS:
        run = client.get_run(parsed.run_id)
        return join_artifact_uri(run.info.artifact_uri, parsed.path or None)
    assert parsed.name is not None
    if parsed.version is not None:
        version = client.get_model_version(parsed.name, parsed.version)
    elif parsed.alias is not None:
        version = client.get_model_version_by_alias(parsed.name, parsed.alias)
    else:
        stages = [parsed.stage] if parsed.stage is not None else None
        versions = client.get_latest_versions(parsed.name, stages=stages) if stages else client.get_latest_versions(parsed.name)
        if not versions:
            where = f"in stage {parsed.stage.value!r}" if parsed.stage is not None else "at all"
            raise NotFound(
                f"Registered model {parsed.name!r} has no version {where}, so {model_uri!r} points "
                "nowhere. Register or promote a version first (or use models:/<name>/<version>)."
            )
        version = max(versions, key=lambda v: v.version)
    location = version.storage_location or version.source
    if location.startswith(("runs:", "models:")):
        return resolve_model_uri(location) if location.startswith("runs:") else location
    return location
