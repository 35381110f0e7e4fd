"""``@track``: wraps a Prefect flow or task (or a plain function) so that each call is a
tracking run (see :mod:`tracking_plugin.prefect`)."""

from __future__ import annotations

import functools
import inspect
import logging
import types
from collections.abc import Mapping
from typing import Any, Callable, Sequence, TypeVar, overload

from prefect import Flow, Task

from tracking_plugin.entities import RunStatus
from tracking_plugin.validation import validate_key
from tracking_plugin.prefect._backends import _SPEC_ATTR, _TrackSpec
from tracking_plugin.prefect._lifecycle import _FlowHook, _TaskHook, _begin, _end, _end_with_error

# One logger for the whole integration, as before the split (users filter on its name).
logger = logging.getLogger("tracking_plugin.prefect")

T = TypeVar("T")


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
