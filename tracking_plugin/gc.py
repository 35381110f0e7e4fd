"""Garbage collection: permanently remove deleted runs and experiments, with retention policies.

MLflow's ``mlflow gc`` removes runs in the deleted lifecycle but has broken registered
models whose files lived in a removed run (mlflow#13393). Here a run that a registered
model version needs (its source run, an alias or stage holder's run, a READY version's
lineage) is never removed: it is reported as kept, with the reason.

:func:`collect_garbage` (``prefect-mlops gc``, the ``gc_flow`` deployment and the tracking
server's ``POST /api/2.0/prefect-mlops/gc``) removes:

- runs in the deleted lifecycle whose end (or start) time is older than ``older_than``,
  and deleted experiments unchanged since then, with all their runs;
- with ``keep_last=N``, per experiment the FINISHED runs beyond the N most recent (runs a
  model version needs are neither counted nor removed);
- with ``quarantine_older_than``, the batches validation quarantined
  (``<artifact root>/quarantine/<time>-<digest>/``, also found through the runs' tag
  ``validation.quarantine_uri``) older than that. Without it quarantine is kept.

For each run: rows (params, tags, metric history, latest metrics, inputs, model links, the
logged models it produced) and files (its artifact folder and its logged models', local
or S3). The order makes an interrupted gc safe (see :mod:`tracking_plugin.store.sql_gc`):
the run is marked in one transaction (from then on it reads as garbage-collected), its
files are deleted, then its rows in one transaction; the next gc finishes a run a killed
gc marked. ``dry_run`` reports the same without changing anything::

    from tracking_plugin.gc import collect_garbage, parse_duration

    report = collect_garbage(older_than_seconds=parse_duration("30d"), dry_run=True)
    print(report.runs_removed, report.bytes_removed)
"""

from __future__ import annotations

import calendar
import dataclasses
import logging
import re
import time
from pathlib import Path
from typing import Any, Sequence

from tracking_plugin.artifacts import get_artifact_repository, join_artifact_uri
from tracking_plugin.artifacts.base import ArtifactRepository
from tracking_plugin.artifacts.local import LocalArtifactRepository
from tracking_plugin.backend import resolve_settings
from tracking_plugin.errors import InvalidArgument, MlopsError, NotFound
from tracking_plugin.settings import MlopsSettings
from tracking_plugin.store.sql import SqlStore
from tracking_plugin.store.sql_gc import GcCandidate, quarantine_uris
from tracking_plugin.tags import TAG_QUARANTINE_URI

__all__ = ["GcReport", "KeptRun", "RemovedItem", "collect_garbage", "parse_duration"]

logger = logging.getLogger(__name__)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
# <...>/quarantine/<UTC time>-<12 hex digits of the batch digest>, as the pipeline writes them.
# A tag can name any location: only one shaped like this is ever deleted.
_QUARANTINE_FOLDER = re.compile(r"(?:^|/)quarantine/(\d{8}T\d{6})-[0-9a-f]{12}$")


def parse_duration(value: str) -> float:
    """Seconds in ``value``: a number and a unit, ``s m h d w`` (``30d``, ``12h``, ``90m``).

    >>> parse_duration("30d"), parse_duration("12h")
    (2592000.0, 43200.0)
    """
    match = _DURATION.match(str(value))
    if not match:
        raise InvalidArgument(
            f"Invalid duration {value!r}: use a number and a unit s, m, h, d or w, e.g. 30d or 12h."
        )
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclasses.dataclass(frozen=True)
class RemovedItem:
    """A run, experiment or quarantined batch removed (or, in a dry run, to be removed)."""

    kind: str  # "run" | "experiment" | "quarantine"
    id: str  # run id, experiment id, or the quarantine location
    why: str  # "deleted", "keep-last", "experiment deleted", "unfinished gc", "quarantine older than ..."
    bytes: int


@dataclasses.dataclass(frozen=True)
class KeptRun:
    """A run gc would have removed, kept because a registered model version needs it."""

    run_id: str
    experiment_id: str
    reason: str


@dataclasses.dataclass(frozen=True)
class GcReport:
    dry_run: bool
    removed: tuple[RemovedItem, ...]
    kept: tuple[KeptRun, ...]

    def count(self, kind: str) -> int:
        return sum(1 for item in self.removed if item.kind == kind)

    @property
    def runs_removed(self) -> int:
        return self.count("run")

    @property
    def experiments_removed(self) -> int:
        return self.count("experiment")

    @property
    def quarantine_removed(self) -> int:
        return self.count("quarantine")

    @property
    def bytes_removed(self) -> int:
        return sum(item.bytes for item in self.removed)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (``prefect-mlops gc --json``, the server endpoint)."""
        return {
            "dry_run": self.dry_run,
            "runs_removed": self.runs_removed,
            "experiments_removed": self.experiments_removed,
            "quarantine_removed": self.quarantine_removed,
            "bytes_removed": self.bytes_removed,
            "removed": [dataclasses.asdict(item) for item in self.removed],
            "kept": [dataclasses.asdict(k) for k in self.kept],
        }


def _tree_size(repo: ArtifactRepository, path: str | None = None) -> int:
    """Bytes under ``path``; a folder that another gc removes while this one measures it
    (both found the same run) counts as empty: that gc reports the bytes it removed."""
    try:
        listing = repo.list_artifacts(path)
    except NotFound:
        return 0
    total = 0
    for info in listing:
        total += _tree_size(repo, info.path) if info.is_dir else int(info.file_size or 0)
    return total


def _files(uris: Sequence[str], settings: MlopsSettings) -> list[ArtifactRepository]:
    return [get_artifact_repository(uri, settings) for uri in uris if uri]


def _size(repos: Sequence[ArtifactRepository]) -> int:
    return sum(_tree_size(repo) for repo in repos)


def _quarantined(store: SqlStore, settings: MlopsSettings, root: str, cutoff_s: float) -> list[str]:
    """Quarantine folders older than ``cutoff_s`` (epoch seconds), from the runs' tags and
    the root's ``quarantine/`` folder. Only ``.../quarantine/<time>-<digest>`` folders are
    taken: a tag naming anything else is ignored."""
    found = set(quarantine_uris(store.db, TAG_QUARANTINE_URI))
    try:
        base = get_artifact_repository(root, settings).artifact_uri
        folder = join_artifact_uri(base, "quarantine")
        for info in get_artifact_repository(folder, settings).list_artifacts():
            if info.is_dir:
                found.add(join_artifact_uri(folder, info.path))
    except NotFound:
        pass
    old = []
    for uri in sorted(found):
        match = _QUARANTINE_FOLDER.search(uri.rstrip("/"))
        if match is None:
            continue
        stamp = calendar.timegm(time.strptime(match.group(1), "%Y%m%dT%H%M%S"))  # written in UTC
        if stamp < cutoff_s:
            old.append(uri)
    return old


def collect_garbage(
    *,
    older_than_seconds: float = 30 * 86400,
    experiment_ids: Sequence[str] | None = None,
    run_ids: Sequence[str] | None = None,
    keep_last: int | None = None,
    quarantine_older_than_seconds: float | None = None,
    dry_run: bool = False,
    store: SqlStore | None = None,
    settings: MlopsSettings | None = None,
    tracking_uri: str | None = None,
    artifact_root: str | None = None,
) -> GcReport:
    """Remove what is garbage now; see the module docstring for what that is.

    Args:
        older_than_seconds: deleted runs and experiments older than this are removed.
        experiment_ids / run_ids: only these (default: all).
        keep_last: keep this many most recent finished runs per experiment, remove the rest.
        quarantine_older_than_seconds: remove quarantined batches older than this.
        dry_run: report, change nothing.
        store: the SQL store (default: the database of ``tracking_uri`` / settings).
        settings: S3 endpoint and credentials, the artifact root (default: resolved).

    Raises:
        InvalidArgument: a bad option, or a tracking URI that is not a database (gc runs on
            the database; a tracking server offers ``POST /api/2.0/prefect-mlops/gc``).
    """
    if older_than_seconds < 0:
        raise InvalidArgument(f"Invalid older_than {older_than_seconds!r}: pass a duration of 0 or more.")
    if quarantine_older_than_seconds is not None and quarantine_older_than_seconds < 0:
        raise InvalidArgument(
            f"Invalid quarantine_older_than {quarantine_older_than_seconds!r}: pass a duration of 0 or more."
        )
    if settings is None:
        settings = resolve_settings(tracking_uri, artifact_root)
    owned = store is None
    if store is None:
        uri = settings.tracking_uri
        if not (uri.startswith("sqlite") or uri.startswith("postgresql")):
            raise InvalidArgument(
                f"gc works on the tracking database, not on {uri!r}: pass --backend-store-uri "
                "sqlite:///... or postgresql+psycopg://..., or call the tracking server's "
                "POST /api/2.0/prefect-mlops/gc as an admin."
            )
        store = SqlStore.from_uri(uri)
        store.db.ensure_schema()
    try:
        return _collect(
            store, settings, older_than_seconds, experiment_ids, run_ids, keep_last,
            quarantine_older_than_seconds, dry_run, artifact_root or settings.artifact_root,
        )
    finally:
        if owned:
            store.close()


def _collect(
    store: SqlStore,
    settings: MlopsSettings,
    older_than_seconds: float,
    experiment_ids: Sequence[str] | None,
    run_ids: Sequence[str] | None,
    keep_last: int | None,
    quarantine_older_than_seconds: float | None,
    dry_run: bool,
    artifact_root: str,
) -> GcReport:
    now = time.time()
    plan = store.gc_plan(
        deleted_before_ms=int((now - older_than_seconds) * 1000),
        experiment_ids=experiment_ids,
        run_ids=run_ids,
        keep_last=keep_last,
    )
    removed: list[RemovedItem] = []
    kept: list[KeptRun] = [KeptRun(k.run_id, k.experiment_id, k.reason) for k in plan.kept]
    for candidate in plan.runs:
        if candidate.run_id not in candidate.artifact_uri.split("/"):
            # Never delete a folder that is not the run's own (<location>/<run id>/artifacts).
            kept.append(KeptRun(
                candidate.run_id, candidate.experiment_id,
                f"its artifact location {candidate.artifact_uri!r} is not a folder of the run; remove it by hand",
            ))
            continue
        item = _remove_run(store, settings, candidate, dry_run)
        if item is None:
            kept.append(KeptRun(candidate.run_id, candidate.experiment_id, "changed since the plan (restored or registered)"))
        else:
            removed.append(item)
    for experiment in plan.experiments:
        repos = _files(store.gc_experiment_files(experiment.experiment_id), settings)
        size = _size(repos)
        if not dry_run:
            for repo in repos:
                repo.delete_artifacts()
            if not store.gc_purge_experiment(experiment.experiment_id):
                continue
        removed.append(RemovedItem("experiment", experiment.experiment_id, f"deleted ({experiment.name})", size))
    if quarantine_older_than_seconds is not None:
        for uri in _quarantined(store, settings, artifact_root, now - quarantine_older_than_seconds):
            repo = get_artifact_repository(uri, settings)
            size = _tree_size(repo)
            if not dry_run:
                repo.delete_artifacts()
            removed.append(RemovedItem("quarantine", uri, "quarantined batch older than the policy", size))
    report = GcReport(dry_run=dry_run, removed=tuple(removed), kept=tuple(kept))
    logger.info(
        "gc%s: %d run(s), %d experiment(s), %d quarantined batch(es), %d bytes; %d run(s) kept",
        " (dry run)" if dry_run else "", report.runs_removed, report.experiments_removed,
        report.quarantine_removed, report.bytes_removed, len(report.kept),
    )
    return report


def _remove_empty_folders(repo: ArtifactRepository, *, stop_at: str) -> None:
    """A local run folder (``<location>/<run id>/artifacts``) emptied above: remove the
    empty folders up to and including ``<run id>`` (S3 has no folders)."""
    if not isinstance(repo, LocalArtifactRepository):
        return
    folder = Path(repo.root)
    for _ in range(3):
        try:
            folder.rmdir()  # only ever removes an empty folder
        except FileNotFoundError:
            pass  # a gc killed after removing it: go on with its parent
        except OSError:
            return
        if folder.name == stop_at:
            return
        folder = folder.parent


def _remove_run(store: SqlStore, settings: MlopsSettings, candidate: GcCandidate, dry_run: bool) -> RemovedItem | None:
    repos = _files([candidate.artifact_uri, *candidate.logged_model_locations], settings)
    size = _size(repos)
    if dry_run:
        return RemovedItem("run", candidate.run_id, candidate.why, size)
    if not store.gc_mark_run(candidate):
        return None
    # A failure here leaves the run gc_pending (it reads as gone): the next gc retries it.
    for repo in repos:
        try:
            repo.delete_artifacts()
        except MlopsError:
            try:
                left = repo.list_artifacts()
            except NotFound:
                left = []
            if left:
                raise
            # Nothing left: another gc deleting the same files at the same time won the race.
        _remove_empty_folders(repo, stop_at=candidate.run_id)
    store.gc_purge_run(candidate.run_id)
    return RemovedItem("run", candidate.run_id, candidate.why, size)

