"""The JSON of the tracking server's answers as our entities, and our values as its JSON.

MLflow's proto JSON conventions (snake_case, model versions as strings, NaN and
infinities as strings) plus the fields our ``/api/2.0/mlops/store`` routes add (Prefect
ids, registry copies, gate decisions). Used by :class:`~tracking_plugin.store.rest.RestStore`.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import quote

from tracking_plugin.entities import (
    Experiment,
    LifecycleStage,
    LoggedModel,
    LoggedModelStatus,
    Metric,
    ModelVersion,
    ModelVersionStatus,
    RegisteredModel,
    Run,
    RunData,
    RunInfo,
    RunStatus,
    Stage,
    StoredGateDecision,
    TransitionRecord,
    _positional_builder,
)

__all__ = [
    "MAX_METRICS_PER_CALL",
    "MAX_PARAMS_TAGS_PER_CALL",
    "SPECIAL_FLOATS",
    "batch_chunks",
    "build_metric",
    "experiment",
    "float_in",
    "float_out",
    "gate_decision",
    "kv",
    "kv_out",
    "logged_model",
    "model_version",
    "opt_int",
    "quoted",
    "registered_model",
    "run",
    "run_info",
    "transition",
]

MAX_METRICS_PER_CALL = 1000  # MLflow's log-batch limits, enforced by the server
MAX_PARAMS_TAGS_PER_CALL = 100
build_metric = _positional_builder(Metric)  # Metric(key, value, timestamp, step), ~3x faster
SPECIAL_FLOATS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def float_in(value: Any) -> float:
    """A double as proto JSON sends it: a number or ``"NaN"``/``"Infinity"``/``"-Infinity"``."""
    if isinstance(value, str):
        return SPECIAL_FLOATS[value] if value in SPECIAL_FLOATS else float(value)
    return float(value)


def float_out(value: float) -> float | str:
    if value != value:
        return "NaN"
    if value in (math.inf, -math.inf):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def kv(items: Iterable[Mapping[str, Any]] | None) -> dict[str, str]:
    return {i["key"]: i.get("value", "") for i in items or ()}


def kv_out(tags: Mapping[str, str] | Iterable[Any] | None) -> list[dict[str, str]]:
    if tags is None:
        return []
    if isinstance(tags, Mapping):
        return [{"key": k, "value": v} for k, v in tags.items()]
    return [{"key": t.key, "value": t.value} for t in tags]


def opt_int(value: Any) -> int | None:
    return None if value is None or value == "" else int(value)


def experiment(e: Mapping[str, Any]) -> Experiment:
    return Experiment(
        experiment_id=str(e["experiment_id"]),
        name=e["name"],
        artifact_location=e.get("artifact_location", ""),
        lifecycle_stage=LifecycleStage(e.get("lifecycle_stage", "active")),
        tags=kv(e.get("tags")),
        creation_time=opt_int(e.get("creation_time")),
        last_update_time=opt_int(e.get("last_update_time")),
    )


def run_info(i: Mapping[str, Any], tags: Mapping[str, str] | None = None) -> RunInfo:
    return RunInfo(
        run_id=i["run_id"],
        experiment_id=str(i["experiment_id"]),
        run_name=i.get("run_name", ""),
        status=RunStatus(i.get("status", "RUNNING")),
        start_time=int(i.get("start_time", 0)),
        end_time=opt_int(i.get("end_time")),
        user_id=i.get("user_id", ""),
        artifact_uri=i.get("artifact_uri", ""),
        lifecycle_stage=LifecycleStage(i.get("lifecycle_stage", "active")),
        parent_run_id=i.get("parent_run_id") or (tags or {}).get("mlflow.parentRunId"),
        prefect_flow_run_id=i.get("prefect_flow_run_id"),
        prefect_task_run_id=i.get("prefect_task_run_id"),
    )


def run(r: Mapping[str, Any]) -> Run:
    data = r.get("data", {})
    tags = kv(data.get("tags"))
    metrics = data.get("metrics", ())
    return Run(
        info=run_info(r["info"], tags),
        data=RunData(
            metrics={m["key"]: float_in(m["value"]) for m in metrics},
            params=kv(data.get("params")),
            tags=tags,
            metric_points={m["key"]: (int(m.get("timestamp", 0)), int(m.get("step", 0))) for m in metrics},
        ),
    )


def model_version(v: Mapping[str, Any]) -> ModelVersion:
    return ModelVersion(
        name=v["name"],
        version=int(v["version"]),
        creation_timestamp=int(v.get("creation_timestamp", 0)),
        last_updated_timestamp=int(v.get("last_updated_timestamp", 0)),
        current_stage=Stage(v.get("current_stage", "None")),
        status=ModelVersionStatus(v.get("status", "READY")),
        source=v.get("source", ""),
        storage_location=v.get("storage_location"),
        run_id=v.get("run_id") or None,
        description=v.get("description"),
        status_message=v.get("status_message"),
        tags=kv(v.get("tags")),
        aliases=tuple(v.get("aliases", ())),
        gate_decision_id=v.get("gate_decision_id"),
    )


def registered_model(m: Mapping[str, Any]) -> RegisteredModel:
    return RegisteredModel(
        name=m["name"],
        creation_timestamp=int(m.get("creation_timestamp", 0)),
        last_updated_timestamp=int(m.get("last_updated_timestamp", 0)),
        description=m.get("description"),
        tags=kv(m.get("tags")),
        aliases={a["alias"]: int(a["version"]) for a in m.get("aliases", ())},
        latest_versions=tuple(model_version(v) for v in m.get("latest_versions", ())),
    )


def logged_model(m: Mapping[str, Any]) -> LoggedModel:
    info = m["info"]
    return LoggedModel(
        model_id=info["model_id"],
        experiment_id=str(info["experiment_id"]),
        name=info.get("name", ""),
        artifact_location=info.get("artifact_uri", ""),
        creation_timestamp=int(info.get("creation_timestamp_ms", 0)),
        last_updated_timestamp=int(info.get("last_updated_timestamp_ms", 0)),
        status=LoggedModelStatus(info.get("status", LoggedModelStatus.PENDING.value)),
        status_message=info.get("status_message"),
        model_type=info.get("model_type"),
        source_run_id=info.get("source_run_id"),
        tags=kv(info.get("tags")),
        params=kv(m.get("data", {}).get("params")),
    )


def gate_decision(d: Mapping[str, Any]) -> StoredGateDecision:
    return StoredGateDecision(
        id=d["id"], name=d["name"], version=int(d["version"]), passed=bool(d["passed"]), reason=d["reason"],
        details=d.get("details") or {}, created_time=int(d["created_time"]),
        prefect_flow_run_id=d.get("prefect_flow_run_id"),
    )


def transition(t: Mapping[str, Any]) -> TransitionRecord:
    return TransitionRecord(
        id=int(t["id"]), name=t["name"], version=opt_int(t.get("version")), kind=t["kind"],
        subject=t.get("subject"), from_value=t.get("from_value"), to_value=t.get("to_value"),
        timestamp=int(t["timestamp"]), actor=t.get("actor"), reason=t.get("reason"),
        prefect_flow_run_id=t.get("prefect_flow_run_id"), gate_decision_id=t.get("gate_decision_id"),
        claimed_actor=t.get("claimed_actor"),
    )


def quoted(segment: str) -> str:
    return quote(segment, safe="")


def batch_chunks(
    metrics: Sequence[Metric], others: Sequence[tuple[str, Any]]
) -> Iterable[tuple[Sequence[Metric], Sequence[tuple[str, Any]]]]:
    """One ``log-batch`` call's share at a time: at most 1,000 metrics and 100 params + tags."""
    calls = max(-(-len(metrics) // MAX_METRICS_PER_CALL), -(-len(others) // MAX_PARAMS_TAGS_PER_CALL), 1)
    for index in range(calls):
        yield (
            metrics[index * MAX_METRICS_PER_CALL : (index + 1) * MAX_METRICS_PER_CALL],
            others[index * MAX_PARAMS_TAGS_PER_CALL : (index + 1) * MAX_PARAMS_TAGS_PER_CALL],
        )
