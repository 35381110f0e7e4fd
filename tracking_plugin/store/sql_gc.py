"""``SqlGcStore``: the transactions of garbage collection (``prefect-mlops gc``).

The policy (what to remove, deleting files, the report) is in :mod:`tracking_plugin.gc`;
here are the four transactions it is built from, each one session:

1. :meth:`SqlGcStore.gc_plan` (read only): runs in the deleted lifecycle older than the
   cutoff, finished runs beyond ``keep_last`` per experiment, runs an earlier gc marked and
   did not finish, deleted experiments; each run a registered model version needs (its
   source run, an alias or stage holder's run, a READY version's lineage) is *kept*, with
   the reason.
2. :meth:`SqlGcStore.gc_mark_run`: checks again, under the write lock, that the run is
   still what the plan saw and that no version needs it (a registration may have happened
   since), then sets ``runs.lifecycle_stage = 'gc_pending'`` and writes a ``pending``
   tombstone. From here on every read says the run was garbage-collected, restore and
   delete refuse it, and searches do not see it.
3. (the caller deletes the run's files: idempotent, absent files are fine)
4. :meth:`SqlGcStore.gc_purge_run`: deletes the run's rows (metric history, latest
   metrics, params, tags, inputs, model links, logged models it produced) and sets the
   tombstone ``done``. :meth:`SqlGcStore.gc_purge_experiment` removes a deleted
   experiment once it holds no runs.

A gc killed between 2 and 4 leaves a ``gc_pending`` run, which reads as gone; the next
gc's plan lists it first and finishes it.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tracking_plugin.entities import LifecycleStage, ModelVersionStatus, RunStatus, Stage
from tracking_plugin.errors import InvalidArgument
from tracking_plugin.store.db import Database
from tracking_plugin.store.schema import (
    ExperimentRow,
    ExperimentTagRow,
    LatestMetricRow,
    LoggedModelParamRow,
    LoggedModelRow,
    LoggedModelTagRow,
    MetricBlockRow,
    MetricRow,
    ModelVersionRow,
    ParamRow,
    RegisteredModelAliasRow,
    RegisteredModelRow,
    RunDatasetInputRow,
    RunModelLinkRow,
    RunRow,
    RunTagRow,
)
from tracking_plugin.store.schema_gc import GcTombstoneRow
from tracking_plugin.store.sql_tracking import GC_DONE, GC_PENDING

__all__ = ["GcCandidate", "GcExperiment", "GcKept", "GcPlan", "SqlGcStore"]

_RUNS = RunRow.__table__
_EXPERIMENTS = ExperimentRow.__table__
_MODELS = LoggedModelRow.__table__
_VERSIONS = ModelVersionRow.__table__
_TOMBSTONES = GcTombstoneRow.__table__
_CHUNK = 500


@dataclasses.dataclass(frozen=True)
class GcCandidate:
    """A run gc removes: why, and where its files are."""

    run_id: str
    experiment_id: str
    why: str  # "deleted", "keep-last", "experiment deleted", "unfinished gc"
    artifact_uri: str
    logged_model_locations: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class GcKept:
    """A run gc would have removed but keeps, because a registered model version needs it."""

    run_id: str
    experiment_id: str
    reason: str


@dataclasses.dataclass(frozen=True)
class GcExperiment:
    experiment_id: str
    name: str


@dataclasses.dataclass(frozen=True)
class GcPlan:
    runs: tuple[GcCandidate, ...]
    kept: tuple[GcKept, ...]
    experiments: tuple[GcExperiment, ...]


def _now_ms() -> int:
    return int(time.time() * 1000)


def _chunks(values: Sequence[Any]) -> list[Sequence[Any]]:
    return [values[i : i + _CHUNK] for i in range(0, len(values), _CHUNK)]


def _experiment_pks(experiment_ids: Sequence[str] | None) -> list[int] | None:
    if experiment_ids is None:
        return None
    pks = []
    for value in experiment_ids:
        try:
            pks.append(int(value))
        except (TypeError, ValueError):
            raise InvalidArgument(
                f"Invalid experiment id {value!r} for gc: experiment ids are integers (e.g. --experiment-ids 1,2)."
            ) from None
    return pks


def _references(prefixes: Sequence[str], value: str | None) -> bool:
    if not value:
        return False
    for prefix in prefixes:
        if prefix and (value == prefix or value.startswith(prefix.rstrip("/") + "/")):
            return True
    return False


def _needs(session: Session, runs: Sequence[Any]) -> dict[str, str]:
    """run id -> why a registered model version needs it, for the runs of ``runs`` needed."""
    if not runs:
        return {}
    ids = [r.run_uuid for r in runs]
    models_by_run: dict[str, list[Any]] = {}
    for chunk in _chunks(ids):
        for m in session.execute(
            sa.select(_MODELS.c.model_id, _MODELS.c.artifact_location, _MODELS.c.source_run_id).where(
                _MODELS.c.source_run_id.in_(chunk)
            )
        ):
            models_by_run.setdefault(m.source_run_id, []).append(m)
    names = dict(session.execute(sa.select(RegisteredModelRow.__table__.c.id, RegisteredModelRow.__table__.c.name)).all())
    aliases: dict[tuple[int, int], list[str]] = {}
    a = RegisteredModelAliasRow.__table__.c
    for model_id, alias, version in session.execute(sa.select(a.model_id, a.alias, a.version)):
        aliases.setdefault((model_id, version), []).append(alias)
    v = _VERSIONS.c
    versions = session.execute(
        sa.select(v.model_id, v.version, v.current_stage, v.status, v.run_id, v.source, v.storage_location)
    ).all()
    needed: dict[str, str] = {}
    for run in runs:
        prefixes = [f"runs:/{run.run_uuid}", run.artifact_uri]
        for m in models_by_run.get(run.run_uuid, []):
            prefixes += [f"models:/{m.model_id}", m.artifact_location]
        reasons: list[tuple[int, str]] = []
        for ver in versions:
            if ver.run_id != run.run_uuid and not (
                _references(prefixes, ver.source) or _references(prefixes, ver.storage_location)
            ):
                continue
            label = f"{names.get(ver.model_id, '?')!s} v{ver.version}"
            held = aliases.get((ver.model_id, ver.version))
            if held:
                reasons.append((0, f"{label} holds alias {', '.join('@' + h for h in sorted(held))}"))
            elif ver.current_stage in (Stage.STAGING.value, Stage.PRODUCTION.value):
                reasons.append((1, f"{label} is in stage {ver.current_stage}"))
            elif ver.status == ModelVersionStatus.READY.value:
                reasons.append((2, f"it is the source run (lineage) of READY version {label}"))
            else:
                reasons.append((3, f"registered model version {label} ({ver.status}) names it"))
        if reasons:
            reasons.sort()
            needed[run.run_uuid] = "; ".join(text for _, text in reasons)
    return needed


class SqlGcStore:
    """Garbage-collection transactions of :class:`~tracking_plugin.store.sql.SqlStore`."""

    db: Database

    def gc_plan(
        self,
        *,
        deleted_before_ms: int,
        experiment_ids: Sequence[str] | None = None,
        run_ids: Sequence[str] | None = None,
        keep_last: int | None = None,
    ) -> GcPlan:
        """What a gc would remove and keep now (reads only).

        Args:
            deleted_before_ms: runs deleted before this (their ``deleted_time``; for runs
                deleted before that column existed, their end or start time), and deleted
                experiments last changed before it, are removed.
            experiment_ids: only these experiments (default: all).
            run_ids: only these runs (default: all).
            keep_last: per experiment, keep this many most recent FINISHED active runs that
                no model version needs; older finished ones are removed too.
        """
        pks = _experiment_pks(experiment_ids)
        if keep_last is not None and keep_last < 0:
            raise InvalidArgument(f"Invalid keep_last {keep_last!r}: pass 0 or more runs to keep per experiment.")
        r = _RUNS.c
        columns = (r.run_uuid, r.experiment_id, r.artifact_uri, r.lifecycle_stage, r.status, r.start_time, r.end_time)
        scope = []
        if pks is not None:
            scope.append(r.experiment_id.in_(pks))
        if run_ids is not None:
            scope.append(r.run_uuid.in_(list(run_ids)))
        # Since the run was deleted (runs deleted before migration 0010 have no deletion
        # time: their end, or start, time stands in for it).
        activity = sa.func.coalesce(r.deleted_time, r.end_time, r.start_time)
        with self.db.session(write=False) as session:
            pending = session.execute(sa.select(*columns).where(r.lifecycle_stage == GC_PENDING, *scope)).all()
            deleted = session.execute(
                sa.select(*columns).where(
                    r.lifecycle_stage == LifecycleStage.DELETED.value, activity < deleted_before_ms, *scope
                )
            ).all()
            e = _EXPERIMENTS.c
            exp_scope = [e.experiment_id.in_(pks)] if pks is not None else []
            if run_ids is not None:
                exp_scope.append(sa.false())  # --run-ids: those runs only
            experiments = session.execute(
                sa.select(e.experiment_id, e.name).where(
                    e.lifecycle_stage == LifecycleStage.DELETED.value, e.last_update_time < deleted_before_ms, *exp_scope
                )
            ).all()
            gone_experiments = {x.experiment_id for x in experiments}
            in_deleted_experiments = []
            if gone_experiments and run_ids is None:
                in_deleted_experiments = session.execute(
                    sa.select(*columns).where(
                        r.experiment_id.in_(list(gone_experiments)), r.lifecycle_stage != GC_PENDING
                    )
                ).all()
            retired: list[Any] = []
            if keep_last is not None:
                finished = session.execute(
                    sa.select(*columns)
                    .where(
                        r.lifecycle_stage == LifecycleStage.ACTIVE.value,
                        r.status == RunStatus.FINISHED.value,
                        *scope,
                    )
                    .order_by(r.experiment_id, r.start_time.desc(), r.run_uuid)
                ).all()
                finished_needs = _needs(session, finished)
                seen: dict[int, int] = {}
                for run in finished:
                    if run.run_uuid in finished_needs:
                        continue  # a registered run is neither counted nor removed
                    seen[run.experiment_id] = seen.get(run.experiment_id, 0) + 1
                    if seen[run.experiment_id] > keep_last:
                        retired.append(run)
            ordered: dict[str, tuple[Any, str]] = {}
            for rows, why in (
                (pending, "unfinished gc"),
                (in_deleted_experiments, "experiment deleted"),
                (deleted, "deleted"),
                (retired, "keep-last"),
            ):
                for row in rows:
                    ordered.setdefault(row.run_uuid, (row, why))
            needs = _needs(session, [row for row, why in ordered.values() if why != "unfinished gc"])
            locations = _logged_model_locations(session, list(ordered))
        candidates, kept = [], []
        for run_id, (row, why) in ordered.items():
            if run_id in needs:
                kept.append(GcKept(run_id, str(row.experiment_id), needs[run_id]))
            else:
                candidates.append(
                    GcCandidate(run_id, str(row.experiment_id), why, row.artifact_uri, tuple(locations.get(run_id, ())))
                )
        blocked = {int(k.experiment_id) for k in kept}
        return GcPlan(
            runs=tuple(candidates),
            kept=tuple(kept),
            experiments=tuple(
                GcExperiment(str(x.experiment_id), x.name) for x in experiments if x.experiment_id not in blocked
            ),
        )

    def gc_mark_run(self, candidate: GcCandidate) -> bool:
        """Mark one planned run ``gc_pending`` (one transaction). False, and nothing changed,
        when it is no longer removable: restored, or needed by a model version since."""
        r = _RUNS.c
        with self.db.session() as session:
            row = session.execute(
                sa.select(r.run_uuid, r.experiment_id, r.artifact_uri, r.lifecycle_stage, r.status)
                .where(r.run_uuid == candidate.run_id)
                .with_for_update()  # PostgreSQL: concurrent gcs mark a run one after the other
            ).first()
            if row is None:
                # Its rows are gone: a gc finished it after this plan was made (or it
                # never existed); make sure a tombstone says so.
                return session.execute(
                    sa.select(_TOMBSTONES.c.run_uuid).where(_TOMBSTONES.c.run_uuid == candidate.run_id)
                ).first() is not None
            if row.lifecycle_stage == GC_PENDING:
                return True
            if candidate.why == "keep-last":
                if row.lifecycle_stage != LifecycleStage.ACTIVE.value or row.status != RunStatus.FINISHED.value:
                    return False
            elif row.lifecycle_stage != LifecycleStage.DELETED.value:
                return False  # restored since the plan
            if _needs(session, [row]):
                return False
            session.execute(sa.update(_RUNS).where(r.run_uuid == row.run_uuid).values(lifecycle_stage=GC_PENDING))
            session.execute(sa.delete(_TOMBSTONES).where(_TOMBSTONES.c.run_uuid == row.run_uuid))
            session.execute(
                sa.insert(_TOMBSTONES).values(
                    run_uuid=row.run_uuid, experiment_id=row.experiment_id, state="pending", gc_time=_now_ms()
                )
            )
            return True

    def gc_purge_run(self, run_id: str) -> None:
        """Delete the rows of a ``gc_pending`` run and set its tombstone ``done`` (one
        transaction; a no-op for a run whose rows are already gone)."""
        with self.db.session() as session:
            row = session.execute(
                sa.select(_RUNS.c.lifecycle_stage).where(_RUNS.c.run_uuid == run_id).with_for_update()
            ).first()
            if row is not None and row.lifecycle_stage != GC_PENDING:
                raise InvalidArgument(
                    f"Run {run_id!r} is not marked for gc ({row.lifecycle_stage}); gc_mark_run() marks it first."
                )
            if row is not None:
                _delete_run_rows(session, run_id)
            session.execute(
                sa.update(_TOMBSTONES).where(_TOMBSTONES.c.run_uuid == run_id).values(state=GC_DONE, gc_time=_now_ms())
            )

    def gc_experiment_files(self, experiment_id: str) -> list[str]:
        """Artifact locations of the logged models of a deleted experiment (no source run)."""
        pk = int(experiment_id)
        with self.db.session(write=False) as session:
            return list(
                session.execute(
                    sa.select(_MODELS.c.artifact_location).where(
                        _MODELS.c.experiment_id == pk, _MODELS.c.source_run_id.is_(None)
                    )
                ).scalars()
            )

    def gc_purge_experiment(self, experiment_id: str) -> bool:
        """Remove a deleted experiment that holds no runs any more (one transaction).
        False, and nothing changed, when it was restored or still has runs."""
        pk = int(experiment_id)
        e = _EXPERIMENTS.c
        with self.db.session() as session:
            row = session.execute(sa.select(e.lifecycle_stage).where(e.experiment_id == pk).with_for_update()).first()
            if row is None or row.lifecycle_stage != LifecycleStage.DELETED.value:
                return False
            if session.execute(sa.select(_RUNS.c.run_uuid).where(_RUNS.c.experiment_id == pk).limit(1)).first():
                return False
            model_ids = list(session.execute(sa.select(_MODELS.c.model_id).where(_MODELS.c.experiment_id == pk)).scalars())
            _delete_logged_models(session, model_ids)
            session.execute(sa.delete(ExperimentTagRow.__table__).where(ExperimentTagRow.__table__.c.experiment_id == pk))
            session.execute(sa.text("DELETE FROM auth_experiment_permissions WHERE experiment_id = :pk"), {"pk": pk})
            session.execute(sa.delete(_EXPERIMENTS).where(e.experiment_id == pk))
            return True


def _logged_model_locations(session: Session, run_ids: Sequence[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for chunk in _chunks(list(run_ids)):
        for run_id, location in session.execute(
            sa.select(_MODELS.c.source_run_id, _MODELS.c.artifact_location).where(_MODELS.c.source_run_id.in_(chunk))
        ):
            out.setdefault(run_id, []).append(location)
    return out


def _delete_logged_models(session: Session, model_ids: Sequence[str]) -> None:
    for chunk in _chunks(list(model_ids)):
        session.execute(sa.delete(LoggedModelTagRow.__table__).where(LoggedModelTagRow.__table__.c.model_id.in_(chunk)))
        session.execute(
            sa.delete(LoggedModelParamRow.__table__).where(LoggedModelParamRow.__table__.c.model_id.in_(chunk))
        )
        session.execute(sa.delete(RunModelLinkRow.__table__).where(RunModelLinkRow.__table__.c.model_id.in_(chunk)))
        session.execute(sa.delete(_MODELS).where(_MODELS.c.model_id.in_(chunk)))


def _delete_run_rows(session: Session, run_id: str) -> None:
    model_ids = list(session.execute(sa.select(_MODELS.c.model_id).where(_MODELS.c.source_run_id == run_id)).scalars())
    _delete_logged_models(session, model_ids)
    for table in (MetricRow, MetricBlockRow, LatestMetricRow, ParamRow, RunTagRow, RunDatasetInputRow, RunModelLinkRow):
        t = table.__table__
        session.execute(sa.delete(t).where(t.c.run_uuid == run_id))
    # Children keep working: their parent link names a run that reads as garbage-collected.
    session.execute(sa.delete(_RUNS).where(_RUNS.c.run_uuid == run_id))


def quarantine_uris(db: Database, tag_key: str) -> list[str]:
    """Every location a run's ``tag_key`` tag names (where validation quarantined a batch)."""
    t = RunTagRow.__table__.c
    with db.session(write=False) as session:
        return sorted(set(session.execute(sa.select(t.value).where(t.key == tag_key)).scalars()))
