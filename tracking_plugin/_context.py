"""Which run the fluent API logs to: the active-run stack and the run resolvers.

The stack lives in a :class:`contextvars.ContextVar` holding an immutable tuple, so each
thread and each asyncio task sees its own stack, and a thread started with a copy of the
caller's context (Prefect's task runner does this) logs to the caller's run without being
able to change the caller's stack.

When the stack is empty, the fluent API asks the registered *run resolvers*, in order, for
a run id (or a ``(run id, client)`` pair, when the run lives in another backend than the
fluent API's). The Prefect integration registers one that maps the current flow or task
run to its tracking run, so ``log_metric`` inside a tracked flow needs no ``start_run``::

    from tracking_plugin._context import register_run_resolver

    register_run_resolver(lambda: lookup_tracking_run_id_for_current_flow_run())

This module imports neither Prefect nor the fluent API.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from types import TracebackType
from typing import Any, Callable, Iterator

from tracking_plugin.client import TrackingClient, _run_status, default_client
from tracking_plugin.entities import Run, RunData, RunInfo, RunStatus

__all__ = [
    "ActiveRun",
    "active_run_stack",
    "current_run",
    "pop_active_run",
    "register_run_resolver",
    "resolve_run_id",
    "set_active_run",
    "unregister_run_resolver",
    "using_active_run",
]

RunResolver = Callable[[], "str | tuple[str, TrackingClient] | None"]

_ACTIVE_RUNS: contextvars.ContextVar[tuple["ActiveRun", ...]] = contextvars.ContextVar(
    "prefect_mlops_active_runs", default=()
)
# Resolvers are registered once per process by integrations; a tuple swapped under a lock
# so readers on the hot path iterate without locking.
_RESOLVERS: tuple[RunResolver, ...] = ()
_RESOLVERS_LOCK = threading.Lock()


class ActiveRun:
    """A run made active by :func:`tracking_plugin.start_run`; also a context manager.

    Leaving the ``with`` block ends the run: ``FINISHED`` on success, ``FAILED`` when the
    block raised, ``KILLED`` on ``KeyboardInterrupt``. Buffered metrics are written first.

    ``info`` and ``data`` are a snapshot taken when the run became active, as in MLflow;
    call :func:`tracking_plugin.get_run` for current values.
    """

    __slots__ = ("_run", "client")

    def __init__(self, run: Run, client: TrackingClient) -> None:
        self._run = run
        self.client = client

    @property
    def info(self) -> RunInfo:
        return self._run.info

    @property
    def data(self) -> RunData:
        return self._run.data

    @property
    def run_id(self) -> str:
        return self._run.info.run_id

    def __repr__(self) -> str:
        return f"<ActiveRun: run_id={self.run_id!r}, experiment_id={self.info.experiment_id!r}>"

    def __enter__(self) -> ActiveRun:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        # Compare ids, not identity: code may end a run and resume it under the same id.
        if not any(r.run_id == self.run_id for r in _ACTIVE_RUNS.get()):
            return
        if exc_type is None:
            status = RunStatus.FINISHED
        elif issubclass(exc_type, KeyboardInterrupt):
            status = RunStatus.KILLED
        else:
            status = RunStatus.FAILED
        # Runs started inside this block without their own ``with`` end with it (MLflow would
        # end only the innermost one and leave this run active).
        first_error: Exception | None = None
        while _ACTIVE_RUNS.get():
            top = _ACTIVE_RUNS.get()[-1]
            try:
                end_active_run(status)  # pops first, so this loop always progresses
            except Exception as exc:  # noqa: BLE001 - raised or attached below
                first_error = first_error or exc
            if top.run_id == self.run_id:
                break
        if first_error is None:
            return
        if exc_val is None:
            raise first_error
        # Never hide the user's exception: the run is terminated before a buffered-write
        # error is raised (see end_active_run); attach ours to theirs.
        exc_val.add_note(f"prefect-mlops: while ending run {self.run_id}: {first_error!r}")


def active_run_stack() -> tuple[ActiveRun, ...]:
    """The active runs of the current context, outermost first."""
    return _ACTIVE_RUNS.get()


def current_run() -> ActiveRun | None:
    """The innermost active run of this context, or None (resolvers are not asked)."""
    stack = _ACTIVE_RUNS.get()
    return stack[-1] if stack else None


def set_active_run(run: Run | ActiveRun, client: TrackingClient | None = None) -> ActiveRun:
    """Push ``run`` on this context's stack and return its :class:`ActiveRun`.

    ``client`` is the client that logs to it (default: one for the current settings).
    Undo with :func:`pop_active_run`, or use :func:`using_active_run`.
    """
    if isinstance(run, ActiveRun):
        active = run
    else:
        if client is None:
            client = default_client()
        active = ActiveRun(run, client)
    _ACTIVE_RUNS.set((*_ACTIVE_RUNS.get(), active))
    return active


def pop_active_run(run_id: str | None = None) -> ActiveRun | None:
    """Remove the innermost active run (or the one with ``run_id``) without ending it."""
    stack = _ACTIVE_RUNS.get()
    if not stack:
        return None
    if run_id is None:
        _ACTIVE_RUNS.set(stack[:-1])
        return stack[-1]
    for index in range(len(stack) - 1, -1, -1):
        if stack[index].run_id == run_id:
            _ACTIVE_RUNS.set(stack[:index] + stack[index + 1 :])
            return stack[index]
    return None


@contextlib.contextmanager
def using_active_run(run: Run | ActiveRun, client: TrackingClient | None = None) -> Iterator[ActiveRun]:
    """Make ``run`` active inside the block, then restore the previous stack exactly.

    The run is not ended: whoever created it decides its final status.
    """
    token = _ACTIVE_RUNS.set(_ACTIVE_RUNS.get())
    try:
        yield set_active_run(run, client)
    finally:
        _ACTIVE_RUNS.reset(token)


def register_run_resolver(resolver: RunResolver) -> None:
    """Ask ``resolver()`` for a run id whenever the active-run stack is empty.

    Resolvers are asked in registration order; the first non-empty answer wins. An answer
    is a run id (in the fluent API's backend) or a ``(run id, client)`` pair (the run lives
    in ``client``'s backend). A resolver must be cheap (it runs on every fluent call
    outside ``start_run``) and return None when it does not apply. Registering the same
    function twice has no effect.
    """
    global _RESOLVERS
    with _RESOLVERS_LOCK:
        if resolver not in _RESOLVERS:
            _RESOLVERS = (*_RESOLVERS, resolver)


def unregister_run_resolver(resolver: RunResolver) -> None:
    global _RESOLVERS
    with _RESOLVERS_LOCK:
        _RESOLVERS = tuple(r for r in _RESOLVERS if r is not resolver)


def resolve_run_id() -> str | None:
    """The run id the fluent API would log to now, without starting a run."""
    stack = _ACTIVE_RUNS.get()
    if stack:
        return stack[-1].run_id
    return _from_resolvers()


def _from_resolvers() -> str | None:
    resolved = _resolve()
    return resolved[0] if resolved is not None else None


def _resolve() -> tuple[str, TrackingClient | None] | None:
    """The first resolver's answer as ``(run id, client or None for the fluent API's)``."""
    for resolver in _RESOLVERS:
        answer = resolver()
        if isinstance(answer, tuple):
            return answer
        if answer:
            return answer, None
    return None


# ------------------------------------------------------------------ ending runs

_LAST_ACTIVE: list[Any] = [None]  # (run_id, client) of the run ended last in this process


def end_active_run(status: RunStatus | str = RunStatus.FINISHED) -> None:
    """Pop the innermost active run and terminate it with ``status`` (no-op if none).

    Buffered metrics are written before the status changes; if writing them fails, the run
    is still terminated and the error is raised afterwards.
    """
    final = _run_status(status)  # refuse a bad status before the run leaves the stack
    stack = _ACTIVE_RUNS.get()
    if not stack:
        return
    run = stack[-1]
    _ACTIVE_RUNS.set(stack[:-1])
    _LAST_ACTIVE[0] = (run.run_id, run.client)
    run.client.set_terminated(run.run_id, final)


def last_active_run_ref() -> tuple[str, TrackingClient] | None:
    return _LAST_ACTIVE[0]
