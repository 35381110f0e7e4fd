# Over 600 lines on purpose: every registry rule (numbering under a row lock, archive-on-promote,
# alias moves, audit rows, gate decisions) is one transaction here, sharing private helpers.
"""``SqlRegistryStore``: registered models, versions, stages, aliases, audit log, gates.

Every public method is one transaction (``self.db.session()``). Writes that touch a model
first lock its ``registered_models`` row (``SELECT ... FOR UPDATE`` on PostgreSQL; on
SQLite every write session already holds the database write lock from ``BEGIN
IMMEDIATE``), so concurrent calls on one model run one after the other:

- version numbers come from the row's ``last_version`` counter, bumped in the same
  transaction as the version insert: concurrent registrations get distinct, gapless numbers
  and a transaction that rolls back hands no number out;
- a promotion checks the version (READY, gate passed) and moves the alias and/or stage
  under the same lock, so two concurrent promotions serialize and the last one wins;
- every stage change and alias move appends a ``model_transitions`` row in the same
  transaction: the audit log and the state never disagree.

Differences from MLflow, on purpose:

- only READY versions may hold an alias or enter Staging/Production (a version whose
  registration failed has no files to serve);
- ``get_latest_versions`` and ``RegisteredModel.latest_versions`` skip versions that are
  not READY, so ``models:/<name>/latest`` never points at a half-registered version;
- deleting a version removes the aliases that pointed at it and audits each removal.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tracking_plugin.entities import (
    ModelVersion,
    ModelVersionStatus,
    PagedList,
    RegisteredModel,
    Stage,
    StoredGateDecision,
    TransitionRecord,
)
from tracking_plugin.errors import AlreadyExists, Conflict, InvalidArgument, NotFound
from tracking_plugin.search import (
    Comparison,
    FilterSpec,
    ValueKind,
    check_max_results,
    compare,
    compile_filter,
    decode_page_token,
    encode_page_token,
    key_value_filter,
    parse_filter,
    parse_order_by,
)
from tracking_plugin.store.schema import (
    URI_LEN,
    GateDecisionRow,
    ModelTransitionRow,
    ModelVersionRow,
    ModelVersionTagRow,
    RegisteredModelAliasRow,
    RegisteredModelRow,
    RegisteredModelTagRow,
)
from tracking_plugin.store.statements import DatabaseClockMs
from tracking_plugin.validation import (
    validate_alias,
    validate_model_name,
    validate_run_id,
    validate_storable,
    validate_tag,
)

if TYPE_CHECKING:
    from tracking_plugin.store.db import Database

__all__ = [
    "MODEL_VERSION_FILTER",
    "REGISTERED_MODEL_FILTER",
    "SEARCH_MODEL_VERSION_MAX_RESULTS",
    "SEARCH_REGISTERED_MODEL_MAX_RESULTS",
    "SqlRegistryStore",
]

# MLflow's limits (mlflow.store.model_registry).
SEARCH_REGISTERED_MODEL_MAX_RESULTS = 1000
SEARCH_MODEL_VERSION_MAX_RESULTS = 200_000

_ACTIVE_STAGES = (Stage.STAGING, Stage.PRODUCTION)


def _now_ms() -> int:
    return int(time.time() * 1000)


# ---------------------------------------------------------------- argument checks


_stage = Stage.parse  # the enum or a case-insensitive name ('production', 'None')


def _stages(values: Sequence[Any] | None) -> list[Stage]:
    if values is None:
        return list(Stage)
    if isinstance(values, (str, Stage)):  # a lone stage instead of a list
        values = [values]
    return list(dict.fromkeys(_stage(v) for v in values))


def _version_number(version: Any) -> int:
    """Versions are positive integers; MLflow clients often pass them as strings."""
    if isinstance(version, bool):
        number = None
    elif isinstance(version, int):
        number = version
    elif isinstance(version, str) and version.strip().isdigit():
        number = int(version.strip())
    else:
        number = None
    if number is None or number < 1:
        raise InvalidArgument(f"Invalid model version {version!r}: use a positive integer such as 3.")
    return number


def _status(value: Any) -> ModelVersionStatus:
    try:
        status = ModelVersionStatus(value)
    except ValueError:
        status = None
    if status not in (ModelVersionStatus.READY, ModelVersionStatus.FAILED_REGISTRATION):
        raise InvalidArgument(
            f"Invalid final status {value!r} for a model version: use "
            "ModelVersionStatus.READY or ModelVersionStatus.FAILED_REGISTRATION."
        )
    return status


def _uri(value: Any, what: str = "model source") -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgument(
            f"Invalid {what} {value!r}: give a model URI or location, e.g. "
            "'runs:/<run_id>/model' or 's3://bucket/path/model'."
        )
    if len(value) > URI_LEN:
        raise InvalidArgument(f"The {what} has {len(value)} characters, the limit is {URI_LEN}.")
    return validate_storable(value, what)


def _tags(tags: dict[str, Any] | None) -> dict[str, str]:
    if tags is None:
        return {}
    if not isinstance(tags, dict):
        raise InvalidArgument(f"Invalid tags {tags!r}: pass a dict of str to str.")
    return dict(validate_tag(k, v) for k, v in tags.items())


def _description(description: Any) -> str | None:
    if description is not None and not isinstance(description, str):
        raise InvalidArgument(f"Invalid description {description!r}: it must be a string or None.")
    return None if description is None else validate_storable(description, "description")


def _optional_text(value: Any, what: str, limit: int | None = None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidArgument(f"Invalid {what} {value!r}: it must be a string or None.")
    if limit is not None and len(value) > limit:
        raise InvalidArgument(f"The {what} has {len(value)} characters, the limit is {limit}.")
    return validate_storable(value, what)


@dataclass(frozen=True)
class _Audit:
    """Who moved something and why; copied into every audit row of one call."""

    actor: str | None = None
    reason: str | None = None
    prefect_flow_run_id: str | None = None
    gate_decision_id: str | None = None
    claimed_actor: str | None = None  # under --auth: who the client said it was

    @classmethod
    def checked(
        cls,
        actor: Any = None,
        reason: Any = None,
        prefect_flow_run_id: Any = None,
        gate_decision_id: Any = None,
        claimed_actor: Any = None,
    ) -> _Audit:
        return cls(
            actor=_optional_text(actor, "actor", 256),
            reason=_optional_text(reason, "reason"),
            prefect_flow_run_id=_optional_text(prefect_flow_run_id, "Prefect flow-run id", 64),
            gate_decision_id=_optional_text(gate_decision_id, "gate decision id", 36),
            claimed_actor=_optional_text(claimed_actor, "claimed actor", 256),
        )


# ---------------------------------------------------------------- row lookups


def _model_not_found(name: str) -> NotFound:
    return NotFound(
        f"Registered model {name!r} does not exist. Check the name (search_registered_models() "
        "lists them) or register a version first."
    )


def _find_model(session: Session, name: str, *, lock: bool = False) -> RegisteredModelRow | None:
    query = sa.select(RegisteredModelRow).where(RegisteredModelRow.name == name)
    if lock:
        # populate_existing: read the row as it is now that we hold the lock, never a stale
        # copy from the identity map.
        query = query.with_for_update().execution_options(populate_existing=True)
    return session.scalars(query).one_or_none()


def _model(session: Session, name: Any, *, lock: bool = False) -> RegisteredModelRow:
    validate_model_name(name)
    row = _find_model(session, name, lock=lock)
    if row is None:
        raise _model_not_found(name)
    return row


def _version(session: Session, model: RegisteredModelRow, version: int) -> ModelVersionRow:
    row = session.scalars(
        sa.select(ModelVersionRow).where(ModelVersionRow.model_id == model.id, ModelVersionRow.version == version)
    ).one_or_none()
    if row is None:
        raise NotFound(
            f"Version {version} of registered model {model.name!r} does not exist. List its "
            f"versions with search_model_versions(\"name = '{model.name}'\")."
        )
    return row


def _alias_row(session: Session, model: RegisteredModelRow, alias: str) -> RegisteredModelAliasRow | None:
    return session.get(RegisteredModelAliasRow, (model.id, alias))


def _alias_not_found(model: RegisteredModelRow, alias: str) -> NotFound:
    return NotFound(
        f"Alias {alias!r} is not set on registered model {model.name!r}. Set it with "
        f"set_registered_model_alias({model.name!r}, {alias!r}, <version>) or promote a version."
    )


def _require_ready(model: RegisteredModelRow, row: ModelVersionRow, action: str) -> None:
    if row.status != ModelVersionStatus.READY.value:
        detail = f": {row.status_message}" if row.status_message else ""
        raise Conflict(
            f"Cannot {action} version {row.version} of registered model {model.name!r}: its status "
            f"is {row.status}{detail}. Only READY versions can; register the model again."
        )


# ---------------------------------------------------------------- writes (private)


def _audit(
    session: Session,
    model: RegisteredModelRow,
    *,
    version: int | None,
    kind: str,
    subject: str | None,
    from_value: str | None,
    to_value: str | None,
    audit: _Audit,
) -> None:
    session.add(
        ModelTransitionRow(
            model_id=model.id,
            model_name=model.name,
            version=version,
            kind=kind,
            subject=subject,
            from_value=from_value,
            to_value=to_value,
            timestamp=session.scalar(sa.select(DatabaseClockMs())),
            actor=audit.actor,
            reason=audit.reason,
            prefect_flow_run_id=audit.prefect_flow_run_id,
            gate_decision_id=audit.gate_decision_id,
            claimed_actor=audit.claimed_actor,
        )
    )


def _move_alias(
    session: Session,
    model: RegisteredModelRow,
    alias: str,
    version: int,
    audit: _Audit,
    now: int,
) -> None:
    """Point ``alias`` at ``version`` and audit it; nothing happens if it already does."""
    row = _alias_row(session, model, alias)
    previous = row.version if row is not None else None
    if previous == version:
        return
    if row is None:
        session.add(RegisteredModelAliasRow(model_id=model.id, alias=alias, version=version))
    else:
        row.version = version
    _audit(
        session,
        model,
        version=version,
        kind="alias",
        subject=alias,
        from_value=None if previous is None else str(previous),
        to_value=str(version),
        audit=audit,
    )
    model.last_updated_time = now


def _set_stage(
    session: Session,
    model: RegisteredModelRow,
    row: ModelVersionRow,
    stage: Stage,
    audit: _Audit,
    now: int,
) -> None:
    if row.current_stage == stage.value:
        return
    _audit(
        session,
        model,
        version=row.version,
        kind="stage",
        subject=None,
        from_value=row.current_stage,
        to_value=stage.value,
        audit=audit,
    )
    row.current_stage = stage.value
    row.last_updated_time = now
    model.last_updated_time = now


def _transition(
    session: Session,
    model: RegisteredModelRow,
    row: ModelVersionRow,
    stage: Stage,
    archive_existing_versions: bool,
    audit: _Audit,
    now: int,
) -> None:
    """Move ``row`` to ``stage``; with ``archive_existing_versions`` (Staging/Production only,
    as in MLflow) archive the other versions in that stage. One audit row per change."""
    if archive_existing_versions and stage not in _ACTIVE_STAGES:
        raise InvalidArgument(
            f"archive_existing_versions=True only applies to the 'Staging' and 'Production' "
            f"stages, not {stage.value!r}. Pass archive_existing_versions=False."
        )
    if stage in _ACTIVE_STAGES:
        _require_ready(model, row, f"move to {stage.value}")
    _set_stage(session, model, row, stage, audit, now)
    if archive_existing_versions:
        others = session.scalars(
            sa.select(ModelVersionRow)
            .where(
                ModelVersionRow.model_id == model.id,
                ModelVersionRow.current_stage == stage.value,
                ModelVersionRow.id != row.id,
            )
            .order_by(ModelVersionRow.version)
        ).all()
        for other in others:
            _set_stage(session, model, other, Stage.ARCHIVED, audit, now)


def _rollback_target(session: Session, model: RegisteredModelRow, alias: str, current: int) -> int | None:
    """The version ``alias`` goes back to: replay its audit rows as a stack of holders.

    A move back to an earlier holder with only since-deleted versions above it is an undo
    (the stack is cut back to it); any other move pushes. So repeated rollbacks step further
    back (v3 -> v2 -> v1) instead of bouncing between the last two, and a version that was
    rolled back from is not returned to. Deleted versions are skipped.
    """
    live = set(
        session.scalars(
            sa.select(ModelVersionRow.version).where(
                ModelVersionRow.model_id == model.id,
                ModelVersionRow.status == ModelVersionStatus.READY.value,
            )
        )
    )
    moves = session.scalars(
        sa.select(ModelTransitionRow.to_value)
        .where(
            ModelTransitionRow.model_id == model.id,
            ModelTransitionRow.kind == "alias",
            ModelTransitionRow.subject == alias,
            ModelTransitionRow.to_value.is_not(None),  # removals do not change the order
        )
        .order_by(ModelTransitionRow.id)
    )
    stack: list[int] = []
    for to_value in moves:
        holder = int(to_value)  # type: ignore[arg-type]
        if stack and stack[-1] == holder:
            continue
        below = len(stack) - 2
        while below >= 0 and stack[below] != holder and stack[below] not in live:
            below -= 1
        if below >= 0 and stack[below] == holder:
            del stack[below + 1 :]
        else:
            stack.append(holder)
    # The top is the current holder; below it, the holders to go back to.
    while stack and (stack[-1] == current or stack[-1] not in live):
        stack.pop()
    return stack[-1] if stack else None


# ---------------------------------------------------------------- entities


def _model_entities(session: Session, rows: Sequence[RegisteredModelRow]) -> list[RegisteredModel]:
    """Entities for ``rows`` with tags, aliases and latest READY version per stage,
    loaded in three queries whatever the number of rows."""
    ids = [r.id for r in rows]
    if not ids:
        return []
    tags: dict[int, dict[str, str]] = {i: {} for i in ids}
    for tag in session.scalars(sa.select(RegisteredModelTagRow).where(RegisteredModelTagRow.model_id.in_(ids))):
        tags[tag.model_id][tag.key] = tag.value
    aliases: dict[int, dict[str, int]] = {i: {} for i in ids}
    for alias in session.scalars(
        sa.select(RegisteredModelAliasRow)
        .where(RegisteredModelAliasRow.model_id.in_(ids))
        .order_by(RegisteredModelAliasRow.alias)
    ):
        aliases[alias.model_id][alias.alias] = alias.version
    latest = _latest_rows(session, ids, list(Stage))
    names = {r.id: r.name for r in rows}
    latest_entities = _version_entities(session, [(v, names[v.model_id]) for v in latest])
    latest_by_model: dict[int, list[ModelVersion]] = {i: [] for i in ids}
    for version_row, entity in zip(latest, latest_entities):
        latest_by_model[version_row.model_id].append(entity)
    return [
        RegisteredModel(
            name=r.name,
            creation_timestamp=r.creation_time,
            last_updated_timestamp=r.last_updated_time,
            description=r.description,
            tags=tags[r.id],
            aliases=aliases[r.id],
            latest_versions=tuple(latest_by_model[r.id]),
        )
        for r in rows
    ]


def _latest_rows(session: Session, model_ids: Sequence[int], stages: Sequence[Stage]) -> list[ModelVersionRow]:
    """The highest READY version in each of ``stages`` for each model, in stage order."""
    if not model_ids or not stages:
        return []
    top = (
        sa.select(
            ModelVersionRow.model_id,
            ModelVersionRow.current_stage,
            sa.func.max(ModelVersionRow.version).label("version"),
        )
        .where(
            ModelVersionRow.model_id.in_(model_ids),
            ModelVersionRow.status == ModelVersionStatus.READY.value,
            ModelVersionRow.current_stage.in_([s.value for s in stages]),
        )
        .group_by(ModelVersionRow.model_id, ModelVersionRow.current_stage)
        .subquery()
    )
    rows = session.scalars(
        sa.select(ModelVersionRow).join(
            top,
            sa.and_(ModelVersionRow.model_id == top.c.model_id, ModelVersionRow.version == top.c.version),
        )
    ).all()
    order = {s.value: i for i, s in enumerate(stages)}
    return sorted(rows, key=lambda r: (r.model_id, order[r.current_stage]))


def _version_entities(session: Session, rows: Sequence[tuple[ModelVersionRow, str]]) -> list[ModelVersion]:
    """Entities for (version row, model name) pairs with tags and aliases, in two queries."""
    if not rows:
        return []
    version_ids = [r.id for r, _ in rows]
    model_ids = list({r.model_id for r, _ in rows})
    tags: dict[int, dict[str, str]] = {i: {} for i in version_ids}
    for tag in session.scalars(sa.select(ModelVersionTagRow).where(ModelVersionTagRow.version_id.in_(version_ids))):
        tags[tag.version_id][tag.key] = tag.value
    aliases: dict[tuple[int, int], list[str]] = {}
    for alias in session.scalars(
        sa.select(RegisteredModelAliasRow)
        .where(RegisteredModelAliasRow.model_id.in_(model_ids))
        .order_by(RegisteredModelAliasRow.alias)
    ):
        aliases.setdefault((alias.model_id, alias.version), []).append(alias.alias)
    return [
        ModelVersion(
            name=name,
            version=r.version,
            creation_timestamp=r.creation_time,
            last_updated_timestamp=r.last_updated_time,
            current_stage=Stage(r.current_stage),
            status=ModelVersionStatus(r.status),
            source=r.source,
            storage_location=r.storage_location,
            run_id=r.run_id,
            description=r.description,
            status_message=r.status_message,
            tags=tags[r.id],
            aliases=tuple(aliases.get((r.model_id, r.version), ())),
            gate_decision_id=r.gate_decision_id,
        )
        for r, name in rows
    ]


def _version_entity(session: Session, model: RegisteredModelRow, row: ModelVersionRow) -> ModelVersion:
    session.flush()
    return _version_entities(session, [(row, model.name)])[0]


def _model_entity(session: Session, model: RegisteredModelRow) -> RegisteredModel:
    session.flush()
    return _model_entities(session, [model])[0]


def _transition_record(row: ModelTransitionRow) -> TransitionRecord:
    return TransitionRecord(
        id=row.id,
        name=row.model_name,
        version=row.version,
        kind=row.kind,
        subject=row.subject,
        from_value=row.from_value,
        to_value=row.to_value,
        timestamp=row.timestamp,
        actor=row.actor,
        reason=row.reason,
        prefect_flow_run_id=row.prefect_flow_run_id,
        gate_decision_id=row.gate_decision_id,
        claimed_actor=row.claimed_actor,
    )


def _decision_entity(row: GateDecisionRow, name: str) -> StoredGateDecision:
    return StoredGateDecision(
        id=row.id,
        name=name,
        version=row.version,
        passed=row.passed,
        reason=row.reason,
        details=json.loads(row.decision_json),
        created_time=row.created_time,
        prefect_flow_run_id=row.prefect_flow_run_id,
    )


# ---------------------------------------------------------------- the store


class SqlRegistryStore:
    """Registry half of :class:`~tracking_plugin.store.sql.SqlStore` (see module docstring).

    >>> from tracking_plugin.store.sql import SqlStore
    >>> store = SqlStore.from_uri("sqlite:///mlops.db")  # doctest: +SKIP
    >>> store.db.ensure_schema()                          # doctest: +SKIP
    >>> v = store.create_model_version("churn", "runs:/abc123/model")  # doctest: +SKIP
    >>> v.version, v.status.value                         # doctest: +SKIP
    (1, 'PENDING_REGISTRATION')
    """

    db: Database

    # ------------------------------------------------------------ registered models

    def create_registered_model(
        self, name: str, tags: dict[str, str] | None = None, description: str | None = None
    ) -> RegisteredModel:
        validate_model_name(name)
        checked_tags = _tags(tags)
        description = _description(description)
        now = _now_ms()
        with self.db.session() as session:
            if _find_model(session, name) is not None:
                raise AlreadyExists(
                    f"Registered model {name!r} already exists. Add a version to it "
                    "(register_model / create_model_version) or choose another name."
                )
            model = RegisteredModelRow(
                name=name, creation_time=now, last_updated_time=now, description=description, last_version=0
            )
            session.add(model)
            try:
                session.flush()
            except IntegrityError as exc:  # created by a concurrent caller meanwhile
                raise AlreadyExists(f"Registered model {name!r} already exists.") from exc
            session.add_all(RegisteredModelTagRow(model_id=model.id, key=k, value=v) for k, v in checked_tags.items())
            return _model_entity(session, model)

    def get_registered_model(self, name: str) -> RegisteredModel:
        with self.db.session(write=False) as session:
            return _model_entity(session, _model(session, name))

    def search_registered_models(
        self,
        filter_string: str | None = None,
        max_results: int = 100,
        order_by: Sequence[str] | None = None,
        page_token: str | None = None,
    ) -> PagedList[RegisteredModel]:
        """Search with MLflow's filter syntax: ``name = 'x'``, ``name LIKE 'churn%'``,
        ``name ILIKE ...``, ``name != ...``, ``name IN ('a', 'b')``, ``tags.team = 'ml'``,
        joined by ``AND`` (``OR`` and parentheses too). ``order_by``: ``name``,
        ``creation_timestamp``, ``last_updated_timestamp`` with ``ASC``/``DESC``."""
        max_results = check_max_results(max_results, limit=SEARCH_REGISTERED_MODEL_MAX_RESULTS)
        offset = decode_page_token(page_token)
        where = _filter(
            filter_string,
            REGISTERED_MODEL_FILTER,
            _RM_COLUMNS,
            tag_table=RegisteredModelTagRow,
            tag_owner_fk="model_id",
            owner_id=RegisteredModelRow.id,
            dialect=self.db.dialect,
        )
        ordering = _order_by(order_by, REGISTERED_MODEL_FILTER, _RM_COLUMNS, default=[], tiebreak=["name"])
        with self.db.session(write=False) as session:
            rows = session.scalars(
                sa.select(RegisteredModelRow)
                .where(where)
                .order_by(*ordering, RegisteredModelRow.id)
                .offset(offset)
                .limit(max_results + 1)
            ).all()
            token = encode_page_token(offset + max_results) if len(rows) > max_results else None
            return PagedList(_model_entities(session, rows[:max_results]), token)

    def rename_registered_model(self, name: str, new_name: str) -> RegisteredModel:
        validate_model_name(new_name)
        with self.db.session() as session:
            model = _model(session, name, lock=True)
            if new_name == name:
                return _model_entity(session, model)
            if _find_model(session, new_name) is not None:
                raise AlreadyExists(
                    f"Cannot rename registered model {name!r} to {new_name!r}: a model with that "
                    "name already exists. Choose another name or delete that model first."
                )
            model.name = new_name
            model.last_updated_time = _now_ms()
            try:
                session.flush()
            except IntegrityError as exc:
                raise AlreadyExists(f"Registered model {new_name!r} already exists.") from exc
            return _model_entity(session, model)

    def update_registered_model(self, name: str, description: str | None) -> RegisteredModel:
        description = _description(description)
        with self.db.session() as session:
            model = _model(session, name, lock=True)
            model.description = description
            model.last_updated_time = _now_ms()
            return _model_entity(session, model)

    def delete_registered_model(self, name: str) -> None:
        """Delete the model with its versions, tags, aliases, gate decisions and audit log."""
        with self.db.session() as session:
            model = _model(session, name, lock=True)
            # ON DELETE CASCADE (SQLite runs with foreign_keys=ON) removes the dependants.
            session.execute(sa.delete(RegisteredModelRow).where(RegisteredModelRow.id == model.id))
            session.expunge(model)

    def set_registered_model_tag(self, name: str, key: str, value: str) -> None:
        key, value = validate_tag(key, value)
        with self.db.session() as session:
            model = _model(session, name, lock=True)
            tag = session.get(RegisteredModelTagRow, (model.id, key))
            if tag is None:
                session.add(RegisteredModelTagRow(model_id=model.id, key=key, value=value))
            else:
                tag.value = value
            model.last_updated_time = _now_ms()

    def delete_registered_model_tag(self, name: str, key: str) -> None:
        """Remove a tag; removing a tag that is not set does nothing (as in MLflow)."""
        with self.db.session() as session:
            model = _model(session, name, lock=True)
            session.execute(
                sa.delete(RegisteredModelTagRow).where(
                    RegisteredModelTagRow.model_id == model.id, RegisteredModelTagRow.key == key
                )
            )

    # ------------------------------------------------------------ versions

    def create_model_version(
        self,
        name: str,
        source: str,
        *,
        run_id: str | None = None,
        tags: dict[str, str] | None = None,
        description: str | None = None,
        user_id: str | None = None,
    ) -> ModelVersion:
        """Allocate the next version number under a row lock; status PENDING_REGISTRATION.
        Creates the registered model if it does not exist yet."""
        validate_model_name(name)
        source = _uri(source)
        if run_id is not None:
            validate_run_id(run_id)
        checked_tags = _tags(tags)
        description = _description(description)
        user_id = _optional_text(user_id, "user id", 256)
        now = _now_ms()
        with self.db.session() as session:
            model = self._locked_model_creating(session, name, now)
            model.last_version += 1
            model.last_updated_time = now
            row = ModelVersionRow(
                model_id=model.id,
                version=model.last_version,
                creation_time=now,
                last_updated_time=now,
                description=description,
                user_id=user_id,
                current_stage=Stage.NONE.value,
                source=source,
                storage_location=None,
                run_id=run_id,
                status=ModelVersionStatus.PENDING_REGISTRATION.value,
            )
            session.add(row)
            session.flush()
            session.add_all(ModelVersionTagRow(version_id=row.id, key=k, value=v) for k, v in checked_tags.items())
            return _version_entity(session, model, row)

    def _locked_model_creating(self, session: Session, name: str, now: int) -> RegisteredModelRow:
        """Lock the model row, creating the model first if needed, without racing a
        concurrent creator: INSERT ... ON CONFLICT DO NOTHING waits for the other insert to
        commit, then the locking SELECT sees its row."""
        model = _find_model(session, name, lock=True)
        if model is not None:
            return model
        if self.db.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        session.execute(
            insert(RegisteredModelRow)
            .values(name=name, creation_time=now, last_updated_time=now, last_version=0)
            .on_conflict_do_nothing(index_elements=["name"])
        )
        model = _find_model(session, name, lock=True)
        assert model is not None
        return model

    def finish_model_version(
        self,
        name: str,
        version: int,
        *,
        status: ModelVersionStatus,
        storage_location: str | None = None,
        status_message: str | None = None,
    ) -> ModelVersion:
        """Move a PENDING_REGISTRATION version to READY or FAILED_REGISTRATION."""
        number = _version_number(version)
        final = _status(status)
        if storage_location is not None:
            storage_location = _uri(storage_location, "storage location")
        status_message = _optional_text(status_message, "status message")
        with self.db.session() as session:
            model = _model(session, name, lock=True)
            row = _version(session, model, number)
            if row.status != ModelVersionStatus.PENDING_REGISTRATION.value:
                raise Conflict(
                    f"Version {number} of registered model {name!r} is already {row.status}; only a "
                    "PENDING_REGISTRATION version can be finished. Register the model again."
                )
            now = _now_ms()
            row.status = final.value
            row.status_message = status_message
            if storage_location is not None:
                row.storage_location = storage_location
            row.last_updated_time = model.last_updated_time = now
            return _version_entity(session, model, row)

    def get_model_version(self, name: str, version: int) -> ModelVersion:
        number = _version_number(version)
        with self.db.session(write=False) as session:
            model = _model(session, name)
            return _version_entity(session, model, _version(session, model, number))

    def get_model_version_by_alias(self, name: str, alias: str) -> ModelVersion:
        validate_alias(alias)
        with self.db.session(write=False) as session:
            model = _model(session, name)
            alias_row = _alias_row(session, model, alias)
            if alias_row is None:
                raise _alias_not_found(model, alias)
            return _version_entity(session, model, _version(session, model, alias_row.version))

    def get_latest_versions(self, name: str, stages: Sequence[Stage] | None = None) -> list[ModelVersion]:
        """The highest READY version in each stage (all stages by default), in stage order."""
        wanted = _stages(stages)
        with self.db.session(write=False) as session:
            model = _model(session, name)
            rows = _latest_rows(session, [model.id], wanted)
            return _version_entities(session, [(r, model.name) for r in rows])

    def search_model_versions(
        self,
        filter_string: str | None = None,
        max_results: int = 1000,
        order_by: Sequence[str] | None = None,
        page_token: str | None = None,
    ) -> PagedList[ModelVersion]:
        """Search with MLflow's filter syntax over ``name``, ``version_number``, ``run_id``,
        ``source_path`` and ``tags.<key>`` (``=``, ``!=``, ``LIKE``, ``ILIKE``, ``IN``, and
        ``<``/``>`` for ``version_number``). Default order: last updated first, then name,
        then version descending (MLflow's)."""
        max_results = check_max_results(max_results, limit=SEARCH_MODEL_VERSION_MAX_RESULTS)
        offset = decode_page_token(page_token)
        where = _filter(
            filter_string,
            MODEL_VERSION_FILTER,
            _MV_COLUMNS,
            tag_table=ModelVersionTagRow,
            tag_owner_fk="version_id",
            owner_id=ModelVersionRow.id,
            dialect=self.db.dialect,
        )
        ordering = _order_by(
            order_by,
            MODEL_VERSION_FILTER,
            _MV_COLUMNS,
            default=["last_updated_timestamp DESC", "name ASC", "version_number DESC"],
            tiebreak=[],
        )
        with self.db.session(write=False) as session:
            result = session.execute(
                sa.select(ModelVersionRow, RegisteredModelRow.name)
                .join(RegisteredModelRow, RegisteredModelRow.id == ModelVersionRow.model_id)
                .where(where)
                .order_by(*ordering, ModelVersionRow.id)
                .offset(offset)
                .limit(max_results + 1)
            ).all()
            token = encode_page_token(offset + max_results) if len(result) > max_results else None
            return PagedList(_version_entities(session, [(r, n) for r, n in result[:max_results]]), token)

    def update_model_version(self, name: str, version: int, description: str | None) -> ModelVersion:
        number = _version_number(version)
        description = _description(description)
        with self.db.session() as session:
            model = _model(session, name, lock=True)
            row = _version(session, model, number)
            row.description = description
            row.last_updated_time = _now_ms()
            return _version_entity(session, model, row)

    def delete_model_version(self, name: str, version: int) -> None:
        """Delete a version and its tags; aliases pointing at it are removed (and audited)."""
        number = _version_number(version)
        with self.db.session() as session:
            model = _model(session, name, lock=True)
            row = _version(session, model, number)
            now = _now_ms()
            held = session.scalars(
                sa.select(RegisteredModelAliasRow).where(
                    RegisteredModelAliasRow.model_id == model.id, RegisteredModelAliasRow.version == number
                )
            ).all()
            for alias_row in held:
                _audit(
                    session,
                    model,
                    version=number,
                    kind="alias",
                    subject=alias_row.alias,
                    from_value=str(number),
                    to_value=None,
                    audit=_Audit(reason=f"version {number} deleted"),
                )
                session.delete(alias_row)
            session.delete(row)
            model.last_updated_time = now

    def set_model_version_tag(self, name: str, version: int, key: str, value: str) -> None:
        number = _version_number(version)
        key, value = validate_tag(key, value)
        with self.db.session() as session:
            model = _model(session, name, lock=True)
            row = _version(session, model, number)
            tag = session.get(ModelVersionTagRow, (row.id, key))
            if tag is None:
                session.add(ModelVersionTagRow(version_id=row.id, key=key, value=value))
            else:
                tag.value = value
            row.last_updated_time = _now_ms()

    def delete_model_version_tag(self, name: str, version: int, key: str) -> None:
        """Remove a tag; removing a tag that is not set does nothing (as in MLflow)."""
        number = _version_number(version)
        with self.db.session() as session:
            model = _model(session, name, lock=True)
            row = _version(session, model, number)
            session.execute(
                sa.delete(ModelVersionTagRow).where(ModelVersionTagRow.version_id == row.id, ModelVersionTagRow.key == key)
            )

    # ------------------------------------------------------------ stages and aliases

    def transition_model_version_stage(
        self,
        name: str,
        version: int,
        stage: Stage,
        *,
        archive_existing_versions: bool = False,
        actor: str | None = None,
        reason: str | None = None,
        prefect_flow_run_id: str | None = None,
        gate_decision_id: str | None = None,
        claimed_actor: str | None = None,
    ) -> ModelVersion:
        """Change the stage (and archive the others) in one transaction; audit every change.

        ``stage`` is a :class:`Stage` or its name in any case. Only READY versions enter
        Staging or Production (:class:`Conflict` otherwise).
        """
        number = _version_number(version)
        target = _stage(stage)
        audit = _Audit.checked(actor, reason, prefect_flow_run_id, gate_decision_id, claimed_actor)
        with self.db.session() as session:
            model = _model(session, name, lock=True)
            row = _version(session, model, number)
            _transition(session, model, row, target, bool(archive_existing_versions), audit, _now_ms())
            return _version_entity(session, model, row)

    def set_registered_model_alias(
        self,
        name: str,
        alias: str,
        version: int,
        *,
        actor: str | None = None,
        reason: str | None = None,
        prefect_flow_run_id: str | None = None,
        gate_decision_id: str | None = None,
        claimed_actor: str | None = None,
    ) -> None:
        """Point ``alias`` at a READY version (moving it from its previous holder); audited."""
        validate_alias(alias)
        number = _version_number(version)
        audit = _Audit.checked(actor, reason, prefect_flow_run_id, gate_decision_id, claimed_actor)
        with self.db.session() as session:
            model = _model(session, name, lock=True)
            row = _version(session, model, number)
            _require_ready(model, row, f"set alias {alias!r} on")
            _move_alias(session, model, alias, number, audit, _now_ms())

    def delete_registered_model_alias(
        self, name: str, alias: str, *, actor: str | None = None, reason: str | None = None,
        claimed_actor: str | None = None,
    ) -> None:
        validate_alias(alias)
        audit = _Audit.checked(actor, reason, claimed_actor=claimed_actor)
        with self.db.session() as session:
            model = _model(session, name, lock=True)
            row = _alias_row(session, model, alias)
            if row is None:
                raise _alias_not_found(model, alias)
            now = _now_ms()
            _audit(
                session,
                model,
                version=row.version,
                kind="alias",
                subject=alias,
                from_value=str(row.version),
                to_value=None,
                audit=audit,
            )
            session.delete(row)
            model.last_updated_time = now

    def promote(
        self,
        name: str,
        version: int,
        *,
        alias: str | None = "champion",
        stage: Stage | None = None,
        archive_existing_versions: bool = True,
        require_passed_gate: bool = True,
        actor: str | None = None,
        reason: str | None = None,
        prefect_flow_run_id: str | None = None,
        claimed_actor: str | None = None,
    ) -> ModelVersion:
        """Move the alias and/or stage to ``version`` in one transaction. Conflict when the
        version is not READY or (``require_passed_gate``) its linked gate decision did not pass.

        ``stage`` may be Staging or Production; with ``archive_existing_versions`` the other
        versions in that stage are archived. Every change is one audit row carrying the
        version's gate decision id.
        """
        number = _version_number(version)
        if alias is not None:
            validate_alias(alias)
        target = _stage(stage) if stage is not None else None
        if target is not None and target not in _ACTIVE_STAGES:
            raise InvalidArgument(
                f"Cannot promote to stage {target.value!r}: promotion targets 'Staging' or "
                "'Production'. Use transition_model_version_stage for other stages."
            )
        if alias is None and target is None:
            raise InvalidArgument("Nothing to promote: pass an alias (e.g. 'champion'), a stage, or both.")
        audit = _Audit.checked(actor, reason, prefect_flow_run_id, claimed_actor=claimed_actor)
        with self.db.session() as session:
            model = _model(session, name, lock=True)
            row = _version(session, model, number)
            _require_ready(model, row, "promote")
            if require_passed_gate:
                _require_passed_gate(session, model, row)
            audit = dataclasses.replace(audit, gate_decision_id=row.gate_decision_id)
            now = _now_ms()
            if alias is not None:
                _move_alias(session, model, alias, number, audit, now)
            if target is not None:
                _transition(session, model, row, target, bool(archive_existing_versions), audit, now)
            return _version_entity(session, model, row)

    def rollback_alias(
        self,
        name: str,
        alias: str = "champion",
        *,
        actor: str | None = None,
        reason: str | None = None,
        prefect_flow_run_id: str | None = None,
        claimed_actor: str | None = None,
    ) -> ModelVersion:
        """Move the alias back to the version that held it before; Conflict if none did.

        Rollbacks undo alias moves one at a time: after champion went v1 -> v2 -> v3, one
        rollback gives v2 and a second gives v1. Versions since deleted or not READY are
        skipped. The move is audited with ``reason`` (default ``'rollback'``).
        """
        validate_alias(alias)
        audit = _Audit.checked(
            actor, reason if reason is not None else "rollback", prefect_flow_run_id, claimed_actor=claimed_actor
        )
        with self.db.session() as session:
            model = _model(session, name, lock=True)
            current = _alias_row(session, model, alias)
            if current is None:
                raise _alias_not_found(model, alias)
            target = _rollback_target(session, model, alias, current.version)
            if target is None:
                raise Conflict(
                    f"Cannot roll back alias {alias!r} of registered model {model.name!r}: no earlier "
                    f"READY version held it before version {current.version}. Point it at a version "
                    "explicitly with set_registered_model_alias."
                )
            _move_alias(session, model, alias, target, audit, _now_ms())
            return _version_entity(session, model, _version(session, model, target))

    def get_model_history(self, name: str) -> list[TransitionRecord]:
        """Every stage change and alias move of the model, oldest first."""
        with self.db.session(write=False) as session:
            model = _model(session, name)
            rows = session.scalars(
                sa.select(ModelTransitionRow)
                .where(ModelTransitionRow.model_id == model.id)
                .order_by(ModelTransitionRow.id)
            )
            return [_transition_record(r) for r in rows]

    # ------------------------------------------------------------ gate decisions

    def record_gate_decision(
        self,
        name: str,
        version: int,
        *,
        passed: bool,
        reason: str,
        details: dict[str, Any],
        prefect_flow_run_id: str | None = None,
    ) -> StoredGateDecision:
        """Store a decision and link it to the version (``ModelVersion.gate_decision_id``)."""
        number = _version_number(version)
        if not isinstance(passed, bool):
            raise InvalidArgument(f"Invalid gate outcome passed={passed!r}: it must be True or False.")
        if not isinstance(reason, str):
            raise InvalidArgument(f"Invalid gate reason {reason!r}: it must be a string.")
        try:
            details_json = json.dumps(details, allow_nan=True, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(
                f"Gate decision details are not JSON-serializable ({exc}). Convert numpy scalars "
                "and other objects to plain numbers, strings, lists and dicts."
            ) from exc
        flow_run_id = _optional_text(prefect_flow_run_id, "Prefect flow-run id", 64)
        with self.db.session() as session:
            model = _model(session, name, lock=True)
            row = _version(session, model, number)
            decision = GateDecisionRow(
                id=str(uuid.uuid4()),
                model_id=model.id,
                version=number,
                passed=passed,
                reason=reason,
                decision_json=details_json,
                created_time=_now_ms(),
                prefect_flow_run_id=flow_run_id,
            )
            session.add(decision)
            row.gate_decision_id = decision.id
            row.last_updated_time = decision.created_time
            session.flush()
            return _decision_entity(decision, model.name)

    def get_gate_decision(self, decision_id: str) -> StoredGateDecision:
        with self.db.session(write=False) as session:
            found = session.execute(
                sa.select(GateDecisionRow, RegisteredModelRow.name)
                .join(RegisteredModelRow, RegisteredModelRow.id == GateDecisionRow.model_id)
                .where(GateDecisionRow.id == str(decision_id))
            ).one_or_none()
            if found is None:
                raise NotFound(f"Gate decision {decision_id!r} does not exist.")
            return _decision_entity(found[0], found[1])


def _require_passed_gate(session: Session, model: RegisteredModelRow, row: ModelVersionRow) -> None:
    where = f"version {row.version} of registered model {model.name!r}"
    if row.gate_decision_id is None:
        raise Conflict(
            f"Cannot promote {where}: no evaluation-gate decision is recorded for it. Run the "
            "gate first, or pass require_passed_gate=False to promote without one."
        )
    decision = session.get(GateDecisionRow, row.gate_decision_id)
    if decision is None:
        raise Conflict(f"Cannot promote {where}: its gate decision {row.gate_decision_id!r} is missing.")
    if not decision.passed:
        raise Conflict(
            f"Cannot promote {where}: its evaluation gate failed (decision {decision.id}): "
            f"{decision.reason}. Fix the model and register a new version."
        )


# ---------------------------------------------------------------- search filters
# The grammar is tracking_plugin.search's (MLflow's plus OR and parentheses); these specs
# say what registry searches may mention, as MLflow does, plus the timestamps they sort by.

REGISTERED_MODEL_FILTER = FilterSpec(
    subject="registered models",
    entities={"tag": ValueKind.STRING},
    attributes={
        "name": ValueKind.STRING,
        "creation_timestamp": ValueKind.NUMBER,
        "last_updated_timestamp": ValueKind.NUMBER,
    },
    aliases={"timestamp": "creation_timestamp"},
    example="name LIKE 'churn%' and tags.team = 'ml'",
)

MODEL_VERSION_FILTER = FilterSpec(
    subject="model versions",
    entities={"tag": ValueKind.STRING},
    attributes={
        "name": ValueKind.STRING,
        "version_number": ValueKind.NUMBER,
        "run_id": ValueKind.STRING,
        "source_path": ValueKind.STRING,
        "creation_timestamp": ValueKind.NUMBER,
        "last_updated_timestamp": ValueKind.NUMBER,
    },
    aliases={"timestamp": "creation_timestamp", "version": "version_number", "source": "source_path"},
    example="name = 'churn' and version_number > 3",
)

_ORDERABLE = {"name", "version_number", "creation_timestamp", "last_updated_timestamp"}
_RM_COLUMNS: dict[str, Any] = {
    "name": RegisteredModelRow.name,
    "creation_timestamp": RegisteredModelRow.creation_time,
    "last_updated_timestamp": RegisteredModelRow.last_updated_time,
}
_MV_COLUMNS: dict[str, Any] = {
    "name": RegisteredModelRow.name,
    "version_number": ModelVersionRow.version,
    "run_id": ModelVersionRow.run_id,
    "source_path": ModelVersionRow.source,
    "creation_timestamp": ModelVersionRow.creation_time,
    "last_updated_timestamp": ModelVersionRow.last_updated_time,
}


def _filter(
    filter_string: str | None,
    spec: FilterSpec,
    columns: dict[str, Any],
    *,
    tag_table: Any,
    tag_owner_fk: str,
    owner_id: Any,
    dialect: str,
) -> Any:
    expr = parse_filter(filter_string, spec)
    if expr is None:
        return sa.true()

    def leaf(comparison: Comparison) -> Any:
        if comparison.entity_type == "tag":
            return key_value_filter(
                owner_id, tag_table.__table__, owner_fk=tag_owner_fk, comparison=comparison, dialect=dialect
            )
        return compare(columns[comparison.key], comparison.op, comparison.value, dialect=dialect)

    return compile_filter(expr, leaf)


def _order_by(
    order_by: Sequence[str] | None,
    spec: FilterSpec,
    columns: dict[str, Any],
    *,
    default: Sequence[str],
    tiebreak: Sequence[str],
) -> list[Any]:
    """SQL ORDER BY terms for MLflow-style clauses such as ``['name ASC', 'version_number DESC']``."""
    if isinstance(order_by, str):
        order_by = [order_by]
    clauses = list(order_by) if order_by else list(default)
    terms: list[Any] = []
    used: set[str] = set()
    orderable = ", ".join(sorted(k for k in columns if k in _ORDERABLE))
    for clause in clauses:
        parsed = parse_order_by(clause, spec)
        if parsed.entity_type != "attribute" or parsed.key not in _ORDERABLE:
            raise InvalidArgument(
                f"Invalid order_by clause {clause!r}: {spec.subject} can be ordered by {orderable} "
                "(each optionally followed by ASC or DESC)."
            )
        if parsed.key in used:
            raise InvalidArgument(f"order_by {clauses!r} names {parsed.key!r} twice; keep one.")
        used.add(parsed.key)
        column = columns[parsed.key]
        terms.append(column.asc() if parsed.ascending else column.desc())
    terms.extend(columns[key].asc() for key in tiebreak if key not in used)
    return terms
