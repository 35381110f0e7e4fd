"""MLflow's proto JSON: our entities to the dicts the mlflow client parses, and back.

Conventions (MLflow's ``message_to_json``): snake_case fields, int64 as JSON numbers,
model versions as strings, NaN and +/-infinity as the strings ``"NaN"``,
``"Infinity"``, ``"-Infinity"``; absent optional fields are left out.

Artifact locations are stored as they really are (``/srv/mlops/...`` or ``s3://...``), so
our own client reading the database finds the files. When the server proxies artifacts,
every location under the artifact storage root is shown to clients as
``mlflow-artifacts:/<path under the root>`` (see :class:`ArtifactUris`).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import orjson
from fastapi.responses import Response

from tracking_plugin.entities import (
    Experiment,
    LoggedModel,
    Metric,
    ModelVersion,
    RegisteredModel,
    Run,
    RunInfo,
    RunInputs,
    RunOutputs,
)
from tracking_plugin.validation import validate_artifact_path

__all__ = [
    "ArtifactUris",
    "experiment",
    "float_out",
    "floats_out",
    "json_response",
    "logged_model",
    "metric",
    "model_version",
    "registered_model",
    "run",
    "run_info",
]

PROXY_SCHEME = "mlflow-artifacts:"


def json_response(payload: Any, status_code: int = 200) -> Response:
    """A JSON response serialized with orjson (the request's only serialization step)."""
    return Response(orjson.dumps(payload), status_code=status_code, media_type="application/json")


def float_out(value: float) -> float | str:
    """A double as proto JSON writes it: NaN and infinities as strings."""
    if value != value:
        return "NaN"
    if value in (math.inf, -math.inf):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def floats_out(values: list[float]) -> list[float | str]:
    """:func:`float_out` over a list; the list itself when it holds no NaN or infinity (the
    usual case, checked at C speed: a finite sum means finite terms; an overflowing sum only
    takes the slow path), so a 100,000-point history costs no Python call per value."""
    if math.isfinite(sum(values, 0.0)):
        return values  # type: ignore[return-value]
    return [float_out(v) for v in values]


class ArtifactUris:
    """Translate between stored artifact locations and what clients see.

    >>> uris = ArtifactUris("s3://bucket/mlops", proxy=True)
    >>> uris.to_wire("s3://bucket/mlops/ab12/run1/artifacts")
    'mlflow-artifacts:/ab12/run1/artifacts'
    >>> uris.from_wire("mlflow-artifacts:/ab12/run1/artifacts")
    's3://bucket/mlops/ab12/run1/artifacts'
    """

    def __init__(self, root: str, *, proxy: bool) -> None:
        self.root = root.rstrip("/") or "/"
        self.proxy = proxy
        self._prefix = self.root if self.root.endswith("/") else self.root + "/"

    def to_wire(self, location: str | None) -> str | None:
        if not self.proxy or not location:
            return location
        if location == self.root:
            return PROXY_SCHEME + "/"
        if location.startswith(self._prefix):
            return PROXY_SCHEME + "/" + location[len(self._prefix) :]
        return location

    def from_wire(self, location: str) -> str:
        """A location given by a client: ``mlflow-artifacts:`` ones map under the root."""
        if not location.startswith(PROXY_SCHEME):
            return location
        rest = location[len(PROXY_SCHEME) :]
        if rest.startswith("//"):  # mlflow-artifacts://host:port/path: the host is this server
            rest = "/" + rest[2:].partition("/")[2]
        relative = validate_artifact_path(rest.lstrip("/"))
        if relative is None:
            return self.root
        return self._prefix + relative

    def relative_path(self, location: str) -> str | None:
        """The path of ``location`` under the root, or None when it is elsewhere."""
        if location.startswith(self._prefix):
            return location[len(self._prefix) :]
        return "" if location == self.root else None


def _tags(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"key": k, "value": v} for k, v in tags.items()]


def experiment(e: Experiment, uris: ArtifactUris) -> dict[str, Any]:
    out: dict[str, Any] = {
        "experiment_id": e.experiment_id,
        "name": e.name,
        "artifact_location": uris.to_wire(e.artifact_location) or "",
        "lifecycle_stage": e.lifecycle_stage.value,
        "tags": _tags(e.tags),
    }
    if e.creation_time is not None:
        out["creation_time"] = e.creation_time
    if e.last_update_time is not None:
        out["last_update_time"] = e.last_update_time
    return out


def run_info(info: RunInfo, uris: ArtifactUris) -> dict[str, Any]:
    out: dict[str, Any] = {
        "run_id": info.run_id,
        "run_uuid": info.run_id,
        "run_name": info.run_name,
        "experiment_id": info.experiment_id,
        "user_id": info.user_id,
        "status": info.status.value,
        "start_time": info.start_time,
        "artifact_uri": uris.to_wire(info.artifact_uri) or "",
        "lifecycle_stage": info.lifecycle_stage.value,
    }
    if info.end_time is not None:
        out["end_time"] = info.end_time
    return out


def _latest_metrics(values: Mapping[str, float], points: Mapping[str, tuple[int, int]]) -> list[dict[str, Any]]:
    """The latest value of each metric, with its time and step (0 and 0 where unknown)."""
    out = []
    for key, value in values.items():
        timestamp, step = points.get(key, (0, 0))
        out.append({"key": key, "value": float_out(value), "timestamp": timestamp, "step": step})
    return out


def run(
    r: Run, uris: ArtifactUris, inputs: RunInputs | None = None, outputs: RunOutputs | None = None
) -> dict[str, Any]:
    data = r.data
    out: dict[str, Any] = {
        "info": run_info(r.info, uris),
        "data": {
            "metrics": _latest_metrics(data.metrics, data.metric_points),
            "params": [{"key": k, "value": v} for k, v in data.params.items()],
            "tags": _tags(data.tags),
        },
    }
    if inputs is not None:
        out["inputs"] = {
            "dataset_inputs": [
                {
                    "tags": _tags(d.tags),
                    "dataset": {
                        k: v
                        for k, v in (
                            ("name", d.name), ("digest", d.digest), ("source_type", d.source_type),
                            ("source", d.source), ("schema", d.schema), ("profile", d.profile),
                        )
                        if v is not None
                    },
                }
                for d in inputs.datasets
            ],
            "model_inputs": [{"model_id": m} for m in inputs.model_ids],
        }
    if outputs is not None:
        out["outputs"] = {"model_outputs": [{"model_id": m, "step": s} for m, s in outputs.models]}
    return out


def metric(m: Metric) -> dict[str, Any]:
    return {"key": m.key, "value": float_out(m.value), "timestamp": m.timestamp, "step": m.step}


def metrics(items: Iterable[Metric]) -> list[dict[str, Any]]:
    return [metric(m) for m in items]


def model_version(mv: ModelVersion, uris: ArtifactUris) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": mv.name,
        "version": str(mv.version),
        "creation_timestamp": mv.creation_timestamp,
        "last_updated_timestamp": mv.last_updated_timestamp,
        "current_stage": mv.current_stage.value,
        "source": uris.to_wire(mv.source) or "",
        "status": mv.status.value,
        "tags": _tags(mv.tags),
        "aliases": list(mv.aliases),
    }
    for key, value in (
        ("run_id", mv.run_id), ("description", mv.description), ("status_message", mv.status_message),
    ):
        if value is not None:
            out[key] = value
    model_id = model_id_of_source(mv.source)
    if model_id is not None:
        out["model_id"] = model_id
    return out


def model_id_of_source(source: str) -> str | None:
    """The logged model id of a ``models:/m-<id>`` source (MLflow 3's registration)."""
    if source.startswith("models:/m-"):
        candidate = source[len("models:/") :].strip("/")
        if "/" not in candidate:
            return candidate
    return None


def registered_model(rm: RegisteredModel, uris: ArtifactUris) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": rm.name,
        "creation_timestamp": rm.creation_timestamp,
        "last_updated_timestamp": rm.last_updated_timestamp,
        "tags": _tags(rm.tags),
        "aliases": [{"alias": a, "version": str(v)} for a, v in rm.aliases.items()],
        "latest_versions": [model_version(v, uris) for v in rm.latest_versions],
    }
    if rm.description is not None:
        out["description"] = rm.description
    return out


def logged_model(lm: LoggedModel, uris: ArtifactUris) -> dict[str, Any]:
    info: dict[str, Any] = {
        "model_id": lm.model_id,
        "experiment_id": lm.experiment_id,
        "name": lm.name,
        "creation_timestamp_ms": lm.creation_timestamp,
        "last_updated_timestamp_ms": lm.last_updated_timestamp,
        "artifact_uri": uris.to_wire(lm.artifact_location) or "",
        "status": lm.status.value,
        "tags": _tags(lm.tags),
    }
    for key, value in (
        ("model_type", lm.model_type), ("source_run_id", lm.source_run_id), ("status_message", lm.status_message),
    ):
        if value is not None:
            info[key] = value
    return {"info": info, "data": {"params": [{"key": k, "value": v} for k, v in lm.params.items()], "metrics": []}}
