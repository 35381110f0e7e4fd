"""Alembic environment: always run through ``Database.upgrade`` with a live connection."""

from __future__ import annotations

from alembic import context

from tracking_plugin.store.schema import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - guard for `alembic` CLI use
    raise RuntimeError(
        "Run migrations with `prefect-mlops db upgrade` or Database(uri).upgrade(), "
        "not with the alembic command directly."
    )

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
