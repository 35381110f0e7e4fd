"""The one authorization point: a FastAPI ``Security`` dependency on every route.

:func:`install_auth` adds :func:`authorize` to the app's dependencies, so it runs before
every route handler: it finds the route's :class:`~.rules.Rule` (none -> 403), reads the
credentials (none or wrong -> 401), and unless the caller is an admin checks the
permission the rule asks for on the resource the request names. The per-resource logic
lives in :class:`Authorizer`, without I/O of its own beyond :class:`~.store.AuthStore`.
"""

from __future__ import annotations

import json
import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Callable

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from tracking_plugin.errors import InvalidArgument

from serving_tasks.tracking_server.auth.credentials import Authenticator
from serving_tasks.tracking_server.auth.errors import PermissionDenied
from serving_tasks.tracking_server.auth.permissions import EVERYTHING, Permission, Readable
from serving_tasks.tracking_server.auth.rules import Access, Rule, rule_for
from serving_tasks.tracking_server.auth.store import AuthStore, User, normalize_username

# The mlflow client's default experiment "0" is the experiment named 'Default' on this
# server, so its permissions are that experiment's.
from serving_tasks.tracking_server.routes.experiments import DEFAULT_EXPERIMENT_ID, DEFAULT_EXPERIMENT_NAME

__all__ = ["AuthState", "Authorizer", "authorize", "current_user"]

_RUN_CACHE_SIZE = 100_000
_GRANT_CACHE_SIZE = 100_000
# Set while a check runs on the event loop: a lookup the caches cannot answer raises
# _NeedsIO, and the check is run again in the thread pool (with the database).
_CACHED_ONLY: ContextVar[bool] = ContextVar("auth_cached_only", default=False)


class _NeedsIO(Exception):
    pass


@dataclass
class AuthState:
    """What the auth layer keeps on ``app.state.auth``."""

    store: AuthStore
    authenticator: Authenticator
    authorizer: Authorizer


def _missing(field: str) -> InvalidArgument:
    return InvalidArgument(f"Missing value for required parameter '{field}'.")


class Authorizer:
    """Whether a user may do what a rule describes, given the request's parameters."""

    def __init__(
        self, store: AuthStore, default_permission: Permission, artifact_root: str, cache_seconds: float = 0.0
    ) -> None:
        self.store = store
        self.default = default_permission
        self.artifact_root = artifact_root.rstrip("/")
        # The hot lookups of the per-request path, so most checks need no database and no
        # thread hop: a run's experiment (never changes: kept), and a user's grant on an
        # experiment or model (kept ``cache_seconds``, like a verified credential; cleared
        # when this process changes a grant, see AuthStore.on_change).
        self.cache_seconds = cache_seconds
        self._run_experiment: dict[str, int] = {}
        self._grants: dict[tuple[int, str, str], tuple[float, Permission | None]] = {}
        store.on_change.append(self.forget_grants)

    def forget_grants(self) -> None:
        self._grants = {}

    def remember_run(self, run_id: str, experiment_id: Any) -> None:
        """Note the experiment of a run this server has just created (a run never changes
        experiment), so the run's next calls are checked from the caches: without it, each
        new run's first call looks its experiment up in a thread."""
        try:
            eid = int(experiment_id)
        except (TypeError, ValueError):
            return
        if len(self._run_experiment) > _RUN_CACHE_SIZE:
            self._run_experiment = {}
        self._run_experiment[run_id] = eid

    def _db(self) -> AuthStore:
        """The store, or :class:`_NeedsIO` when checking on the event loop (cache only)."""
        if _CACHED_ONLY.get():
            raise _NeedsIO
        return self.store

    def _cached_grant(self, user_id: int, kind: str, key: str, fetch: Callable[[], Permission | None]) -> Permission | None:
        now = time.monotonic()
        entry = self._grants.get((user_id, kind, key))
        if entry is not None and entry[0] > now:
            return entry[1]
        self._db()  # a miss needs the database
        value = fetch()
        if self.cache_seconds > 0:
            if len(self._grants) > _GRANT_CACHE_SIZE:
                self._grants = {}
            self._grants[(user_id, kind, key)] = (now + self.cache_seconds, value)
        return value

    def _run_grant(self, user: User, run_id: str) -> tuple[int, Permission | None] | None:
        """A run's experiment and the user's grant on it, or None for an unknown run."""
        eid = self._run_experiment.get(run_id)
        if eid is None:
            found = self._db().run_grant(user.id, run_id)  # one query for both on a miss
            if found is None:
                return None
            if len(self._run_experiment) > _RUN_CACHE_SIZE:
                self._run_experiment = {}
            self._run_experiment[run_id] = found[0]
            if self.cache_seconds > 0:
                self._grants[(user.id, "experiment", str(found[0]))] = (time.monotonic() + self.cache_seconds, found[1])
            return found
        return eid, self._cached_grant(user.id, "experiment", str(eid),
                                       lambda: self.store.experiment_permission(user.id, eid))

    # ------------------------------------------------------------ effective

    def on_experiment(self, user: User, experiment_id: Any) -> Permission:
        if user.is_admin:
            return Permission.MANAGE
        if str(experiment_id) == DEFAULT_EXPERIMENT_ID:  # the mlflow client's default: 'Default'
            experiment_id = self._db().experiment_by_name(DEFAULT_EXPERIMENT_NAME)
            if experiment_id is None:
                return self.default
        try:
            granted = self._cached_grant(user.id, "experiment", str(experiment_id),
                                         lambda: self.store.experiment_permission(user.id, experiment_id))
        except InvalidArgument:
            return self.default
        return granted if granted is not None else self.default

    def on_model(self, user: User, name: str) -> Permission:
        if user.is_admin:
            return Permission.MANAGE
        granted = self._cached_grant(user.id, "model", str(name), lambda: self.store.model_permission(user.id, name))
        return granted if granted is not None else self.default

    def readable_experiments(self, user: User) -> Readable:
        if user.is_admin:
            return EVERYTHING
        return Readable(self._db().experiment_grants(user.id), self.default.allows(Permission.READ))

    def readable_models(self, user: User) -> Readable:
        if user.is_admin:
            return EVERYTHING
        return Readable(self._db().model_grants(user.id), self.default.allows(Permission.READ))

    # ---------------------------------------------------------------- check

    def check(self, rule: Rule, user: User, params: dict[str, Any]) -> None:
        """Raise :class:`PermissionDenied` unless ``user`` may call a route with ``rule``."""
        if rule.admin_unless_true and params.get(rule.admin_unless_true, True) is False and not user.is_admin:
            raise PermissionDenied(
                f"Only an admin may set {rule.admin_unless_true}=false (promote without a passed gate); "
                f"user {user.username!r} is not an admin."
            )
        if user.is_admin or rule.access is Access.AUTHENTICATED:
            return
        access, need, field = rule.access, rule.permission, rule.field or ""
        value = params.get(field)
        if access is Access.ADMIN:
            raise PermissionDenied(f"Only an admin may do this; user {user.username!r} is not an admin.")
        if access is Access.SELF_OR_ADMIN:
            if value is None or (isinstance(value, str) and _same_user(value, user.username)):
                return
            raise PermissionDenied(f"User {user.username!r} may only do this for themselves, not for another user.")
        if access is Access.TOKEN_OWNER:
            if value is None:
                raise _missing(field)
            if self._db().get_token(str(value)).username != user.username:
                raise PermissionDenied(f"API token {value!r} belongs to another user; only they or an admin may revoke it.")
            return
        if access is Access.RUN:
            run_id = value if value is not None else params.get("run_uuid")
            if run_id is None:
                raise _missing(field)
            found = self._run_grant(user, str(run_id))
            if found is not None:  # an unknown run: the route answers 404
                held = found[1] if found[1] is not None else self.default
                self._require(held, need, user, f"the experiment of run {run_id}")
            return
        if access is Access.GATE_DECISION:
            if value is None:
                raise _missing(field)
            model = self._db().gate_decision_model(str(value))
            if model is not None:
                self._require(self.on_model(user, model), need, user, f"registered model {model!r}")
            return
        if access is Access.ARTIFACT and str(value or "").strip("/").startswith("registry/"):
            # registered versions' files: <root>/registry/<model key>/<version>/...
            key = str(value).strip("/").split("/")[1]
            models = self._db().models_at_registry_key(key) if key else []
            if not models:
                raise PermissionDenied(
                    f"Artifact path {str(value)[:200]!r} is not in a registered model's folder; only an admin "
                    "may read or write there."
                )
            for model in models:
                self._require(self.on_model(user, model), need, user, f"registered model {model!r}")
            return
        if access is Access.MODEL:
            if value is None:
                raise _missing(field)
            self._require(self.on_model(user, str(value)), need, user, f"registered model {value!r}")
            return
        if access is Access.SEARCHED_EXPERIMENTS:
            if isinstance(value, list):  # the route answers any other shape
                params[field] = [v for v in value if self.on_experiment(user, v).allows(need)]
            return
        for experiment_id, what in self._experiments(access, field, value, params):
            self._require(self.on_experiment(user, experiment_id), need, user, what)

    def _experiments(self, access: Access, field: str, value: Any, params: dict[str, Any]) -> list[tuple[Any, str]]:
        """The experiments a request touches: (id, how to name it in a message)."""
        if access is Access.RUN_BY_PREFECT_ID:
            eid = self._db().run_experiment_by_prefect_id(params.get("flow_run_id"), params.get("task_run_id"))
            return [] if eid is None else [(eid, f"experiment {eid}")]
        if access is Access.ARTIFACT:
            # Proxied artifacts live under <root>/<experiment folder>/...: the experiments
            # whose artifact location is that folder decide (all of them, should two share it).
            first = str(value or "").strip("/").split("/", 1)[0]
            found = self._db().experiments_at_location(f"{self.artifact_root}/{first}") if first else []
            if not found:
                raise PermissionDenied(
                    f"Artifact path {str(value or '')[:200]!r} is not in an experiment's artifact folder; "
                    "only an admin may read or write there."
                )
            return [(eid, f"experiment {eid}") for eid in found]
        if value is None and access is Access.RUN:
            value = params.get("run_uuid")
        if value is None or value == []:
            raise _missing(field)
        if access is Access.EXPERIMENT:
            return [(value, f"experiment {value}")]
        if access is Access.EXPERIMENT_BY_NAME:
            eid = self._db().experiment_by_name(str(value))
            return [] if eid is None else [(eid, f"experiment {value!r}")]
        if access is Access.RUN:
            eid = self._db().run_experiment(str(value))
            return [] if eid is None else [(eid, f"the experiment of run {value}")]
        if access is Access.RUNS:
            values = value if isinstance(value, list) else [value]
            found = self._db().runs_experiments([str(v) for v in values])
            return [(eid, f"the experiment of run {run_id}") for run_id, eid in found.items()]
        if access is Access.LOGGED_MODEL:
            eid = self._db().logged_model_experiment(str(value))
            return [] if eid is None else [(eid, f"the experiment of logged model {value}")]
        raise PermissionDenied(f"No permission check is defined for {access.value!r}.")

    @staticmethod
    def _require(held: Permission, need: Permission, user: User, what: str) -> None:
        if not held.allows(need):
            raise PermissionDenied(
                f"User {user.username!r} has {held.value} on {what}; this needs {need.value}. "
                "Ask a user with MANAGE on it (or an admin) to grant it."
            )


def _same_user(value: str, username: str) -> bool:
    try:
        return normalize_username(value) == username
    except InvalidArgument:
        return False


async def _params(request: Request, rule: Rule) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if request.method in ("POST", "PATCH", "DELETE") and rule.access is not Access.ARTIFACT:
        body = await request.body()
        if body:
            try:
                data = await request.json()
            except (json.JSONDecodeError, ValueError, UnicodeDecodeError):
                data = None
            if isinstance(data, dict):
                params.update(data)
    for key in request.query_params.keys():
        values = request.query_params.getlist(key)
        params.setdefault(key, values if len(values) > 1 or key.endswith("_ids") else values[0])
    params.update(request.path_params)
    return params


async def authorize(request: Request) -> User | None:
    """The Security dependency: the authenticated user, or 401/403/429 (see module doc)."""
    state: AuthState = request.app.state.auth
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    rule = rule_for(request.method, path)
    if rule is None:
        raise PermissionDenied(f"{request.method} {path or request.url.path} has no permission rule; it is denied.")
    if rule.access is Access.PUBLIC:
        return None
    header = request.headers.get("authorization")
    user = state.authenticator.cached(header)
    if user is None:  # a password or token check: database and argon2, off the event loop
        client = request.client.host if request.client else "unknown"
        user = await run_in_threadpool(state.authenticator.authenticate, header, client)
    request.state.auth_user = user
    params = await _params(request, rule)
    if rule.creates_model and not user.is_admin and isinstance(params.get(rule.field or ""), str):
        name = params[rule.field or ""]
        if await run_in_threadpool(state.store.model_exists, name) is False:
            request.state.creating_model = name  # see responses: MANAGE for its creator
            return user
    # First from the caches, on the event loop (no thread hop); a miss: again, with the database.
    token = _CACHED_ONLY.set(True)
    try:
        state.authorizer.check(rule, user, params)
        decided = True
    except _NeedsIO:
        decided = False
    finally:
        _CACHED_ONLY.reset(token)
    if not decided:
        await run_in_threadpool(state.authorizer.check, rule, user, params)
    if rule.access is Access.SEARCHED_EXPERIMENTS:
        await _narrow_search(request, rule.field or "", params)
    if rule.audited:
        await _record_actor(request, user)
    return user


async def _narrow_search(request: Request, field: str, params: dict[str, Any]) -> None:
    """A search names only the experiments the caller may read (``check`` narrowed the list
    in ``params``): the route reads the same cached body after this dependency (the fast
    path parses it again when ``request.state.search_narrowed`` is set)."""
    try:
        body = await request.json()
    except (json.JSONDecodeError, ValueError, UnicodeDecodeError):
        return
    if isinstance(body, dict) and isinstance(params.get(field), list) and body.get(field) != params[field]:
        body[field] = params[field]
        request.state.search_narrowed = True


async def _record_actor(request: Request, user: User) -> None:
    """The audit row names the authenticated user as ``actor``; the ``actor`` the client
    claimed goes to its own column (``claimed_actor``, via ``deps.get_claimed_actor``). The
    route validates the parsed body after this dependency, from the same (cached) object,
    so it sees the change."""
    try:
        body = await request.json()
    except (json.JSONDecodeError, ValueError, UnicodeDecodeError):
        return
    if not isinstance(body, dict):
        return
    claimed = body.get("actor")
    body["actor"] = user.username
    request.state.claimed_actor = claimed if isinstance(claimed, str) and claimed else None


def current_user(request: Request) -> User:
    """The user :func:`authorize` authenticated for this request (routes of the auth API)."""
    user = getattr(request.state, "auth_user", None)
    if user is None:  # pragma: no cover - authorize runs first on every non-public route
        raise PermissionDenied("No authenticated user on this request.")
    return user  # type: ignore[no-any-return]
