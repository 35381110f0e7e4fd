"""Verified credentials: an expired Basic entry is renewed only while the stored password
hash is unchanged (a change made by another replica, straight in the database, ends it)."""

from __future__ import annotations

import base64
import time

import pytest

from tracking_plugin.store.db import Database


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_renewal_follows_the_stored_password_hash(db_uri: str) -> None:
    from serving_tasks.tracking_server.auth import Unauthenticated
    from serving_tasks.tracking_server.auth.credentials import Authenticator
    from serving_tasks.tracking_server.auth.store import AuthStore

    db = Database(db_uri)
    db.upgrade()
    here, elsewhere = AuthStore(db), AuthStore(Database(db_uri))  # this replica and another one
    here.create_user("carol", "first-password")
    auth = Authenticator(here, cache_seconds=0.05, max_failed_logins=5, lockout_seconds=60)
    header = _basic("carol", "first-password")
    assert auth.authenticate(header, "10.0.0.1").username == "carol"
    time.sleep(0.1)
    assert auth.cached(header) is None  # expired ...
    assert auth.authenticate(header, "10.0.0.1").username == "carol"  # ... and renewed
    elsewhere.set_admin("carol", True)
    time.sleep(0.1)
    assert auth.authenticate(header, "10.0.0.1").is_admin  # a renewal reads the user afresh
    elsewhere.update_password("carol", "second-password")
    time.sleep(0.1)
    with pytest.raises(Unauthenticated):
        auth.authenticate(header, "10.0.0.1")  # the hash changed: argon2 again, and it fails
    assert auth.authenticate(_basic("carol", "second-password"), "10.0.0.1").username == "carol"
    db.dispose()
