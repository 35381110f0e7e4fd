"""Concurrent registrations and promotions from separate processes, on SQLite and PostgreSQL.

Each worker is a fresh ``spawn`` process with its own engine; a barrier releases them
together so their transactions really overlap.
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from pathlib import Path
from typing import Any, Callable

import pytest

from tracking_plugin.entities import ModelVersionStatus
from tracking_plugin.models._manifest import write_manifest
from tracking_plugin.store.db import Database
from tracking_plugin.store.sql import SqlStore

WORKERS = 10


def _create_version(db_uri: str, index: int) -> int:
    store = SqlStore(Database(db_uri))
    return store.create_model_version("shared", f"s3://bucket/candidates/{index}", run_id=f"run{index}").version


def _register(db_uri: str, index: int, model_dir: str, artifact_root: str) -> int:
    from tracking_plugin.registry import register_model

    store = SqlStore(Database(db_uri))
    return register_model(model_dir, "shared", tags={"worker": str(index)}, store=store, artifact_root=artifact_root).version


def _promote(db_uri: str, index: int) -> int:
    store = SqlStore(Database(db_uri))
    version = index + 1  # worker 0 promotes version 1, worker 1 version 2
    store.promote("shared", version, actor=f"worker-{index}", prefect_flow_run_id=f"flow-run-{index}")
    return version


def _run(barrier: Any, results: Any, work: Callable[..., int], args: tuple[Any, ...]) -> None:
    barrier.wait(timeout=120)
    try:
        results.put(("ok", work(*args)))
    except BaseException:  # noqa: BLE001 - the parent asserts on it
        results.put(("error", traceback.format_exc()))


def run_at_once(work: Callable[..., int], args_per_worker: list[tuple[Any, ...]]) -> list[int]:
    """Run ``work(*args)`` in one spawned process per args, released together; return results."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(len(args_per_worker)), ctx.Queue()
    procs = [ctx.Process(target=_run, args=(barrier, results, work, args)) for args in args_per_worker]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=300) for _ in procs]
    for proc in procs:
        proc.join(60)
    errors = [detail for status, detail in outcomes if status == "error"]
    assert not errors, errors[0]
    return [value for _, value in outcomes]


@pytest.mark.slow
def test_ten_processes_get_versions_1_to_10_without_gaps_or_duplicates(store: SqlStore, db_uri: str) -> None:
    # The model does not exist yet: the workers also race to create it.
    versions = run_at_once(_create_version, [(db_uri, i) for i in range(WORKERS)])

    assert sorted(versions) == list(range(1, WORKERS + 1))
    stored = store.search_model_versions("name = 'shared'", order_by=["version_number ASC"])
    assert [v.version for v in stored] == list(range(1, WORKERS + 1))
    assert sorted(v.source for v in stored) == sorted(f"s3://bucket/candidates/{i}" for i in range(WORKERS))
    assert {v.status for v in stored} == {ModelVersionStatus.PENDING_REGISTRATION}
    assert store.create_model_version("shared", "s3://bucket/next").version == WORKERS + 1


@pytest.mark.slow
# Each database once and each artifact store once (four combinations would double the time
# of an already slow test and add no new path).
@pytest.mark.parametrize(
    ("db_uri", "artifact_root"), [("sqlite", "local"), ("postgres", "s3")], indirect=True, ids=["sqlite-local", "postgres-s3"]
)
def test_ten_processes_register_a_model_at_once(
    store: SqlStore, db_uri: str, artifact_root: str, tmp_path: Path
) -> None:
    model_dir = tmp_path / "model"
    (model_dir / "data").mkdir(parents=True)
    (model_dir / "MLmodel").write_text("flavors:\n  python_function:\n    loader_module: fake\n")
    for i in range(3):
        (model_dir / "data" / f"part-{i}.bin").write_bytes(bytes([i]) * 1000)
    write_manifest(model_dir)

    versions = run_at_once(_register, [(db_uri, i, str(model_dir), artifact_root) for i in range(WORKERS)])

    assert sorted(versions) == list(range(1, WORKERS + 1))
    stored = store.search_model_versions("name = 'shared'", order_by=["version_number ASC"])
    assert [(v.version, v.status) for v in stored] == [(n, ModelVersionStatus.READY) for n in range(1, WORKERS + 1)]
    assert len({v.storage_location for v in stored}) == WORKERS
    assert sorted(v.tags["worker"] for v in stored) == sorted(str(i) for i in range(WORKERS))


@pytest.mark.slow
def test_two_concurrent_promotions_leave_one_champion_and_two_audit_rows(store: SqlStore, db_uri: str) -> None:
    for _ in range(2):
        version = store.create_model_version("shared", "s3://bucket/m")
        store.finish_model_version("shared", version.version, status=ModelVersionStatus.READY, storage_location="s3://b/r")
        store.record_gate_decision("shared", version.version, passed=True, reason="ok", details={})

    run_at_once(_promote, [(db_uri, 0), (db_uri, 1)])

    aliases = store.get_registered_model("shared").aliases
    assert list(aliases) == ["champion"]
    rows = store.get_model_history("shared")
    assert [(r.kind, r.subject) for r in rows] == [("alias", "champion")] * 2
    first, second = rows
    # They ran one after the other: the second saw the first's champion as its "from".
    assert first.from_value is None and second.from_value == first.to_value
    assert aliases["champion"] == int(second.to_value)  # type: ignore[arg-type]
    assert {first.to_value, second.to_value} == {"1", "2"}
    assert {r.actor for r in rows} == {"worker-0", "worker-1"}
    assert all(r.gate_decision_id is not None for r in rows)
