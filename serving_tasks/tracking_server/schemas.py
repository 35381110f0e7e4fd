"""Request bodies of MLflow's REST API, as pydantic models (they also make /openapi.json).

Field names and types are those of MLflow's protos (``service.proto``,
``model_registry.proto``); fields the mlflow client sends that we do not use are ignored.
int64 fields accept numbers or numeric strings, doubles accept ``"NaN"``, ``"Infinity"``
and ``"-Infinity"``, as proto JSON allows. A missing required field or a wrong type is a
400 ``INVALID_PARAMETER_VALUE`` naming the field (see ``errors``).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator


__all__ = [
    "CreateExperiment",
    "CreateLoggedModel",
    "CreateModelVersion",
    "CreateRegisteredModel",
    "CreateRun",
    "DeleteAlias",
    "DeleteExperimentTag",
    "DeleteModelVersion",
    "DeleteModelVersionTag",
    "DeleteRegisteredModelTag",
    "DeleteTag",
    "ExperimentId",
    "FinalizeLoggedModel",
    "GetLatestVersions",
    "LogBatch",
    "LogInputs",
    "LogLoggedModelParams",
    "LogMetric",
    "LogOutputs",
    "LogParam",
    "ModelName",
    "RenameRegisteredModel",
    "RunId",
    "SearchExperiments",
    "SearchLoggedModels",
    "SearchRuns",
    "SetAlias",
    "SetExperimentTag",
    "SetLoggedModelTags",
    "SetModelVersionTag",
    "SetRegisteredModelTag",
    "SetTag",
    "TransitionStage",
    "UpdateExperiment",
    "UpdateModelVersion",
    "UpdateRegisteredModel",
    "UpdateRun",
]

# pydantic's float reads numbers and the proto JSON strings "NaN", "Infinity", "-Infinity"
# natively (no Python callback per metric, which a 1,000-point batch would feel).
ProtoFloat = float
Int64 = Annotated[int, Field(ge=-(2**63), lt=2**63)]


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=False)


class KeyValue(Body):
    key: str
    value: str


class RunId(Body):
    """A body naming a run by ``run_id`` (or its older name ``run_uuid``)."""

    run_id: str | None = None
    run_uuid: str | None = None

    @model_validator(mode="after")
    def _one_run_id(self) -> Any:
        if not self.run_id:
            if not self.run_uuid:
                raise ValueError("Missing value for required parameter 'run_id'.")
            self.run_id = self.run_uuid
        return self


class ExperimentId(Body):
    experiment_id: str


# ---------------------------------------------------------------- experiments


class CreateExperiment(Body):
    name: str
    artifact_location: str | None = None
    tags: list[KeyValue] = []


class SearchExperiments(Body):
    max_results: Int64 = 1000
    page_token: str | None = None
    filter: str | None = None
    order_by: list[str] = []
    view_type: str = "ACTIVE_ONLY"


class UpdateExperiment(Body):
    experiment_id: str
    new_name: str


class SetExperimentTag(Body):
    experiment_id: str
    key: str
    value: str


class DeleteExperimentTag(Body):
    experiment_id: str
    key: str


# ---------------------------------------------------------------- runs


class CreateRun(Body):
    experiment_id: str
    user_id: str | None = None
    run_name: str | None = None
    start_time: Int64 | None = None
    tags: list[KeyValue] = []


class UpdateRun(RunId):
    status: str | None = None
    end_time: Int64 | None = None
    run_name: str | None = None


class LogMetric(RunId):
    key: str
    value: ProtoFloat
    timestamp: Int64
    step: Int64 = 0
    model_id: str | None = None


class LogParam(RunId):
    key: str
    value: str


class SetTag(RunId):
    key: str
    value: str


class DeleteTag(RunId):
    key: str


class MetricIn(Body):
    key: str
    value: ProtoFloat
    timestamp: Int64
    step: Int64 = 0


class LogBatch(RunId):
    metrics: list[MetricIn] = []
    params: list[KeyValue] = []
    tags: list[KeyValue] = []


class DatasetIn(Body):
    name: str
    digest: str
    source_type: str
    source: str
    schema_: str | None = Field(default=None, alias="schema")
    profile: str | None = None


class DatasetInputIn(Body):
    tags: list[KeyValue] = []
    dataset: DatasetIn


class ModelInputIn(Body):
    model_id: str


class ModelOutputIn(Body):
    model_id: str
    step: Int64 = 0


class LogInputs(RunId):
    datasets: list[DatasetInputIn] = []
    models: list[ModelInputIn] = []


class LogOutputs(RunId):
    models: list[ModelOutputIn] = []


class SearchRuns(Body):
    experiment_ids: list[str] = []
    filter: str | None = None
    run_view_type: str = "ACTIVE_ONLY"
    max_results: Int64 = 1000
    order_by: list[str] = []
    page_token: str | None = None


# ---------------------------------------------------------------- logged models


class CreateLoggedModel(Body):
    experiment_id: str
    name: str | None = None
    model_type: str | None = None
    source_run_id: str | None = None
    params: list[KeyValue] = []
    tags: list[KeyValue] = []


class FinalizeLoggedModel(Body):
    model_id: str | None = None
    status: str


class SetLoggedModelTags(Body):
    model_id: str | None = None
    tags: list[KeyValue] = []


class LogLoggedModelParams(Body):
    model_id: str | None = None
    params: list[KeyValue] = []


class SearchLoggedModels(Body):
    experiment_ids: list[str] = []
    filter: str | None = None
    max_results: Int64 = 100
    page_token: str | None = None


# ---------------------------------------------------------------- registry


class ModelName(Body):
    name: str


class CreateRegisteredModel(Body):
    name: str
    tags: list[KeyValue] = []
    description: str | None = None


class RenameRegisteredModel(Body):
    name: str
    new_name: str


class UpdateRegisteredModel(Body):
    name: str
    description: str | None = None


class SetRegisteredModelTag(Body):
    name: str
    key: str
    value: str


class DeleteRegisteredModelTag(Body):
    name: str
    key: str


class GetLatestVersions(Body):
    name: str
    stages: list[str] = []


class SetAlias(Body):
    name: str
    alias: str
    version: str


class DeleteAlias(Body):
    name: str
    alias: str


class CreateModelVersion(Body):
    name: str
    source: str
    run_id: str | None = None
    tags: list[KeyValue] = []
    run_link: str | None = None
    description: str | None = None
    model_id: str | None = None


class ModelVersionRef(Body):
    name: str
    version: str


class DeleteModelVersion(ModelVersionRef):
    pass


class UpdateModelVersion(ModelVersionRef):
    description: str | None = None


class TransitionStage(ModelVersionRef):
    stage: str
    archive_existing_versions: StrictBool = False


class SetModelVersionTag(ModelVersionRef):
    key: str
    value: str


class DeleteModelVersionTag(ModelVersionRef):
    key: str
