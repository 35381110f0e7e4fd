"""Metric history: an index that covers the chart's reads, and per-block summaries

``ix_metrics_run_uuid_key_step`` (run_uuid, key, step) becomes
``ix_metrics_history`` (run_uuid, key, step, timestamp, value, is_nan): the same leading
columns, so every lookup the old index served it serves too, and it also holds what a
history read returns. The web UI's chart reduces a 1,000,000-point series to min/max
buckets by range scans of this index alone, without one table-row lookup per point
(which was most of the time: 1.5 s on SQLite before, see bench/RESULTS.md). On
PostgreSQL an index-only scan needs the table's visibility map; autovacuum keeps it.

``metric_blocks`` holds, per (run, key, block of 1,024 steps), the count, first/last step
and lowest/highest value of the non-NaN points; ``log_batch`` folds each batch in, and
this migration fills it from the history already logged. A chart of a long history then
reads about one row per 1,024 points (a million points: under a thousand rows) instead
of every point, and still shows every spike.

Revision ID: 0008_metrics_history_index
Revises: 0007_gc
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_metrics_history_index"
down_revision = "0007_gc"
branch_labels = None
depends_on = None

_COVERING = ["run_uuid", "key", "step", "timestamp", "value", "is_nan"]


def upgrade() -> None:
    # Build the new index before dropping the old: lookups stay indexed throughout.
    op.create_index("ix_metrics_history", "metrics", _COVERING)
    op.drop_index("ix_metrics_run_uuid_key_step", table_name="metrics")
    op.create_table(
        "metric_blocks",
        sa.Column("run_uuid", sa.String(32), sa.ForeignKey("runs.run_uuid", ondelete="CASCADE"), nullable=False),
        sa.Column("key", sa.String(250), nullable=False),
        sa.Column("block", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("n_points", sa.BigInteger(), nullable=False),
        sa.Column("min_step", sa.BigInteger(), nullable=False),
        sa.Column("max_step", sa.BigInteger(), nullable=False),
        sa.Column("min_value", sa.Float(precision=53), nullable=False),
        sa.Column("max_value", sa.Float(precision=53), nullable=False),
        sa.PrimaryKeyConstraint("run_uuid", "key", "block"),
        sqlite_with_rowid=False,
    )
    op.execute(
        "INSERT INTO metric_blocks (run_uuid, key, block, n_points, min_step, max_step, min_value, max_value) "
        "SELECT run_uuid, key, step >> 10, count(*), min(step), max(step), min(value), max(value) "
        "FROM metrics WHERE is_nan = false GROUP BY run_uuid, key, step >> 10"
    )


def downgrade() -> None:
    op.drop_table("metric_blocks")
    op.create_index("ix_metrics_run_uuid_key_step", "metrics", ["run_uuid", "key", "step"])
    op.drop_index("ix_metrics_history", table_name="metrics")
