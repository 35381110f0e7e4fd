"""``SqlStore``: the SQL implementation of :class:`~tracking_plugin.store.base.Store`.

Tracking operations live in ``sql_tracking``, registry operations in ``sql_registry``,
logged models and run inputs/outputs in ``sql_logged_models``;
both share one :class:`~tracking_plugin.store.db.Database` (one engine, one migration
history). Constructing a store never connects or migrates: call
``store.db.ensure_schema()`` (the client does, once per process) or ``store.db.upgrade()``.
A store owns its database's connection pool: ``close()`` (or ``with``) releases it.

>>> store = SqlStore.from_uri("sqlite:///mlops.db")  # doctest: +SKIP
>>> store.db.upgrade()                               # doctest: +SKIP
"""

from __future__ import annotations

from tracking_plugin.store.db import Database
from tracking_plugin.store.sql_gc import SqlGcStore
from tracking_plugin.store.sql_logged_models import SqlLoggedModelStore
from tracking_plugin.store.sql_registry import SqlRegistryStore
from tracking_plugin.store.sql_tracking import SqlTrackingStore

__all__ = ["SqlStore"]


class SqlStore(SqlTrackingStore, SqlRegistryStore, SqlLoggedModelStore, SqlGcStore):
    """Tracking, registry, logged models and gc over one SQLAlchemy database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @classmethod
    def from_uri(cls, uri: str, *, busy_timeout: float = 60.0) -> "SqlStore":
        """A store over a new :class:`Database` for ``uri``, owned by the store: ``close()``
        it (or use ``with``). Clients share stores through :mod:`tracking_plugin.backend`."""
        return cls(Database(uri, busy_timeout=busy_timeout))

    def close(self) -> None:
        """Close the database's pooled connections (the store reconnects if used again)."""
        self.db.dispose()

    def __enter__(self) -> "SqlStore":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
