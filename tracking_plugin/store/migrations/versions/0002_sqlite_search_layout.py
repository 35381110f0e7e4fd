"""SQLite search layout: key/value tables without rowid, a covering index on runs

On SQLite, ``params``, ``tags`` and ``latest_metrics`` become WITHOUT ROWID tables (rows
live in their (run_uuid, key) primary key: loading a run's data is one B-tree lookup
instead of two), and ``runs`` gets ``ix_runs_search`` (run_uuid, start_time,
experiment_id, lifecycle_stage), so a search checks and orders candidate runs without
reading their rows. Existing rows are copied. PostgreSQL is unchanged.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_KEY_VALUE_TABLES = ("params", "tags", "latest_metrics")


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in _KEY_VALUE_TABLES:
        # Batch mode copies the rows into a new table built with these options, drops the
        # old one and recreates its indexes (no other table references these).
        with op.batch_alter_table(table, recreate="always", table_kwargs={"sqlite_with_rowid": False}):
            pass
    op.create_index("ix_runs_search", "runs", ["run_uuid", "start_time", "experiment_id", "lifecycle_stage"])


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.drop_index("ix_runs_search", table_name="runs")
    for table in _KEY_VALUE_TABLES:
        with op.batch_alter_table(table, recreate="always"):
            pass
