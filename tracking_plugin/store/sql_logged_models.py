"""``SqlLoggedModelStore``: MLflow 3's logged models and the inputs/outputs of runs.

MLflow 3's ``log_model`` first creates a *logged model* (``models:/m-<hex>``), uploads its
files under ``<experiment location>/models/<model_id>/artifacts``, marks it READY and
links it to the run as an output; registering it then points a model version at it. The
tracking server stores all of that here so the unmodified mlflow client works against it.

Rules: every public method is one transaction; a model id is ``m-`` plus 32 hex digits;
deleting a logged model marks it deleted (its rows and files stay); tags overwrite, a
param keeps its first value (as run params do).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import TYPE_CHECKING, Any, Sequence

import sqlalchemy as sa

from tracking_plugin.entities import (
    DatasetInput,
    LifecycleStage,
    LoggedModel,
    LoggedModelStatus,
    PagedList,
    RunInputs,
    RunOutputs,
)
from tracking_plugin.errors import Conflict, InvalidArgument, NotFound
from tracking_plugin.search import (
    And,
    Comparison,
    Expr,
    FilterSpec,
    Or,
    ValueKind,
    check_max_results,
    decode_page_token,
    encode_page_token,
    parse_filter,
)
from tracking_plugin.store.schema import (
    URI_LEN,
    ExperimentRow,
    LoggedModelParamRow,
    LoggedModelRow,
    LoggedModelTagRow,
    RunDatasetInputRow,
    RunModelLinkRow,
    RunRow,
)
from tracking_plugin.store.db import Statement
from tracking_plugin.validation import validate_param, validate_run_id, validate_tag, validate_text

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from tracking_plugin.store.db import Database

__all__ = ["SqlLoggedModelStore", "validate_model_id"]

_MODELS = LoggedModelRow.__table__
_MODEL_TAGS = LoggedModelTagRow.__table__
_MODEL_PARAMS = LoggedModelParamRow.__table__
_DATASETS = RunDatasetInputRow.__table__
_LINKS = RunModelLinkRow.__table__
_EXPERIMENTS = ExperimentRow.__table__
_RUNS = RunRow.__table__
# Run on the driver's cursor (see get_run_inputs_outputs).
_RUN_DATASETS = Statement(
    sa.select(
        _DATASETS.c.name, _DATASETS.c.digest, _DATASETS.c.source_type, _DATASETS.c.source,
        _DATASETS.c.schema, _DATASETS.c.profile, _DATASETS.c.tags_json,
    )
    .where(_DATASETS.c.run_uuid == sa.bindparam("run_id"))
    .order_by(_DATASETS.c.name, _DATASETS.c.digest),
    ("run_id",),
)
_RUN_MODEL_LINKS = Statement(
    sa.select(_LINKS.c.model_id, _LINKS.c.direction, _LINKS.c.step)
    .where(_LINKS.c.run_uuid == sa.bindparam("run_id"))
    .order_by(_LINKS.c.step, _LINKS.c.model_id),
    ("run_id",),
)
MAX_LOGGED_MODEL_RESULTS = 10_000

LOGGED_MODEL_FILTER = FilterSpec(
    subject="logged models",
    entities={"tag": ValueKind.STRING, "param": ValueKind.STRING},
    attributes={
        "name": ValueKind.STRING,
        "model_id": ValueKind.STRING,
        "model_type": ValueKind.STRING,
        "status": ValueKind.STRING,
        "source_run_id": ValueKind.STRING,
        "creation_timestamp": ValueKind.NUMBER,
        "last_updated_timestamp": ValueKind.NUMBER,
    },
    aliases={"creation_time": "creation_timestamp", "last_updated_time": "last_updated_timestamp"},
    example="name = 'model' and source_run_id = '<run id>'",
)


def _now_ms() -> int:
    return int(time.time() * 1000)


def validate_model_id(model_id: Any) -> str:
    """A logged model id: ``m-`` followed by letters, digits or dashes (at most 64 chars)."""
    if (
        not isinstance(model_id, str)
        or not model_id.startswith("m-")
        or len(model_id) > 64
        or not model_id[2:].replace("-", "").isalnum()
    ):
        raise InvalidArgument(
            f"Invalid logged model id {model_id!r}: expected 'm-' followed by hex digits, "
            "as returned when the model was logged."
        )
    return model_id


def _experiment_pk(experiment_id: Any) -> int:
    try:
        return int(str(experiment_id))
    except ValueError:
        raise InvalidArgument(
            f"Invalid experiment id {experiment_id!r}: experiment ids are integers given as strings."
        ) from None


class SqlLoggedModelStore:
    """The logged-model part of :class:`~tracking_plugin.store.sql.SqlStore`."""

    db: Database

    def create_logged_model(
        self,
        experiment_id: str,
        *,
        name: str | None = None,
        model_type: str | None = None,
        source_run_id: str | None = None,
        params: dict[str, str] | None = None,
        tags: dict[str, str] | None = None,
    ) -> LoggedModel:
        """A PENDING logged model in ``experiment_id`` whose files go under
        ``<experiment location>/models/<model_id>/artifacts``."""
        pk = _experiment_pk(experiment_id)
        model_id = "m-" + uuid.uuid4().hex
        name = validate_text(name, "logged model name") if name else model_id
        if model_type is not None:
            model_type = validate_text(model_type, "model type")
        if source_run_id:
            validate_run_id(source_run_id)
        else:
            source_run_id = None
        tag_values = dict(validate_tag(k, v) for k, v in (tags or {}).items())
        param_values = dict(validate_param(k, v) for k, v in (params or {}).items())
        now = _now_ms()
        with self.db.session() as session:
            experiment = session.execute(
                sa.select(_EXPERIMENTS.c.artifact_location, _EXPERIMENTS.c.lifecycle_stage).where(
                    _EXPERIMENTS.c.experiment_id == pk
                )
            ).first()
            if experiment is None:
                raise NotFound(f"Experiment {experiment_id!r} does not exist; create it first.")
            if experiment.lifecycle_stage != LifecycleStage.ACTIVE.value:
                raise Conflict(f"Cannot log a model in experiment {experiment_id!r}: it is deleted. Restore it first.")
            if source_run_id is not None and session.execute(
                sa.select(_RUNS.c.run_uuid).where(_RUNS.c.run_uuid == source_run_id)
            ).first() is None:
                raise NotFound(f"Run {source_run_id!r} (source_run_id) does not exist.")
            location = _join(experiment.artifact_location, "models", model_id, "artifacts")
            validate_text(location, "logged model artifact location", limit=URI_LEN)
            session.execute(
                sa.insert(_MODELS).values(
                    model_id=model_id, experiment_id=pk, name=name, artifact_location=location,
                    creation_time=now, last_updated_time=now, status=LoggedModelStatus.PENDING.value,
                    model_type=model_type, source_run_id=source_run_id,
                    lifecycle_stage=LifecycleStage.ACTIVE.value,
                )
            )
            if tag_values:
                session.execute(sa.insert(_MODEL_TAGS), [{"model_id": model_id, "key": k, "value": v} for k, v in tag_values.items()])
            if param_values:
                session.execute(
                    sa.insert(_MODEL_PARAMS), [{"model_id": model_id, "key": k, "value": v} for k, v in param_values.items()]
                )
            return _load_models(session, [model_id])[0]

    def get_logged_model(self, model_id: str) -> LoggedModel:
        """The logged model (deleted ones too); NotFound if unknown."""
        validate_model_id(model_id)
        with self.db.session(write=False) as session:
            models = _load_models(session, [model_id])
        if not models:
            raise _not_found(model_id)
        return models[0]

    def finalize_logged_model(
        self, model_id: str, status: LoggedModelStatus, status_message: str | None = None
    ) -> LoggedModel:
        """Set the status (READY once the files are uploaded, or UPLOAD_FAILED)."""
        validate_model_id(model_id)
        status = LoggedModelStatus(status)
        with self.db.session() as session:
            _active_model(session, model_id, "finalize")
            session.execute(
                sa.update(_MODELS).where(_MODELS.c.model_id == model_id).values(
                    status=status.value, status_message=status_message, last_updated_time=_now_ms()
                )
            )
            return _load_models(session, [model_id])[0]

    def set_logged_model_tags(self, model_id: str, tags: dict[str, str]) -> LoggedModel:
        """Set (or overwrite) tags of an active logged model."""
        validate_model_id(model_id)
        rows = [{"model_id": model_id, "key": k, "value": v} for k, v in (validate_tag(k, v) for k, v in tags.items())]
        with self.db.session() as session:
            _active_model(session, model_id, "tag")
            if rows:
                keys = [r["key"] for r in rows]
                session.execute(sa.delete(_MODEL_TAGS).where(_MODEL_TAGS.c.model_id == model_id, _MODEL_TAGS.c.key.in_(keys)))
                session.execute(sa.insert(_MODEL_TAGS), rows)
                session.execute(sa.update(_MODELS).where(_MODELS.c.model_id == model_id).values(last_updated_time=_now_ms()))
            return _load_models(session, [model_id])[0]

    def delete_logged_model_tag(self, model_id: str, key: str) -> None:
        """Remove a tag; NotFound if the model has no such tag."""
        validate_model_id(model_id)
        key, _ = validate_tag(key, "")
        with self.db.session() as session:
            _active_model(session, model_id, "delete a tag of")
            deleted = session.execute(
                sa.delete(_MODEL_TAGS).where(_MODEL_TAGS.c.model_id == model_id, _MODEL_TAGS.c.key == key)
            ).rowcount
            if not deleted:
                raise NotFound(f"Logged model {model_id!r} has no tag {key!r}; nothing to delete.")

    def log_logged_model_params(self, model_id: str, params: dict[str, str]) -> None:
        """Record params of a logged model; a param keeps its first value (Conflict otherwise)."""
        validate_model_id(model_id)
        values = dict(validate_param(k, v) for k, v in params.items())
        with self.db.session() as session:
            _active_model(session, model_id, "log params to")
            existing = dict(
                session.execute(
                    sa.select(_MODEL_PARAMS.c.key, _MODEL_PARAMS.c.value).where(
                        _MODEL_PARAMS.c.model_id == model_id, _MODEL_PARAMS.c.key.in_(list(values))
                    )
                ).all()
            )
            changed = {k: v for k, v in values.items() if k in existing and existing[k] != v}
            if changed:
                key = next(iter(changed))
                raise Conflict(
                    f"Param {key!r} of logged model {model_id!r} is {existing[key]!r}; it cannot change to "
                    f"{changed[key]!r}. Log a new model instead."
                )
            fresh = [{"model_id": model_id, "key": k, "value": v} for k, v in values.items() if k not in existing]
            if fresh:
                session.execute(sa.insert(_MODEL_PARAMS), fresh)

    def delete_logged_model(self, model_id: str) -> None:
        """Mark a logged model deleted (its files and rows stay)."""
        validate_model_id(model_id)
        with self.db.session() as session:
            _active_model(session, model_id, "delete")
            session.execute(
                sa.update(_MODELS).where(_MODELS.c.model_id == model_id).values(
                    lifecycle_stage=LifecycleStage.DELETED.value, last_updated_time=_now_ms()
                )
            )

    def search_logged_models(
        self,
        experiment_ids: Sequence[str],
        *,
        filter_string: str | None = None,
        max_results: int = 100,
        page_token: str | None = None,
    ) -> PagedList[LoggedModel]:
        """Active logged models of ``experiment_ids`` matching ``filter_string`` (``name =
        'model'``, ``source_run_id = '...'``, ``tags.k = 'v'``, ``params.k = 'v'``, OR and
        parentheses too), newest first, one page at a time.

        The filter is applied in Python to the experiments' models: an experiment holds a
        few models per run, not millions of rows like metric history.
        """
        pks = sorted({_experiment_pk(e) for e in experiment_ids})
        check_max_results(max_results, limit=MAX_LOGGED_MODEL_RESULTS)
        offset = decode_page_token(page_token)
        expr = parse_filter(filter_string, LOGGED_MODEL_FILTER)
        if not pks:
            return PagedList([], None)
        stmt = (
            sa.select(_MODELS.c.model_id)
            .where(_MODELS.c.experiment_id.in_(pks), _MODELS.c.lifecycle_stage == LifecycleStage.ACTIVE.value)
            .order_by(_MODELS.c.creation_time.desc(), _MODELS.c.model_id)
        )
        if expr is None:
            stmt = stmt.limit(max_results + 1).offset(offset)
        with self.db.session(write=False) as session:
            ids = list(session.execute(stmt).scalars())
            if expr is None:
                models = _load_models(session, ids[: max_results + 1])
            else:
                models = [m for m in _load_models(session, ids) if _matches(expr, m)][offset : offset + max_results + 1]
        more = len(models) > max_results
        return PagedList(models[:max_results], encode_page_token(offset + max_results) if more else None)

    # ---------------------------------------------------------------- run inputs / outputs

    def log_run_inputs(
        self, run_id: str, datasets: Sequence[DatasetInput] = (), model_ids: Sequence[str] = ()
    ) -> None:
        """Record datasets (one row per name and digest; a repeat overwrites) and logged
        models a run read."""
        validate_run_id(run_id)
        by_identity: dict[tuple[str, str], dict[str, Any]] = {}
        for dataset in datasets:
            row = {
                "run_uuid": run_id,
                "name": validate_text(dataset.name, "dataset name"),
                "digest": validate_text(dataset.digest, "dataset digest", limit=64),
                "source_type": validate_text(dataset.source_type, "dataset source_type", limit=64),
                "source": validate_text(dataset.source, "dataset source", limit=1_000_000),
                "schema": dataset.schema,
                "profile": dataset.profile,
                "tags_json": json.dumps(dict(validate_tag(k, v) for k, v in dataset.tags.items())),
            }
            by_identity[(row["name"], row["digest"])] = row  # a repeat within the call: the last wins
        dataset_rows = list(by_identity.values())
        ids = sorted({validate_model_id(m) for m in model_ids})
        with self.db.session() as session:
            _active_run(session, run_id)
            for row in dataset_rows:
                session.execute(
                    sa.delete(_DATASETS).where(
                        _DATASETS.c.run_uuid == run_id, _DATASETS.c.name == row["name"], _DATASETS.c.digest == row["digest"]
                    )
                )
            if dataset_rows:
                session.execute(sa.insert(_DATASETS), dataset_rows)
            _link_models(session, run_id, "input", [(m, 0) for m in ids])

    def log_run_outputs(self, run_id: str, models: Sequence[tuple[str, int]]) -> None:
        """Record logged models a run produced, with the step they were logged at."""
        validate_run_id(run_id)
        steps: dict[str, int] = {}
        for model_id, step in models:
            if isinstance(step, bool) or not isinstance(step, int):
                raise InvalidArgument(f"Invalid step {step!r} for model output {model_id!r}: it must be an integer.")
            steps[validate_model_id(model_id)] = step  # a repeat within the call: the last wins
        pairs = list(steps.items())
        with self.db.session() as session:
            _active_run(session, run_id)
            _link_models(session, run_id, "output", pairs)

    def get_run_inputs_outputs(self, run_id: str) -> tuple[RunInputs, RunOutputs]:
        """The datasets and models a run read, and the models it produced."""
        validate_run_id(run_id)
        # Driver SQL on the fast path: the tracking server reads this with every run it returns.
        with self.db.transaction(write=False) as tx:
            datasets = tx.all(_RUN_DATASETS, (run_id,))
            links = tx.all(_RUN_MODEL_LINKS, (run_id,))
        inputs = RunInputs(
            datasets=tuple(
                DatasetInput(
                    name=name, digest=digest, source_type=source_type, source=source,
                    schema=schema, profile=profile, tags=json.loads(tags_json),
                )
                for name, digest, source_type, source, schema, profile, tags_json in datasets
            ),
            model_ids=tuple(model_id for model_id, direction, _ in links if direction == "input"),
        )
        outputs = RunOutputs(models=tuple((model_id, step) for model_id, direction, step in links if direction == "output"))
        return inputs, outputs


# ---------------------------------------------------------------- helpers


def _join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts]) if base else "/".join(parts)


def _not_found(model_id: str) -> NotFound:
    return NotFound(f"Logged model {model_id!r} does not exist. Check the id (models:/<model_id>).")


def _active_model(session: Session, model_id: str, action: str) -> None:
    row = session.execute(sa.select(_MODELS.c.lifecycle_stage).where(_MODELS.c.model_id == model_id)).first()
    if row is None:
        raise _not_found(model_id)
    if row.lifecycle_stage != LifecycleStage.ACTIVE.value:
        raise Conflict(f"Cannot {action} logged model {model_id!r}: it is deleted.")


def _active_run(session: Session, run_id: str) -> None:
    row = session.execute(sa.select(_RUNS.c.lifecycle_stage).where(_RUNS.c.run_uuid == run_id)).first()
    if row is None:
        raise NotFound(f"Run {run_id!r} does not exist. Check the run id.")
    if row.lifecycle_stage != LifecycleStage.ACTIVE.value:
        raise Conflict(f"Cannot log to run {run_id!r}: it is deleted. Restore it first with restore_run().")


def _link_models(session: Session, run_id: str, direction: str, pairs: list[tuple[str, int]]) -> None:
    if not pairs:
        return
    ids = [m for m, _ in pairs]
    known = set(session.execute(sa.select(_MODELS.c.model_id).where(_MODELS.c.model_id.in_(ids))).scalars())
    missing = [m for m in ids if m not in known]
    if missing:
        raise _not_found(missing[0])
    session.execute(
        sa.delete(_LINKS).where(_LINKS.c.run_uuid == run_id, _LINKS.c.direction == direction, _LINKS.c.model_id.in_(ids))
    )
    session.execute(
        sa.insert(_LINKS), [{"run_uuid": run_id, "model_id": m, "direction": direction, "step": s} for m, s in pairs]
    )


def _load_models(session: Session, model_ids: Sequence[str]) -> list[LoggedModel]:
    if not model_ids:
        return []
    rows = {r.model_id: r for r in session.execute(sa.select(_MODELS).where(_MODELS.c.model_id.in_(model_ids)))}
    tags: dict[str, dict[str, str]] = {}
    for r in session.execute(sa.select(_MODEL_TAGS).where(_MODEL_TAGS.c.model_id.in_(model_ids))):
        tags.setdefault(r.model_id, {})[r.key] = r.value
    params: dict[str, dict[str, str]] = {}
    for r in session.execute(sa.select(_MODEL_PARAMS).where(_MODEL_PARAMS.c.model_id.in_(model_ids))):
        params.setdefault(r.model_id, {})[r.key] = r.value
    return [
        LoggedModel(
            model_id=r.model_id,
            experiment_id=str(r.experiment_id),
            name=r.name,
            artifact_location=r.artifact_location,
            creation_timestamp=r.creation_time,
            last_updated_timestamp=r.last_updated_time,
            status=LoggedModelStatus(r.status),
            lifecycle_stage=LifecycleStage(r.lifecycle_stage),
            status_message=r.status_message,
            model_type=r.model_type,
            source_run_id=r.source_run_id,
            tags=tags.get(r.model_id, {}),
            params=params.get(r.model_id, {}),
        )
        for r in (rows[m] for m in model_ids if m in rows)
    ]


def _matches(expr: Expr, model: LoggedModel) -> bool:
    if isinstance(expr, And):
        return all(_matches(e, model) for e in expr.operands)
    if isinstance(expr, Or):
        return any(_matches(e, model) for e in expr.operands)
    assert isinstance(expr, Comparison)
    if expr.entity_type == "tag":
        actual: Any = model.tags.get(expr.key)
    elif expr.entity_type == "param":
        actual = model.params.get(expr.key)
    elif expr.key == "status":
        actual = model.status.value
    else:
        actual = getattr(model, expr.key)
    return _compare(actual, expr.op, expr.value)


def _compare(actual: Any, op: str, value: Any) -> bool:
    if op == "IS NULL":
        return actual is None
    if op == "IS NOT NULL":
        return actual is not None
    if actual is None:
        return False
    if op in ("IN", "NOT IN"):
        inside = actual in value
        return inside if op == "IN" else not inside
    if op in ("LIKE", "ILIKE"):
        pattern = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in str(value))
        return re.fullmatch(pattern, str(actual), re.IGNORECASE if op == "ILIKE" else 0 | re.DOTALL) is not None
    checks = {
        "=": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
    }
    return bool(checks[op](actual, value))
