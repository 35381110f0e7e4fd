"""prefect-mlops gc: deleted runs and experiments go for good (rows and files), registered
models never lose a file, retention policies, and an interrupted gc is finished by the next.

Backends: every database x artifact root of ``full_env`` (SQLite + local folder,
PostgreSQL + S3 on moto, and the two mixed) for the main scenario; SQLite + local for the
policies that do not depend on the backend.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from sklearn.linear_model import LogisticRegression

from tracking_plugin import fluent
from tracking_plugin import sklearn as mlops_sklearn
from tracking_plugin.artifacts import get_artifact_repository, join_artifact_uri
from tracking_plugin.client import TrackingClient
from tracking_plugin.entities import Metric, Param, RunStatus, Stage, ViewType
from tracking_plugin.errors import InvalidArgument, NotFound
from tracking_plugin.gc import collect_garbage, parse_duration
from tracking_plugin.store.db import Statement
from tracking_plugin.store.sql import SqlStore

X = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.9], [0.9, 0.1]] * 5)
Y = np.array([0, 1, 0, 1] * 5)


def _files(uri: str) -> list[str]:
    repo = get_artifact_repository(uri)
    out, pending = [], [None]
    while pending:
        for info in repo.list_artifacts(pending.pop()):
            (pending.append(info.path) if info.is_dir else out.append(info.path))
    return out


def _plain_run(client: TrackingClient, experiment_id: str, tmp_path: Path, label: str) -> str:
    run = client.create_run(experiment_id)
    run_id = run.info.run_id
    client.log_batch(
        run_id,
        metrics=[Metric("loss", 1.0 / (i + 1), 0, i) for i in range(20)],
        params=[Param("label", label)],
    )
    client.log_text(run_id, "x" * 1000, "notes/report.txt")
    client.set_terminated(run_id, RunStatus.FINISHED)
    return run_id


def _registered_run(experiment_id: str, name: str) -> tuple[str, int]:
    with fluent.start_run(experiment_id=experiment_id) as run:
        info = mlops_sklearn.log_model(LogisticRegression().fit(X, Y), name="model", registered_model_name=name)
    return run.info.run_id, int(info.registered_model_version)


def test_dry_run_reports_and_gc_removes_deleted_runs_but_never_what_the_registry_needs(
    full_env, tmp_path: Path
) -> None:
    client = TrackingClient()
    exp = client.create_experiment("gc-main")
    plain = _plain_run(client, exp, tmp_path, "plain")
    restored = _plain_run(client, exp, tmp_path, "restored")
    active = _plain_run(client, exp, tmp_path, "active")
    champion_run, v1 = _registered_run(exp, "gc-churn")
    staging_run, v2 = _registered_run(exp, "gc-churn")
    lineage_run, v3 = _registered_run(exp, "gc-churn")
    client.set_registered_model_alias("gc-churn", "champion", v1)
    client.transition_model_version_stage("gc-churn", v2, Stage.STAGING)
    doomed_exp = client.create_experiment("gc-doomed")
    doomed_run = _plain_run(client, doomed_exp, tmp_path, "doomed")
    plain_uri = client.get_run(plain).info.artifact_uri
    doomed_uri = client.get_run(doomed_run).info.artifact_uri
    for run_id in (plain, restored, champion_run, staging_run, lineage_run):
        client.delete_run(run_id)
    client.restore_run(restored)  # restore before gc works
    client.delete_experiment(doomed_exp)
    time.sleep(0.01)

    dry = collect_garbage(older_than_seconds=0, dry_run=True)
    assert {(i.kind, i.id) for i in dry.removed} == {("run", plain), ("run", doomed_run), ("experiment", doomed_exp)}
    assert dry.bytes_removed >= 2000  # both runs' 1,000-byte notes
    kept = {k.run_id: k.reason for k in dry.kept}
    assert set(kept) == {champion_run, staging_run, lineage_run}
    assert "@champion" in kept[champion_run] and f"gc-churn v{v1}" in kept[champion_run]
    assert "stage Staging" in kept[staging_run]
    assert "lineage" in kept[lineage_run] and "READY" in kept[lineage_run]
    # Nothing changed.
    assert client.get_run(plain).info.lifecycle_stage.value == "deleted"
    assert _files(plain_uri) == ["notes/report.txt"]

    report = collect_garbage(older_than_seconds=0)
    assert (report.runs_removed, report.experiments_removed) == (2, 1)
    assert report.bytes_removed == dry.bytes_removed
    for gone in (plain, doomed_run):
        with pytest.raises(NotFound, match=f"{gone}.*garbage-collected"):
            client.get_run(gone)
        with pytest.raises(NotFound, match="garbage-collected"):
            client.restore_run(gone)
        with pytest.raises(NotFound, match="garbage-collected"):
            client.get_metric_history(gone, "loss")
    assert _files(plain_uri) == [] and _files(doomed_uri) == []
    with pytest.raises(NotFound):
        client.get_experiment(doomed_exp)
    assert client.get_experiment_by_name("gc-doomed") is None
    client.create_experiment("gc-doomed")  # the name is free again
    # Survivors: the restored and active runs, and every run a version needs, with their models.
    for run_id in (restored, active):
        assert _files(client.get_run(run_id).info.artifact_uri) == ["notes/report.txt"]
    assert client.get_run(champion_run).info.lifecycle_stage.value == "deleted"
    for uri in ("models:/gc-churn@champion", "models:/gc-churn/Staging", f"models:/gc-churn/{v3}"):
        assert list(mlops_sklearn.load_model(uri).predict(X[:4])) == [0, 1, 0, 1], uri
    assert list(mlops_sklearn.load_model(f"runs:/{champion_run}/model").predict(X[:2])) == [0, 1]
    # A second gc has nothing left to do.
    again = collect_garbage(older_than_seconds=0)
    assert again.removed == () and {k.run_id for k in again.kept} == {champion_run, staging_run, lineage_run}


def test_the_cutoff_counts_from_the_deletion_not_from_the_end_of_the_run(tracking_env, tmp_path: Path) -> None:
    """A run that ended 60 days ago and was deleted today stays restorable for the whole
    --older-than period (as mlflow gc counts from deleted_time); restoring clears the
    deletion time, and only once the deletion itself is older than the cutoff does gc
    remove the run."""
    client = TrackingClient()
    exp = client.create_experiment("gc-deleted-time")
    sixty_days_ago = int(time.time() * 1000) - 60 * 86_400_000
    run_id = client.create_run(exp, start_time=sixty_days_ago).info.run_id
    client.set_terminated(run_id, RunStatus.FINISHED, end_time=sixty_days_ago + 1000)
    client.delete_run(run_id)
    store = SqlStore.from_uri(tracking_env.tracking_uri)

    def deleted_time() -> int | None:
        with store.db.transaction(write=False) as tx:
            return tx.one(Statement(sa.text(f"SELECT deleted_time FROM runs WHERE run_uuid = '{run_id}'")))[0]

    assert abs(deleted_time() - time.time() * 1000) < 60_000  # the database's clock, now
    assert collect_garbage(older_than_seconds=parse_duration("30d")).removed == ()
    client.restore_run(run_id)
    assert deleted_time() is None
    client.delete_run(run_id)
    with store.db.transaction() as tx:  # as if deleted 31 days ago
        tx.execute(Statement(sa.text(
            f"UPDATE runs SET deleted_time = deleted_time - {31 * 86_400_000} WHERE run_uuid = '{run_id}'"
        )))
    assert [i.id for i in collect_garbage(older_than_seconds=parse_duration("30d")).removed] == [run_id]
    with pytest.raises(NotFound, match="garbage-collected"):
        client.get_run(run_id)
    store.close()


def test_only_runs_deleted_before_the_cutoff_and_in_scope_go(tracking_env, tmp_path: Path) -> None:
    client = TrackingClient()
    exp, other = client.create_experiment("gc-scope"), client.create_experiment("gc-other")
    a, b, c = (_plain_run(client, e, tmp_path, n) for e, n in ((exp, "a"), (exp, "b"), (other, "c")))
    for run_id in (a, b, c):
        client.delete_run(run_id)
    time.sleep(0.01)
    assert collect_garbage(older_than_seconds=parse_duration("1d")).removed == ()
    assert [i.id for i in collect_garbage(older_than_seconds=0, run_ids=[a]).removed] == [a]
    assert [i.id for i in collect_garbage(older_than_seconds=0, experiment_ids=[other]).removed] == [c]
    client.get_run(b)  # out of both scopes: still there


def test_keep_last_removes_older_finished_unregistered_runs(tracking_env, tmp_path: Path) -> None:
    client = TrackingClient()
    exp = client.create_experiment("gc-retention")
    registered, version = _registered_run(exp, "gc-retained")
    client.set_terminated(registered, RunStatus.FINISHED)
    finished = []
    for i in range(5):
        finished.append(_plain_run(client, exp, tmp_path, f"r{i}"))
        time.sleep(0.005)
    running = client.create_run(exp).info.run_id  # unfinished runs are not counted
    report = collect_garbage(older_than_seconds=parse_duration("30d"), keep_last=2, dry_run=True)
    assert {i.id for i in report.removed} == set(finished[:3])
    assert {i.why for i in report.removed} == {"keep-last"}
    collect_garbage(older_than_seconds=parse_duration("30d"), keep_last=2)
    survivors = {r.info.run_id for r in client.search_runs([exp], run_view_type=ViewType.ALL)}
    assert survivors == {registered, running, *finished[3:]}
    with pytest.raises(NotFound, match="garbage-collected"):
        client.get_run(finished[0])
    assert list(mlops_sklearn.load_model(f"models:/gc-retained/{version}").predict(X[:2])) == [0, 1]


def test_quarantine_is_kept_unless_older_than_its_policy(tracking_env, tmp_path: Path) -> None:
    client = TrackingClient()
    root = tracking_env.artifact_root
    old = join_artifact_uri(root, "quarantine", "20260101T000000-aaaaaaaaaaaa")
    recent_stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(time.time() - 3600))
    recent = join_artifact_uri(root, "quarantine", f"{recent_stamp}-bbbbbbbbbbbb")
    elsewhere = str(tmp_path / "elsewhere" / "quarantine" / "20250101T000000-cccccccccccc")
    not_quarantine = str(tmp_path / "precious" / "20200101T000000-dddddddddddd")
    for uri in (old, recent, elsewhere, not_quarantine):
        get_artifact_repository(uri).log_bytes(b"row\n" * 100, "batch.csv")
    exp = client.create_experiment("gc-q")
    client.set_tag(client.create_run(exp).info.run_id, "validation.quarantine_uri", elsewhere)  # found by its tag
    # A tag naming a folder that is not a quarantined batch is ignored.
    client.set_tag(client.create_run(exp).info.run_id, "validation.quarantine_uri", not_quarantine)

    assert collect_garbage(older_than_seconds=0).quarantine_removed == 0
    report = collect_garbage(older_than_seconds=0, quarantine_older_than_seconds=parse_duration("7d"))
    assert {i.id for i in report.removed if i.kind == "quarantine"} == {old, elsewhere}
    assert report.bytes_removed == 800
    assert _files(old) == [] and _files(elsewhere) == []
    assert _files(recent) == ["batch.csv"] and _files(not_quarantine) == ["batch.csv"]


def test_bad_options_are_refused_naming_the_value(tracking_env) -> None:
    with pytest.raises(InvalidArgument, match="'30 days'.*30d"):
        parse_duration("30 days")
    with pytest.raises(InvalidArgument, match="'abc'"):
        collect_garbage(older_than_seconds=0, experiment_ids=["abc"])
    with pytest.raises(InvalidArgument, match="http://localhost:5000.*prefect-mlops/gc|gc works on the tracking database"):
        collect_garbage(tracking_uri="http://localhost:5000")


_GC_CHILD = """
import sys
from tracking_plugin.gc import collect_garbage
collect_garbage(older_than_seconds=0, tracking_uri=sys.argv[1], artifact_root=sys.argv[2])
"""


@pytest.mark.slow
def test_a_gc_killed_midway_leaves_readable_data_and_the_next_gc_finishes(tmp_path: Path) -> None:
    uri, root = f"sqlite:///{tmp_path / 'mlops.db'}", tmp_path / "artifacts"
    store = SqlStore.from_uri(uri)
    store.db.upgrade()
    exp = store.create_experiment("gc-kill", artifact_location=str(root / "1"))
    run_ids = []
    for i in range(300):
        run = store.create_run(exp, user_id="ana", start_time=int(time.time() * 1000))
        store.log_batch(run.info.run_id, metrics=[Metric("m", float(s), 0, s) for s in range(50)])
        folder = Path(run.info.artifact_uri)
        folder.mkdir(parents=True)
        for f in range(20):
            (folder / f"f{f}.bin").write_bytes(b"\0" * 4096)
        store.delete_run(run.info.run_id)
        run_ids.append(run.info.run_id)
    time.sleep(0.01)

    def count(sql: str) -> int:
        with store.db.transaction(write=False) as tx:
            return int(tx.one(Statement(sa.text(sql)))[0])

    def done() -> int:
        return count("SELECT count(*) FROM gc_tombstones WHERE state = 'done'")

    child = subprocess.Popen([sys.executable, "-c", _GC_CHILD, uri, str(root)], cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while done() < 5 and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    finished = done()
    assert 5 <= finished < 300, f"the gc was not killed mid-way ({finished} of 300 runs finished)"

    # Every run is either whole (deleted, files there, history readable) or reads as gone.
    whole = 0
    for run_id in run_ids:
        try:
            run = store.get_run(run_id)
        except NotFound as exc:
            assert "garbage-collected" in exc.message
            continue
        whole += 1
        assert len(list(Path(run.info.artifact_uri).iterdir())) == 20
        assert len(store.get_metric_history(run_id, "m").items) == 50
    assert whole < 300 - finished + 1

    report = collect_garbage(older_than_seconds=0, tracking_uri=uri, artifact_root=str(root))
    assert report.runs_removed == 300 - finished
    assert done() == 300
    assert count("SELECT count(*) FROM runs") == 0
    assert count("SELECT count(*) FROM metrics") == 0
    assert [p.name for p in (root / "1").iterdir()] == []  # not even empty run folders
    store.close()


def test_cli_dry_run_json_and_table(tracking_env, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from prefect_mlops.deployments.cli import app

    client = TrackingClient()
    exp = client.create_experiment("gc-cli")
    run_id = _plain_run(client, exp, tmp_path, "cli")
    client.delete_run(run_id)
    time.sleep(0.01)
    runner = CliRunner()
    args = ["gc", "--older-than", "0s", "--backend-store-uri", tracking_env.tracking_uri]
    dry = runner.invoke(app, [*args, "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    summary = json.loads(dry.output)
    assert summary["dry_run"] and summary["runs_removed"] == 1 and summary["bytes_removed"] >= 1000
    client.get_run(run_id)
    table = runner.invoke(app, args)
    assert table.exit_code == 0, table.output
    assert "Removed 1 run(s)" in table.output and run_id in table.output and "bytes" in table.output
    with pytest.raises(NotFound, match="garbage-collected"):
        client.get_run(run_id)
    bad = runner.invoke(app, ["gc", "--older-than", "soon", "--backend-store-uri", tracking_env.tracking_uri])
    assert bad.exit_code == 1 and "Invalid duration 'soon'" in bad.output


def test_a_marked_run_reads_as_gone_is_never_restored_and_the_next_gc_finishes_it(sqlite_store: SqlStore, tmp_path: Path) -> None:
    """The state a gc killed between marking a run and deleting its rows leaves behind."""
    from tracking_plugin.store.sql_gc import GcCandidate

    store = sqlite_store
    exp = store.create_experiment("gc-marked", artifact_location=str(tmp_path / "a"))
    run = store.create_run(exp, user_id="ana", start_time=int(time.time() * 1000))
    run_id = run.info.run_id
    store.log_batch(run_id, metrics=[Metric("m", 1.0, 0, 0)])
    get_artifact_repository(run.info.artifact_uri).log_bytes(b"abc", "f.txt")
    store.delete_run(run_id)
    assert store.gc_mark_run(GcCandidate(run_id, exp, "deleted", run.info.artifact_uri, ()))

    with pytest.raises(NotFound, match=f"{run_id}.*being garbage-collected"):
        store.get_run(run_id)
    for call in (
        lambda: store.restore_run(run_id),
        lambda: store.delete_run(run_id),
        lambda: store.log_batch(run_id, metrics=[Metric("m", 2.0, 0, 1)]),
        lambda: store.get_metric_history(run_id, "m"),
        lambda: store.update_run_info(run_id, status=RunStatus.FINISHED),
    ):
        with pytest.raises(NotFound, match="garbage-collected"):
            call()
    assert list(store.search_runs([exp], run_view_type=ViewType.ALL)) == []
    # Deleting and restoring its experiment does not bring it back either.
    store.delete_experiment(exp)
    store.restore_experiment(exp)
    with pytest.raises(NotFound, match="garbage-collected"):
        store.get_run(run_id)

    report = collect_garbage(older_than_seconds=parse_duration("30d"), store=store, artifact_root=str(tmp_path))
    assert [(i.id, i.why, i.bytes) for i in report.removed] == [(run_id, "unfinished gc", 3)]
    assert _files(run.info.artifact_uri) == []
    with pytest.raises(NotFound, match=r"was garbage-collected at \d{4}-\d\d-\d\d"):
        store.get_run(run_id)


_GC_JSON_CHILD = """
import json, sys
from tracking_plugin.gc import collect_garbage
print(json.dumps(collect_garbage(older_than_seconds=0, tracking_uri=sys.argv[1], artifact_root=sys.argv[2]).to_dict()))
"""


@pytest.mark.slow
def test_two_gc_processes_at_once_remove_everything_once_without_errors(db_uri: str, tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    store = SqlStore.from_uri(db_uri)
    store.db.upgrade()
    exp = store.create_experiment("gc-race", artifact_location=str(root / "1"))
    run_ids = []
    for _ in range(120):
        run = store.create_run(exp, user_id="ana", start_time=int(time.time() * 1000))
        store.log_batch(run.info.run_id, metrics=[Metric("m", 1.0, 0, 0)])
        get_artifact_repository(run.info.artifact_uri).log_bytes(b"x" * 100, "sub/f.bin")
        store.delete_run(run.info.run_id)
        run_ids.append(run.info.run_id)
    time.sleep(0.01)
    children = [
        subprocess.Popen([sys.executable, "-c", _GC_JSON_CHILD, db_uri, str(root)], cwd=tmp_path,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [child.communicate(timeout=300) for child in children]
    for child, (out, err) in zip(children, outputs):
        assert child.returncode == 0, err[-3000:]
    removed = [set(i["id"] for i in json.loads(out)["removed"]) for out, _ in outputs]
    assert removed[0] | removed[1] == set(run_ids)
    for run_id in run_ids:
        with pytest.raises(NotFound, match="was garbage-collected"):
            store.get_run(run_id)
    assert not any(p.is_file() for p in root.rglob("*"))
    store.close()
