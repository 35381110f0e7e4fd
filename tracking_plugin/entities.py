"""Entities: frozen value objects returned by stores and clients.

They mirror MLflow's entity names (``Run``, ``RunInfo``, ``RunData``, ``Metric``,
``Param``, ``RunTag``, ``Experiment``, ``RegisteredModel``, ``ModelVersion``) so that code
written against ``mlflow.entities`` reads the same. SQL rows live in ``store.schema`` and
never leave the store.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any, Generic, Iterator, Sequence, TypeVar

from tracking_plugin.errors import InvalidArgument

__all__ = [
    "DatasetInput",
    "Experiment",
    "ExperimentTag",
    "FileInfo",
    "LifecycleStage",
    "LoggedModel",
    "LoggedModelStatus",
    "Metric",
    "ModelVersion",
    "ModelVersionStatus",
    "PagedList",
    "Param",
    "RegisteredModel",
    "Run",
    "RunData",
    "RunInfo",
    "RunStatus",
    "RunInputs",
    "RunOutputs",
    "RunTag",
    "Stage",
    "StoredGateDecision",
    "TransitionRecord",
    "ViewType",
]

T = TypeVar("T")


class RunStatus(str, enum.Enum):
    """Status of a run, with MLflow's names."""

    RUNNING = "RUNNING"
    SCHEDULED = "SCHEDULED"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"

    @property
    def is_terminal(self) -> bool:
        return self in (RunStatus.FINISHED, RunStatus.FAILED, RunStatus.KILLED)


class LifecycleStage(str, enum.Enum):
    ACTIVE = "active"
    DELETED = "deleted"


class ViewType(str, enum.Enum):
    """Which runs/experiments a search sees (MLflow's ``ViewType``)."""

    ACTIVE_ONLY = "ACTIVE_ONLY"
    DELETED_ONLY = "DELETED_ONLY"
    ALL = "ALL"


class Stage(str, enum.Enum):
    """Model version stages, with MLflow's spelling; names match case-insensitively.

    >>> Stage.parse(" production ")
    <Stage.PRODUCTION: 'Production'>
    """

    NONE = "None"
    STAGING = "Staging"
    PRODUCTION = "Production"
    ARCHIVED = "Archived"

    @classmethod
    def find(cls, name: str) -> Stage | None:
        """The stage called ``name`` (any case, surrounding blanks ignored), or None."""
        wanted = name.strip().lower()
        for stage in cls:
            if stage.value.lower() == wanted:
                return stage
        return None

    @classmethod
    def parse(cls, value: Stage | str) -> Stage:
        """``value`` as a stage; ``InvalidArgument`` naming the valid ones otherwise."""
        if isinstance(value, Stage):
            return value
        stage = cls.find(value) if isinstance(value, str) else None
        if stage is None:
            valid = ", ".join(repr(s.value) for s in cls)
            raise InvalidArgument(f"Invalid stage {value!r}: use one of {valid} (case-insensitive).")
        return stage


class ModelVersionStatus(str, enum.Enum):
    PENDING_REGISTRATION = "PENDING_REGISTRATION"
    FAILED_REGISTRATION = "FAILED_REGISTRATION"
    READY = "READY"


@dataclass(frozen=True, slots=True)
class Metric:
    key: str
    value: float
    timestamp: int  # milliseconds since the epoch, as MLflow
    step: int = 0


@dataclass(frozen=True, slots=True)
class Param:
    key: str
    value: str


@dataclass(frozen=True, slots=True)
class RunTag:
    key: str
    value: str


@dataclass(frozen=True, slots=True)
class ExperimentTag:
    key: str
    value: str


@dataclass(frozen=True, slots=True)
class Experiment:
    experiment_id: str
    name: str
    artifact_location: str
    lifecycle_stage: LifecycleStage
    tags: dict[str, str] = field(default_factory=dict)
    creation_time: int | None = None
    last_update_time: int | None = None


@dataclass(frozen=True, slots=True)
class RunInfo:
    run_id: str
    experiment_id: str
    run_name: str
    status: RunStatus
    start_time: int
    end_time: int | None
    user_id: str
    artifact_uri: str
    lifecycle_stage: LifecycleStage
    parent_run_id: str | None = None
    prefect_flow_run_id: str | None = None
    prefect_task_run_id: str | None = None

    @property
    def run_uuid(self) -> str:  # MLflow's older name
        return self.run_id


@dataclass(frozen=True, slots=True)
class RunData:
    """Latest metric values, params and tags of a run (history via get_metric_history)."""

    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    # (timestamp, step) of each latest value in ``metrics``, as MLflow's run answers carry
    # them; empty where not known (a run just created, an entity built by hand).
    metric_points: dict[str, tuple[int, int]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Run:
    info: RunInfo
    data: RunData


@dataclass(frozen=True, slots=True)
class FileInfo:
    """One entry of an artifact listing; ``path`` is relative to the artifact root."""

    path: str
    is_dir: bool
    file_size: int | None = None


@dataclass(frozen=True, slots=True)
class RegisteredModel:
    name: str
    creation_timestamp: int
    last_updated_timestamp: int
    description: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, int] = field(default_factory=dict)  # alias -> version number
    latest_versions: tuple["ModelVersion", ...] = ()


@dataclass(frozen=True, slots=True)
class ModelVersion:
    name: str
    version: int
    creation_timestamp: int
    last_updated_timestamp: int
    current_stage: Stage
    status: ModelVersionStatus
    source: str  # the model URI it was registered from (runs:/..., s3://..., path)
    storage_location: str | None  # registry-owned copy of the files
    run_id: str | None = None
    description: str | None = None
    status_message: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    gate_decision_id: str | None = None


@dataclass(frozen=True, slots=True)
class TransitionRecord:
    """One row of the append-only audit log of stage changes and alias moves."""

    id: int
    name: str
    version: int | None
    kind: str  # "stage" or "alias"
    subject: str | None  # the alias name for kind == "alias", None for stages
    from_value: str | None  # previous stage, or previous version holding the alias
    to_value: str | None  # new stage, or new version holding the alias (None = removed)
    timestamp: int
    actor: str | None  # the authenticated user under --auth; else what the client said
    reason: str | None
    prefect_flow_run_id: str | None
    gate_decision_id: str | None
    claimed_actor: str | None = None  # under --auth: the actor the client claimed (unverified)


class LoggedModelStatus(str, enum.Enum):
    """Status of a logged model, with MLflow's names."""

    PENDING = "LOGGED_MODEL_PENDING"
    READY = "LOGGED_MODEL_READY"
    UPLOAD_FAILED = "LOGGED_MODEL_UPLOAD_FAILED"


@dataclass(frozen=True, slots=True)
class LoggedModel:
    """A model logged by MLflow 3's ``log_model`` (``models:/<model_id>``), registered or not.

    Its files live at ``artifact_location`` (``<experiment location>/models/<model_id>/artifacts``).
    """

    model_id: str
    experiment_id: str
    name: str
    artifact_location: str
    creation_timestamp: int
    last_updated_timestamp: int
    status: LoggedModelStatus
    lifecycle_stage: LifecycleStage = LifecycleStage.ACTIVE
    status_message: str | None = None
    model_type: str | None = None
    source_run_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DatasetInput:
    """A dataset a run read (MLflow's ``mlflow.log_input``)."""

    name: str
    digest: str
    source_type: str
    source: str
    schema: str | None = None
    profile: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunInputs:
    """What a run read: datasets and logged models (by id)."""

    datasets: tuple[DatasetInput, ...] = ()
    model_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RunOutputs:
    """The logged models a run produced: ``(model_id, step)`` pairs."""

    models: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class PagedList(Generic[T]):
    """A page of results and the token for the next page (None on the last page)."""

    items: Sequence[T]
    token: str | None = None

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: Any) -> Any:
        return self.items[index]


@dataclass(frozen=True, slots=True)
class StoredGateDecision:
    """An evaluation-gate decision as stored: who, what, and why it passed or failed."""

    id: str
    name: str
    version: int
    passed: bool
    reason: str
    details: dict[str, Any]  # inputs and per-rule outcomes, JSON-serializable
    created_time: int
    prefect_flow_run_id: str | None = None


def _positional_builder(cls: type) -> Any:
    """A constructor ``build(*values)`` for the frozen, slotted dataclass ``cls`` taking
    every field positionally, for stores turning thousands of rows into entities.

    The generated ``__init__`` of a frozen dataclass sets each field through
    ``object.__setattr__``; setting the slots directly is about three times faster. The
    builder is generated from ``cls``'s fields (as ``dataclasses`` generates ``__init__``),
    so it follows field changes; ``cls`` must have no ``__post_init__``.
    """
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    if hasattr(cls, "__post_init__") or "__slots__" not in vars(cls):
        raise TypeError(f"{cls.__name__} needs slots and no __post_init__ for a positional builder")
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    namespace.update({f"_set_{n}": getattr(cls, n).__set__ for n in names})
    lines = [f"def build({', '.join(names)}):", "    obj = _new(_cls)"]
    lines += [f"    _set_{n}(obj, {n})" for n in names]
    lines.append("    return obj")
    exec("\n".join(lines), namespace)  # noqa: S102 - source built above from field names only
    return namespace["build"]
