"""Store fixtures: every store test runs on SQLite and on PostgreSQL (via ``db_uri``)."""

from __future__ import annotations

from typing import Iterator

import pytest

from tracking_plugin.store.db import Database
from tracking_plugin.store.sql import SqlStore


@pytest.fixture
def store(db_uri: str) -> Iterator[SqlStore]:
    """A migrated, empty store on a fresh database (SQLite file or PostgreSQL database)."""
    db = Database(db_uri)
    db.upgrade()
    try:
        yield SqlStore(db)
    finally:
        db.dispose()
