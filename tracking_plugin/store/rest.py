"""``RestStore``: the Store protocol over a tracking server's REST API (``http(s)://`` URIs).

``set_tracking_uri("http://mlflow-server:5000")`` (or ``PREFECT_MLOPS_TRACKING_URI``, or an
``MlopsBackend`` block holding the URL) makes every client talk to ``prefect-mlops server``
instead of a database: a worker needs only the URL (and, later, a token). Calls go to
MLflow's endpoints (``/api/2.0/mlflow/...``) where they carry all of our entities, and to
the server's extensions where they do not (``/api/2.0/mlops/...``: runs keyed by Prefect
ids, model versions with their registry copy and gate decision, promote, rollback, audit).

Transport (:class:`~tracking_plugin.store.rest_session.RestSession`):

- one ``httpx.Client`` per store, with keep-alive connections; ``close()`` closes it (the
  store reconnects if used again);
- retries with exponential backoff on connection errors, 503 and 429; never on any other
  answer. A call that is not idempotent (creating a run, a version, ...) is retried only
  when the connection was never made, so it cannot be applied twice;
- errors come back as ``tracking_plugin.errors`` exceptions with the server's message
  (``RESOURCE_DOES_NOT_EXIST`` -> ``NotFound``, ``RESOURCE_ALREADY_EXISTS`` ->
  ``AlreadyExists``, ``INVALID_STATE`` -> ``Conflict``, other 4xx -> ``InvalidArgument``);
  an unreachable server is ``BackendUnavailable`` naming the URL;
- credentials from ``MLFLOW_TRACKING_TOKEN`` (Bearer) or ``MLFLOW_TRACKING_USERNAME`` /
  ``MLFLOW_TRACKING_PASSWORD`` (Basic), as the mlflow client reads them; never printed.

Differences from the SQL store, both the server's rules: ``log_batch`` is split into calls
of at most 1,000 metrics and 100 params + tags (each call is atomic, the whole batch is
not), and a point identical to a logged one (key, value, timestamp, step) is never
written twice, so a retried call does not duplicate points.
"""

from __future__ import annotations

from itertools import repeat
from typing import Any, Sequence

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
from tracking_plugin.errors import NotFound
from tracking_plugin.store import rest_wire as wire
from tracking_plugin.store.rest_session import RestSession
from tracking_plugin.urls import redact_uri

__all__ = ["RestStore"]

MLFLOW = "/api/2.0/mlflow"
MLOPS = "/api/2.0/mlops"
STORE = "/api/2.0/mlops/store"

# ---------------------------------------------------------------------- the store


class RestStore:
    """Tracking, registry and logged models of one ``prefect-mlops server``, over HTTP.

    >>> store = RestStore("http://127.0.0.1:5000")  # doctest: +SKIP
    >>> store.get_experiment_by_name("churn")       # doctest: +SKIP
    """

    def __init__(self, base_url: str, *, session: RestSession | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session if session is not None else RestSession(self.base_url)

    def __repr__(self) -> str:
        return f"RestStore({redact_uri(self.base_url)!r})"

    def close(self) -> None:
        """Close the keep-alive connections (the store reconnects if used again)."""
        self.session.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.session.call(method, path, **kwargs)

    # ------------------------------------------------------------ experiments

    def create_experiment(
        self, name: str, artifact_location: str | None = None, tags: dict[str, str] | None = None
    ) -> str:
        body: dict[str, Any] = {"name": name, "tags": wire.kv_out(tags)}
        if artifact_location:
            body["artifact_location"] = artifact_location
        return str(self._call("POST", f"{MLFLOW}/experiments/create", json=body)["experiment_id"])

    def get_experiment(self, experiment_id: str) -> Experiment:
        out = self._call("GET", f"{MLFLOW}/experiments/get", params={"experiment_id": experiment_id})
        return wire.experiment(out["experiment"])

    def get_experiment_by_name(self, name: str) -> Experiment | None:
        try:
            out = self._call("GET", f"{MLFLOW}/experiments/get-by-name", params={"experiment_name": name})
        except NotFound:
            return None
        return wire.experiment(out["experiment"])

    def search_experiments(
        self,
        view_type: ViewType = ViewType.ACTIVE_ONLY,
        max_results: int = 1000,
        filter_string: str | None = None,
        order_by: Sequence[str] | None = None,
        page_token: str | None = None,
    ) -> PagedList[Experiment]:
        body = {
            "view_type": ViewType(view_type).value, "max_results": max_results, "filter": filter_string,
            "order_by": list(order_by or ()), "page_token": page_token,
        }
        out = self._call("POST", f"{MLFLOW}/experiments/search", json=body, idempotent=True)
        return PagedList([wire.experiment(e) for e in out.get("experiments", ())], out.get("next_page_token"))

    def rename_experiment(self, experiment_id: str, new_name: str) -> None:
        self._call("POST", f"{MLFLOW}/experiments/update", json={"experiment_id": experiment_id, "new_name": new_name}, idempotent=True)

    def delete_experiment(self, experiment_id: str) -> None:
        self._call("POST", f"{MLFLOW}/experiments/delete", json={"experiment_id": experiment_id})

    def restore_experiment(self, experiment_id: str) -> None:
        self._call("POST", f"{MLFLOW}/experiments/restore", json={"experiment_id": experiment_id})

    def set_experiment_tag(self, experiment_id: str, key: str, value: str) -> None:
        body = {"experiment_id": experiment_id, "key": key, "value": value}
        self._call("POST", f"{MLFLOW}/experiments/set-experiment-tag", json=body, idempotent=True)

    def delete_experiment_tag(self, experiment_id: str, key: str) -> None:
        self._call("POST", f"{MLFLOW}/experiments/delete-experiment-tag", json={"experiment_id": experiment_id, "key": key})

    # ------------------------------------------------------------ runs

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
        body = {
            "experiment_id": str(experiment_id), "user_id": user_id, "start_time": start_time,
            "run_name": run_name, "tags": wire.kv_out(tags), "parent_run_id": parent_run_id,
            "prefect_flow_run_id": prefect_flow_run_id, "prefect_task_run_id": prefect_task_run_id,
        }
        return wire.run(self._call("POST", f"{STORE}/runs/create", json=body)["run"])

    def get_run(self, run_id: str) -> Run:
        return wire.run(self._call("GET", f"{MLOPS}/runs/get", params={"run_id": run_id})["run"])

    def get_run_by_prefect_id(
        self, *, flow_run_id: str | None = None, task_run_id: str | None = None
    ) -> Run | None:
        params = {"flow_run_id": flow_run_id} if flow_run_id is not None else {"task_run_id": task_run_id}
        try:
            out = self._call("GET", f"{MLOPS}/runs/by-prefect-id", params=params)
        except NotFound:
            return None
        return wire.run(out["run"])

    def update_run_info(
        self,
        run_id: str,
        *,
        status: RunStatus | None = None,
        end_time: int | None = None,
        run_name: str | None = None,
    ) -> RunInfo:
        body = {
            "run_id": run_id, "status": RunStatus(status).value if status is not None else None,
            "end_time": end_time, "run_name": run_name,
        }
        out = self._call("POST", f"{STORE}/runs/update", json=body, idempotent=True)
        return wire.run_info(out["run_info"])

    def delete_run(self, run_id: str) -> None:
        self._call("POST", f"{MLFLOW}/runs/delete", json={"run_id": run_id}, idempotent=True)

    def restore_run(self, run_id: str) -> None:
        self._call("POST", f"{MLFLOW}/runs/restore", json={"run_id": run_id}, idempotent=True)

    def log_batch(
        self,
        run_id: str,
        metrics: Sequence[Metric] = (),
        params: Sequence[Param] = (),
        tags: Sequence[RunTag] = (),
        *,
        skip_logged_points: bool = False,
    ) -> None:
        """Log through ``runs/log-batch`` in calls of at most 1,000 metrics and 100 params +
        tags. Each call is atomic; a replayed call writes no point twice (the server skips
        points identical to logged ones whatever ``skip_logged_points`` says)."""
        metrics = list(metrics)
        others = [("p", p) for p in params] + [("t", t) for t in tags]
        for metric_chunk, other_chunk in wire.batch_chunks(metrics, others):
            body = {
                "run_id": run_id,
                "metrics": [
                    {"key": m.key, "value": wire.float_out(m.value), "timestamp": m.timestamp, "step": m.step}
                    for m in metric_chunk
                ],
                "params": [{"key": p.key, "value": p.value} for kind, p in other_chunk if kind == "p"],
                "tags": [{"key": t.key, "value": t.value} for kind, t in other_chunk if kind == "t"],
            }
            self._call("POST", f"{MLFLOW}/runs/log-batch", json=body, idempotent=True)

    def delete_tag(self, run_id: str, key: str) -> None:
        self._call("POST", f"{MLFLOW}/runs/delete-tag", json={"run_id": run_id, "key": key}, idempotent=True)

    def get_metric_history(
        self, run_id: str, key: str, max_results: int | None = None, page_token: str | None = None
    ) -> PagedList[Metric]:
        params: dict[str, Any] = {"run_id": run_id, "metric_key": key}
        if max_results is not None:
            params["max_results"] = max_results
        if page_token:
            params["page_token"] = page_token
        # The columnar form of MLflow's get-history: a 100,000-point history is one answer.
        out = self._call("GET", f"{STORE}/metrics/history", params=params)
        values = out.get("values", [])
        try:
            sum(values, 0.0)  # numbers only (the usual case), checked at C speed
        except TypeError:  # "NaN", "Infinity", "-Infinity"
            special = wire.SPECIAL_FLOATS
            values = [special[v] if v.__class__ is str else v for v in values]
        items = list(map(wire.build_metric, repeat(key), values, out.get("timestamps", ()), out.get("steps", ())))
        return PagedList(items, out.get("next_page_token"))

    def search_runs(
        self,
        experiment_ids: Sequence[str],
        filter_string: str = "",
        run_view_type: ViewType = ViewType.ACTIVE_ONLY,
        max_results: int = 1000,
        order_by: Sequence[str] | None = None,
        page_token: str | None = None,
    ) -> PagedList[Run]:
        body = {
            "experiment_ids": [str(e) for e in experiment_ids], "filter": filter_string,
            "run_view_type": ViewType(run_view_type).value, "max_results": max_results,
            "order_by": list(order_by or ()), "page_token": page_token,
        }
        out = self._call("POST", f"{STORE}/runs/search", json=body, idempotent=True)
        return PagedList([wire.run(r) for r in out.get("runs", ())], out.get("next_page_token"))

    # ------------------------------------------------------------ registered models

    def create_registered_model(
        self, name: str, tags: dict[str, str] | None = None, description: str | None = None
    ) -> RegisteredModel:
        body = {"name": name, "tags": wire.kv_out(tags), "description": description}
        return wire.registered_model(self._call("POST", f"{MLFLOW}/registered-models/create", json=body)["registered_model"])

    def get_registered_model(self, name: str) -> RegisteredModel:
        out = self._call("GET", f"{STORE}/registered-models/get", params={"name": name})
        return wire.registered_model(out["registered_model"])

    def search_registered_models(
        self,
        filter_string: str | None = None,
        max_results: int = 100,
        order_by: Sequence[str] | None = None,
        page_token: str | None = None,
    ) -> PagedList[RegisteredModel]:
        params = _search_params(filter_string, max_results, order_by, page_token)
        out = self._call("GET", f"{STORE}/registered-models/search", params=params)
        return PagedList([wire.registered_model(m) for m in out.get("registered_models", ())], out.get("next_page_token"))

    def rename_registered_model(self, name: str, new_name: str) -> RegisteredModel:
        self._call("POST", f"{MLFLOW}/registered-models/rename", json={"name": name, "new_name": new_name})
        return self.get_registered_model(new_name)

    def update_registered_model(self, name: str, description: str | None) -> RegisteredModel:
        body = {"name": name, "description": description}
        self._call("PATCH", f"{MLFLOW}/registered-models/update", json=body, idempotent=True)
        return self.get_registered_model(name)

    def delete_registered_model(self, name: str) -> None:
        self._call("DELETE", f"{MLFLOW}/registered-models/delete", json={"name": name})

    def set_registered_model_tag(self, name: str, key: str, value: str) -> None:
        body = {"name": name, "key": key, "value": value}
        self._call("POST", f"{MLFLOW}/registered-models/set-tag", json=body, idempotent=True)

    def delete_registered_model_tag(self, name: str, key: str) -> None:
        self._call("DELETE", f"{MLFLOW}/registered-models/delete-tag", json={"name": name, "key": key}, idempotent=True)

    # ------------------------------------------------------------ model versions

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
        body = {
            "name": name, "source": source, "run_id": run_id, "tags": tags, "description": description,
            "user_id": user_id,
        }
        return wire.model_version(self._call("POST", f"{STORE}/model-versions/create", json=body)["model_version"])

    def finish_model_version(
        self,
        name: str,
        version: int,
        *,
        status: ModelVersionStatus,
        storage_location: str | None = None,
        status_message: str | None = None,
    ) -> ModelVersion:
        body = {
            "name": name, "version": str(version), "status": ModelVersionStatus(status).value,
            "storage_location": storage_location, "status_message": status_message,
        }
        return wire.model_version(self._call("POST", f"{STORE}/model-versions/finish", json=body)["model_version"])

    def get_model_version(self, name: str, version: int) -> ModelVersion:
        out = self._call("GET", f"{STORE}/model-versions/get", params={"name": name, "version": str(version)})
        return wire.model_version(out["model_version"])

    def get_model_version_by_alias(self, name: str, alias: str) -> ModelVersion:
        out = self._call("GET", f"{STORE}/registered-models/alias", params={"name": name, "alias": alias})
        return wire.model_version(out["model_version"])

    def get_latest_versions(self, name: str, stages: Sequence[Stage] | None = None) -> list[ModelVersion]:
        params: dict[str, Any] = {"name": name}
        if stages is not None:
            params["stages"] = [Stage(s).value for s in stages]
        out = self._call("GET", f"{STORE}/registered-models/get-latest-versions", params=params)
        return [wire.model_version(v) for v in out.get("model_versions", ())]

    def search_model_versions(
        self,
        filter_string: str | None = None,
        max_results: int = 1000,
        order_by: Sequence[str] | None = None,
        page_token: str | None = None,
    ) -> PagedList[ModelVersion]:
        params = _search_params(filter_string, max_results, order_by, page_token)
        out = self._call("GET", f"{STORE}/model-versions/search", params=params)
        return PagedList([wire.model_version(v) for v in out.get("model_versions", ())], out.get("next_page_token"))

    def update_model_version(self, name: str, version: int, description: str | None) -> ModelVersion:
        body = {"name": name, "version": str(version), "description": description}
        self._call("PATCH", f"{MLFLOW}/model-versions/update", json=body, idempotent=True)
        return self.get_model_version(name, version)

    def delete_model_version(self, name: str, version: int) -> None:
        self._call("DELETE", f"{MLFLOW}/model-versions/delete", json={"name": name, "version": str(version)})

    def set_model_version_tag(self, name: str, version: int, key: str, value: str) -> None:
        body = {"name": name, "version": str(version), "key": key, "value": value}
        self._call("POST", f"{MLFLOW}/model-versions/set-tag", json=body, idempotent=True)

    def delete_model_version_tag(self, name: str, version: int, key: str) -> None:
        body = {"name": name, "version": str(version), "key": key}
        self._call("DELETE", f"{MLFLOW}/model-versions/delete-tag", json=body, idempotent=True)

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
        body = {
            "name": name, "version": str(version), "stage": Stage(stage).value,
            "archive_existing_versions": archive_existing_versions, "actor": actor, "reason": reason,
            "prefect_flow_run_id": prefect_flow_run_id, "gate_decision_id": gate_decision_id,
        }
        return wire.model_version(self._call("POST", f"{STORE}/model-versions/transition-stage", json=body)["model_version"])

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
    ) -> None:
        body = {
            "name": name, "alias": alias, "version": str(version), "actor": actor, "reason": reason,
            "prefect_flow_run_id": prefect_flow_run_id, "gate_decision_id": gate_decision_id,
        }
        self._call("POST", f"{STORE}/registered-models/alias", json=body)

    def delete_registered_model_alias(
        self, name: str, alias: str, *, actor: str | None = None, reason: str | None = None
    ) -> None:
        body = {"name": name, "alias": alias, "actor": actor, "reason": reason}
        self._call("DELETE", f"{STORE}/registered-models/alias", json=body)

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
        body = {
            "name": name, "version": str(version), "alias": alias,
            "stage": Stage(stage).value if stage is not None else None,
            "archive_existing_versions": archive_existing_versions, "require_passed_gate": require_passed_gate,
            "actor": actor, "reason": reason, "prefect_flow_run_id": prefect_flow_run_id,
        }
        return wire.model_version(self._call("POST", f"{STORE}/registered-models/promote", json=body)["model_version"])

    def rollback_alias(
        self,
        name: str,
        alias: str = "champion",
        *,
        actor: str | None = None,
        reason: str | None = None,
        prefect_flow_run_id: str | None = None,
    ) -> ModelVersion:
        body = {"name": name, "alias": alias, "actor": actor, "reason": reason, "prefect_flow_run_id": prefect_flow_run_id}
        return wire.model_version(self._call("POST", f"{STORE}/registered-models/rollback", json=body)["model_version"])

    def get_model_history(self, name: str) -> list[TransitionRecord]:
        out = self._call("GET", f"{MLOPS}/registered-models/history", params={"name": name})
        return [wire.transition(t) for t in out.get("transitions", ())]

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
        body = {
            "name": name, "version": str(version), "passed": passed, "reason": reason, "details": details,
            "prefect_flow_run_id": prefect_flow_run_id,
        }
        return wire.gate_decision(self._call("POST", f"{STORE}/gate-decisions/record", json=body)["gate_decision"])

    def get_gate_decision(self, decision_id: str) -> StoredGateDecision:
        return wire.gate_decision(self._call("GET", f"{STORE}/gate-decisions/get", params={"id": decision_id})["gate_decision"])

    # ------------------------------------------------------------ logged models

    def create_logged_model(
        self,
        experiment_id: str,
        *,
        name: str | None = None,
        model_type: str | None = None,
        source_run_id: str | None = None,
        params: dict[str, str] | None = None,
        tags: dict[str, str] | None = None,
    ) -> LoggedModel:
        body = {
            "experiment_id": str(experiment_id), "name": name, "model_type": model_type,
            "source_run_id": source_run_id, "params": wire.kv_out(params), "tags": wire.kv_out(tags),
        }
        return wire.logged_model(self._call("POST", f"{MLFLOW}/logged-models", json=body)["model"])

    def get_logged_model(self, model_id: str) -> LoggedModel:
        return wire.logged_model(self._call("GET", f"{MLFLOW}/logged-models/{wire.quoted(model_id)}")["model"])

    def finalize_logged_model(
        self, model_id: str, status: LoggedModelStatus, status_message: str | None = None
    ) -> LoggedModel:
        body = {"model_id": model_id, "status": LoggedModelStatus(status).value}
        out = self._call("PATCH", f"{MLFLOW}/logged-models/{wire.quoted(model_id)}", json=body, idempotent=True)
        return wire.logged_model(out["model"])

    def set_logged_model_tags(self, model_id: str, tags: dict[str, str]) -> LoggedModel:
        body = {"model_id": model_id, "tags": wire.kv_out(tags)}
        out = self._call("PATCH", f"{MLFLOW}/logged-models/{wire.quoted(model_id)}/tags", json=body, idempotent=True)
        return wire.logged_model(out["model"])

    def delete_logged_model_tag(self, model_id: str, key: str) -> None:
        self._call("DELETE", f"{MLFLOW}/logged-models/{wire.quoted(model_id)}/tags/{wire.quoted(key)}", idempotent=True)

    def log_logged_model_params(self, model_id: str, params: dict[str, str]) -> None:
        body = {"model_id": model_id, "params": wire.kv_out(params)}
        self._call("POST", f"{MLFLOW}/logged-models/{wire.quoted(model_id)}/params", json=body, idempotent=True)

    def delete_logged_model(self, model_id: str) -> None:
        self._call("DELETE", f"{MLFLOW}/logged-models/{wire.quoted(model_id)}")

    def search_logged_models(
        self,
        experiment_ids: Sequence[str],
        *,
        filter_string: str | None = None,
        max_results: int = 100,
        page_token: str | None = None,
    ) -> PagedList[LoggedModel]:
        body = {
            "experiment_ids": [str(e) for e in experiment_ids], "filter": filter_string,
            "max_results": max_results, "page_token": page_token,
        }
        out = self._call("POST", f"{MLFLOW}/logged-models/search", json=body, idempotent=True)
        return PagedList([wire.logged_model(m) for m in out.get("models", ())], out.get("next_page_token"))

    def log_run_inputs(
        self, run_id: str, datasets: Sequence[DatasetInput] = (), model_ids: Sequence[str] = ()
    ) -> None:
        body = {
            "run_id": run_id,
            "datasets": [
                {
                    "tags": wire.kv_out(d.tags),
                    "dataset": {
                        k: v
                        for k, v in (
                            ("name", d.name), ("digest", d.digest), ("source_type", d.source_type),
                            ("source", d.source), ("schema", d.schema), ("profile", d.profile),
                        )
                        if v is not None
                    },
                }
                for d in datasets
            ],
            "models": [{"model_id": m} for m in model_ids],
        }
        self._call("POST", f"{MLFLOW}/runs/log-inputs", json=body, idempotent=True)

    def log_run_outputs(self, run_id: str, models: Sequence[tuple[str, int]]) -> None:
        body = {"run_id": run_id, "models": [{"model_id": m, "step": s} for m, s in models]}
        self._call("POST", f"{MLFLOW}/runs/outputs", json=body, idempotent=True)

    def get_run_inputs_outputs(self, run_id: str) -> tuple[RunInputs, RunOutputs]:
        run = self._call("GET", f"{MLFLOW}/runs/get", params={"run_id": run_id})["run"]
        inputs, outputs = run.get("inputs", {}), run.get("outputs", {})
        datasets = tuple(
            DatasetInput(
                name=d["dataset"]["name"], digest=d["dataset"]["digest"], source_type=d["dataset"]["source_type"],
                source=d["dataset"]["source"], schema=d["dataset"].get("schema"), profile=d["dataset"].get("profile"),
                tags=wire.kv(d.get("tags")),
            )
            for d in inputs.get("dataset_inputs", ())
        )
        return (
            RunInputs(datasets, tuple(m["model_id"] for m in inputs.get("model_inputs", ()))),
            RunOutputs(tuple((m["model_id"], int(m.get("step", 0))) for m in outputs.get("model_outputs", ()))),
        )


def _search_params(
    filter_string: str | None, max_results: int, order_by: Sequence[str] | None, page_token: str | None
) -> dict[str, Any]:
    params: dict[str, Any] = {"max_results": max_results}
    if filter_string:
        params["filter"] = filter_string
    if order_by:
        params["order_by"] = list(order_by)
    if page_token:
        params["page_token"] = page_token
    return params
