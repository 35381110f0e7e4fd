"""Which backend a tracked flow or task records to, and ``@track``'s per-process caches
(specs, experiment ids, tracking run ids by Prefect run id). See :mod:`tracking_plugin.backend`
for the resolver itself and every cache's bound."""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from typing import Any


from tracking_plugin.errors import AlreadyExists, Conflict
from tracking_plugin.client import TrackingClient, default_client


# One logger for the whole integration, as before the split (users filter on its name).
logger = logging.getLogger("tracking_plugin.prefect")


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
