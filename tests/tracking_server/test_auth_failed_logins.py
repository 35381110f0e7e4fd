"""The failed-login count lives in the database: processes failing at once all count, the
lockout holds for every process, a success clears it, and an old window starts over."""

from __future__ import annotations

import multiprocessing as mp

import pytest

from tracking_plugin.store.db import Database

WINDOW = 60.0


def _fail(uri: str, key: str, times: int, barrier, results) -> None:  # type: ignore[no-untyped-def]
    from serving_tasks.tracking_server.auth.store import AuthStore

    store = AuthStore(Database(uri))
    barrier.wait()
    try:
        for _ in range(times):
            store.record_failed_login(key, WINDOW)
        results.put("ok")
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        results.put(repr(exc))
    store.db.dispose()


def test_concurrent_failures_from_several_processes_all_count(db_uri: str) -> None:
    from serving_tasks.tracking_server.auth.store import AuthStore

    db = Database(db_uri)
    db.upgrade()
    store = AuthStore(db)
    key = "k" * 64
    ctx = mp.get_context("spawn")
    n, times = 6, 5
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_fail, args=(db_uri, key, times, barrier, results)) for _ in range(n)]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=300) for _ in range(n)]
    for proc in procs:
        proc.join(60)
    assert outcomes == ["ok"] * n
    # n * times failures were counted: locked out at that limit, not one above
    assert store.login_retry_after(key, n * times, WINDOW) is not None
    assert store.login_retry_after(key, n * times, WINDOW) >= 1  # type: ignore[operator]
    assert store.login_retry_after(key, n * times + 1, WINDOW) == 0  # on record, not locked
    store.clear_failed_logins(key)
    assert store.login_retry_after(key, 1, WINDOW) is None
    db.dispose()


def test_a_window_that_is_over_starts_again(db_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from serving_tasks.tracking_server.auth import store as store_module

    db = Database(db_uri)
    db.upgrade()
    store = store_module.AuthStore(db)
    now = [1_000_000_000_000]
    monkeypatch.setattr(store_module, "_now_ms", lambda: now[0])
    for _ in range(3):
        store.record_failed_login("a" * 64, WINDOW)
    assert store.login_retry_after("a" * 64, 3, WINDOW) == 60
    now[0] += 58_500
    assert store.login_retry_after("a" * 64, 3, WINDOW) == 2  # 1.5 s left, rounded up
    now[0] += 500
    now[0] += 1_000  # the window is over: not locked, and the next failure counts from one
    assert store.login_retry_after("a" * 64, 3, WINDOW) == 0
    store.record_failed_login("a" * 64, WINDOW)
    assert store.login_retry_after("a" * 64, 2, WINDOW) == 0
    store.record_failed_login("a" * 64, WINDOW)
    assert store.login_retry_after("a" * 64, 2, WINDOW) == 60
    db.dispose()
