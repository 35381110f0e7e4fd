"""Registry store on SQLite and PostgreSQL: models, versions, stages, aliases, audit, gates."""

from __future__ import annotations

import time
import uuid
from typing import Iterator

import pytest
import sqlalchemy as sa

from tracking_plugin.entities import ModelVersionStatus, Stage
from tracking_plugin.errors import AlreadyExists, Conflict, InvalidArgument, NotFound
from tracking_plugin.store.db import Database
from tracking_plugin.store.schema import RegisteredModelRow
from tracking_plugin.store.sql import SqlStore

READY = ModelVersionStatus.READY
FAILED = ModelVersionStatus.FAILED_REGISTRATION


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    """One migrated database per backend for the module (migrating per test costs ~2 s on
    PostgreSQL); ``store`` empties the registry before each test."""
    if request.param == "sqlite":
        uri = f"sqlite:///{tmp_path_factory.mktemp('registry') / 'mlops.db'}"
    else:
        admin = request.getfixturevalue("pg_server")
        name = "reg_" + uuid.uuid4().hex[:12]
        engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        uri = admin.rsplit("/", 1)[0] + "/" + name
    db = Database(uri)
    db.upgrade()
    yield db
    db.dispose()


@pytest.fixture
def store(database: Database) -> SqlStore:
    with database.session() as session:
        # ON DELETE CASCADE takes versions, tags, aliases, audit rows and decisions along.
        session.execute(sa.delete(RegisteredModelRow))
    return SqlStore(database)


def ready_version(store: SqlStore, name: str, source: str = "s3://bucket/model", **kwargs: object) -> int:
    version = store.create_model_version(name, source, **kwargs)  # type: ignore[arg-type]
    store.finish_model_version(name, version.version, status=READY, storage_location=f"/registry/{name}/{version.version}")
    return version.version


def passed_gate(store: SqlStore, name: str, version: int) -> str:
    return store.record_gate_decision(name, version, passed=True, reason="acc 0.93 >= 0.90", details={"acc": 0.93}).id


# ---------------------------------------------------------------- registered models


def test_registered_model_crud(store: SqlStore) -> None:
    created = store.create_registered_model("churn", tags={"team": "ml"}, description="churn model")
    assert (created.name, created.tags, created.description) == ("churn", {"team": "ml"}, "churn model")
    assert created.aliases == {} and created.latest_versions == ()

    with pytest.raises(AlreadyExists, match="'churn' already exists"):
        store.create_registered_model("churn")

    store.set_registered_model_tag("churn", "owner", "ana")
    store.set_registered_model_tag("churn", "team", "risk")  # overwrite
    store.delete_registered_model_tag("churn", "owner")
    store.delete_registered_model_tag("churn", "never-set")  # no error, as in MLflow
    updated = store.update_registered_model("churn", "predicts churn")
    got = store.get_registered_model("churn")
    assert got.tags == {"team": "risk"}
    assert got.description == updated.description == "predicts churn"
    assert got.last_updated_timestamp >= got.creation_timestamp

    store.delete_registered_model("churn")
    with pytest.raises(NotFound, match="'churn'"):
        store.get_registered_model("churn")


def test_unknown_model_is_not_found_naming_it(store: SqlStore) -> None:
    for call in (
        lambda: store.get_registered_model("nope"),
        lambda: store.rename_registered_model("nope", "other"),
        lambda: store.update_registered_model("nope", "d"),
        lambda: store.delete_registered_model("nope"),
        lambda: store.set_registered_model_tag("nope", "k", "v"),
        lambda: store.get_model_version("nope", 1),
        lambda: store.get_model_history("nope"),
        lambda: store.promote("nope", 1, require_passed_gate=False),
    ):
        with pytest.raises(NotFound, match="'nope'"):
            call()


def test_invalid_names_are_refused_and_nothing_is_recorded(store: SqlStore) -> None:
    for bad in ("", "a/b", "m@x", "x:y"):
        with pytest.raises(InvalidArgument):
            store.create_registered_model(bad)
        with pytest.raises(InvalidArgument):
            store.create_model_version(bad, "s3://b/m")
    with pytest.raises(InvalidArgument, match="tag"):
        store.create_registered_model("ok", tags={"bad/../key": "v"})
    assert list(store.search_registered_models()) == []


def test_rename_keeps_versions_aliases_and_history(store: SqlStore) -> None:
    ready_version(store, "old")
    store.set_registered_model_alias("old", "champion", 1, actor="ana")
    store.create_registered_model("taken")

    with pytest.raises(AlreadyExists, match="'taken'"):
        store.rename_registered_model("old", "taken")
    renamed = store.rename_registered_model("old", "new")

    assert renamed.name == "new" and renamed.aliases == {"champion": 1}
    assert store.get_model_version("new", 1).aliases == ("champion",)
    assert store.get_model_version_by_alias("new", "champion").version == 1
    assert [r.actor for r in store.get_model_history("new")] == ["ana"]
    with pytest.raises(NotFound, match="'old'"):
        store.get_registered_model("old")
    # the counter moved with the model: the next version is 2
    assert store.create_model_version("new", "s3://b/m").version == 2


def test_delete_model_cascades_and_a_new_model_starts_at_version_1(store: SqlStore) -> None:
    version = ready_version(store, "m", tags={"k": "v"})
    decision = passed_gate(store, "m", version)
    store.promote("m", version, stage=Stage.PRODUCTION)

    store.delete_registered_model("m")

    with pytest.raises(NotFound):
        store.get_gate_decision(decision)
    assert list(store.search_model_versions("name = 'm'")) == []
    assert store.create_model_version("m", "s3://b/m2").version == 1
    assert store.get_model_history("m") == []
    assert store.get_registered_model("m").aliases == {}


# ---------------------------------------------------------------- versions


def test_versions_are_numbered_and_finished(store: SqlStore) -> None:
    first = store.create_model_version(
        "auto", "runs:/abc123/model", run_id="abc123", tags={"data": "2026-11"}, description="first", user_id="ana"
    )
    assert first.version == 1 and first.status is ModelVersionStatus.PENDING_REGISTRATION
    assert first.current_stage is Stage.NONE and first.storage_location is None
    assert (first.run_id, first.tags, first.description) == ("abc123", {"data": "2026-11"}, "first")
    assert store.get_registered_model("auto").name == "auto"  # created on the fly

    done = store.finish_model_version("auto", 1, status=READY, storage_location="s3://b/registry/auto/1")
    assert done.status is READY and done.storage_location == "s3://b/registry/auto/1"
    with pytest.raises(Conflict, match="already READY"):
        store.finish_model_version("auto", 1, status=FAILED)

    second = store.create_model_version("auto", "s3://b/other")
    failed = store.finish_model_version("auto", second.version, status=FAILED, status_message="S3 went away")
    assert (failed.version, failed.status, failed.status_message) == (2, FAILED, "S3 went away")

    with pytest.raises(InvalidArgument, match="READY or"):
        store.finish_model_version("auto", 2, status=ModelVersionStatus.PENDING_REGISTRATION)

    # numbers are never reused, even after a delete
    store.delete_model_version("auto", 2)
    assert store.create_model_version("auto", "s3://b/third").version == 3
    assert store.get_model_version("auto", "1").version == 1  # MLflow clients pass strings


def test_unknown_version_and_bad_version_numbers(store: SqlStore) -> None:
    ready_version(store, "m")
    with pytest.raises(NotFound, match=r"Version 7 of registered model 'm'"):
        store.get_model_version("m", 7)
    for bad in (0, -1, "one", True, 1.5):
        with pytest.raises(InvalidArgument, match="positive integer"):
            store.get_model_version("m", bad)  # type: ignore[arg-type]


def test_version_tags_and_description(store: SqlStore) -> None:
    ready_version(store, "m")
    store.set_model_version_tag("m", 1, "validated", "yes")
    store.set_model_version_tag("m", 1, "validated", "no")
    store.set_model_version_tag("m", 1, "other", "x")
    store.delete_model_version_tag("m", 1, "other")
    updated = store.update_model_version("m", 1, "tuned forest")
    assert updated.tags == {"validated": "no"} and updated.description == "tuned forest"
    with pytest.raises(NotFound, match="Version 9"):
        store.set_model_version_tag("m", 9, "k", "v")


def test_latest_versions_per_stage_skip_versions_that_are_not_ready(store: SqlStore) -> None:
    for _ in range(3):
        ready_version(store, "m")
    store.transition_model_version_stage("m", 1, "production")
    store.transition_model_version_stage("m", 2, "Staging")
    store.create_model_version("m", "s3://b/pending")  # version 4, never finished

    latest = store.get_latest_versions("m")
    assert [(v.version, v.current_stage) for v in latest] == [
        (3, Stage.NONE),
        (2, Stage.STAGING),
        (1, Stage.PRODUCTION),
    ]
    assert [v.version for v in store.get_latest_versions("m", [Stage.PRODUCTION])] == [1]
    assert [v.version for v in store.get_registered_model("m").latest_versions] == [3, 2, 1]
    assert store.get_latest_versions("m", ["Archived"]) == []


# ---------------------------------------------------------------- stages


def test_stage_names_are_case_insensitive_and_invalid_ones_list_the_valid(store: SqlStore) -> None:
    ready_version(store, "m")
    assert store.transition_model_version_stage("m", 1, "production").current_stage is Stage.PRODUCTION
    assert store.transition_model_version_stage("m", 1, "NONE").current_stage is Stage.NONE
    with pytest.raises(InvalidArgument, match="'Prod'.*'None', 'Staging', 'Production', 'Archived'"):
        store.transition_model_version_stage("m", 1, "Prod")
    assert store.get_model_version("m", 1).current_stage is Stage.NONE


def test_archive_existing_archives_the_others_in_one_transaction(store: SqlStore) -> None:
    for _ in range(3):
        ready_version(store, "m")
    store.transition_model_version_stage("m", 1, Stage.PRODUCTION)
    store.transition_model_version_stage("m", 2, Stage.PRODUCTION)
    store.transition_model_version_stage("m", 3, Stage.STAGING)

    store.transition_model_version_stage(
        "m", 3, Stage.PRODUCTION, archive_existing_versions=True, actor="ci", reason="weekly retrain",
        prefect_flow_run_id="fr-1", gate_decision_id="d-1",
    )

    stages = {v.version: v.current_stage for v in store.search_model_versions("name = 'm'")}
    assert stages == {1: Stage.ARCHIVED, 2: Stage.ARCHIVED, 3: Stage.PRODUCTION}
    last_three = store.get_model_history("m")[-3:]
    assert [(r.version, r.from_value, r.to_value) for r in last_three] == [
        (3, "Staging", "Production"),
        (1, "Production", "Archived"),
        (2, "Production", "Archived"),
    ]
    assert {(r.kind, r.actor, r.reason, r.prefect_flow_run_id, r.gate_decision_id) for r in last_three} == {
        ("stage", "ci", "weekly retrain", "fr-1", "d-1")
    }

    with pytest.raises(InvalidArgument, match="archive_existing_versions"):
        store.transition_model_version_stage("m", 1, Stage.ARCHIVED, archive_existing_versions=True)


def test_only_ready_versions_enter_staging_or_production(store: SqlStore) -> None:
    store.create_model_version("m", "s3://b/m")
    with pytest.raises(Conflict, match="PENDING_REGISTRATION"):
        store.transition_model_version_stage("m", 1, Stage.PRODUCTION)
    store.finish_model_version("m", 1, status=FAILED, status_message="copy failed")
    with pytest.raises(Conflict, match="FAILED_REGISTRATION: copy failed"):
        store.transition_model_version_stage("m", 1, Stage.STAGING)
    assert store.transition_model_version_stage("m", 1, Stage.ARCHIVED).current_stage is Stage.ARCHIVED
    assert [r.to_value for r in store.get_model_history("m")] == ["Archived"]


# ---------------------------------------------------------------- aliases


def test_aliases_move_and_are_audited(store: SqlStore) -> None:
    ready_version(store, "m")
    ready_version(store, "m")
    store.set_registered_model_alias("m", "champion", 1, actor="ana", reason="first")
    store.set_registered_model_alias("m", "challenger", 2)
    store.set_registered_model_alias("m", "champion", 2, actor="bob", prefect_flow_run_id="fr-9")
    store.set_registered_model_alias("m", "champion", 2)  # no change: no audit row

    assert store.get_registered_model("m").aliases == {"challenger": 2, "champion": 2}
    assert store.get_model_version("m", 2).aliases == ("challenger", "champion")
    assert store.get_model_version("m", 1).aliases == ()
    assert store.get_model_version_by_alias("m", "champion").version == 2

    store.delete_registered_model_alias("m", "challenger", actor="ana", reason="done")
    history = [(r.subject, r.from_value, r.to_value, r.actor) for r in store.get_model_history("m")]
    assert history == [
        ("champion", None, "1", "ana"),
        ("challenger", None, "2", None),
        ("champion", "1", "2", "bob"),
        ("challenger", "2", None, "ana"),
    ]
    with pytest.raises(NotFound, match="Alias 'challenger' is not set on registered model 'm'"):
        store.get_model_version_by_alias("m", "challenger")
    with pytest.raises(NotFound, match="'challenger'"):
        store.delete_registered_model_alias("m", "challenger")


@pytest.mark.parametrize("alias", ["latest", "v3", "V12", "LATEST"])
def test_reserved_aliases_are_refused(store: SqlStore, alias: str) -> None:
    ready_version(store, "m")
    with pytest.raises(InvalidArgument, match="reserved"):
        store.set_registered_model_alias("m", alias, 1)
    with pytest.raises(InvalidArgument, match="reserved"):
        store.promote("m", 1, alias=alias, require_passed_gate=False)
    assert store.get_registered_model("m").aliases == {}
    assert store.get_model_history("m") == []


def test_alias_needs_an_existing_ready_version(store: SqlStore) -> None:
    ready_version(store, "m")
    with pytest.raises(NotFound, match="Version 5"):
        store.set_registered_model_alias("m", "champion", 5)
    store.create_model_version("m", "s3://b/m")
    with pytest.raises(Conflict, match="PENDING_REGISTRATION"):
        store.set_registered_model_alias("m", "champion", 2)
    with pytest.raises(InvalidArgument, match="alias"):
        store.set_registered_model_alias("m", "has space", 1)


def test_deleting_a_version_removes_its_aliases_with_an_audit_row(store: SqlStore) -> None:
    ready_version(store, "m")
    store.set_registered_model_alias("m", "champion", 1)
    store.delete_model_version("m", 1)
    assert store.get_registered_model("m").aliases == {}
    last = store.get_model_history("m")[-1]
    assert (last.subject, last.from_value, last.to_value, last.reason) == ("champion", "1", None, "version 1 deleted")


# ---------------------------------------------------------------- promotion and gates


def test_gate_decisions_are_stored_and_linked(store: SqlStore) -> None:
    ready_version(store, "m")
    details = {"metrics": {"acc": 0.91}, "rules": [{"rule": "acc >= 0.9", "passed": True}]}
    decision = store.record_gate_decision("m", 1, passed=True, reason="all rules pass", details=details, prefect_flow_run_id="fr-1")
    assert store.get_model_version("m", 1).gate_decision_id == decision.id
    fetched = store.get_gate_decision(decision.id)
    assert (fetched.name, fetched.version, fetched.passed, fetched.details) == ("m", 1, True, details)
    assert fetched.prefect_flow_run_id == "fr-1"
    with pytest.raises(InvalidArgument, match="JSON"):
        store.record_gate_decision("m", 1, passed=True, reason="x", details={"model": object()})
    with pytest.raises(NotFound, match="Gate decision 'nope'"):
        store.get_gate_decision("nope")
    with pytest.raises(NotFound, match="Version 3"):
        store.record_gate_decision("m", 3, passed=True, reason="x", details={})


def test_promote_moves_alias_and_stage_with_audit_rows(store: SqlStore) -> None:
    ready_version(store, "m")
    ready_version(store, "m")
    store.transition_model_version_stage("m", 1, Stage.PRODUCTION)
    decision = passed_gate(store, "m", 2)

    promoted = store.promote(
        "m", 2, alias="champion", stage=Stage.PRODUCTION, actor="ct-flow", reason="better acc", prefect_flow_run_id="fr-42"
    )

    assert promoted.aliases == ("champion",) and promoted.current_stage is Stage.PRODUCTION
    assert store.get_model_version("m", 1).current_stage is Stage.ARCHIVED
    rows = store.get_model_history("m")[1:]
    assert [(r.kind, r.subject, r.version, r.from_value, r.to_value) for r in rows] == [
        ("alias", "champion", 2, None, "2"),
        ("stage", None, 2, "None", "Production"),
        ("stage", None, 1, "Production", "Archived"),
    ]
    assert {(r.actor, r.reason, r.prefect_flow_run_id, r.gate_decision_id) for r in rows} == {
        ("ct-flow", "better acc", "fr-42", decision)
    }
    assert all(r.name == "m" and r.timestamp > 0 for r in rows)


def test_promote_refusals_change_nothing(store: SqlStore) -> None:
    ready_version(store, "m")
    passed_gate(store, "m", 1)
    store.promote("m", 1)
    ready_version(store, "m")  # 2: no gate decision
    ready_version(store, "m")  # 3: failed gate
    store.record_gate_decision("m", 3, passed=False, reason="acc 0.71 < 0.90", details={"acc": 0.71})
    store.create_model_version("m", "s3://b/m")  # 4: pending
    history_before = store.get_model_history("m")

    with pytest.raises(Conflict, match="version 2 of registered model 'm': no evaluation-gate decision"):
        store.promote("m", 2)
    with pytest.raises(Conflict, match=r"version 3 .*gate failed.*acc 0.71 < 0.90"):
        store.promote("m", 3, stage=Stage.PRODUCTION)
    with pytest.raises(Conflict, match="version 4 .*PENDING_REGISTRATION"):
        store.promote("m", 4, require_passed_gate=False)
    with pytest.raises(InvalidArgument, match="Nothing to promote"):
        store.promote("m", 2, alias=None)
    with pytest.raises(InvalidArgument, match="'Archived'"):
        store.promote("m", 2, stage="archived", require_passed_gate=False)

    assert store.get_model_version_by_alias("m", "champion").version == 1
    assert store.get_model_history("m") == history_before
    assert {v.current_stage for v in store.search_model_versions("name = 'm'")} == {Stage.NONE}
    # an explicit opt-out promotes without a decision
    assert store.promote("m", 2, require_passed_gate=False).aliases == ("champion",)


# ---------------------------------------------------------------- rollback


def test_rollback_steps_back_through_earlier_champions(store: SqlStore) -> None:
    for _ in range(3):
        ready_version(store, "m")
    for version in (1, 2, 3):
        store.promote("m", version, require_passed_gate=False, actor="ct")

    back = store.rollback_alias("m", actor="oncall", prefect_flow_run_id="fr-7")
    assert back.version == 2 and back.aliases == ("champion",)
    assert store.rollback_alias("m", reason="v2 also bad").version == 1
    with pytest.raises(Conflict, match="no earlier READY version"):
        store.rollback_alias("m")
    assert store.get_model_version_by_alias("m", "champion").version == 1

    rows = [r for r in store.get_model_history("m") if r.kind == "alias"]
    assert [(r.from_value, r.to_value, r.reason, r.actor) for r in rows[-2:]] == [
        ("3", "2", "rollback", "oncall"),
        ("2", "1", "v2 also bad", None),
    ]
    assert rows[-2].prefect_flow_run_id == "fr-7"


def test_rollback_after_a_new_promotion_and_skipping_deleted_versions(store: SqlStore) -> None:
    for _ in range(4):
        ready_version(store, "m")
    for version in (1, 2, 3):
        store.promote("m", version, require_passed_gate=False)
    store.rollback_alias("m")  # -> 2
    store.promote("m", 4, require_passed_gate=False)  # champion history: 1, 2, 4
    store.delete_model_version("m", 2)

    assert store.rollback_alias("m").version == 1  # 2 is gone, 3 was rolled back from


def test_rollback_over_a_deleted_version_does_not_bounce_back(store: SqlStore) -> None:
    for _ in range(3):
        ready_version(store, "m")
    for version in (1, 2, 3):
        store.promote("m", version, require_passed_gate=False)
    store.delete_model_version("m", 2)

    assert store.rollback_alias("m").version == 1
    with pytest.raises(Conflict, match="before version 1"):
        store.rollback_alias("m")  # not back to 3, which was rolled back from


def test_rollback_of_an_unset_alias_is_not_found(store: SqlStore) -> None:
    ready_version(store, "m")
    with pytest.raises(NotFound, match="Alias 'champion' is not set"):
        store.rollback_alias("m")
    store.promote("m", 1, require_passed_gate=False)
    with pytest.raises(Conflict, match="no earlier"):
        store.rollback_alias("m")


# ---------------------------------------------------------------- search


def test_search_registered_models(store: SqlStore) -> None:
    store.create_registered_model("Churn", tags={"team": "ml"})
    store.create_registered_model("churn-v2", tags={"team": "risk"})
    store.create_registered_model("fraud")

    def names(filter_string: str | None = None, **kwargs: object) -> list[str]:
        return [m.name for m in store.search_registered_models(filter_string, **kwargs)]  # type: ignore[arg-type]

    assert names() == ["Churn", "churn-v2", "fraud"]
    assert names("name = 'fraud'") == ["fraud"]
    assert names("name LIKE 'churn%'") == ["churn-v2"]  # LIKE is case-sensitive on both databases
    assert names("name ILIKE 'churn%'") == ["Churn", "churn-v2"]
    assert names("tags.team = 'ml'") == ["Churn"]
    assert names("name != 'fraud' and tags.team LIKE 'r%'") == ["churn-v2"]
    assert names("name = 'fraud' or (tags.team = 'ml')") == ["Churn", "fraud"]
    assert names("name IN ('fraud', 'Churn')") == ["Churn", "fraud"]
    assert names(order_by=["name DESC"]) == ["fraud", "churn-v2", "Churn"]
    time.sleep(0.01)
    store.update_registered_model("churn-v2", "touched last")
    assert names(order_by=["last_updated_timestamp DESC"])[0] == "churn-v2"
    with pytest.raises(InvalidArgument, match="unknown attribute 'nmae'"):
        store.search_registered_models("nmae = 'x'")
    with pytest.raises(InvalidArgument, match="order"):
        store.search_registered_models(order_by=["tags.team"])
    with pytest.raises(InvalidArgument, match="max_results"):
        store.search_registered_models(max_results=0)


def test_search_pages_cover_everything_once(store: SqlStore) -> None:
    for i in range(7):
        store.create_registered_model(f"m{i}")
    seen: list[str] = []
    token = None
    while True:
        page = store.search_registered_models(max_results=3, page_token=token)
        seen += [m.name for m in page]
        token = page.token
        if token is None:
            break
    assert seen == [f"m{i}" for i in range(7)]
    with pytest.raises(InvalidArgument, match="page_token"):
        store.search_registered_models(page_token="garbage!")


def test_search_model_versions(store: SqlStore) -> None:
    ready_version(store, "a", source="runs:/r1/model", run_id="r1", tags={"data": "nov"})
    ready_version(store, "a", source="s3://b/a2", run_id="r2")
    ready_version(store, "b", source="runs:/r1/model", run_id="r1")

    def found(filter_string: str, **kwargs: object) -> list[tuple[str, int]]:
        return [(v.name, v.version) for v in store.search_model_versions(filter_string, **kwargs)]  # type: ignore[arg-type]

    assert sorted(found("run_id = 'r1'")) == [("a", 1), ("b", 1)]
    assert found("name = 'a' and version_number > 1") == [("a", 2)]
    assert found("tags.data = 'nov'") == [("a", 1)]
    assert found("source_path LIKE 's3://%'") == [("a", 2)]
    assert found("name = 'a'", order_by=["version_number ASC"]) == [("a", 1), ("a", 2)]
    # default order: last updated first (MLflow's)
    assert found("name = 'a'")[0] == ("a", 2)
    with pytest.raises(InvalidArgument, match="version_number"):
        store.search_model_versions("version_number = 'two'")
