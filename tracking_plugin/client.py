# Over 600 lines on purpose: it mirrors MlflowClient's ~60 methods, each a thin call into the
# store; the logic lives in the store, the resolver (backend.py) and the artifact repositories.
"""``TrackingClient``: entity-level access to experiments, runs, artifacts and the registry.

Method names, arguments and meaning follow MLflow's ``MlflowClient``::

    from tracking_plugin import TrackingClient

    client = TrackingClient("sqlite:///mlops.db")
    experiment_id = client.create_experiment("churn")
    run = client.create_run(experiment_id, run_name="baseline")
    client.log_param(run.info.run_id, "C", 1.0)
    client.log_metric(run.info.run_id, "auc", 0.91, step=1)
    client.set_terminated(run.info.run_id)

The client is thin on purpose: logging calls go straight to one store call (the store
validates and writes in one transaction), stores are cached per tracking URI and process,
and the schema is brought up to date once per process on first use.
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
import uuid
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from tracking_plugin import _buffer
from tracking_plugin.entities import (
    Experiment,
    FileInfo,
    Metric,
    ModelVersion,
    PagedList,
    Param,
    RegisteredModel,
    Run,
    RunStatus,
    RunTag,
    Stage,
    ViewType,
)
from tracking_plugin import backend
from tracking_plugin._lineage import user_name
from tracking_plugin.artifacts import get_artifact_repository, join_artifact_uri
from tracking_plugin.artifacts.base import _scheme
from tracking_plugin.artifacts.local import LocalArtifactRepository
from tracking_plugin.errors import InvalidArgument
from tracking_plugin.settings import MlopsSettings
from tracking_plugin.tags import TAG_PARENT_RUN_ID, TAG_RUN_NAME, TAG_USER
from tracking_plugin.urls import absolute_sqlite_uri, redact_uri
from tracking_plugin.validation import validate_key, validate_metric, validate_run_id

if TYPE_CHECKING:
    from tracking_plugin.artifacts import ArtifactRepository
    from tracking_plugin.store.base import Store

__all__ = ["TrackingClient", "default_client", "resolve_tracking_uri"]


# Registering a version copies the model's files and checks its format: that is
# tracking_plugin.registry, a layer above this module. The package root hands it down
# (tracking_plugin/__init__.py calls set_model_registrar), so nothing here imports upwards.
_REGISTRAR_PROVIDER: list[Callable[[], Callable[..., ModelVersion]] | None] = [None]


def set_model_registrar(provider: Callable[[], Callable[..., ModelVersion]]) -> None:
    """Install ``provider``: it returns the function ``create_model_version`` registers with
    (``tracking_plugin.registry.register_model``), imported only when first needed."""
    _REGISTRAR_PROVIDER[0] = provider


def _model_registrar() -> Callable[..., ModelVersion]:
    provider = _REGISTRAR_PROVIDER[0]
    if provider is None:
        raise InvalidArgument(
            "Model registration is not installed: import tracking_plugin (the package "
            "installs it) before calling create_model_version."
        )
    return provider()


# Bumped in a forked child: clients then fetch the child's own store (engine, connections).
_FORK_GENERATION = [0]


def resolve_tracking_uri(uri: str) -> str:
    """Make a relative SQLite path absolute (see :func:`tracking_plugin.urls.absolute_sqlite_uri`)."""
    return absolute_sqlite_uri(uri)


def _now_ms() -> int:
    return int(time.time() * 1000)


_current_user = user_name  # the one rule: tracking_plugin._lineage.user_name


def _run_status(status: RunStatus | str) -> RunStatus:
    if isinstance(status, RunStatus):
        return status
    try:
        return RunStatus(str(status).upper())
    except ValueError:
        valid = ", ".join(s.value for s in RunStatus)
        raise InvalidArgument(f"Invalid run status {status!r}: use one of {valid}.") from None


def _view_type(view_type: ViewType | str | int) -> ViewType:
    if isinstance(view_type, ViewType):
        return view_type
    if isinstance(view_type, int) and not isinstance(view_type, bool):
        # MLflow's integer constants: ACTIVE_ONLY=1, DELETED_ONLY=2, ALL=3.
        by_number = {1: ViewType.ACTIVE_ONLY, 2: ViewType.DELETED_ONLY, 3: ViewType.ALL}
        if view_type in by_number:
            return by_number[view_type]
    elif isinstance(view_type, str):
        try:
            return ViewType(view_type.upper())
        except ValueError:
            pass
    raise InvalidArgument(
        f"Invalid view type {view_type!r}: use ViewType.ACTIVE_ONLY, DELETED_ONLY or ALL."
    )


_stage = Stage.parse


def _version(version: int | str) -> int:
    try:
        number = int(version)
    except (TypeError, ValueError):
        number = 0
    if number < 1 or isinstance(version, bool):
        raise InvalidArgument(f"Invalid model version {version!r}: versions are integers from 1.")
    return number


def _experiment_id(experiment_id: Any) -> str:
    if isinstance(experiment_id, bool) or not isinstance(experiment_id, (str, int)):
        raise InvalidArgument(
            f"Invalid experiment id {experiment_id!r}: pass the id string returned by "
            "create_experiment (or Experiment.experiment_id)."
        )
    return str(experiment_id)


def _tags(tags: Mapping[str, Any] | None) -> list[RunTag]:
    return [RunTag(k, v if isinstance(v, str) else str(v)) for k, v in (tags or {}).items()]


def _json_default(value: Any) -> Any:
    # numpy scalars and arrays are what people usually put in a metrics dict.
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _artifact_file_suffix(artifact_file: Any) -> str:
    if not isinstance(artifact_file, str) or not artifact_file:
        raise InvalidArgument(
            f"Invalid artifact file {artifact_file!r}: give a relative file path such as 'plots/roc.png'."
        )
    return os.path.splitext(artifact_file)[1].lower()


class TrackingClient:
    """Entity-level API over one tracking database and artifact root (MLflow's ``MlflowClient``).

    Args:
        tracking_uri: SQLAlchemy URL (default: the configured backend: the block named by
            ``PREFECT_MLOPS_BLOCK`` if set, else ``PREFECT_MLOPS_TRACKING_URI``, else
            ``sqlite:///mlops.db`` in the working directory).
        artifact_root: where new experiments put their artifacts (default:
            ``PREFECT_MLOPS_ARTIFACT_ROOT``, else ``./mlops-artifacts``). Local roots are
            made absolute when an experiment is created.
        settings: a full :class:`~tracking_plugin.settings.MlopsSettings` (S3 endpoint and
            credentials, buffered-logging options); read from the environment if omitted.

    >>> import tempfile, os
    >>> tmp = tempfile.mkdtemp()
    >>> client = TrackingClient(f"sqlite:///{tmp}/mlops.db", artifact_root=os.path.join(tmp, "a"))
    >>> exp_id = client.create_experiment("demo")
    >>> run = client.create_run(exp_id)
    >>> client.log_metric(run.info.run_id, "loss", 0.5, step=1)
    >>> [m.value for m in client.get_metric_history(run.info.run_id, "loss")]
    [0.5]
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        *,
        artifact_root: str | None = None,
        settings: MlopsSettings | None = None,
    ) -> None:
        self.settings = settings = backend.resolve_settings(tracking_uri, artifact_root, settings=settings)
        self._tracking_uri = absolute_sqlite_uri(settings.tracking_uri)
        self._store: Store | None = None
        self._store_generation = -1
        self._async_default = settings.async_logging
        self._repos: dict[str, ArtifactRepository] = {}
        _buffer.get_buffer().configure(
            batch_size=settings.async_batch_size, interval=settings.async_flush_interval
        )

    @classmethod
    def from_settings(cls, settings: MlopsSettings) -> TrackingClient:
        """A client for exactly these settings (e.g. ``MlopsBackend.to_settings()``)."""
        return cls(settings=settings)

    def __repr__(self) -> str:
        return (
            f"TrackingClient(tracking_uri={redact_uri(self.tracking_uri)!r}, "
            f"artifact_root={redact_uri(self.artifact_root)!r})"
        )

    def close(self) -> None:
        """Write buffered metrics, then release the database connections (shared with other
        clients of the same database until the last one closes). Using the client again
        reconnects. ``with TrackingClient(uri) as client:`` closes it on leaving."""
        store, self._store = self._store, None
        self._repos.clear()
        if store is None:
            return
        try:
            _buffer.get_buffer().flush()
        finally:
            if self._store_generation == _FORK_GENERATION[0]:
                backend.release_store(store)

    def __enter__(self) -> TrackingClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def tracking_uri(self) -> str:
        return self._tracking_uri

    @property
    def artifact_root(self) -> str:
        return self.settings.artifact_root

    @property
    def store(self) -> Store:
        """The underlying store (built, and its schema migrated, on first use)."""
        store = self._store
        if store is None or self._store_generation != _FORK_GENERATION[0]:
            self._repos.clear()
            self._store_generation = _FORK_GENERATION[0]
            store = self._store = backend.acquire_store(self.settings)
        return store

    # ------------------------------------------------------------- experiments

    def create_experiment(
        self,
        name: str,
        artifact_location: str | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> str:
        """Create an experiment and return its id; ``AlreadyExists`` if the name is taken.

        Without ``artifact_location``, runs go under ``<artifact_root>/<uuid>``: the id is
        only known after the insert, and a uuid keeps the folder stable across renames.
        """
        if artifact_location is None:
            artifact_location = self._default_experiment_location()
        else:
            artifact_location = self._absolute_location(os.fspath(artifact_location))
        str_tags = {k: v if isinstance(v, str) else str(v) for k, v in (tags or {}).items()}
        return self.store.create_experiment(name, artifact_location=artifact_location, tags=str_tags)

    def get_experiment(self, experiment_id: str) -> Experiment:
        """The experiment with this id; ``NotFound`` if unknown."""
        return self.store.get_experiment(_experiment_id(experiment_id))

    def get_experiment_by_name(self, name: str) -> Experiment | None:
        """The experiment called ``name`` (deleted ones included), or None."""
        return self.store.get_experiment_by_name(name)

    def search_experiments(
        self,
        view_type: ViewType | str | int = ViewType.ACTIVE_ONLY,
        max_results: int = 1000,
        filter_string: str | None = None,
        order_by: Sequence[str] | None = None,
        page_token: str | None = None,
    ) -> PagedList[Experiment]:
        """One page of experiments matching ``filter_string`` (e.g. ``"name LIKE 'churn%'"``)."""
        return self.store.search_experiments(
            view_type=_view_type(view_type),
            max_results=max_results,
            filter_string=filter_string,
            order_by=order_by,
            page_token=page_token,
        )

    def rename_experiment(self, experiment_id: str, new_name: str) -> None:
        """Rename an experiment; its artifact location does not change."""
        self.store.rename_experiment(_experiment_id(experiment_id), new_name)

    def delete_experiment(self, experiment_id: str) -> None:
        """Mark an experiment deleted (restorable); its runs stay."""
        self.store.delete_experiment(_experiment_id(experiment_id))

    def restore_experiment(self, experiment_id: str) -> None:
        """Undo :meth:`delete_experiment`."""
        self.store.restore_experiment(_experiment_id(experiment_id))

    def set_experiment_tag(self, experiment_id: str, key: str, value: Any) -> None:
        """Set a tag on an experiment (stored as ``str(value)``)."""
        self.store.set_experiment_tag(
            _experiment_id(experiment_id), key, value if isinstance(value, str) else str(value)
        )

    def _default_experiment_location(self) -> str:
        return join_artifact_uri(self._absolute_location(self.settings.artifact_root), uuid.uuid4().hex)

    @staticmethod
    def _absolute_location(location: str) -> str:
        if _scheme(location) in ("", "file"):
            # The repository resolves the path without touching the disk.
            return LocalArtifactRepository(location).artifact_uri
        return location

    # -------------------------------------------------------------------- runs

    def create_run(
        self,
        experiment_id: str,
        start_time: int | None = None,
        tags: Mapping[str, Any] | None = None,
        run_name: str | None = None,
        *,
        parent_run_id: str | None = None,
        prefect_flow_run_id: str | None = None,
        prefect_task_run_id: str | None = None,
    ) -> Run:
        """Create a RUNNING run. A nested run gets ``parent_run_id`` and the tag
        ``mlflow.parentRunId``; ``run_name`` is also stored as the tag ``mlflow.runName``."""
        run_tags = dict(tags or {})
        if run_name is not None:
            run_tags[TAG_RUN_NAME] = run_name
        if parent_run_id is not None:
            run_tags.setdefault(TAG_PARENT_RUN_ID, parent_run_id)
        elif TAG_PARENT_RUN_ID in run_tags:
            parent_run_id = str(run_tags[TAG_PARENT_RUN_ID])
        user_id = str(run_tags.get(TAG_USER) or _current_user())
        return self.store.create_run(
            _experiment_id(experiment_id),
            user_id=user_id,
            start_time=_now_ms() if start_time is None else start_time,
            run_name=run_name,
            tags=_tags(run_tags),
            parent_run_id=parent_run_id,
            prefect_flow_run_id=prefect_flow_run_id,
            prefect_task_run_id=prefect_task_run_id,
        )

    def get_run(self, run_id: str) -> Run:
        """The run with its latest metrics, params and tags; ``NotFound`` if unknown."""
        return self.store.get_run(run_id)

    def get_run_by_prefect_id(
        self, *, flow_run_id: str | None = None, task_run_id: str | None = None
    ) -> Run | None:
        """The tracking run recorded for a Prefect flow run or task run, or None."""
        return self.store.get_run_by_prefect_id(flow_run_id=flow_run_id, task_run_id=task_run_id)

    def set_terminated(
        self, run_id: str, status: RunStatus | str | None = None, end_time: int | None = None
    ) -> None:
        """End a run. Buffered metrics are written first, so no point arrives after the end.

        If writing buffered metrics failed, the run is still ended and that error is raised
        afterwards.
        """
        final = RunStatus.FINISHED if status is None else _run_status(status)
        pending_error: BaseException | None = None
        try:
            _buffer.get_buffer().flush()
        except Exception as exc:  # noqa: BLE001 - re-raised below, after the run is ended
            pending_error = exc
        self.store.update_run_info(
            run_id, status=final, end_time=_now_ms() if end_time is None else end_time
        )
        if pending_error is not None:
            raise pending_error

    def update_run(self, run_id: str, status: RunStatus | str | None = None, name: str | None = None) -> None:
        """Change a run's status and/or name (the name also updates ``mlflow.runName``)."""
        self.store.update_run_info(
            run_id, status=None if status is None else _run_status(status), run_name=name
        )

    def delete_run(self, run_id: str) -> None:
        """Mark a run deleted (restorable); search hides it, its data stays."""
        self.store.delete_run(run_id)

    def restore_run(self, run_id: str) -> None:
        """Undo :meth:`delete_run`."""
        self.store.restore_run(run_id)

    # -------------------------------------------------------------------- data

    def log_metric(
        self,
        run_id: str,
        key: str,
        value: float,
        timestamp: int | None = None,
        step: int | None = None,
        synchronous: bool | None = None,
    ) -> None:
        """Log one metric point (``timestamp`` in ms since the epoch, default now; ``step`` 0).

        ``synchronous=False`` (or ``PREFECT_MLOPS_ASYNC_LOGGING=true``) validates the point
        and queues it for the background writer; :meth:`flush` waits for it.
        """
        if timestamp is None:
            timestamp = int(time.time() * 1000)
        if step is None:
            step = 0
        if synchronous is None:
            synchronous = not self._async_default
        if synchronous:
            # The store validates inside its one transaction: no second validation here.
            self.store.log_batch(run_id, metrics=(Metric(key, value, timestamp, step),))
            return
        self._enqueue(run_id, key, value, timestamp, step)

    def _enqueue(self, run_id: str, key: str, value: Any, timestamp: Any, step: Any) -> None:
        # Validate now, in the caller's thread, so a bad value raises here and not later.
        if (
            key in _VALID_KEYS
            and type(value) is float
            and type(step) is int
            and type(timestamp) is int
            and -_INT64 <= step < _INT64
            and -_INT64 <= timestamp < _INT64
        ):
            metric = Metric(key, value, timestamp, step)
        else:
            metric = Metric(*validate_metric(key, value, timestamp, step))
            if len(_VALID_KEYS) < 10_000:
                _VALID_KEYS.add(key)
        if type(run_id) is not str:
            validate_run_id(run_id)
        _buffer._BUFFER.enqueue(self.store, run_id, metric)

    def log_param(self, run_id: str, key: str, value: Any, synchronous: bool | None = None) -> Any:
        """Log a param (stored as ``str(value)``); returns ``value`` like MLflow.

        Logging the same key again with a different value raises ``Conflict``.
        """
        self.store.log_batch(run_id, params=(Param(key, value if isinstance(value, str) else str(value)),))
        return value

    def set_tag(self, run_id: str, key: str, value: Any, synchronous: bool | None = None) -> None:
        """Set a tag (stored as ``str(value)``), replacing an earlier value."""
        self.store.log_batch(run_id, tags=(RunTag(key, value if isinstance(value, str) else str(value)),))

    def delete_tag(self, run_id: str, key: str) -> None:
        """Remove a tag from a run; ``NotFound`` if the run has no such tag."""
        self.store.delete_tag(run_id, key)

    def log_batch(
        self,
        run_id: str,
        metrics: Iterable[Metric] = (),
        params: Iterable[Param] = (),
        tags: Iterable[RunTag] = (),
        synchronous: bool | None = None,
    ) -> None:
        """Write metrics, params and tags in one transaction: all of them or none.

        With ``synchronous=False`` (and only metrics), the points are queued instead.
        """
        metrics = list(metrics)
        params = [p if isinstance(p.value, str) else Param(p.key, str(p.value)) for p in params]
        tags = [t if isinstance(t.value, str) else RunTag(t.key, str(t.value)) for t in tags]
        if synchronous is None:
            synchronous = not self._async_default
        if not synchronous and not params and not tags:
            checked = [Metric(*validate_metric(m.key, m.value, m.timestamp, m.step)) for m in metrics]
            _buffer._BUFFER.enqueue_many(self.store, run_id, checked)
            return
        self.store.log_batch(run_id, metrics=metrics, params=params, tags=tags)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every buffered metric is written; raise the first background error."""
        _buffer.get_buffer().flush(timeout)

    def get_metric_history(self, run_id: str, key: str) -> list[Metric]:
        """Every logged point of a metric, ordered by step then timestamp."""
        validate_key(key, "metric")
        points: list[Metric] = []
        token: str | None = None
        while True:
            page = self.store.get_metric_history(run_id, key, page_token=token)
            points.extend(page.items)
            token = page.token
            if not token:
                return points

    def search_runs(
        self,
        experiment_ids: str | Sequence[str],
        filter_string: str = "",
        run_view_type: ViewType | str | int = ViewType.ACTIVE_ONLY,
        max_results: int = 1000,
        order_by: Sequence[str] | None = None,
        page_token: str | None = None,
    ) -> PagedList[Run]:
        """Runs matching MLflow's filter grammar (plus ``OR`` and parentheses).

        >>> client.search_runs([exp_id], "metrics.auc > 0.9 and params.model = 'rf'")  # doctest: +SKIP
        """
        if isinstance(experiment_ids, (str, int)):
            experiment_ids = [experiment_ids]  # type: ignore[list-item]
        return self.store.search_runs(
            [_experiment_id(e) for e in experiment_ids],
            filter_string=filter_string or "",
            run_view_type=_view_type(run_view_type),
            max_results=max_results,
            order_by=order_by,
            page_token=page_token,
        )

    # --------------------------------------------------------------- artifacts

    def _repo(self, run_id: str) -> ArtifactRepository:
        repo = self._repos.get(run_id)
        if repo is None:
            artifact_uri = self.store.get_run(run_id).info.artifact_uri
            repo = get_artifact_repository(artifact_uri, self.settings)
            if len(self._repos) >= 256:  # artifact URIs never change; only bound the memory
                self._repos.clear()
            self._repos[run_id] = repo
        return repo

    def log_artifact(self, run_id: str, local_path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        """Copy a local file into the run's artifacts, under ``artifact_path``."""
        self._repo(run_id).log_artifact(local_path, artifact_path)

    def log_artifacts(self, run_id: str, local_dir: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        """Copy a local directory's contents, recursively, into the run's artifacts."""
        self._repo(run_id).log_artifacts(local_dir, artifact_path)

    def list_artifacts(self, run_id: str, path: str | None = None) -> list[FileInfo]:
        """One level of the run's artifacts under ``path`` (paths relative to the run root)."""
        return self._repo(run_id).list_artifacts(path)

    def download_artifacts(self, run_id: str, path: str, dst_path: str | os.PathLike[str] | None = None) -> str:
        """Download a file or directory of the run's artifacts; returns the local path."""
        return self._repo(run_id).download_artifacts(path, dst_path)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        """Write ``text`` (UTF-8) as ``artifact_file``."""
        if not isinstance(text, str):
            raise InvalidArgument(f"log_text needs a str, got {type(text).__name__}; use log_dict for mappings.")
        self._repo(run_id).log_bytes(text.encode("utf-8"), artifact_file)

    def log_dict(self, run_id: str, dictionary: Any, artifact_file: str) -> None:
        """Write ``dictionary`` as YAML (``.yaml``/``.yml``) or JSON (any other extension)."""
        suffix = _artifact_file_suffix(artifact_file)
        if suffix in (".yaml", ".yml"):
            import yaml

            try:
                # Round-trip through JSON first so numpy values become plain numbers.
                plain = json.loads(json.dumps(dictionary, default=_json_default))
            except TypeError as exc:
                raise InvalidArgument(f"Cannot log {artifact_file!r} as YAML: {exc}.") from exc
            data = yaml.safe_dump(plain, indent=2, default_flow_style=False, sort_keys=False)
        else:
            try:
                data = json.dumps(dictionary, indent=2, default=_json_default)
            except (TypeError, ValueError) as exc:
                raise InvalidArgument(f"Cannot log {artifact_file!r} as JSON: {exc}.") from exc
        self._repo(run_id).log_bytes(data.encode("utf-8"), artifact_file)

    def log_figure(self, run_id: str, figure: Any, artifact_file: str, *, save_kwargs: dict[str, Any] | None = None) -> None:
        """Save a matplotlib figure (format from the extension: .png, .svg, .pdf, ...) or a
        plotly figure (``.html``) as ``artifact_file``."""
        suffix = _artifact_file_suffix(artifact_file)
        if not suffix:
            raise InvalidArgument(
                f"Invalid figure file {artifact_file!r}: add an extension such as .png or .svg."
            )
        if hasattr(figure, "savefig"):
            buffer = io.BytesIO()
            figure.savefig(buffer, format=suffix[1:], **(save_kwargs or {}))
            data = buffer.getvalue()
        elif suffix == ".html" and hasattr(figure, "to_html"):
            data = figure.to_html(**(save_kwargs or {})).encode("utf-8")
        else:
            raise InvalidArgument(
                f"Cannot log a {type(figure).__name__} as {artifact_file!r}: pass a matplotlib "
                "Figure (any extension matplotlib can save) or a plotly Figure as .html."
            )
        self._repo(run_id).log_bytes(data, artifact_file)

    def log_image(self, run_id: str, image: Any, artifact_file: str) -> None:
        """Save a numpy array (HxW, HxWx3 or HxWx4; floats in [0, 1] or uint8) or a PIL
        image as ``artifact_file`` (format from the extension)."""
        suffix = _artifact_file_suffix(artifact_file)
        buffer = io.BytesIO()
        if hasattr(image, "save") and not hasattr(image, "shape"):  # PIL.Image
            image.save(buffer, format=(suffix[1:] or "png").upper().replace("JPG", "JPEG"))
        elif hasattr(image, "shape"):
            import matplotlib

            matplotlib.use("Agg", force=False)
            import matplotlib.image as mpimg

            mpimg.imsave(buffer, image, format=suffix[1:] or "png")
        else:
            raise InvalidArgument(
                f"Cannot log a {type(image).__name__} as an image: pass a numpy array or a PIL image."
            )
        self._repo(run_id).log_bytes(buffer.getvalue(), artifact_file)

    # ---------------------------------------------------------------- registry

    def create_registered_model(
        self, name: str, tags: Mapping[str, Any] | None = None, description: str | None = None
    ) -> RegisteredModel:
        """Create an empty registered model; ``AlreadyExists`` if the name is taken."""
        return self.store.create_registered_model(
            name, tags={k: str(v) for k, v in (tags or {}).items()}, description=description
        )

    def get_registered_model(self, name: str) -> RegisteredModel:
        """The registered model with its aliases and latest versions."""
        return self.store.get_registered_model(name)

    def search_registered_models(
        self,
        filter_string: str | None = None,
        max_results: int = 100,
        order_by: Sequence[str] | None = None,
        page_token: str | None = None,
    ) -> PagedList[RegisteredModel]:
        """One page of registered models matching ``filter_string``."""
        return self.store.search_registered_models(
            filter_string=filter_string, max_results=max_results, order_by=order_by, page_token=page_token
        )

    def rename_registered_model(self, name: str, new_name: str) -> RegisteredModel:
        """Rename a registered model (its versions follow)."""
        return self.store.rename_registered_model(name, new_name)

    def update_registered_model(self, name: str, description: str | None = None) -> RegisteredModel:
        """Replace a registered model's description."""
        return self.store.update_registered_model(name, description)

    def delete_registered_model(self, name: str) -> None:
        """Delete a registered model and all its versions."""
        self.store.delete_registered_model(name)

    def set_registered_model_tag(self, name: str, key: str, value: Any) -> None:
        """Set a tag on a registered model (stored as ``str(value)``)."""
        self.store.set_registered_model_tag(name, key, str(value))

    def delete_registered_model_tag(self, name: str, key: str) -> None:
        """Remove a tag from a registered model."""
        self.store.delete_registered_model_tag(name, key)

    def create_model_version(
        self,
        name: str,
        source: str,
        run_id: str | None = None,
        tags: Mapping[str, Any] | None = None,
        run_link: str | None = None,
        description: str | None = None,
        await_creation_for: int = 300,
    ) -> ModelVersion:
        """Register the model at ``source`` (``runs:/``, ``models:/``, path or ``s3://``) as
        the next version of ``name``; its files are copied into registry storage.

        The arguments are MlflowClient's; ``run_link`` and ``await_creation_for`` are
        accepted and ignored (registration finishes before this returns).
        """
        import inspect

        register_model = _model_registrar()
        kwargs: dict[str, Any] = {
            "tags": {k: str(v) for k, v in (tags or {}).items()} or None,
            "description": description,
            "store": self.store,
            "artifact_root": self._absolute_location(self.artifact_root),
            "settings": self.settings,
        }
        if run_id is not None:
            if "run_id" in inspect.signature(register_model).parameters:
                kwargs["run_id"] = run_id
            else:
                source = self._as_runs_uri(source, run_id)
        return register_model(source, name, **kwargs)

    def _as_runs_uri(self, source: str, run_id: str) -> str:
        """MLflow's classic ``create_model_version(name, f"{artifact_uri}/model", run_id)``:
        express the source as ``runs:/<run_id>/model`` so the version keeps its run link."""
        if source.startswith("runs:/"):
            return source
        base = self.store.get_run(run_id).info.artifact_uri.rstrip("/")
        if source.rstrip("/") == base:
            return f"runs:/{run_id}"
        if source.startswith(base + "/"):
            return f"runs:/{run_id}/{source[len(base) + 1 :]}"
        return source

    def get_model_version(self, name: str, version: int | str) -> ModelVersion:
        """One version of a registered model; ``NotFound`` if unknown."""
        return self.store.get_model_version(name, _version(version))

    def get_model_version_by_alias(self, name: str, alias: str) -> ModelVersion:
        """The version an alias (e.g. ``champion``) points at."""
        return self.store.get_model_version_by_alias(name, alias)

    def get_latest_versions(self, name: str, stages: Sequence[Stage | str] | None = None) -> list[ModelVersion]:
        """The newest version per stage (all stages when ``stages`` is None)."""
        return self.store.get_latest_versions(name, None if stages is None else [_stage(s) for s in stages])

    def search_model_versions(
        self,
        filter_string: str | None = None,
        max_results: int = 1000,
        order_by: Sequence[str] | None = None,
        page_token: str | None = None,
    ) -> PagedList[ModelVersion]:
        """One page of model versions matching ``filter_string`` (e.g. ``"name = 'churn'"``)."""
        return self.store.search_model_versions(
            filter_string=filter_string, max_results=max_results, order_by=order_by, page_token=page_token
        )

    def update_model_version(self, name: str, version: int | str, description: str | None = None) -> ModelVersion:
        """Replace a model version's description."""
        return self.store.update_model_version(name, _version(version), description)

    def delete_model_version(self, name: str, version: int | str) -> None:
        """Delete one version (its aliases go with it)."""
        self.store.delete_model_version(name, _version(version))

    def set_model_version_tag(self, name: str, version: int | str, key: str, value: Any) -> None:
        """Set a tag on a model version (stored as ``str(value)``)."""
        self.store.set_model_version_tag(name, _version(version), key, str(value))

    def delete_model_version_tag(self, name: str, version: int | str, key: str) -> None:
        """Remove a tag from a model version."""
        self.store.delete_model_version_tag(name, _version(version), key)

    def transition_model_version_stage(
        self, name: str, version: int | str, stage: Stage | str, archive_existing_versions: bool = False
    ) -> ModelVersion:
        """Move a version to ``stage`` (``Staging``, ``Production``, ``Archived``, ``None``);
        optionally archive the versions currently in that stage, in the same transaction."""
        return self.store.transition_model_version_stage(
            name, _version(version), _stage(stage), archive_existing_versions=archive_existing_versions
        )

    def set_registered_model_alias(self, name: str, alias: str, version: int | str) -> None:
        """Point ``alias`` at ``version`` (moving it if it pointed elsewhere); audited."""
        self.store.set_registered_model_alias(name, alias, _version(version))

    def delete_registered_model_alias(self, name: str, alias: str) -> None:
        """Remove an alias; audited."""
        self.store.delete_registered_model_alias(name, alias)

    def get_model_version_download_uri(self, name: str, version: int | str) -> str:
        """Where the version's files are: the registry copy, else the source it came from."""
        mv = self.store.get_model_version(name, _version(version))
        return mv.storage_location or mv.source


_VALID_KEYS: set[str] = set()  # metric keys already validated in this process

# Default clients (see tracking_plugin.backend for every cache): building settings costs
# ~1 ms, so the key holds what they are read from instead.
_CLIENTS: OrderedDict[tuple[Any, ...], TrackingClient] = OrderedDict()
_CLIENTS_LIMIT = 64
_CLIENTS_LOCK = threading.Lock()
_ENV_NAMES = tuple(f"PREFECT_MLOPS_{name.upper()}" for name in MlopsSettings.model_fields)


def default_client(
    tracking_uri: str | None = None, artifact_root: str | None = None, *, block: str | None = None
) -> TrackingClient:
    """The process-wide client for the backend these arguments resolve to (see
    :func:`tracking_plugin.backend.resolve_settings`; no arguments: the configured
    default, following ``set_tracking_uri()``). Cached and kept open for the process."""
    environ = os.environ
    try:
        cwd = os.getcwd()
    except OSError:  # the working directory was deleted
        cwd = ""
    key = (
        tracking_uri,
        artifact_root,
        block,
        backend.get_tracking_uri_override(),
        cwd,
        *[environ.get(name) for name in _ENV_NAMES],
    )
    client = _CLIENTS.get(key)
    if client is None:
        with _CLIENTS_LOCK:
            client = _CLIENTS.get(key)
            if client is None:
                settings = backend.resolve_settings(tracking_uri, artifact_root, block=block)
                client = _CLIENTS[key] = TrackingClient(settings=settings)
                if len(_CLIENTS) > _CLIENTS_LIMIT:
                    _CLIENTS.popitem(last=False)[1].close()
    return client


def reset_default_clients() -> None:
    """Forget the cached default clients (they stay usable by whoever holds them)."""
    with _CLIENTS_LOCK:
        _CLIENTS.clear()
_INT64 = 2**63


def _after_fork_in_child() -> None:
    global _CLIENTS_LOCK
    _FORK_GENERATION[0] += 1
    _CLIENTS_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

