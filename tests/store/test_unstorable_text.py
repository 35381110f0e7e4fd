"""Text PostgreSQL cannot store (NUL bytes, lone surrogates) is refused the same way on
SQLite and PostgreSQL (issue 14, item 7): InvalidArgument naming the field, never a driver
error with SQL text, and nothing is written."""

from __future__ import annotations

import time
import uuid
from typing import Any, Callable

import pytest

from tracking_plugin.entities import Param, RunTag
from tracking_plugin.errors import InvalidArgument
from tracking_plugin.store.sql import SqlStore

NUL = "a\x00b"
SURROGATE = "a\ud800b"


def _fresh() -> str:
    return uuid.uuid4().hex[:8]


def _now() -> int:
    return int(time.time() * 1000)


def _ready(store: SqlStore) -> int:
    from tracking_plugin.entities import ModelVersionStatus

    version = store.create_model_version("m", "runs:/abc/model").version
    store.finish_model_version("m", version, status=ModelVersionStatus.READY, storage_location="/models/m/1")
    return version


def _run(store: SqlStore) -> str:
    experiment = store.create_experiment(_fresh())
    return store.create_run(experiment, user_id="ana", start_time=_now()).info.run_id


# (what the message must name, call) -- each call gets the store and the bad text
CALLS: dict[str, tuple[str, Callable[[SqlStore, str], Any]]] = {
    "experiment name": ("experiment name", lambda s, bad: s.create_experiment(bad)),
    "experiment rename": ("experiment name", lambda s, bad: s.rename_experiment(s.create_experiment(_fresh()), bad)),
    "experiment tag value": ("tag", lambda s, bad: s.create_experiment(_fresh(), tags={"k": bad})),
    "experiment tag": ("tag", lambda s, bad: s.set_experiment_tag(s.create_experiment(_fresh()), "k", bad)),
    "param value": ("param", lambda s, bad: s.log_batch(_run(s), params=[Param("p", bad)])),
    "tag value": ("tag", lambda s, bad: s.log_batch(_run(s), tags=[RunTag("t", bad)])),
    "run name": ("run name", lambda s, bad: s.create_run(s.create_experiment(_fresh()), user_id="u", start_time=_now(), run_name=bad)),
    "run rename": ("run name", lambda s, bad: s.update_run_info(_run(s), run_name=bad)),
    "user id": ("user id", lambda s, bad: s.create_run(s.create_experiment(_fresh()), user_id=bad, start_time=_now())),
    "model name": ("model name", lambda s, bad: s.create_registered_model(bad)),
    "model name of a version": ("model name", lambda s, bad: s.create_model_version(bad, "runs:/abc/model")),
    "model rename": ("model name", lambda s, bad: s.rename_registered_model(s.create_registered_model(_fresh()).name, bad)),
    "model description": ("description", lambda s, bad: s.create_registered_model("m", description=bad)),
    "model tag value": ("tag", lambda s, bad: s.create_registered_model("m", tags={"k": bad})),
    "version source": ("model source", lambda s, bad: s.create_model_version("m", f"runs:/abc/{bad}")),
    "audit reason": ("reason", lambda s, bad: s.promote("m", _ready(s), require_passed_gate=False, reason=bad)),
    "version description": ("description", lambda s, bad: s.create_model_version("m", "runs:/abc/model", description=bad)),
}


@pytest.mark.parametrize("case", list(CALLS))
def test_unstorable_text_is_invalid_argument_on_every_database(store: SqlStore, case: str) -> None:
    field, call = CALLS[case]
    for bad, why in ((NUL, "NUL character"), (SURROGATE, "not valid Unicode")):
        with pytest.raises(InvalidArgument) as refused:
            call(store, bad)
        message = refused.value.message
        assert field in message and why in message, message
        assert "INSERT" not in message and "SELECT" not in message and "psycopg" not in message
    # nothing with the bad text was written
    for bad in (NUL, SURROGATE):
        assert all(bad not in e.name and bad not in str(e.tags) for e in store.search_experiments())
        assert all(bad not in m.name and bad not in (m.description or "") for m in store.search_registered_models())


@pytest.mark.parametrize("bad", [NUL, SURROGATE], ids=["nul", "surrogate"])
def test_lookups_by_unstorable_names_answer_the_same_on_every_database(store: SqlStore, bad: str) -> None:
    lookups: list[Callable[[str], Any]] = [
        store.get_registered_model,
        store.get_experiment_by_name,
        lambda name: store.get_model_version(name, 1),
        lambda name: store.get_model_version_by_alias(name, "champion"),
        lambda name: store.delete_registered_model(name),
    ]
    for lookup in lookups:
        with pytest.raises(InvalidArgument, match="NUL|Unicode"):
            lookup(bad)


@pytest.mark.parametrize("bad", [NUL, SURROGATE], ids=["nul", "surrogate"])
def test_search_filters_with_unstorable_text_answer_the_same_on_every_database(store: SqlStore, bad: str) -> None:
    experiment = store.create_experiment(_fresh())
    searches: list[Callable[[], Any]] = [
        lambda: store.search_runs([experiment], f"params.p = '{bad}'"),
        lambda: store.search_runs([experiment], f"tags.t LIKE '%{bad}%'"),
        lambda: store.search_experiments(filter_string=f"name = '{bad}'"),
        lambda: store.search_registered_models(f"name = '{bad}'"),
        lambda: store.search_model_versions(f"name = '{bad}'"),
    ]
    for search in searches:
        with pytest.raises(InvalidArgument, match="NUL|Unicode"):
            search()
