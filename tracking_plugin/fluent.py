# Over 600 lines on purpose: MLflow's module-level API (~40 functions), each a thin call on the
# client of the active run; the state they share is the active-run stack in _context.py.
"""The fluent tracking API: module-level functions with MLflow's names and meaning.

>>> import tracking_plugin as mlops                                  # doctest: +SKIP
>>> mlops.set_experiment("churn")                                    # doctest: +SKIP
>>> with mlops.start_run(run_name="baseline"):                       # doctest: +SKIP
...     mlops.log_params({"C": 1.0, "penalty": "l2"})
...     for epoch in range(3):
...         mlops.log_metric("loss", 1 / (epoch + 1), step=epoch)
>>> mlops.search_runs(filter_string="metrics.loss < 0.5")            # doctest: +SKIP

Which run a call logs to: the innermost run started with :func:`start_run` in the current
thread/task context; if there is none, the first answer of the registered run resolvers
(the Prefect integration maps the current flow or task run to its tracking run); if there
is none either, a run is started in the active experiment, as MLflow does, and ended at
interpreter exit.

Where it logs: :func:`set_tracking_uri`, else ``PREFECT_MLOPS_TRACKING_URI``, else
``sqlite:///mlops.db`` in the working directory. This module never imports Prefect.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from tracking_plugin import _background, _buffer, backend
from tracking_plugin import client as client_module
from tracking_plugin.artifacts import join_artifact_uri
from tracking_plugin._context import (
    ActiveRun,
    _resolve,
    _ACTIVE_RUNS,
    active_run_stack,
    end_active_run,
    last_active_run_ref,
)
from tracking_plugin.client import (
    TrackingClient,
    _current_user,
    _experiment_id,
    default_client,
)
from tracking_plugin.entities import (
    Experiment,
    LifecycleStage,
    Metric,
    Param,
    Run,
    RunStatus,
    RunTag,
    ViewType,
)
from tracking_plugin.errors import AlreadyExists, Conflict, InvalidArgument, NotFound
from tracking_plugin.tags import TAG_NOTE, TAG_PARENT_RUN_ID, TAG_SOURCE_NAME, TAG_SOURCE_TYPE, TAG_USER

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "ActiveRun",
    "active_run",
    "create_experiment",
    "delete_experiment",
    "delete_run",
    "delete_tag",
    "end_run",
    "flush",
    "get_artifact_uri",
    "get_experiment",
    "get_experiment_by_name",
    "get_run",
    "get_tracking_uri",
    "last_active_run",
    "log_artifact",
    "log_artifacts",
    "log_dict",
    "log_figure",
    "log_image",
    "log_metric",
    "log_metrics",
    "log_param",
    "log_params",
    "log_text",
    "search_experiments",
    "search_runs",
    "set_experiment",
    "set_experiment_tag",
    "set_tag",
    "set_tags",
    "set_tracking_uri",
    "start_run",
]

logger = logging.getLogger(__name__)

DEFAULT_EXPERIMENT_NAME = "Default"
# Page size when search_runs collects many runs into one DataFrame.
_SEARCH_PAGE_SIZE = 10_000

# The process-wide choice MLflow also keeps process-wide: the active experiment
# (remembered with the database it belongs to). The URI set in code lives in
# tracking_plugin.backend, which every default client reads.
_STATE_LOCK = threading.Lock()
_active_experiment: tuple[str, str] | None = None  # (resolved tracking URI, experiment id)
_ENV_NAMES = client_module._ENV_NAMES


# ------------------------------------------------------------------ clients


def _default_client() -> TrackingClient:
    """The configured default client (:func:`tracking_plugin.client.default_client`)."""
    return default_client()


def set_tracking_uri(uri: str | os.PathLike[str] | None) -> None:
    """Log to ``uri`` from now on (a SQLAlchemy URL such as ``sqlite:///mlops.db`` or
    ``postgresql+psycopg://user@host/db``); None goes back to the configured default.
    ``TrackingClient()`` and ``RegistryClient()`` follow it too, as ``MlflowClient()``
    follows ``mlflow.set_tracking_uri()``."""
    backend.set_tracking_uri(uri)


def current_client() -> TrackingClient:
    """The client of the backend in use here: the active run's (inside a tracked Prefect
    flow, its tasks and its Dask workers, the flow's backend), else the default client
    (``set_tracking_uri()``, else ``PREFECT_MLOPS_BLOCK``, else ``PREFECT_MLOPS_*``).

    Model URIs (``runs:/``, ``models:/``), ``register_model`` and the registry and serving
    tasks resolve against it.
    """
    stack = _ACTIVE_RUNS.get()
    if stack:
        return stack[-1].client
    resolved = _resolve()
    if resolved is not None and resolved[1] is not None:
        return resolved[1]
    return _default_client()


def get_tracking_uri() -> str:
    """The tracking URI in use: set in code, else the block ``PREFECT_MLOPS_BLOCK`` names,
    else ``PREFECT_MLOPS_TRACKING_URI``, else ``sqlite:///mlops.db``."""
    override = backend.get_tracking_uri_override()
    if override is not None:
        return override
    return _default_client().settings.tracking_uri


# -------------------------------------------------------------- experiments


def _get_or_create_experiment(client: TrackingClient, name: str) -> Experiment:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            client.create_experiment(name)
        except AlreadyExists:
            pass  # another process created it between our read and our insert
        experiment = client.get_experiment_by_name(name)
        if experiment is None:  # pragma: no cover - deleted again in between
            raise NotFound(f"Experiment {name!r} vanished while it was being created; retry.")
    return experiment


def set_experiment(experiment_name: str | None = None, experiment_id: str | None = None) -> Experiment:
    """Make an experiment active (creating it by name if it does not exist) and return it.

    Runs started afterwards without ``experiment_id`` go to it. A deleted experiment is
    refused: restore it first.
    """
    global _active_experiment
    if (experiment_name is None) == (experiment_id is None):
        raise InvalidArgument(
            "set_experiment needs exactly one of experiment_name or experiment_id, "
            f"got experiment_name={experiment_name!r}, experiment_id={experiment_id!r}."
        )
    client = _default_client()
    if experiment_id is not None:
        experiment = client.get_experiment(_experiment_id(experiment_id))
    else:
        experiment = _get_or_create_experiment(client, experiment_name)  # type: ignore[arg-type]
    if experiment.lifecycle_stage == LifecycleStage.DELETED:
        raise Conflict(
            f"Cannot set the deleted experiment {experiment.name!r} (id {experiment.experiment_id}) "
            "as the active experiment. Restore it with TrackingClient().restore_experiment("
            f"{experiment.experiment_id!r}) or choose another name."
        )
    _active_experiment = (client.tracking_uri, experiment.experiment_id)
    return experiment


def _active_experiment_id(client: TrackingClient) -> str:
    active = _active_experiment
    if active is not None and active[0] == client.tracking_uri:
        return active[1]
    return _get_or_create_experiment(client, DEFAULT_EXPERIMENT_NAME).experiment_id


def create_experiment(
    name: str, artifact_location: str | None = None, tags: Mapping[str, Any] | None = None
) -> str:
    """Create an experiment; return its id (``AlreadyExists`` if the name is taken)."""
    return _default_client().create_experiment(name, artifact_location, tags)


def get_experiment(experiment_id: str) -> Experiment:
    """The experiment with this id; ``NotFound`` if unknown."""
    return _default_client().get_experiment(experiment_id)


def get_experiment_by_name(name: str) -> Experiment | None:
    """The experiment called ``name``, or None."""
    return _default_client().get_experiment_by_name(name)


def search_experiments(
    view_type: ViewType | str | int = ViewType.ACTIVE_ONLY,
    max_results: int | None = None,
    filter_string: str | None = None,
    order_by: Sequence[str] | None = None,
) -> list[Experiment]:
    """All experiments matching the filter (every page), e.g. ``"name LIKE 'churn%'"``."""
    client = _default_client()
    found: list[Experiment] = []
    token: str | None = None
    while max_results is None or len(found) < max_results:
        page_size = 1000 if max_results is None else min(1000, max_results - len(found))
        page = client.search_experiments(view_type, page_size, filter_string, order_by, token)
        found.extend(page.items)
        token = page.token
        if not token:
            break
    return found


def delete_experiment(experiment_id: str) -> None:
    """Mark an experiment deleted (restorable)."""
    _default_client().delete_experiment(experiment_id)


def set_experiment_tag(key: str, value: Any) -> None:
    """Tag the active experiment."""
    client = _default_client()
    client.set_experiment_tag(_active_experiment_id(client), key, value)


# --------------------------------------------------------------------- runs


_SOURCE_TAGS: dict[str, str] = {}


def _context_tags() -> dict[str, str]:
    """MLflow's automatic run tags; computed once per process (they cannot change)."""
    if not _SOURCE_TAGS:
        source = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "<console>"
        _SOURCE_TAGS.update(
            {TAG_USER: _current_user(), TAG_SOURCE_NAME: source, TAG_SOURCE_TYPE: "LOCAL"}
        )
    return _SOURCE_TAGS


def start_run(
    run_id: str | None = None,
    experiment_id: str | None = None,
    run_name: str | None = None,
    nested: bool = False,
    parent_run_id: str | None = None,
    tags: Mapping[str, Any] | None = None,
    description: str | None = None,
) -> ActiveRun:
    """Start a run (or resume ``run_id``) and make it active; use it as a context manager.

    - A second run while one is active needs ``nested=True``; it becomes a child (tag
      ``mlflow.parentRunId``). Inside a tracked Prefect flow or task (a run resolver
      answers) a new run is a child of that run.
    - Leaving the ``with`` block ends the run: ``FINISHED``, ``FAILED`` on an exception,
      ``KILLED`` on ``KeyboardInterrupt``.
    - ``description`` is stored as the tag ``mlflow.note.content``.

    >>> with start_run(run_name="baseline") as run:     # doctest: +SKIP
    ...     log_param("C", 1.0)
    """
    stack = active_run_stack()
    if stack and not nested:
        raise Conflict(
            f"Run with UUID {stack[0].run_id} is already active. To start a new run, first end "
            "the current run with end_run(). To start a nested run, call start_run with nested=True."
        )
    # A new run nested in another (or in a tracked Prefect run) goes to its parent's backend.
    resolved = None if stack or run_id is not None or parent_run_id is not None else _resolve()
    if run_id is not None:
        client = _default_client()
    elif stack:
        client = stack[-1].client
    elif resolved is not None and resolved[1] is not None:
        client = resolved[1]
    else:
        client = _default_client()
    user_tags = {k: v if isinstance(v, str) else str(v) for k, v in (tags or {}).items()}
    if description is not None:
        if TAG_NOTE in user_tags:
            raise InvalidArgument(
                f"The description is given twice: as description= and as the tag {TAG_NOTE!r}. "
                "Remove one of them."
            )
        user_tags[TAG_NOTE] = description

    if run_id is not None:
        run = _resume_run(client, run_id, experiment_id, run_name, user_tags)
    else:
        if parent_run_id is not None:
            if stack and parent_run_id != stack[-1].run_id:
                raise InvalidArgument(
                    f"Current run with UUID {stack[-1].run_id} does not match the specified "
                    f"parent_run_id {parent_run_id}. To start a run under {parent_run_id}, first "
                    "end the current run with end_run()."
                )
            parent = client.get_run(parent_run_id)
            if parent.info.lifecycle_stage == LifecycleStage.DELETED:
                raise Conflict(f"Cannot start a run under parent run {parent_run_id}: it is deleted.")
        elif stack:
            parent_run_id = stack[-1].run_id
        elif resolved is not None:
            parent_run_id = resolved[0]
        if experiment_id is None:
            experiment_id = _active_experiment_id(client)
        run_tags = {**_context_tags(), **user_tags}
        if parent_run_id is not None:
            run_tags[TAG_PARENT_RUN_ID] = parent_run_id
        run = client.create_run(
            _experiment_id(experiment_id), tags=run_tags, run_name=run_name, parent_run_id=parent_run_id
        )
    active = ActiveRun(run, client)
    _ACTIVE_RUNS.set((*_ACTIVE_RUNS.get(), active))
    return active


def _resume_run(
    client: TrackingClient,
    run_id: str,
    experiment_id: str | None,
    run_name: str | None,
    tags: dict[str, str],
) -> Run:
    run = client.get_run(run_id)
    if run.info.lifecycle_stage == LifecycleStage.DELETED:
        raise Conflict(
            f"Cannot resume run {run_id}: it is deleted. Restore it first with "
            "TrackingClient().restore_run(run_id), or start a new run."
        )
    if experiment_id is not None and _experiment_id(experiment_id) != run.info.experiment_id:
        raise InvalidArgument(
            f"Cannot resume run {run_id} in experiment {experiment_id}: it belongs to experiment "
            f"{run.info.experiment_id}. Omit experiment_id or pass {run.info.experiment_id!r}."
        )
    client.store.update_run_info(run_id, status=RunStatus.RUNNING, run_name=run_name)
    if tags:
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    return client.get_run(run_id)


def end_run(status: RunStatus | str = RunStatus.FINISHED) -> None:
    """End the innermost active run (no-op if none) after writing its buffered metrics."""
    end_active_run(status)


def active_run() -> ActiveRun | None:
    """The run the fluent API logs to now, or None (never starts one)."""
    stack = _ACTIVE_RUNS.get()
    if stack:
        return stack[-1]
    resolved = _resolve()
    if resolved is None:
        return None
    run_id, client = resolved[0], resolved[1] or _default_client()
    return ActiveRun(client.get_run(run_id), client)


def last_active_run() -> Run | None:
    """The active run, else the run ended last in this process (fresh from the store)."""
    current = active_run()
    if current is not None:
        return current.client.get_run(current.run_id)
    ref = last_active_run_ref()
    if ref is None:
        return None
    run_id, client = ref
    return client.get_run(run_id)


def _target(run_id: str | None = None) -> tuple[TrackingClient, str]:
    """(client, run id) a logging call writes to; starts a run like MLflow if none is active."""
    if run_id is not None:
        return _default_client(), run_id
    stack = _ACTIVE_RUNS.get()
    if stack:
        top = stack[-1]
        return top.client, top.run_id
    resolved = _resolve()
    if resolved is not None:
        return resolved[1] or _default_client(), resolved[0]
    started = start_run()
    return started.client, started.run_id


def get_run(run_id: str) -> Run:
    """A run with its latest metrics, params and tags; ``NotFound`` if unknown."""
    return _default_client().get_run(run_id)


def delete_run(run_id: str) -> None:
    """Mark a run deleted (restorable); search hides it."""
    _default_client().delete_run(run_id)


# -------------------------------------------------------------------- data


def log_metric(
    key: str,
    value: float,
    step: int | None = None,
    synchronous: bool | None = None,
    timestamp: int | None = None,
    run_id: str | None = None,
) -> None:
    """Log one metric point to the active run (``step`` default 0, ``timestamp`` now, in ms).

    ``synchronous=False`` (or ``PREFECT_MLOPS_ASYNC_LOGGING=true``) queues the point for a
    background writer; :func:`flush` and :func:`end_run` wait for it.
    """
    client, target = _target(run_id)
    client.log_metric(target, key, value, timestamp, step, synchronous)


def log_metrics(
    metrics: Mapping[str, float],
    step: int | None = None,
    synchronous: bool | None = None,
    run_id: str | None = None,
    timestamp: int | None = None,
) -> None:
    """Log several metrics at the same step and timestamp in one write."""
    client, target = _target(run_id)
    ts = int(time.time() * 1000) if timestamp is None else timestamp
    step = 0 if step is None else step
    client.log_batch(
        target, metrics=[Metric(k, v, ts, step) for k, v in metrics.items()], synchronous=synchronous
    )


def log_param(key: str, value: Any, synchronous: bool | None = None) -> Any:
    """Log a param (stored as ``str(value)``) and return ``value``.

    Params and tags are always written at once (``synchronous`` is accepted for MLflow
    compatibility): a changed value must raise ``Conflict`` at the call.
    """
    client, target = _target()
    return client.log_param(target, key, value)


def log_params(params: Mapping[str, Any], synchronous: bool | None = None, run_id: str | None = None) -> None:
    """Log several params in one write; a changed value of a logged key raises ``Conflict``."""
    client, target = _target(run_id)
    client.log_batch(target, params=[Param(k, v if isinstance(v, str) else str(v)) for k, v in params.items()])


def set_tag(key: str, value: Any, synchronous: bool | None = None) -> None:
    """Set a tag on the active run (stored as ``str(value)``)."""
    client, target = _target()
    client.set_tag(target, key, value)


def set_tags(tags: Mapping[str, Any], synchronous: bool | None = None) -> None:
    """Set several tags on the active run in one write."""
    client, target = _target()
    client.log_batch(target, tags=[RunTag(k, v if isinstance(v, str) else str(v)) for k, v in tags.items()])


def delete_tag(key: str) -> None:
    """Remove a tag from the active run."""
    client, target = _target()
    client.delete_tag(target, key)


def flush(timeout: float | None = None) -> None:
    """Wait until everything this process still writes in the background is written:
    buffered metrics (``synchronous=False``), then the Prefect artifacts of tracked flow
    runs that have ended. Raises the first error of a buffered write, or ``TimeoutError``
    after ``timeout`` seconds (each)."""
    _buffer.get_buffer().flush(timeout)
    _background.wait(timeout)


# --------------------------------------------------------------- artifacts


def log_artifact(local_path: str | os.PathLike[str], artifact_path: str | None = None, run_id: str | None = None) -> None:
    """Copy a local file into the active run's artifacts (under ``artifact_path``)."""
    client, target = _target(run_id)
    client.log_artifact(target, local_path, artifact_path)


def log_artifacts(local_dir: str | os.PathLike[str], artifact_path: str | None = None, run_id: str | None = None) -> None:
    """Copy a local directory's contents into the active run's artifacts."""
    client, target = _target(run_id)
    client.log_artifacts(target, local_dir, artifact_path)


def log_dict(dictionary: Any, artifact_file: str, run_id: str | None = None) -> None:
    """Save a dict as JSON, or YAML when ``artifact_file`` ends in ``.yaml``/``.yml``."""
    client, target = _target(run_id)
    client.log_dict(target, dictionary, artifact_file)


def log_text(text: str, artifact_file: str, run_id: str | None = None) -> None:
    """Save ``text`` (UTF-8) as ``artifact_file`` of the active run."""
    client, target = _target(run_id)
    client.log_text(target, text, artifact_file)


def log_figure(figure: Any, artifact_file: str, *, save_kwargs: dict[str, Any] | None = None, run_id: str | None = None) -> None:
    """Save a matplotlib (or plotly, as .html) figure as ``artifact_file``."""
    client, target = _target(run_id)
    client.log_figure(target, figure, artifact_file, save_kwargs=save_kwargs)


def log_image(image: Any, artifact_file: str, *, run_id: str | None = None) -> None:
    """Save a numpy array or PIL image as ``artifact_file``."""
    client, target = _target(run_id)
    client.log_image(target, image, artifact_file)


def get_artifact_uri(artifact_path: str | None = None) -> str:
    """Absolute URI of the active run's artifacts, or of ``artifact_path`` inside them."""
    stack = _ACTIVE_RUNS.get()
    if stack:
        base = stack[-1].info.artifact_uri
    else:
        client, target = _target()
        base = client.get_run(target).info.artifact_uri
    return join_artifact_uri(base, artifact_path)


# ------------------------------------------------------------------ search

_BASE_COLUMNS = ("run_id", "experiment_id", "status", "artifact_uri", "start_time", "end_time")


def search_runs(
    experiment_ids: Sequence[str] | str | None = None,
    filter_string: str = "",
    run_view_type: ViewType | str | int = ViewType.ACTIVE_ONLY,
    max_results: int = 100_000,
    order_by: Sequence[str] | None = None,
    output_format: str = "pandas",
    search_all_experiments: bool = False,
    experiment_names: Sequence[str] | None = None,
) -> pd.DataFrame | list[Run]:
    """Runs as a pandas DataFrame (MLflow's shape) or, with ``output_format="list"``, Runs.

    Columns: ``run_id, experiment_id, status, artifact_uri, start_time, end_time`` (UTC
    datetimes), then ``metrics.<key>`` (latest values, NaN when absent), ``params.<key>``
    and ``tags.<key>`` (None when absent). Without experiment ids or names, searches the
    active experiment (or all experiments with ``search_all_experiments=True``).

    >>> search_runs(filter_string="metrics.auc > 0.9", order_by=["metrics.auc DESC"])  # doctest: +SKIP
    """
    if output_format not in ("pandas", "list"):
        raise InvalidArgument(f"Unsupported output_format {output_format!r}: use 'pandas' or 'list'.")
    if isinstance(experiment_ids, (str, int)):
        experiment_ids = [str(experiment_ids)]
    if experiment_ids and experiment_names:
        raise InvalidArgument("Pass experiment_ids or experiment_names to search_runs, not both.")
    client = _default_client()
    if experiment_names:
        ids = []
        for name in experiment_names:
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                logger.warning("search_runs: no experiment named %r", name)
            else:
                ids.append(experiment.experiment_id)
    elif experiment_ids:
        ids = [_experiment_id(e) for e in experiment_ids]
    elif search_all_experiments:
        ids = [e.experiment_id for e in search_experiments(ViewType.ACTIVE_ONLY)]
    else:
        ids = [_active_experiment_id(client)]

    runs: list[Run] = []
    token: str | None = None
    while ids and len(runs) < max_results:
        page = client.search_runs(
            ids, filter_string, run_view_type, min(_SEARCH_PAGE_SIZE, max_results - len(runs)), order_by, token
        )
        runs.extend(page.items)
        token = page.token
        if not token:
            break
    if output_format == "list":
        return runs
    return runs_to_dataframe(runs)


def runs_to_dataframe(runs: Sequence[Run]) -> pd.DataFrame:
    """MLflow's ``search_runs`` DataFrame for ``runs``."""
    import numpy as np
    import pandas as pd

    metric_keys = sorted({k for r in runs for k in r.data.metrics})
    param_keys = sorted({k for r in runs for k in r.data.params})
    tag_keys = sorted({k for r in runs for k in r.data.tags})
    data: dict[str, Any] = {
        "run_id": [r.info.run_id for r in runs],
        "experiment_id": [r.info.experiment_id for r in runs],
        "status": [r.info.status.value for r in runs],
        "artifact_uri": [r.info.artifact_uri for r in runs],
        "start_time": pd.to_datetime([r.info.start_time for r in runs], unit="ms", utc=True),
        "end_time": pd.to_datetime([r.info.end_time for r in runs], unit="ms", utc=True),
    }
    for key in metric_keys:
        data["metrics." + key] = np.array([r.data.metrics.get(key, np.nan) for r in runs], dtype=float)
    for key in param_keys:
        data["params." + key] = pd.Series([r.data.params.get(key) for r in runs], dtype=object)
    for key in tag_keys:
        data["tags." + key] = pd.Series([r.data.tags.get(key) for r in runs], dtype=object)
    return pd.DataFrame(data, columns=list(data))


# ---------------------------------------------------------------- shutdown


def _end_runs_at_exit() -> None:
    """End runs still active in the main thread at exit: FAILED after an uncaught
    exception, else FINISHED (MLflow always says FINISHED)."""
    failed = getattr(sys, "last_value", None) is not None or getattr(sys, "last_exc", None) is not None
    status = RunStatus.FAILED if failed else RunStatus.FINISHED
    while _ACTIVE_RUNS.get():
        try:
            end_active_run(status)
        except Exception as exc:  # noqa: BLE001 - the interpreter is exiting; log instead
            logger.error("Could not end an active run at exit: %r", exc)


atexit.register(_end_runs_at_exit)
