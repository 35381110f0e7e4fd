"""The ``Store`` protocol: what the client, the Prefect integration and the registry need.

Two implementations ship: :class:`tracking_plugin.store.sql.SqlStore` (SQLite, PostgreSQL)
and :class:`tracking_plugin.store.rest.RestStore` (a tracking server, over HTTP).
Rules every implementation follows:

- every public method is one transaction (one session); a refused call changes nothing;
- public methods do not call each other (shared work sits in private helpers);
- refusals are ``tracking_plugin.errors`` exceptions naming the bad value;
- timestamps are integer milliseconds since the epoch, as in MLflow.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

from tracking_plugin.entities import (
    DatasetInput,
    Experiment,
    LoggedModel,
    LoggedModelStatus,
    Metric,
    ModelVersion,
    ModelVersionStatus,
    PagedList,
    Param,
    RegisteredModel,
    Run,
    RunInfo,
    RunInputs,
    RunOutputs,
    RunStatus,
    RunTag,
    Stage,
    StoredGateDecision,
    TransitionRecord,
    ViewType,
)

__all__ = ["LoggedModelStore", "RegistryStore", "Store", "TrackingStore"]


@runtime_checkable
class TrackingStore(Protocol):
    # experiments
    def create_experiment(
        self, name: str, artifact_location: str | None = None, tags: dict[str, str] | None = None
    ) -> str: ...
    def get_experiment(self, experiment_id: str) -> Experiment: ...
    def get_experiment_by_name(self, name: str) -> Experiment | None: ...
    def search_experiments(
        self,
        view_type: ViewType = ViewType.ACTIVE_ONLY,
        max_results: int = 1000,
        filter_string: str | None = None,
        order_by: Sequence[str] | None = None,
        page_token: str | None = None,
    ) -> PagedList[Experiment]: ...
    def rename_experiment(self, experiment_id: str, new_name: str) -> None: ...
    def delete_experiment(self, experiment_id: str) -> None: ...
    def restore_experiment(self, experiment_id: str) -> None: ...
    def set_experiment_tag(self, experiment_id: str, key: str, value: str) -> None: ...
    def delete_experiment_tag(self, experiment_id: str, key: str) -> None: ...

    # runs
    def create_run(
        self,
        experiment_id: str,
        *,
        user_id: str,
        start_time: int,
        run_name: str | None = None,
        tags: Sequence[RunTag] = (),
        parent_run_id: str | None = None,
        prefect_flow_run_id: str | None = None,
        prefect_task_run_id: str | None = None,
    ) -> Run:
        """Create a RUNNING run. A taken Prefect flow-run/task-run id raises AlreadyExists."""
        ...
    def get_run(self, run_id: str) -> Run: ...
    def get_run_by_prefect_id(
        self, *, flow_run_id: str | None = None, task_run_id: str | None = None
    ) -> Run | None: ...
    def update_run_info(
        self,
        run_id: str,
        *,
        status: RunStatus | None = None,
        end_time: int | None = None,
        run_name: str | None = None,
    ) -> RunInfo: ...
    def delete_run(self, run_id: str) -> None: ...
    def restore_run(self, run_id: str) -> None: ...

    # data
    def log_batch(
        self,
        run_id: str,
        metrics: Sequence[Metric] = (),
        params: Sequence[Param] = (),
        tags: Sequence[RunTag] = (),
        *,
        skip_logged_points: bool = False,
    ) -> None:
        """Validate everything, then write all of it in one transaction, or nothing.
        ``skip_logged_points``: points identical to logged ones are not written again."""
        ...
    def delete_tag(self, run_id: str, key: str) -> None: ...
    def get_metric_history(
        self, run_id: str, key: str, max_results: int | None = None, page_token: str | None = None
    ) -> PagedList[Metric]: ...
    def search_runs(
        self,
        experiment_ids: Sequence[str],
        filter_string: str = "",
        run_view_type: ViewType = ViewType.ACTIVE_ONLY,
        max_results: int = 1000,
        order_by: Sequence[str] | None = None,
        page_token: str | None = None,
    ) -> PagedList[Run]: ...


@runtime_checkable
class RegistryStore(Protocol):
    def create_registered_model(
        self, name: str, tags: dict[str, str] | None = None, description: str | None = None
    ) -> RegisteredModel: ...
    def get_registered_model(self, name: str) -> RegisteredModel: ...
    def search_registered_models(
        self,
        filter_string: str | None = None,
        max_results: int = 100,
        order_by: Sequence[str] | None = None,
        page_token: str | None = None,
    ) -> PagedList[RegisteredModel]: ...
    def rename_registered_model(self, name: str, new_name: str) -> RegisteredModel: ...
    def update_registered_model(self, name: str, description: str | None) -> RegisteredModel: ...
    def delete_registered_model(self, name: str) -> None: ...
    def set_registered_model_tag(self, name: str, key: str, value: str) -> None: ...
    def delete_registered_model_tag(self, name: str, key: str) -> None: ...

    def create_model_version(
        self,
        name: str,
        source: str,
        *,
        run_id: str | None = None,
        tags: dict[str, str] | None = None,
        description: str | None = None,
        user_id: str | None = None,
    ) -> ModelVersion:
        """Allocate the next version number under a row lock; status PENDING_REGISTRATION.
        Creates the registered model if it does not exist yet."""
        ...
    def finish_model_version(
        self,
        name: str,
        version: int,
        *,
        status: ModelVersionStatus,
        storage_location: str | None = None,
        status_message: str | None = None,
    ) -> ModelVersion:
        """Move a PENDING_REGISTRATION version to READY or FAILED_REGISTRATION."""
        ...
    def get_model_version(self, name: str, version: int) -> ModelVersion: ...
    def get_model_version_by_alias(self, name: str, alias: str) -> ModelVersion: ...
    def get_latest_versions(
        self, name: str, stages: Sequence[Stage] | None = None
    ) -> list[ModelVersion]: ...
    def search_model_versions(
        self,
        filter_string: str | None = None,
        max_results: int = 1000,
        order_by: Sequence[str] | None = None,
        page_token: str | None = None,
    ) -> PagedList[ModelVersion]: ...
    def update_model_version(self, name: str, version: int, description: str | None) -> ModelVersion: ...
    def delete_model_version(self, name: str, version: int) -> None: ...
    def set_model_version_tag(self, name: str, version: int, key: str, value: str) -> None: ...
    def delete_model_version_tag(self, name: str, version: int, key: str) -> None: ...

    def transition_model_version_stage(
        self,
        name: str,
        version: int,
        stage: Stage,
        *,
        archive_existing_versions: bool = False,
        actor: str | None = None,
        reason: str | None = None,
        prefect_flow_run_id: str | None = None,
        gate_decision_id: str | None = None,
    ) -> ModelVersion:
        """Change the stage (and archive the others) in one transaction; audit every change."""
        ...
    def set_registered_model_alias(
        self,
        name: str,
        alias: str,
        version: int,
        *,
        actor: str | None = None,
        reason: str | None = None,
        prefect_flow_run_id: str | None = None,
        gate_decision_id: str | None = None,
    ) -> None: ...
    def delete_registered_model_alias(
        self, name: str, alias: str, *, actor: str | None = None, reason: str | None = None
    ) -> None: ...
    def promote(
        self,
        name: str,
        version: int,
        *,
        alias: str | None = "champion",
        stage: Stage | None = None,
        archive_existing_versions: bool = True,
        require_passed_gate: bool = True,
        actor: str | None = None,
        reason: str | None = None,
        prefect_flow_run_id: str | None = None,
    ) -> ModelVersion:
        """Move the alias and/or stage to ``version`` in one transaction. Conflict when the
        version is not READY or (``require_passed_gate``) its linked gate decision did not pass."""
        ...
    def rollback_alias(
        self,
        name: str,
        alias: str = "champion",
        *,
        actor: str | None = None,
        reason: str | None = None,
        prefect_flow_run_id: str | None = None,
    ) -> ModelVersion:
        """Move the alias back to the version that held it before; Conflict if none did."""
        ...
    def get_model_history(self, name: str) -> list[TransitionRecord]: ...
    def record_gate_decision(
        self,
        name: str,
        version: int,
        *,
        passed: bool,
        reason: str,
        details: dict[str, Any],
        prefect_flow_run_id: str | None = None,
    ) -> StoredGateDecision:
        """Store a decision and link it to the version (``ModelVersion.gate_decision_id``)."""
        ...
    def get_gate_decision(self, decision_id: str) -> StoredGateDecision: ...


@runtime_checkable
class LoggedModelStore(Protocol):
    """MLflow 3's logged models and the inputs/outputs of runs (used by the tracking server)."""

    def create_logged_model(
        self,
        experiment_id: str,
        *,
        name: str | None = None,
        model_type: str | None = None,
        source_run_id: str | None = None,
        params: dict[str, str] | None = None,
        tags: dict[str, str] | None = None,
    ) -> LoggedModel: ...
    def get_logged_model(self, model_id: str) -> LoggedModel: ...
    def finalize_logged_model(
        self, model_id: str, status: LoggedModelStatus, status_message: str | None = None
    ) -> LoggedModel: ...
    def set_logged_model_tags(self, model_id: str, tags: dict[str, str]) -> LoggedModel: ...
    def delete_logged_model_tag(self, model_id: str, key: str) -> None: ...
    def log_logged_model_params(self, model_id: str, params: dict[str, str]) -> None: ...
    def delete_logged_model(self, model_id: str) -> None: ...
    def search_logged_models(
        self,
        experiment_ids: Sequence[str],
        *,
        filter_string: str | None = None,
        max_results: int = 100,
        page_token: str | None = None,
    ) -> PagedList[LoggedModel]: ...
    def log_run_inputs(
        self, run_id: str, datasets: Sequence[DatasetInput] = (), model_ids: Sequence[str] = ()
    ) -> None: ...
    def log_run_outputs(self, run_id: str, models: Sequence[tuple[str, int]]) -> None: ...
    def get_run_inputs_outputs(self, run_id: str) -> tuple[RunInputs, RunOutputs]: ...


class Store(TrackingStore, RegistryStore, LoggedModelStore, Protocol):
    """Tracking and registry together: one database, one migration history.

    A store owns its connections: ``close()`` releases them (a store used again after
    ``close()`` reconnects). :mod:`tracking_plugin.backend` shares one store per database
    between clients and closes it when the last of them is closed.
    """

    def close(self) -> None: ...
