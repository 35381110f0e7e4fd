"""A tracked run's life: begin (get or create the run keyed by the Prefect id, tags,
params), end (returned metrics, final status from the Prefect state) and the Prefect hooks
that close it."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import numbers
import time
from collections.abc import Mapping
from typing import Any, Callable

from prefect.context import FlowRunContext, TaskRunContext

from tracking_plugin import _context, _lineage
from tracking_plugin.entities import Metric, Param, Run, RunStatus, RunTag
from tracking_plugin.errors import AlreadyExists, Conflict, InvalidArgument, MlopsError
from tracking_plugin.client import TrackingClient
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
from tracking_plugin.validation import validate_key
from tracking_plugin.prefect._backends import PREFECT_TAG_BACKEND_BLOCK, _CACHE_LIMIT, _OPEN, _RUN_EXPERIMENTS, _RUN_IDS, _TrackSpec, _backend_block, _client_for_run, _experiment_id, _names_backend, _remember
from tracking_plugin.prefect._ui import _create_artifacts, _emit_run_event, _prefect_client
from tracking_plugin.prefect._resolver import _run_id_for_flow_run, _tracked_ancestor_run_id

# One logger for the whole integration, as before the split (users filter on its name).
logger = logging.getLogger("tracking_plugin.prefect")


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
