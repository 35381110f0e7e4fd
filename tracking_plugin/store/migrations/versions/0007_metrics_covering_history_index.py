"""Metric history index that covers the chart's reads

``ix_metrics_run_uuid_key_step`` (run_uuid, key, step) becomes
``ix_metrics_history`` (run_uuid, key, step, timestamp, value, is_nan): the same leading
columns, so every lookup the old index served it serves too, and it also holds what a
history read returns. The web UI's chart reduces a 1,000,000-point series to min/max
buckets by range scans of this index alone, without one table-row lookup per point
(which was most of the time: 1.5 s on SQLite before, see bench/RESULTS.md). On
PostgreSQL an index-only scan needs the table's visibility map; autovacuum keeps it.

Revision ID: 0007_metrics_history_index
Revises: 0005_auth
"""

from __future__ import annotations

from alembic import op

revision = "0007_metrics_history_index"
down_revision = "0005_auth"
branch_labels = None
depends_on = None

_COVERING = ["run_uuid", "key", "step", "timestamp", "value", "is_nan"]


def upgrade() -> None:
    # Build the new index before dropping the old: lookups stay indexed throughout.
    op.create_index("ix_metrics_history", "metrics", _COVERING)
    op.drop_index("ix_metrics_run_uuid_key_step", table_name="metrics")


def downgrade() -> None:
    op.create_index("ix_metrics_run_uuid_key_step", "metrics", ["run_uuid", "key", "step"])
    op.drop_index("ix_metrics_history", table_name="metrics")
