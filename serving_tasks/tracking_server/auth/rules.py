"""THE rule table: what every route of the tracking server requires.

Each route (method + path template, as FastAPI registers it) maps to a :class:`Rule`:
who may call it (:class:`Access`), the permission needed on the resource, and where the
request names that resource (``field``: a path parameter, query parameter or JSON body
field, looked up in that order). :func:`rule_for` answers None for a route without a
rule, and :mod:`.security` denies those: a new route is closed until it gets a line here.
A test walks the app's routes and fails on any route missing from this table.

Resources and how they are found (MLflow's basic-auth semantics):

- experiment: ``experiment_id`` (or ``experiment_ids``: every one must be readable)
- run: ``run_id`` (``run_uuid``) -> its experiment
- logged model: ``model_id`` -> its experiment
- artifact proxy: the path's first segment is the experiment id (``<exp>/<run>/artifacts/...``),
  or ``registry/<model key>/<version>/...``: the registered model's files
- registered model: ``name``; gate decision: ``id`` -> its registered model
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from serving_tasks.tracking_server.auth.permissions import Permission

__all__ = ["RULES", "Access", "After", "Rule", "rule_for"]

READ, EDIT, MANAGE = Permission.READ, Permission.EDIT, Permission.MANAGE


class Access(Enum):
    PUBLIC = "public"  # no credentials (health checks, version)
    AUTHENTICATED = "authenticated"  # any user; results may be filtered (After)
    ADMIN = "admin"
    SELF_OR_ADMIN = "self_or_admin"  # ``field`` names the caller (absent: the caller)
    TOKEN_OWNER = "token_owner"  # ``field`` is a token id of the caller
    EXPERIMENT = "experiment"
    # a search's list of experiment ids: narrowed to those the caller may read, never denied
    # (MLflow's search_runs and logged-model search leave unreadable experiments out)
    SEARCHED_EXPERIMENTS = "searched_experiments"
    EXPERIMENT_BY_NAME = "experiment_by_name"
    RUN = "run"
    RUNS = "runs"  # a list of run ids
    RUN_BY_PREFECT_ID = "run_by_prefect_id"
    LOGGED_MODEL = "logged_model"
    ARTIFACT = "artifact"
    MODEL = "model"
    GATE_DECISION = "gate_decision"  # ``field`` is a gate decision id -> its registered model


class After(Enum):
    """What happens to a successful answer (see :mod:`.responses`)."""

    GRANT_EXPERIMENT_CREATOR = "grant_experiment_creator"  # the creator gets MANAGE
    GRANT_MODEL_CREATOR = "grant_model_creator"
    # a version created under a name that did not exist created the model: its creator gets MANAGE
    GRANT_NEW_MODEL_CREATOR = "grant_new_model_creator"
    FILTER_EXPERIMENTS = "filter_experiments"  # keep only what the caller may read
    FILTER_MODELS = "filter_models"
    FILTER_MODEL_VERSIONS = "filter_model_versions"


@dataclass(frozen=True)
class Rule:
    access: Access
    permission: Permission = READ
    field: str | None = None
    after: After | None = None
    admin_unless_true: str | None = None  # a body flag that, when false, needs an admin
    audited: bool = False  # the body's ``actor`` becomes the authenticated user (see security)
    # creating a version of a registered model that does not exist creates the model (our
    # store's rule): any user may do that, as registered-models/create (see security)
    creates_model: bool = False


M = "/api/2.0/mlflow"
X = "/api/2.0/mlops"
A = "/api/2.0/mlflow-artifacts"
S = "/api/2.0/mlops/store"
_exp, _run, _model = Access.EXPERIMENT, Access.RUN, Access.MODEL

RULES: dict[tuple[str, str], Rule] = {
    # server
    ("GET", "/health"): Rule(Access.PUBLIC),
    ("GET", "/version"): Rule(Access.PUBLIC),
    ("GET", "/api/3.0/mlflow/server-info"): Rule(Access.PUBLIC),
    # the API's description (auth's own routes: FastAPI's bypass the dependency)
    ("GET", "/docs"): Rule(Access.AUTHENTICATED),
    ("GET", "/openapi.json"): Rule(Access.AUTHENTICATED),
    # experiments
    ("POST", f"{M}/experiments/create"): Rule(Access.AUTHENTICATED, after=After.GRANT_EXPERIMENT_CREATOR),
    ("GET", f"{M}/experiments/get"): Rule(_exp, READ, "experiment_id"),
    ("GET", f"{M}/experiments/get-by-name"): Rule(Access.EXPERIMENT_BY_NAME, READ, "experiment_name"),
    ("POST", f"{M}/experiments/search"): Rule(Access.AUTHENTICATED, after=After.FILTER_EXPERIMENTS),
    ("GET", f"{M}/experiments/search"): Rule(Access.AUTHENTICATED, after=After.FILTER_EXPERIMENTS),
    ("POST", f"{M}/experiments/update"): Rule(_exp, EDIT, "experiment_id"),
    ("POST", f"{M}/experiments/set-experiment-tag"): Rule(_exp, EDIT, "experiment_id"),
    ("POST", f"{M}/experiments/delete-experiment-tag"): Rule(_exp, EDIT, "experiment_id"),
    ("POST", f"{M}/experiments/delete"): Rule(_exp, MANAGE, "experiment_id"),
    ("POST", f"{M}/experiments/restore"): Rule(_exp, MANAGE, "experiment_id"),
    # runs
    ("POST", f"{M}/runs/create"): Rule(_exp, EDIT, "experiment_id"),
    ("GET", f"{M}/runs/get"): Rule(_run, READ, "run_id"),
    ("POST", f"{M}/runs/update"): Rule(_run, EDIT, "run_id"),
    ("POST", f"{M}/runs/log-metric"): Rule(_run, EDIT, "run_id"),
    ("POST", f"{M}/runs/log-parameter"): Rule(_run, EDIT, "run_id"),
    ("POST", f"{M}/runs/set-tag"): Rule(_run, EDIT, "run_id"),
    ("POST", f"{M}/runs/delete-tag"): Rule(_run, EDIT, "run_id"),
    ("POST", f"{M}/runs/log-batch"): Rule(_run, EDIT, "run_id"),
    ("POST", f"{M}/runs/log-inputs"): Rule(_run, EDIT, "run_id"),
    ("POST", f"{M}/runs/outputs"): Rule(_run, EDIT, "run_id"),
    ("POST", f"{M}/runs/delete"): Rule(_run, MANAGE, "run_id"),
    ("POST", f"{M}/runs/restore"): Rule(_run, MANAGE, "run_id"),
    ("POST", f"{M}/runs/search"): Rule(Access.SEARCHED_EXPERIMENTS, READ, "experiment_ids"),
    ("GET", f"{M}/metrics/get-history"): Rule(_run, READ, "run_id"),
    ("GET", f"{M}/metrics/get-history-bulk-interval"): Rule(Access.RUNS, READ, "run_ids"),
    # logged models
    ("POST", f"{M}/logged-models"): Rule(_exp, EDIT, "experiment_id"),
    ("POST", f"{M}/logged-models/search"): Rule(Access.SEARCHED_EXPERIMENTS, READ, "experiment_ids"),
    ("GET", f"{M}/logged-models/{{model_id}}"): Rule(Access.LOGGED_MODEL, READ, "model_id"),
    ("PATCH", f"{M}/logged-models/{{model_id}}"): Rule(Access.LOGGED_MODEL, EDIT, "model_id"),
    ("DELETE", f"{M}/logged-models/{{model_id}}"): Rule(Access.LOGGED_MODEL, MANAGE, "model_id"),
    ("PATCH", f"{M}/logged-models/{{model_id}}/tags"): Rule(Access.LOGGED_MODEL, EDIT, "model_id"),
    ("DELETE", f"{M}/logged-models/{{model_id}}/tags/{{tag_key}}"): Rule(Access.LOGGED_MODEL, EDIT, "model_id"),
    ("POST", f"{M}/logged-models/{{model_id}}/params"): Rule(Access.LOGGED_MODEL, EDIT, "model_id"),
    # artifact proxy
    ("GET", f"{A}/artifacts"): Rule(Access.ARTIFACT, READ, "path"),
    ("GET", f"{A}/artifacts/{{artifact_path:path}}"): Rule(Access.ARTIFACT, READ, "artifact_path"),
    ("PUT", f"{A}/artifacts/{{artifact_path:path}}"): Rule(Access.ARTIFACT, EDIT, "artifact_path"),
    ("DELETE", f"{A}/artifacts/{{artifact_path:path}}"): Rule(Access.ARTIFACT, MANAGE, "artifact_path"),
    # registered models
    ("POST", f"{M}/registered-models/create"): Rule(Access.AUTHENTICATED, after=After.GRANT_MODEL_CREATOR),
    ("GET", f"{M}/registered-models/get"): Rule(_model, READ, "name"),
    ("GET", f"{M}/registered-models/search"): Rule(Access.AUTHENTICATED, after=After.FILTER_MODELS),
    ("POST", f"{M}/registered-models/get-latest-versions"): Rule(_model, READ, "name"),
    ("GET", f"{M}/registered-models/get-latest-versions"): Rule(_model, READ, "name"),
    ("GET", f"{M}/registered-models/alias"): Rule(_model, READ, "name"),
    ("POST", f"{M}/registered-models/rename"): Rule(_model, EDIT, "name"),
    ("PATCH", f"{M}/registered-models/update"): Rule(_model, EDIT, "name"),
    ("POST", f"{M}/registered-models/set-tag"): Rule(_model, EDIT, "name"),
    ("DELETE", f"{M}/registered-models/delete-tag"): Rule(_model, EDIT, "name"),
    ("DELETE", f"{M}/registered-models/delete"): Rule(_model, MANAGE, "name"),
    # moving an alias or a stage is promotion: MANAGE
    ("POST", f"{M}/registered-models/alias"): Rule(_model, MANAGE, "name"),
    ("DELETE", f"{M}/registered-models/alias"): Rule(_model, MANAGE, "name"),
    ("POST", f"{M}/model-versions/transition-stage"): Rule(_model, MANAGE, "name"),
    ("POST", f"{M}/model-versions/create"): Rule(
        _model, EDIT, "name", after=After.GRANT_NEW_MODEL_CREATOR, creates_model=True
    ),
    ("GET", f"{M}/model-versions/get"): Rule(_model, READ, "name"),
    ("GET", f"{M}/model-versions/get-download-uri"): Rule(_model, READ, "name"),
    ("GET", f"{M}/model-versions/search"): Rule(Access.AUTHENTICATED, after=After.FILTER_MODEL_VERSIONS),
    ("PATCH", f"{M}/model-versions/update"): Rule(_model, EDIT, "name"),
    ("POST", f"{M}/model-versions/set-tag"): Rule(_model, EDIT, "name"),
    ("DELETE", f"{M}/model-versions/delete-tag"): Rule(_model, EDIT, "name"),
    ("DELETE", f"{M}/model-versions/delete"): Rule(_model, MANAGE, "name"),
    # prefect-mlops extensions
    ("GET", f"{X}/model-versions/gate-decision"): Rule(_model, READ, "name"),
    ("GET", f"{X}/registered-models/history"): Rule(_model, READ, "name"),
    ("POST", f"{X}/registered-models/promote"): Rule(
        _model, MANAGE, "name", admin_unless_true="require_passed_gate", audited=True
    ),
    ("POST", f"{X}/registered-models/rollback"): Rule(_model, MANAGE, "name", audited=True),
    ("GET", f"{X}/runs/get"): Rule(_run, READ, "run_id"),
    ("GET", f"{X}/runs/by-prefect-id"): Rule(Access.RUN_BY_PREFECT_ID, READ),
    # the REST store of our own client (tracking_plugin.store.rest)
    ("POST", f"{S}/runs/create"): Rule(_exp, EDIT, "experiment_id"),
    ("POST", f"{S}/runs/update"): Rule(_run, EDIT, "run_id"),
    ("POST", f"{S}/runs/search"): Rule(Access.SEARCHED_EXPERIMENTS, READ, "experiment_ids"),
    ("GET", f"{S}/metrics/history"): Rule(_run, READ, "run_id"),
    ("GET", f"{S}/registered-models/get"): Rule(_model, READ, "name"),
    ("GET", f"{S}/registered-models/search"): Rule(Access.AUTHENTICATED, after=After.FILTER_MODELS),
    ("GET", f"{S}/registered-models/get-latest-versions"): Rule(_model, READ, "name"),
    ("GET", f"{S}/registered-models/alias"): Rule(_model, READ, "name"),
    ("GET", f"{S}/model-versions/get"): Rule(_model, READ, "name"),
    ("GET", f"{S}/model-versions/search"): Rule(Access.AUTHENTICATED, after=After.FILTER_MODEL_VERSIONS),
    ("POST", f"{S}/model-versions/create"): Rule(
        _model, EDIT, "name", after=After.GRANT_NEW_MODEL_CREATOR, creates_model=True
    ),
    ("POST", f"{S}/model-versions/finish"): Rule(_model, EDIT, "name"),
    ("POST", f"{S}/model-versions/transition-stage"): Rule(_model, MANAGE, "name", audited=True),
    ("POST", f"{S}/registered-models/alias"): Rule(_model, MANAGE, "name", audited=True),
    ("DELETE", f"{S}/registered-models/alias"): Rule(_model, MANAGE, "name", audited=True),
    ("POST", f"{S}/registered-models/promote"): Rule(
        _model, MANAGE, "name", admin_unless_true="require_passed_gate", audited=True
    ),
    ("POST", f"{S}/registered-models/rollback"): Rule(_model, MANAGE, "name", audited=True),
    # a passed gate decision is what lets a MANAGE user promote: recording one needs MANAGE
    ("POST", f"{S}/gate-decisions/record"): Rule(_model, MANAGE, "name"),
    # by id: READ on the decision's registered model (an unknown id: the route answers 404)
    ("GET", f"{S}/gate-decisions/get"): Rule(Access.GATE_DECISION, READ, "id"),
    # the web UI (pages and /ui-api; /ui-static holds only our script, style and uPlot).
    # The two list pages show only what the user may read (deps.get_readable_*).
    ("GET", "/"): Rule(Access.AUTHENTICATED),
    ("GET", "/models"): Rule(Access.AUTHENTICATED),
    ("GET", "/experiments/{experiment_id}"): Rule(_exp, READ, "experiment_id"),
    ("GET", "/runs/{run_id}"): Rule(_run, READ, "run_id"),
    ("GET", "/compare"): Rule(Access.RUNS, READ, "runs"),
    ("GET", "/models/{name}"): Rule(_model, READ, "name"),
    ("GET", "/models/{name}/versions/{version}"): Rule(_model, READ, "name"),
    ("GET", "/ui-api/metric-history"): Rule(Access.RUNS, READ, "run"),
    ("GET", "/ui-api/runs/{run_id}/artifacts"): Rule(_run, READ, "run_id"),
    ("GET", "/ui-api/runs/{run_id}/preview"): Rule(_run, READ, "run_id"),
    ("GET", "/ui-api/runs/{run_id}/artifact"): Rule(_run, READ, "run_id"),
    ("GET", "/ui-api/runs/{run_id}/children"): Rule(_run, READ, "run_id"),
    # users and permissions (MLflow's basic-auth API)
    ("POST", f"{M}/users/create"): Rule(Access.ADMIN),
    ("GET", f"{M}/users/get"): Rule(Access.SELF_OR_ADMIN, field="username"),
    ("GET", f"{M}/users/list"): Rule(Access.ADMIN),
    ("PATCH", f"{M}/users/update-password"): Rule(Access.SELF_OR_ADMIN, field="username"),
    ("PATCH", f"{M}/users/update-admin"): Rule(Access.ADMIN),
    ("DELETE", f"{M}/users/delete"): Rule(Access.ADMIN),
    ("POST", f"{M}/experiments/permissions/create"): Rule(_exp, MANAGE, "experiment_id"),
    ("GET", f"{M}/experiments/permissions/get"): Rule(_exp, MANAGE, "experiment_id"),
    ("PATCH", f"{M}/experiments/permissions/update"): Rule(_exp, MANAGE, "experiment_id"),
    ("DELETE", f"{M}/experiments/permissions/delete"): Rule(_exp, MANAGE, "experiment_id"),
    ("POST", f"{M}/registered-models/permissions/create"): Rule(_model, MANAGE, "name"),
    ("GET", f"{M}/registered-models/permissions/get"): Rule(_model, MANAGE, "name"),
    ("PATCH", f"{M}/registered-models/permissions/update"): Rule(_model, MANAGE, "name"),
    ("DELETE", f"{M}/registered-models/permissions/delete"): Rule(_model, MANAGE, "name"),
    # garbage collection removes any experiment's data: admins only
    ("POST", f"{X}/gc"): Rule(Access.ADMIN),
    # API tokens
    ("POST", f"{X}/tokens/create"): Rule(Access.SELF_OR_ADMIN, field="username"),
    ("GET", f"{X}/tokens/list"): Rule(Access.SELF_OR_ADMIN, field="username"),
    ("POST", f"{X}/tokens/revoke"): Rule(Access.TOKEN_OWNER, field="token_id"),
    ("GET", f"{X}/users/current"): Rule(Access.AUTHENTICATED),
}


def rule_for(method: str, path_template: str | None) -> Rule | None:
    """The rule of a route, or None (the route is denied)."""
    if path_template is None:
        return None
    return RULES.get((method.upper(), path_template))
