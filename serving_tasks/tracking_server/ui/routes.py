"""The web UI's routes: HTML pages at ``/...`` and bounded JSON under ``/ui-api/...``.

Pages (server-rendered, Jinja2 with autoescaping):

- ``/`` experiments (``?q=`` search), ``/experiments/{id}`` runs table (``filter``,
  ``order``, ``cols``, ``status``, ``page``, ``size`` in the URL), ``/runs/{id}`` a run,
  ``/compare?runs=...`` 2-50 runs, ``/models``, ``/models/{name}``,
  ``/models/{name}/versions/{version}``.

JSON for the browser's scripts (every answer bounded):

- ``/ui-api/metric-history?run=&key=&axis=step|time&lo=&hi=&buckets=``: downsampled series;
- ``/ui-api/runs/{id}/artifacts?path=``: one level of the artifact tree;
- ``/ui-api/runs/{id}/preview?path=``: an HTML fragment previewing one file;
- ``/ui-api/runs/{id}/artifact?path=``: the file itself (images inline, others as download).
"""

from __future__ import annotations

import math
import mimetypes
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.templating import Jinja2Templates

from tracking_plugin._lineage import PACKAGE_TAG_PREFIX, TAG_GIT_COMMIT, TAG_GIT_DIRTY, TAG_PYTHON_VERSION
from tracking_plugin.artifacts import get_artifact_repository
from tracking_plugin.entities import Run, RunStatus, ViewType
from tracking_plugin.errors import InvalidArgument, MlopsError, NotFound
from tracking_plugin.search import encode_page_token
from tracking_plugin.tags import TAG_PARENT_RUN_ID
from tracking_plugin.store.sql import SqlStore
from tracking_plugin.validation import validate_artifact_path

from serving_tasks.tracking_server.auth.permissions import Readable
from serving_tasks.tracking_server.deps import get_readable_experiments, get_readable_models, get_server_settings, get_store
from serving_tasks.tracking_server.settings import ServerSettings
from serving_tasks.tracking_server.ui import previews, queries

__all__ = ["api", "pages", "templates"]

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
pages = APIRouter(include_in_schema=False)
api = APIRouter(prefix="/ui-api", include_in_schema=False)
Store = Annotated[SqlStore, Depends(get_store)]
Settings = Annotated[ServerSettings, Depends(get_server_settings)]
# under --auth, what the user may read: the list pages show only that
ReadableExperiments = Annotated[Readable, Depends(get_readable_experiments)]
ReadableModels = Annotated[Readable, Depends(get_readable_models)]

PAGE_SIZES = (25, 50, 100, 200)
MAX_COMPARE = 50
ATTRIBUTE_COLUMNS = ("run_name", "status", "start_time", "duration", "user_id")
_SORTABLE_ATTRIBUTES = {"run_name", "status", "start_time", "end_time", "user_id"}
TOP_LEVEL = f"tags.`{TAG_PARENT_RUN_ID}` IS NULL"  # every child run carries this tag (the store sets it)
MAX_CHILDREN = 500
DRIFT_REPORTS = 500  # the version page charts at most the latest 500 scored batches
SINCE = {"1h": 3_600_000, "24h": 86_400_000, "7d": 7 * 86_400_000, "30d": 30 * 86_400_000}  # "started within"


def _fmt_time(ms: int | None) -> str:
    return "" if ms is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000))


def _fmt_duration(run: Run) -> str:
    if run.info.end_time is None:
        return ""
    seconds = max(0, run.info.end_time - run.info.start_time) / 1000
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.1f}min"


def _fmt_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)


templates.env.filters.update(time=_fmt_time, value=_fmt_value, duration=_fmt_duration)
def _query(view: dict[str, Any], **changes: Any) -> str:
    """``?a=1&b=2``: ``view`` with ``changes`` applied, empty values left out."""
    merged = {**view, **changes}
    return "?" + urlencode({k: v for k, v in merged.items() if v not in ("", None, 0)})


templates.env.globals.update(query=_query)


def _page(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context, status_code=status_code)


def _not_found(request: Request, message: str) -> HTMLResponse:
    return _page(request, "404.html", status_code=404, title="Not found", message=message)


# ----------------------------------------------------------------------------- pages


@pages.get("/", response_class=HTMLResponse)
def experiments_page(request: Request, store: Store, readable: ReadableExperiments, q: str = "") -> HTMLResponse:
    rows = queries.experiments_overview(store, q.strip(), readable=readable)
    return _page(request, "experiments.html", title="Experiments", experiments=rows, q=q)


def _column_value(run: Run, column: str) -> Any:
    kind, _, key = column.partition(".")
    if kind == "metrics":
        return run.data.metrics.get(key)
    if kind == "params":
        return run.data.params.get(key)
    if kind == "tags":
        return run.data.tags.get(key)
    return None


def _parent_of(run: Run) -> str:
    return run.info.parent_run_id or run.data.tags.get(TAG_PARENT_RUN_ID, "")


def _order_column(column: str) -> str:
    """The ``order_by`` form of a table column (``start_time`` -> ``attributes.start_time``)."""
    if column == "duration":
        column = "end_time"
    if column in _SORTABLE_ATTRIBUTES:
        return f"attributes.{column}"
    return column


@pages.get("/experiments/{experiment_id}", response_class=HTMLResponse)
def runs_page(
    request: Request,
    experiment_id: str,
    store: Store,
    filter: str = "",
    order: str = "",
    cols: str = "",
    status: str = "",
    since: str = "",
    page: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    size: int = 50,
) -> HTMLResponse:
    try:
        experiment = store.get_experiment(experiment_id)
    except (NotFound, InvalidArgument):
        return _not_found(request, f"No experiment with id {experiment_id!r}.")
    size = size if size in PAGE_SIZES else 50
    status = status.upper() if status.upper() in RunStatus.__members__ else ""
    since = since if since in SINCE else ""
    clauses = [f"({filter.strip()})"] if filter.strip() else []
    if status:
        clauses.append(f"attributes.status = '{status}'")
    if since:
        clauses.append(f"attributes.start_time >= {int(time.time() * 1000) - SINCE[since]}")
    nested = not clauses
    full_filter = " AND ".join(clauses) if clauses else TOP_LEVEL
    order_by = [order] if order else None
    error = ""
    runs: list[Run] = []
    has_next = False
    started = time.perf_counter()
    try:
        result = store.search_runs([experiment.experiment_id], full_filter, ViewType.ACTIVE_ONLY, size, order_by,
                                   encode_page_token(page * size) if page else None)
        runs, has_next = list(result.items), result.token is not None
    except InvalidArgument as exc:
        error = str(exc)
    keys = queries.run_keys(store, [r.info.run_id for r in runs])
    available = [f"{kind}.{k}" for kind in ("metrics", "params", "tags") for k in keys[kind]]
    if cols:
        columns = [c for c in cols.split(",") if c]
    else:
        columns = list(ATTRIBUTE_COLUMNS[:4]) + [f"metrics.{k}" for k in keys["metrics"][:6]] + [
            f"params.{k}" for k in keys["params"][:6]]
    for c in columns:
        if c not in available and c not in ATTRIBUTE_COLUMNS:
            available.append(c)
    # Nested (no filter, status or time filter): the page holds top-level runs only and
    # each parent's children open under it (``/ui-api/runs/{id}/children``), so a sweep
    # stays together whatever page its parent falls on. Filtered: matching runs, flat,
    # each child naming its parent.
    child_counts = queries.child_counts(store, [r.info.run_id for r in runs]) if nested else {}
    rows: list[tuple[Run, int]] = [(run, 0) for run in runs]
    view = {"filter": filter, "order": order, "cols": cols, "status": status, "since": since, "size": size if size != 50 else ""}
    sort_column, _, direction = order.partition(" ")
    return _page(
        request, "runs.html", title=experiment.name, experiment=experiment, rows=rows, columns=columns,
        available=available, attribute_columns=ATTRIBUTE_COLUMNS, error=error, filter=filter, order=order,
        status=status, statuses=[s.value for s in RunStatus], since=since, since_options=list(SINCE), page=page, size=size, sizes=PAGE_SIZES,
        has_next=has_next, view={k: v for k, v in view.items() if v}, sort_column=sort_column, nested=nested,
        child_counts=child_counts, parent_of=_parent_of,
        sort_desc=direction.upper() == "DESC", order_column=_order_column, column_value=_column_value,
        server_ms=(time.perf_counter() - started) * 1000,
    )


def _lineage(run: Run, store: SqlStore) -> dict[str, Any]:
    tags = run.data.tags
    datasets: list[Any] = []
    try:
        inputs, _ = store.get_run_inputs_outputs(run.info.run_id)
        datasets = list(inputs.datasets)
    except MlopsError:
        pass
    url = tags.get("prefect.flow_run_url", "")
    dirty = tags.get(TAG_GIT_DIRTY) == "true"
    validation = " ".join(f"{k.removeprefix('validation.')}={v}" for k, v in sorted(tags.items()) if k.startswith("validation."))
    return {
        "flow_run_url": url if url.startswith(("http://", "https://")) else "",
        "flow_run_id": run.info.prefect_flow_run_id or tags.get("prefect.flow_run_id", ""),
        "git_commit": (tags.get(TAG_GIT_COMMIT, "") + (" (dirty tree)" if dirty else "")).strip(),
        # the pipeline's validate step tags the training data's digest and the validation result
        "data_digest": tags.get("data.digest", ""),
        "validation": validation,
        "datasets": datasets,
        "versions": {k.removeprefix(PACKAGE_TAG_PREFIX): v for k, v in tags.items()
                     if k.startswith(PACKAGE_TAG_PREFIX) or k == TAG_PYTHON_VERSION},
    }


@pages.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(request: Request, run_id: str, store: Store) -> HTMLResponse:
    try:
        run = store.get_run(run_id)
    except (NotFound, InvalidArgument):
        return _not_found(request, f"No run with id {run_id!r}.")
    metrics = []
    for key in sorted(run.data.metrics)[:100]:
        values, length = queries.sparkline_values(store, run_id, key)
        metrics.append((key, run.data.metrics[key], queries.metric_sparkline(values), length))
    lengths = queries.history_lengths(store, [run_id])
    return _page(
        request, "run.html", title=run.info.run_name or run_id, run=run, metrics=metrics,
        chart_keys=sorted(run.data.metrics, key=lambda k: (-lengths.get(k, 0), k))[:200],
        lineage=_lineage(run, store), experiment=store.get_experiment(run.info.experiment_id),
    )


@pages.get("/compare", response_class=HTMLResponse)
def compare_page(request: Request, store: Store, runs: Annotated[list[str], Query()] = []) -> HTMLResponse:  # noqa: B006
    ids = list(dict.fromkeys(r for r in runs if r))
    if not 2 <= len(ids) <= MAX_COMPARE:
        return _page(request, "message.html", title="Compare", status_code=400,
                     message=f"Pick 2 to {MAX_COMPARE} runs to compare (got {len(ids)}).")
    found: list[Run] = []
    for run_id in ids:
        try:
            found.append(store.get_run(run_id))
        except (NotFound, InvalidArgument):
            return _not_found(request, f"No run with id {run_id!r}.")
    param_keys = sorted({k for r in found for k in r.data.params})
    metric_keys = sorted({k for r in found for k in r.data.metrics})
    data = {
        "runs": [{"id": r.info.run_id, "name": r.info.run_name} for r in found],
        "params": {k: [r.data.params.get(k) for r in found] for k in param_keys},
        "metrics": {k: [r.data.metrics.get(k) for r in found] for k in metric_keys},
    }
    lengths = queries.history_lengths(store, ids)
    return _page(request, "compare.html", title="Compare runs", runs=found, param_keys=param_keys,
                 metric_keys=metric_keys, data=data,
                 chart_keys=sorted(metric_keys, key=lambda k: (-lengths.get(k, 0), k))[:200])


@pages.get("/models", response_class=HTMLResponse)
def models_page(request: Request, store: Store, readable: ReadableModels, q: str = "") -> HTMLResponse:
    escaped = q.replace("'", "''")
    models: list[Any] = []
    token: str | None = None
    try:
        # Up to 500 models the user may read: page on past the ones they may not.
        while len(models) < 500:
            page = store.search_registered_models(filter_string=f"name ILIKE '%{escaped}%'" if q else None,
                                                  max_results=500, page_token=token)
            models.extend(m for m in page.items if readable.allows(m.name))
            token = page.token
            if not token:
                break
        models = models[:500]
    except InvalidArgument as exc:
        return _page(request, "models.html", title="Models", models=[], q=q, error=str(exc))
    return _page(request, "models.html", title="Models", models=models, q=q)


@pages.get("/models/{name}", response_class=HTMLResponse)
def model_page(request: Request, name: str, store: Store) -> HTMLResponse:
    try:
        model = store.get_registered_model(name)
    except (NotFound, InvalidArgument):
        return _not_found(request, f"No registered model named {name!r}.")
    escaped = name.replace("'", "''")
    versions = store.search_model_versions(filter_string=f"name = '{escaped}'", max_results=500,
                                           order_by=["version_number DESC"])
    return _page(request, "model.html", title=name, model=model, versions=list(versions.items))


@pages.get("/models/{name}/versions/{version}", response_class=HTMLResponse)
def version_page(request: Request, name: str, version: str, store: Store) -> HTMLResponse:
    try:
        mv = store.get_model_version(name, int(version))
    except (NotFound, InvalidArgument, ValueError):
        return _not_found(request, f"No version {version!r} of registered model {name!r}.")
    decision = None
    if mv.gate_decision_id:
        try:
            decision = store.get_gate_decision(mv.gate_decision_id)
        except NotFound:
            decision = None
    history = [t for t in store.get_model_history(name) if t.version == mv.version][-200:]
    run = None
    if mv.run_id:
        try:
            run = store.get_run(mv.run_id)
        except NotFound:
            run = None
    rules = _gate_rules(decision.details) if decision else []
    drift = queries.drift_reports(store, name, mv.version, limit=DRIFT_REPORTS)
    drift_json = [{"run_id": d.run_id, "run_name": d.run_name, "start_time": d.start_time, "drifted": d.drifted,
                   "drifted_features": d.drifted_features, "method": d.method, "thresholds": d.thresholds,
                   # JSON has no NaN: a NaN score is a gap in its line
                   "scores": {k: (v if math.isfinite(v) else None) for k, v in d.scores.items()}} for d in drift]
    return _page(request, "version.html", title=f"{name} v{mv.version}", mv=mv, decision=decision, rules=rules,
                 history=history, run=run, lineage=_lineage(run, store) if run else None, drift=drift,
                 drift_json=drift_json, drift_limit=DRIFT_REPORTS)


def _gate_rules(details: Any) -> list[dict[str, Any]]:
    """The per-rule outcomes of a gate decision (``GateDecision.to_dict()["outcomes"]``:
    rule, metric, passed (None = skipped), observed, required, detail)."""
    if not isinstance(details, dict):
        return []
    rules = details.get("outcomes") or []
    return [r for r in rules if isinstance(r, dict)][:200]


# ------------------------------------------------------------------------------- API


@api.get("/metric-history")
def metric_history(
    store: Store,
    run: Annotated[list[str], Query()],
    key: str,
    axis: str = "step",
    lo: float | None = None,
    hi: float | None = None,
    buckets: Annotated[int, Query(ge=1, le=queries.MAX_BUCKETS)] = 1000,
) -> JSONResponse:
    if len(run) > MAX_COMPARE:
        raise InvalidArgument(f"Too many runs ({len(run)}): chart at most {MAX_COMPARE} at once.")
    if axis not in ("step", "time", "relative"):
        raise InvalidArgument(f"Invalid x axis {axis!r}: use 'step', 'time' or 'relative'.")
    series = []
    for run_id in run:
        info = store.get_run(run_id).info
        # relative: milliseconds since the run's start, so runs started at different times overlay.
        shift = info.start_time if axis == "relative" else 0
        h = queries.downsampled_history(
            store, run_id, key, axis="step" if axis == "step" else "time",
            lo=None if lo is None else lo + shift, hi=None if hi is None else hi + shift, buckets=buckets,
        )
        series.append({"run_id": run_id, "run_name": info.run_name, "start_time": info.start_time,
                       "x": [x - shift for x in h.x], "y": h.y, "total": h.total, "sampled": h.sampled})
    return JSONResponse({"key": key, "axis": axis, "series": series})


@api.get("/runs/{run_id}/children", response_class=HTMLResponse)
def child_rows(request: Request, run_id: str, store: Store, cols: str = "", order: str = "",
               depth: Annotated[int, Query(ge=1, le=50)] = 1) -> HTMLResponse:
    """The table rows of ``run_id``'s child runs (at most MAX_CHILDREN), in the page's
    columns and order: the runs table's expand control inserts them under the parent."""
    parent = store.get_run(run_id)
    columns = [c for c in cols.split(",") if c][:200] or list(ATTRIBUTE_COLUMNS[:4])
    escaped = run_id.replace("'", "''")
    result = store.search_runs([parent.info.experiment_id], f"tags.`{TAG_PARENT_RUN_ID}` = '{escaped}'",
                               ViewType.ACTIVE_ONLY, MAX_CHILDREN, [order] if order else None)
    children = list(result.items)
    return _page(request, "run_rows.html", rows=[(r, depth) for r in children], depth=depth, columns=columns, nested=True,
                 child_counts=queries.child_counts(store, [r.info.run_id for r in children]), parent_of=_parent_of,
                 column_value=_column_value, more=result.token is not None, parent_id=run_id)


def _run_repo(store: SqlStore, settings: ServerSettings, run_id: str) -> Any:
    run = store.get_run(run_id)
    return run, get_artifact_repository(run.info.artifact_uri, settings.backend_settings())


@api.get("/runs/{run_id}/artifacts")
def artifact_listing(run_id: str, store: Store, settings: Settings, path: str = "") -> JSONResponse:
    _, repo = _run_repo(store, settings, run_id)
    files = repo.list_artifacts(validate_artifact_path(path) or None)[:1000]
    return JSONResponse({"files": [{"path": f.path, "is_dir": f.is_dir, "size": f.file_size} for f in files]})


def _file_info(repo: Any, path: str) -> Any:
    parent = path.rsplit("/", 1)[0] if "/" in path else None
    for info in repo.list_artifacts(parent):
        if info.path == path and not info.is_dir:
            return info
    raise NotFound(f"No artifact file {path!r} in this run.")


@api.get("/runs/{run_id}/preview", response_class=HTMLResponse)
def artifact_preview(request: Request, run_id: str, store: Store, settings: Settings, path: str) -> HTMLResponse:
    path = validate_artifact_path(path) or ""
    run, repo = _run_repo(store, settings, run_id)
    info = _file_info(repo, path)
    size = info.file_size or 0
    if size > previews.MAX_PREVIEW_BYTES:
        shown = previews.Preview("download", note=f"{size:,} bytes: too large to preview.")
    else:
        model_dir = path.rsplit("/", 1)[0] if "/" in path else ""
        shown = previews.preview(path, repo.read_bytes(path), model_uri=f"runs:/{run_id}/{model_dir}".rstrip("/"))
    return _page(request, "preview.html", run=run, path=path, size=size, preview=shown)


@api.get("/runs/{run_id}/artifact")
def artifact_file(run_id: str, store: Store, settings: Settings, path: str) -> Response:
    path = validate_artifact_path(path) or ""
    _, repo = _run_repo(store, settings, run_id)
    info = _file_info(repo, path)
    if (info.file_size or 0) > 200_000_000:
        raise InvalidArgument(f"Artifact {path!r} is {info.file_size:,} bytes: download it with the client instead.")
    suffix = "." + path.rsplit(".", 1)[-1].lower() if "." in path else ""
    headers = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox; default-src 'none'"}
    if suffix in previews.IMAGE_TYPES:
        return Response(repo.read_bytes(path), media_type=previews.IMAGE_TYPES[suffix], headers=headers)
    name = path.rsplit("/", 1)[-1].replace('"', "")
    headers["Content-Disposition"] = f'attachment; filename="{name}"'
    media = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return Response(repo.read_bytes(path), media_type=media if not media.startswith("text/html") else "text/plain",
                    headers=headers)
