"""``@track``: record every Prefect flow run (and, if you like, task run) as a tracking run.

Put ``@track`` **above** ``@flow`` / ``@task`` (it decorates the Prefect object)::

    from prefect import flow, task
    from tracking_plugin.prefect import track

    @track(experiment="churn")
    @flow
    def train(n_estimators: int = 100, max_depth: int = 8) -> dict[str, float]:
        ...
        return {"roc_auc": 0.91}     # a returned mapping of numbers becomes metrics

    @track                           # a child run per task run (one per mapped config)
    @task
    def fit_one(config: dict) -> dict[str, float]: ...

What one flow run records, with no logging code:

- one run keyed by the Prefect flow-run id, in the experiment ``experiment=`` (default:
  the flow's name), named like the flow run; a subflow's run is nested under its
  parent's run, a tracked task's run under its flow's run;
- params: the bound arguments with defaults (DataFrames/arrays as shape, dtypes and a
  content digest; long or odd values summarised, never an error);
- metrics: the numbers of a returned mapping, plus whatever the body logs with the
  fluent API (``log_metric`` etc. need no run id inside the flow or any of its tasks,
  in threads and on Dask workers alike);
- status from the final Prefect state: Completed -> FINISHED, Failed -> FAILED (with the
  state message in the tag ``mlops.state_message``), Crashed/Cancelled -> KILLED;
- tags: Prefect flow-run id/name, flow, deployment, task-run id, git commit and dirty
  flag, user, host, Python and package versions;
- in the Prefect UI: a table artifact (params and final metrics) and a markdown artifact
  naming the tracking run; events ``mlops.run.finished`` / ``mlops.run.failed`` with the
  tracking run as a related resource.

``@track`` under ``@flow``/``@task`` (decorating the plain function) also works, but then
the final status comes from the function's own outcome (no Prefect hooks are attached), so
retries and crashes are not reflected; prefer ``@track`` on top.

The backend comes from ``tracking_uri=``, else the saved block ``block=`` (or
``PREFECT_MLOPS_BLOCK``), else the ``PREFECT_MLOPS_*`` environment. Tracked tasks and
subflows that name none of these, and fluent calls in untracked tasks, use their flow's
backend: through the active run in the flow's process and its threads, and through the
Prefect tag ``mlops-backend-block:<name>`` that a flow tracked with a block puts on the
task runs it creates, in other processes (Dask workers), which load that block. (A
``tracking_uri=`` given in code is not put in a tag, where it could carry a password: such
workers use their environment.) An unreachable backend fails the flow at its start with
:class:`~tracking_plugin.errors.BackendUnavailable`.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import numbers
import os
import re
import threading
import time
import types
from collections.abc import Mapping
from typing import Any, Callable, Sequence, TypeVar, overload

from prefect import Flow, Task
from prefect.context import FlowRunContext, TaskRunContext

from tracking_plugin import _background, _context, _lineage
from tracking_plugin.entities import Metric, Param, Run, RunStatus, RunTag
from tracking_plugin.errors import AlreadyExists, Conflict, InvalidArgument, MlopsError
from tracking_plugin.events import RUN_FAILED, RUN_FINISHED, emit, flow_run_resource, run_resource
from tracking_plugin.client import TrackingClient, default_client
from tracking_plugin.tags import (
    TAG_DEPLOYMENT_ID,
    TAG_DEPLOYMENT_NAME,
    TAG_ERROR,
    TAG_FLOW_NAME,
    TAG_FLOW_RUN_ID,
    TAG_FLOW_RUN_NAME,
    TAG_FLOW_RUN_URL,
    TAG_PREFECT_STATE,
    TAG_SOURCE_TYPE,
    TAG_STATE_MESSAGE,
    TAG_TASK_NAME,
    TAG_TASK_RUN_ID,
)
from tracking_plugin.urls import redact_uri
from tracking_plugin.validation import validate_key

__all__ = [
    "TAG_DEPLOYMENT_ID",
    "TAG_DEPLOYMENT_NAME",
    "TAG_FLOW_NAME",
    "TAG_FLOW_RUN_ID",
    "TAG_FLOW_RUN_NAME",
    "TAG_PREFECT_STATE",
    "TAG_STATE_MESSAGE",
    "TAG_TASK_NAME",
    "TAG_TASK_RUN_ID",
    "current_tracking_run_id",
    "track",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")


# Prefect tag prefix naming the backend block of the tracked flow that created a task run.
PREFECT_TAG_BACKEND_BLOCK = "mlops-backend-block:"

_SPEC_ATTR = "__mlops_track__"
_CACHE_LIMIT = 10_000


# ---------------------------------------------------------------- configuration


@dataclasses.dataclass(frozen=True)
class _TrackSpec:
    """What ``@track(...)`` was given; travels with the wrapped function (and pickles)."""

    kind: str  # "flow", "task" or "function" (decided at call time)
    experiment: str | None = None
    run_name: str | None = None
    tags: tuple[tuple[str, str], ...] = ()
    block: str | None = None
    tracking_uri: str | None = None
    artifact_root: str | None = None
    log_params: bool = True
    exclude_params: tuple[str, ...] = ()
    log_returned_metrics: bool = True
    prefect_artifacts: bool = True
    emit_events: bool = True
    source_file: str | None = None


_EXPERIMENT_IDS: dict[tuple[str, str], str] = {}  # (tracking URI, name) -> id
_EXPERIMENT_NAMES: dict[tuple[str, str], str] = {}  # (tracking URI, id) -> name
# Prefect id ("flow:<id>" / "task:<id>") -> tracking run id (None: known untracked). A
# per-process cache in front of get_run_by_prefect_id; the database stays the truth.
_RUN_IDS: dict[str, str | None] = {}
_RUN_EXPERIMENTS: dict[str, str] = {}
# Runs this process opened and a Prefect hook has yet to close: the client to close them
# with (saves resolving the backend again on the per-task path).
_OPEN: dict[str, TrackingClient] = {}
_LOCK = threading.Lock()


def _remember(key: str, run_id: str | None) -> None:
    if len(_RUN_IDS) >= _CACHE_LIMIT:
        _RUN_IDS.clear()
        _OPEN.clear()
    _RUN_IDS[key] = run_id


def _client_for(spec: _TrackSpec | None) -> TrackingClient:
    """The (process-cached) client for the backend ``spec`` points at, through the one
    resolver: ``tracking_uri=`` / ``block=`` if given, else the default backend
    (``set_tracking_uri()``, ``PREFECT_MLOPS_BLOCK``, ``PREFECT_MLOPS_*``)."""
    if spec is None:
        return default_client()
    return default_client(spec.tracking_uri, spec.artifact_root, block=None if spec.tracking_uri else spec.block)


def _names_backend(spec: _TrackSpec | None) -> bool:
    return spec is not None and bool(spec.block or spec.tracking_uri or spec.artifact_root)


def _backend_block(spec: _TrackSpec) -> str | None:
    """The block a flow's backend comes from (None: a URI or the environment)."""
    if spec.tracking_uri:
        return None
    return spec.block or os.environ.get("PREFECT_MLOPS_BLOCK") or None


def _tagged_block(prefect_run: Any) -> str | None:
    """The backend block named by a Prefect flow or task run's tags, if any."""
    for tag in getattr(prefect_run, "tags", None) or ():
        if isinstance(tag, str) and tag.startswith(PREFECT_TAG_BACKEND_BLOCK):
            return tag[len(PREFECT_TAG_BACKEND_BLOCK):] or None
    return None


def _client_for_run(spec: _TrackSpec | None, prefect_run: Any) -> TrackingClient:
    """``_client_for(spec)``, unless ``spec`` names no backend and ``prefect_run`` (a flow or
    task run) was created by a flow tracked with a block: then that block's backend."""
    if not _names_backend(spec):
        block = _tagged_block(prefect_run)
        if block:
            return _client_for(dataclasses.replace(spec, block=block) if spec else _TrackSpec(kind="task", block=block))
    return _client_for(spec)


def _experiment_id(client: TrackingClient, name: str) -> str:
    key = (client.tracking_uri, name)
    experiment_id = _EXPERIMENT_IDS.get(key)
    if experiment_id is not None:
        return experiment_id
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            experiment_id = client.create_experiment(name)
        except AlreadyExists:  # another process or thread created it first
            experiment = client.get_experiment_by_name(name)
            assert experiment is not None
            experiment_id = experiment.experiment_id
    else:
        if experiment.lifecycle_stage.value == "deleted":
            raise Conflict(
                f"Experiment {name!r} is deleted. Restore it (TrackingClient().restore_experiment"
                f"({experiment.experiment_id!r})) or pass another name to @track(experiment=...)."
            )
        experiment_id = experiment.experiment_id
    _EXPERIMENT_IDS[key] = experiment_id
    _EXPERIMENT_NAMES[(client.tracking_uri, experiment_id)] = name
    return experiment_id


# ---------------------------------------------------------------- the decorator


@overload
def track(obj: T, /) -> T: ...


@overload
def track(
    obj: None = None,
    /,
    *,
    experiment: str | None = None,
    run_name: str | None = None,
    tags: Mapping[str, Any] | None = None,
    block: str | None = None,
    tracking_uri: str | None = None,
    artifact_root: str | None = None,
    log_params: bool = True,
    exclude_params: Sequence[str] = (),
    log_returned_metrics: bool = True,
    prefect_artifacts: bool = True,
    emit_events: bool = True,
) -> Callable[[T], T]: ...


def track(
    obj: Any = None,
    /,
    *,
    experiment: str | None = None,
    run_name: str | None = None,
    tags: Mapping[str, Any] | None = None,
    block: str | None = None,
    tracking_uri: str | None = None,
    artifact_root: str | None = None,
    log_params: bool = True,
    exclude_params: Sequence[str] = (),
    log_returned_metrics: bool = True,
    prefect_artifacts: bool = True,
    emit_events: bool = True,
) -> Any:
    """Record each run of a Prefect flow (or task) as a tracking run. Use above ``@flow``.

    Args:
        experiment: experiment name (default: the flow's name; for a task, its flow run's
            experiment).
        run_name: run name (default: the Prefect flow/task run name, e.g. ``"crimson-otter"``).
        tags: extra tags for every run.
        block: name of a saved :class:`~tracking_plugin.blocks.MlopsBackend` block holding
            the backend (default: ``PREFECT_MLOPS_BLOCK``, else the environment).
        tracking_uri / artifact_root: the backend, overriding block and environment.
        log_params: record the bound arguments as params; ``exclude_params`` names
            arguments to leave out (e.g. credentials).
        log_returned_metrics: record a returned mapping's numbers as metrics.
        prefect_artifacts / emit_events: flows only; create the Prefect UI artifacts and
            emit ``mlops.run.finished`` / ``mlops.run.failed``.

    Raises:
        TypeError: at decoration time, when ``obj`` is not a function, flow or task.

    Example::

        @track(experiment="churn", tags={"team": "ml"})
        @flow
        def train(max_depth: int = 8) -> dict[str, float]:
            return {"auc": 0.9}
    """
    if experiment is not None and not isinstance(experiment, str):
        raise TypeError(f"@track(experiment=...) takes an experiment name (str), got {experiment!r}.")
    options = dict(
        experiment=experiment,
        run_name=run_name,
        tags=tuple((validate_key(str(k), "tag"), str(v)) for k, v in (tags or {}).items()),
        block=block,
        tracking_uri=tracking_uri,
        artifact_root=artifact_root,
        log_params=bool(log_params),
        exclude_params=tuple(exclude_params),
        log_returned_metrics=bool(log_returned_metrics),
        prefect_artifacts=bool(prefect_artifacts),
        emit_events=bool(emit_events),
    )
    if obj is None:
        return lambda target: _decorate(target, options)
    return _decorate(obj, options)


def _source_file(fn: Callable[..., Any]) -> str | None:
    try:
        return inspect.getsourcefile(inspect.unwrap(fn))
    except (TypeError, OSError):
        return None


def _decorate(obj: Any, options: dict[str, Any]) -> Any:
    if isinstance(obj, Flow):
        kind, fn = "flow", obj.fn
    elif isinstance(obj, Task):
        kind, fn = "task", obj.fn
    elif inspect.isfunction(obj) or inspect.ismethod(obj):
        kind, fn = "function", obj
    else:
        raise TypeError(
            f"@track decorates a Prefect flow, a Prefect task or a function, not "
            f"{type(obj).__module__}.{type(obj).__qualname__} ({obj!r:.80}). Put @track "
            "directly above @flow or @task."
        )
    if getattr(fn, _SPEC_ATTR, None) is not None:
        raise TypeError(f"{getattr(fn, '__qualname__', fn)!r} is already decorated with @track; use it once.")
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        raise TypeError(
            f"@track does not support generator functions ({fn.__qualname__}): a run needs "
            "one return value. Return a list or dict instead of yielding."
        )
    spec = _TrackSpec(kind=kind, source_file=_source_file(fn), **options)
    wrapper = _wrap(fn, spec)
    if isinstance(obj, Flow):
        tracked: Any = obj.with_options(
            on_completion=[_FlowHook(spec, RunStatus.FINISHED), *obj.on_completion_hooks],
            on_failure=[_FlowHook(spec, RunStatus.FAILED), *obj.on_failure_hooks],
            on_crashed=[_FlowHook(spec, RunStatus.KILLED), *obj.on_crashed_hooks],
            on_cancellation=[_FlowHook(spec, RunStatus.KILLED), *obj.on_cancellation_hooks],
        )
        tracked.fn = wrapper
        return tracked
    if isinstance(obj, Task):
        tracked = obj.with_options(
            on_completion=[_TaskHook(spec, RunStatus.FINISHED), *obj.on_completion_hooks],
            on_failure=[_TaskHook(spec, RunStatus.FAILED), *obj.on_failure_hooks],
        )
        tracked.fn = wrapper
        return tracked
    return wrapper


def _wrap(fn: Callable[..., Any], spec: _TrackSpec) -> Callable[..., Any]:
    signature = inspect.signature(fn)
    # The wrapper's body reaches our helpers through its closure only, so it can be rebuilt
    # below on the user's module globals: Prefect resolves string annotations (``from
    # __future__ import annotations``) against ``fn.__globals__`` when validating flow
    # parameters. The closure also makes unpickling the wrapper (Dask workers) import
    # this module, which registers the run resolver there.
    begin, end, fail = _begin, _end, _end_with_error
    wrapper_ref: list[Callable[..., Any]] = []

    if inspect.iscoroutinefunction(fn):

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            session = begin(spec, wrapper_ref[0], signature, args, kwargs)
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                fail(session, exc)
                raise
            end(session, result, None)
            return result

    else:

        def wrapper(*args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
            session = begin(spec, wrapper_ref[0], signature, args, kwargs)
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                fail(session, exc)
                raise
            end(session, result, None)
            return result

    user_globals = getattr(inspect.unwrap(fn), "__globals__", None)
    if isinstance(user_globals, dict):
        wrapper = types.FunctionType(  # type: ignore[assignment]
            wrapper.__code__, user_globals, wrapper.__name__, wrapper.__defaults__, wrapper.__closure__
        )
    functools.update_wrapper(wrapper, fn)
    wrapper_ref.append(wrapper)
    setattr(wrapper, _SPEC_ATTR, spec)
    return wrapper


# ---------------------------------------------------------------- run lifecycle


@dataclasses.dataclass
class _Session:
    """One tracked call in progress."""

    spec: _TrackSpec
    mode: str  # "flow" | "task" | "plain"
    client: TrackingClient
    run: Run
    activation: Any  # the entered using_active_run(...) context manager
    backend_tag: Any  # a flow's entered prefect.tags(...) naming its backend block, or None
    pending_params: dict[str, str]  # a task's params, written with its metrics at the end
    finalize_here: bool  # no Prefect hooks will set the final status
    flow_run_id: str | None = None
    flow_run_name: str | None = None
    flow_name: str | None = None


def _mode(wrapper: Callable[..., Any]) -> tuple[str, Any, Any]:
    """("flow" | "task" | "plain", flow_ctx, task_ctx) for this call.

    Identity with the running flow's/task's function tells a real flow or task run from
    a direct call of ``.fn`` inside some other run, which must not take over that run's
    Prefect id. (On a Dask worker the unpickled task still holds this very function.)
    """
    flow_ctx = FlowRunContext.get()
    task_ctx = TaskRunContext.get()
    if task_ctx is not None and task_ctx.task.fn is wrapper:
        return "task", flow_ctx, task_ctx
    if flow_ctx is not None and flow_ctx.flow is not None and flow_ctx.flow.fn is wrapper:
        return "flow", flow_ctx, task_ctx
    return "plain", flow_ctx, task_ctx


def _bound_params(spec: _TrackSpec, signature: inspect.Signature, args: Any, kwargs: Any) -> dict[str, str]:
    if not spec.log_params:
        return {}
    try:
        bound = signature.bind_partial(*args, **kwargs)
        bound.apply_defaults()
        values: dict[str, Any] = {}
        for name, value in bound.arguments.items():
            if name in spec.exclude_params or name in ("self", "cls"):
                continue
            kind = signature.parameters[name].kind
            if kind is inspect.Parameter.VAR_KEYWORD:
                values.update({k: v for k, v in value.items() if k not in spec.exclude_params})
            elif kind is inspect.Parameter.VAR_POSITIONAL:
                values.update({f"{name}.{i}": v for i, v in enumerate(value)})
            else:
                values[name] = value
        return _lineage.flatten_params(values)
    except Exception as exc:  # noqa: BLE001 - params are informative, never fatal
        logger.warning("prefect-mlops: could not record the parameters: %s", exc)
        return {}


def _prefect_tags(flow_ctx: Any, task_ctx: Any) -> dict[str, str]:
    tags: dict[str, str] = {}
    flow_run = getattr(flow_ctx, "flow_run", None)
    if flow_run is not None:
        tags[TAG_FLOW_RUN_ID] = str(flow_run.id)
        tags[TAG_FLOW_RUN_NAME] = str(flow_run.name)
        if flow_ctx.flow is not None:
            tags[TAG_FLOW_NAME] = flow_ctx.flow.name
        if flow_run.deployment_id is not None:
            tags[TAG_DEPLOYMENT_ID] = str(flow_run.deployment_id)
            name = _deployment_name(str(flow_run.deployment_id))
            if name:
                tags[TAG_DEPLOYMENT_NAME] = name
        ui_url = _flow_run_ui_url(str(flow_run.id))
        if ui_url:
            tags[TAG_FLOW_RUN_URL] = ui_url
    elif task_ctx is not None and task_ctx.task_run.flow_run_id is not None:
        tags[TAG_FLOW_RUN_ID] = str(task_ctx.task_run.flow_run_id)
    if task_ctx is not None:
        tags[TAG_TASK_RUN_ID] = str(task_ctx.task_run.id)
        tags[TAG_TASK_NAME] = task_ctx.task.name
    return tags


@functools.lru_cache(maxsize=256)
def _deployment_name(deployment_id: str) -> str | None:
    # One API call per deployment and process: names do not change under a running flow.
    try:
        with _prefect_client() as client:
            return client.read_deployment(deployment_id).name
    except Exception as exc:  # noqa: BLE001 - a tag is not worth failing the flow
        logger.debug("prefect-mlops: could not read deployment %s: %s", deployment_id, exc)
        return None


def _flow_run_ui_url(flow_run_id: str) -> str | None:
    from prefect.settings import PREFECT_UI_URL

    base = PREFECT_UI_URL.value()
    return f"{base}/runs/flow-run/{flow_run_id}" if base else None


def _get_or_create(client: TrackingClient, *, key: str, create: Callable[[], Run], find: Callable[[], Run | None]) -> tuple[Run, bool]:
    """Race-safe get-or-create by the unique Prefect id: every process/thread of a flow run
    ends up with the same tracking run. Returns (run, created)."""
    try:
        run = create()
        created = True
    except AlreadyExists:
        found = find()
        if found is None:  # deleted between the insert and the read: surface it
            raise
        run, created = found, False
    _remember(key, run.info.run_id)
    return run, created


def _begin(
    spec: _TrackSpec, wrapper: Callable[..., Any], signature: inspect.Signature, args: Any, kwargs: Any
) -> _Session:
    mode, flow_ctx, task_ctx = _mode(wrapper)
    active = _context.current_run()  # e.g. the flow's run, in a task thread
    if active is not None and not _names_backend(spec):
        client = active.client  # a child run lives in its parent's backend
    else:
        prefect_run = task_ctx.task_run if mode == "task" else flow_ctx.flow_run if mode == "flow" else None
        client = _client_for_run(spec, prefect_run)
    params = _bound_params(spec, signature, args, kwargs)
    tags = {**_lineage.lineage_tags(spec.source_file), **_prefect_tags(flow_ctx, task_ctx), **dict(spec.tags)}
    tags[TAG_SOURCE_TYPE] = "JOB" if mode != "plain" else "LOCAL"
    parent_run_id = active.run_id if active is not None else None
    flow_run_id = str(flow_ctx.flow_run.id) if flow_ctx is not None and flow_ctx.flow_run else None

    if mode == "flow":
        assert flow_ctx is not None
        flow_run = flow_ctx.flow_run
        if parent_run_id is None and flow_run.parent_task_run_id is not None:
            parent_run_id = _tracked_ancestor_run_id(client, str(flow_run.parent_task_run_id))
        experiment_id = _experiment_id(client, spec.experiment or flow_ctx.flow.name)
        open_key = f"flow:{flow_run_id}"
        run, created = _get_or_create(
            client,
            key=open_key,
            create=lambda: client.create_run(
                experiment_id,
                tags=tags,
                run_name=spec.run_name or flow_run.name,
                parent_run_id=parent_run_id,
                prefect_flow_run_id=flow_run_id,
            ),
            find=lambda: client.get_run_by_prefect_id(flow_run_id=flow_run_id),
        )
        finalize_here = spec.kind == "function"
    elif mode == "task":
        assert task_ctx is not None
        task_run = task_ctx.task_run
        task_run_id = str(task_run.id)
        if flow_run_id is None and task_run.flow_run_id is not None:
            flow_run_id = str(task_run.flow_run_id)
        if parent_run_id is None and flow_run_id is not None:
            parent_run_id = _run_id_for_flow_run(flow_run_id, flow_ctx, client)
        if spec.experiment:
            experiment_id = _experiment_id(client, spec.experiment)
        elif active is not None:
            experiment_id = active.info.experiment_id  # children live in their parent's experiment
        elif parent_run_id is not None:
            experiment_id = _experiment_of_run(client, parent_run_id)
        else:
            flow_name = flow_ctx.flow.name if flow_ctx is not None and flow_ctx.flow else task_ctx.task.name
            experiment_id = _experiment_id(client, flow_name)
        open_key = f"task:{task_run_id}"
        run, created = _get_or_create(
            client,
            key=open_key,
            create=lambda: client.create_run(
                experiment_id,
                tags=tags,
                run_name=spec.run_name or task_run.name,
                parent_run_id=parent_run_id,
                prefect_task_run_id=task_run_id,
            ),
            find=lambda: client.get_run_by_prefect_id(task_run_id=task_run_id),
        )
        finalize_here = spec.kind == "function"
    else:
        name = spec.experiment or str(getattr(wrapper, "__name__", "Default"))
        experiment_id = _experiment_id(client, name)
        run = client.create_run(experiment_id, tags=tags, run_name=spec.run_name, parent_run_id=parent_run_id)
        created, finalize_here, open_key = True, True, None

    run_id = run.info.run_id
    if not created and run.info.status.is_terminal:
        # A retry of the same flow/task run: the run is live again until the final state.
        client.update_run(run_id, status=RunStatus.RUNNING)
    if open_key is not None and not finalize_here:
        _OPEN[open_key] = client
    # A flow's params are visible while it runs. A task's are written with its metrics in
    # one transaction when it ends: tracked tasks are many and short (a sweep), and that
    # keeps the cost per tracked task to three small transactions.
    pending: dict[str, str] = {}
    if mode == "task":
        pending = params
    elif params:
        _log_params(client, run_id, params)
    # The body's fluent calls (and tasks it submits: Prefect copies the context into its
    # threads) log to this run; leaving restores the caller's stack exactly.
    activation = _context.using_active_run(run, client)
    activation.__enter__()
    backend_tag = None
    block = _backend_block(spec) if mode == "flow" else None
    if block:
        # Task runs this flow creates carry its backend to processes without this context
        # (Dask workers); see _client_for_run.
        from prefect import tags as prefect_tags

        backend_tag = prefect_tags(PREFECT_TAG_BACKEND_BLOCK + block)
        backend_tag.__enter__()
    return _Session(
        spec=spec,
        mode=mode,
        client=client,
        run=run,
        activation=activation,
        backend_tag=backend_tag,
        pending_params=pending,
        finalize_here=finalize_here,
        flow_run_id=flow_run_id,
        flow_run_name=str(flow_ctx.flow_run.name) if flow_ctx is not None and flow_ctx.flow_run else None,
        flow_name=flow_ctx.flow.name if flow_ctx is not None and flow_ctx.flow else None,
    )


def _experiment_of_run(client: TrackingClient, run_id: str) -> str:
    # Child runs live in their parent's experiment, as MLflow's nested runs do.
    experiment_id = _RUN_EXPERIMENTS.get(run_id)
    if experiment_id is None:
        experiment_id = client.get_run(run_id).info.experiment_id
        if len(_RUN_EXPERIMENTS) >= _CACHE_LIMIT:
            _RUN_EXPERIMENTS.clear()
        _RUN_EXPERIMENTS[run_id] = experiment_id
    return experiment_id


def _log_params(client: TrackingClient, run_id: str, params: dict[str, str]) -> None:
    batch = [Param(k, v) for k, v in params.items()]
    try:
        client.log_batch(run_id, params=batch)
    except Conflict:
        # A retry whose arguments changed (or a param the body already logged): keep what
        # was recorded first, log the rest one by one.
        for param in batch:
            try:
                client.log_batch(run_id, params=[param])
            except Conflict:
                logger.warning(
                    "prefect-mlops: param %r of run %s already has another value; kept the first.",
                    param.key,
                    run_id,
                )
    except InvalidArgument as exc:
        logger.warning("prefect-mlops: some parameters of run %s were not recorded: %s", run_id, exc)
        for param in batch:
            try:
                client.log_batch(run_id, params=[param])
            except MlopsError:
                continue


def _returned_metrics(result: Any) -> list[Metric]:
    if not isinstance(result, Mapping):
        return []
    now = int(time.time() * 1000)
    metrics = []
    for key, value in result.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not isinstance(key, str):
            continue
        try:
            validate_key(key, "metric")
        except InvalidArgument as exc:
            logger.warning("prefect-mlops: returned value %r not recorded as a metric: %s", key, exc)
            continue
        metrics.append(Metric(key, float(value), now, 0))
    return metrics


def _end(session: _Session, result: Any, error: BaseException | None) -> None:
    """Record the outcome of the body; close the run here only when no hook will."""
    client, run_id = session.client, session.run.info.run_id
    try:
        end_tags: list[RunTag] = []
        metrics = _returned_metrics(result) if error is None and session.spec.log_returned_metrics else []
        if error is not None:
            end_tags.append(RunTag(TAG_ERROR, _lineage.summarize_value(f"{type(error).__name__}: {error}", limit=8000)))
        params = [Param(k, v) for k, v in session.pending_params.items()]
        if params or metrics or end_tags:
            try:
                client.log_batch(run_id, metrics=metrics, params=params, tags=end_tags)
            except (Conflict, InvalidArgument):
                if not params:
                    raise
                # One bad or changed param must not cost the metrics: write them apart.
                _log_params(client, run_id, session.pending_params)
                client.log_batch(run_id, metrics=metrics, tags=end_tags)
        client.flush()
    finally:
        if session.backend_tag is not None:
            session.backend_tag.__exit__(None, None, None)
        session.activation.__exit__(None, None, None)
    if session.finalize_here:
        if error is None:
            status, message = RunStatus.FINISHED, None
        elif isinstance(error, Exception):
            status, message = RunStatus.FAILED, f"{type(error).__name__}: {error}"
        else:
            status, message = RunStatus.KILLED, f"{type(error).__name__}: {error}"
        _finish(
            session.spec,
            client,
            run_id,
            status,
            message=message,
            state_name=None,
            flow_run_id=session.flow_run_id if session.mode == "flow" else None,
            flow_run_name=session.flow_run_name,
            flow_name=session.flow_name,
        )


def _end_with_error(session: _Session, error: BaseException) -> None:
    """Record a failed body; a problem doing so never replaces the user's exception."""
    try:
        _end(session, None, error)
    except Exception as end_error:  # noqa: BLE001 - the user's error is the one to see
        error.add_note(f"prefect-mlops: while recording this failure in run {session.run.info.run_id}: {end_error!r}")


def _finish(
    spec: _TrackSpec,
    client: TrackingClient,
    run_id: str,
    status: RunStatus,
    *,
    message: str | None,
    state_name: str | None,
    flow_run_id: str | None,
    flow_run_name: str | None = None,
    flow_name: str | None = None,
) -> None:
    """Terminate the run; for flow runs also create the Prefect artifacts and the event."""
    tags = []
    if state_name:
        tags.append(RunTag(TAG_PREFECT_STATE, state_name))
    if message:
        tags.append(RunTag(TAG_STATE_MESSAGE, _lineage.summarize_value(message, limit=8000)))
    if tags:
        client.log_batch(run_id, tags=tags)
    client.set_terminated(run_id, status)
    if flow_run_id is None:
        return
    if spec.prefect_artifacts or spec.emit_events:
        run = client.get_run(run_id)
        if spec.prefect_artifacts:
            _create_artifacts(client, run, flow_run_id, flow_name)
        if spec.emit_events:
            _emit_run_event(client, run, flow_run_id, flow_run_name, flow_name, message)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "flow"


def _create_artifacts(client: TrackingClient, run: Run, flow_run_id: str, flow_name: str | None) -> None:
    """A table of params and final metrics, and a markdown note naming the tracking run.

    Built here, posted by the background thread (``_background``: the flow does not wait
    for two API calls to show what the run already holds; ``flush()`` waits for them).
    Written through a new API client with the flow-run id given explicitly: the flow's own
    client may be closed by then, and crash and cancellation hooks may run outside any
    flow-run context (e.g. in a runner process).
    """
    try:
        from prefect.artifacts import Artifact, LinkArtifact, MarkdownArtifact, TableArtifact
        from prefect.client.schemas.actions import ArtifactCreate

        info = run.info
        # Metrics first: what the run achieved, before the (often dozens of autologged) params.
        rows: list[dict[str, Any]] = [
            {"kind": "metric", "name": k, "value": float(v)} for k, v in sorted(run.data.metrics.items())
        ]
        rows += [{"kind": "param", "name": k, "value": v} for k, v in sorted(run.data.params.items())]
        slug = _slug(flow_name or "flow")
        experiment_name = _EXPERIMENT_NAMES.get((client.tracking_uri, info.experiment_id))
        if experiment_name is None:
            experiment_name = client.get_experiment(info.experiment_id).name
        markdown = "\n".join(
            [
                f"### Tracking run `{info.run_id}`",
                "",
                "| | |",
                "|---|---|",
                f"| Run name | {info.run_name} |",
                f"| Experiment | {experiment_name} (id {info.experiment_id}) |",
                f"| Status | {info.status.value} |",
                f"| Parent run | {info.parent_run_id or '-'} |",
                f"| Artifact URI | `{info.artifact_uri}` |",
                f"| Tracking URI | `{redact_uri(client.tracking_uri)}` |",
                f"| Model URI prefix | `runs:/{info.run_id}/` |",
                "",
                "```python",
                "from tracking_plugin import TrackingClient",
                f'TrackingClient().get_run_by_prefect_id(flow_run_id="{flow_run_id}")',
                "```",
            ]
        )
        artifacts: list[Artifact] = [
            TableArtifact(
                key=f"{slug}-mlops-params-metrics",
                table=rows or [{"kind": "", "name": "", "value": ""}],
                description=f"Final metrics and params of tracking run `{info.run_id}`",
            ),
            MarkdownArtifact(
                key=f"{slug}-mlops-run",
                markdown=markdown,
                description=f"Tracking run {info.run_id} of this flow run",
            ),
        ]
        if client.tracking_uri.startswith(("http://", "https://")):
            artifacts.append(
                LinkArtifact(
                    key=f"{slug}-mlops-link",
                    link=f"{client.tracking_uri.rstrip('/')}/#/experiments/{info.experiment_id}/runs/{info.run_id}",
                    link_text=f"Tracking run {info.run_id}",
                )
            )
        creates = [
            ArtifactCreate(
                type=artifact.type,
                key=artifact.key,
                description=artifact.description,
                flow_run_id=flow_run_id,  # type: ignore[arg-type]
                data=artifact.format(_sync=True),  # type: ignore[call-arg]
            )
            for artifact in artifacts
        ]
    except Exception as exc:  # noqa: BLE001 - the UI view is a convenience, the run is recorded
        logger.warning("prefect-mlops: could not create the Prefect artifacts of run %s: %s", run.info.run_id, exc)
        return
    _background.submit(functools.partial(_post_artifacts, creates, run.info.run_id))


def _post_artifacts(creates: list[Any], run_id: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.context import SyncClientContext

    # This runs in a copy of the flow's context, whose API client is closed by now:
    # get_client() would hand it back. Only this copy changes.
    SyncClientContext.__var__.set(None)  # type: ignore[arg-type]
    try:
        with get_client(sync_client=True) as prefect_client:
            for create in creates:
                prefect_client.create_artifact(artifact=create)
    except Exception as exc:  # noqa: BLE001 - the UI view is a convenience, the run is recorded
        logger.warning("prefect-mlops: could not create the Prefect artifacts of run %s: %s", run_id, exc)


def _prefect_client() -> Any:
    """The running flow's sync API client if there is one (no new connection), else a new one."""
    import contextlib

    from prefect.client.orchestration import SyncPrefectClient, get_client

    running = getattr(FlowRunContext.get(), "client", None)
    if isinstance(running, SyncPrefectClient):
        return contextlib.nullcontext(running)
    return get_client(sync_client=True)


def _emit_run_event(
    client: TrackingClient,
    run: Run,
    flow_run_id: str,
    flow_run_name: str | None,
    flow_name: str | None,
    message: str | None,
) -> None:
    info = run.info
    event = RUN_FINISHED if info.status is RunStatus.FINISHED else RUN_FAILED
    emit(
        event,
        flow_run_resource(flow_run_id, name=flow_run_name),
        related=[
            {**run_resource(info.run_id, name=info.run_name, role="tracking-run"), "mlops.run.status": info.status.value},
            {
                "prefect.resource.id": f"mlops.experiment.{info.experiment_id}",
                "prefect.resource.role": "experiment",
            },
        ],
        payload={
            "run_id": info.run_id,
            "experiment_id": info.experiment_id,
            "status": info.status.value,
            "flow_name": flow_name,
            "message": message,
            "metrics": {k: float(v) for k, v in run.data.metrics.items()},
        },
    )


# ---------------------------------------------------------------- Prefect hooks


class _FlowHook:
    """Sets the tracking run's final status from the flow run's final Prefect state.

    Runs in the flow's process, or in the runner's process for crashes and cancellations
    it observes from outside, so it finds the run by the flow-run id.
    """

    def __init__(self, spec: _TrackSpec, status: RunStatus) -> None:
        self.spec = spec
        self.status = status
        self.__name__ = f"mlops_track_{status.value.lower()}"

    def __call__(self, flow: Any, flow_run: Any, state: Any) -> None:
        try:
            self._close(flow, flow_run, state)
        except MlopsError as exc:
            # Prefect would log a traceback and carry on; one line says it better, and
            # `prefect-mlops reconcile` closes the run later.
            logger.warning("prefect-mlops: could not close the run of flow run %s: %s", flow_run.id, exc)

    def _close(self, flow: Any, flow_run: Any, state: Any) -> None:
        flow_run_id = str(flow_run.id)
        client = _OPEN.pop(f"flow:{flow_run_id}", None) or _client_for_run(self.spec, flow_run)
        run_id = _RUN_IDS.get(f"flow:{flow_run_id}")
        if run_id is None:
            run = client.get_run_by_prefect_id(flow_run_id=flow_run_id)
            if run is None:
                return  # the body never started (e.g. crashed before), nothing to close
            run_id = run.info.run_id
        status = self.status
        _finish(
            self.spec,
            client,
            run_id,
            status,
            message=state.message if status is not RunStatus.FINISHED else None,
            state_name=state.name,
            flow_run_id=flow_run_id,
            flow_run_name=flow_run.name,
            flow_name=getattr(flow, "name", None),
        )


class _TaskHook:
    """Sets a tracked task's child run status from the task run's final state."""

    def __init__(self, spec: _TrackSpec, status: RunStatus) -> None:
        self.spec = spec
        self.status = status
        self.__name__ = f"mlops_track_task_{status.value.lower()}"

    def __call__(self, task: Any, task_run: Any, state: Any) -> None:
        try:
            self._close(task_run, state)
        except MlopsError as exc:
            logger.warning("prefect-mlops: could not close the run of task run %s: %s", task_run.id, exc)

    def _close(self, task_run: Any, state: Any) -> None:
        task_run_id = str(task_run.id)
        run_id = _RUN_IDS.get(f"task:{task_run_id}")
        client = _OPEN.pop(f"task:{task_run_id}", None) or _client_for_run(self.spec, task_run)
        if run_id is None:
            run = client.get_run_by_prefect_id(task_run_id=task_run_id)
            if run is None:
                return  # cached result: the body did not run, there is no child run
            run_id = run.info.run_id
        _finish(
            self.spec,
            client,
            run_id,
            self.status,
            message=state.message if self.status is not RunStatus.FINISHED else None,
            state_name=state.name if self.status is not RunStatus.FINISHED else None,
            flow_run_id=None,
        )


# ---------------------------------------------------------------- run resolver


def _tracked_ancestor_run_id(client: TrackingClient, parent_task_run_id: str) -> str | None:
    """For a subflow started outside its parent's context: the parent flow run's run."""
    try:
        with _prefect_client() as prefect_client:
            parent_flow_run_id = prefect_client.read_task_run(parent_task_run_id).flow_run_id
    except Exception as exc:  # noqa: BLE001 - without it the run is top-level, not lost
        logger.debug("prefect-mlops: could not read parent task run %s: %s", parent_task_run_id, exc)
        return None
    if parent_flow_run_id is None:
        return None
    run = client.get_run_by_prefect_id(flow_run_id=str(parent_flow_run_id))
    return run.info.run_id if run is not None else None


def _run_id_for_flow_run(flow_run_id: str, flow_ctx: Any, client: TrackingClient) -> str | None:
    """The tracking run of a flow run, looked up in ``client``'s backend (cached)."""
    key = f"flow:{flow_run_id}"
    if key in _RUN_IDS:
        return _RUN_IDS[key]
    flow = getattr(flow_ctx, "flow", None) if flow_ctx is not None else None
    spec = getattr(getattr(flow, "fn", None), _SPEC_ATTR, None)
    if flow is not None and spec is None:
        _remember(key, None)  # an untracked flow: nothing to attach to
        return None
    run = client.get_run_by_prefect_id(flow_run_id=flow_run_id)
    run_id = run.info.run_id if run is not None else None
    _remember(key, run_id)
    return run_id


def current_tracking_run_id() -> str | None:
    """The tracking run of the current Prefect flow run (or tracked task run), or None.

    Works in the flow, in its tasks' threads and in Dask worker processes: it reads the
    Prefect run context (not a process global) and looks the run up by its Prefect id, in
    the flow's backend (see the module's notes on backends).
    """
    resolved = _current_tracking_run()
    return resolved[0] if resolved is not None else None


def _current_tracking_run() -> tuple[str, TrackingClient] | None:
    """(run id, client of its backend) for the current Prefect run; the resolver the fluent
    API asks when no run is active."""
    task_ctx = TaskRunContext.get()
    flow_ctx = FlowRunContext.get()
    if task_ctx is None and flow_ctx is None:
        return None
    flow = getattr(flow_ctx, "flow", None) if flow_ctx is not None else None
    spec = getattr(getattr(flow, "fn", None), _SPEC_ATTR, None)
    if task_ctx is not None:
        task_run = task_ctx.task_run
        key = f"task:{task_run.id}"
        own = _RUN_IDS.get(key)
        if own:
            return own, _OPEN.get(key) or _client_for_run(None, task_run)
        flow_run_id = task_run.flow_run_id
        client = _client_for_run(spec, task_run)
    else:
        assert flow_ctx is not None
        flow_run_id = flow_ctx.flow_run.id if flow_ctx.flow_run is not None else None
        client = _client_for_run(spec, flow_ctx.flow_run)
    if flow_run_id is None:
        return None
    try:
        run_id = _run_id_for_flow_run(str(flow_run_id), flow_ctx, client)
    except MlopsError as exc:
        logger.warning("prefect-mlops: could not find the tracking run of flow run %s: %s", flow_run_id, exc)
        return None
    return (run_id, client) if run_id is not None else None


_context.register_run_resolver(_current_tracking_run)
