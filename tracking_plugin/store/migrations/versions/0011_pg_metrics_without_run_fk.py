"""PostgreSQL: the metric history without a per-row foreign key to runs

Drops ``fk_metrics_run_uuid_runs`` on PostgreSQL (SQLite keeps it). PostgreSQL checks a
foreign key with a trigger per inserted row (a ``SELECT ... FOR KEY SHARE`` on the runs
row for every point): about 40% of a 100,000-point ``log_batch`` (bench/NOTES.md). The
store now does that check once per batch, in the batch's transaction, with the same lock
(``log_batch``: ``SELECT lifecycle_stage FROM runs ... FOR KEY SHARE``), so a run cannot be
garbage-collected under a batch: gc marks a run ``gc_pending`` with ``SELECT ... FOR
UPDATE`` (which waits for the batch) before it deletes the run's rows, and a batch that
comes after the mark finds the run gone. Nothing else deletes runs rows; gc deletes a
run's metrics itself (it never relied on ``ON DELETE CASCADE``).

The history's other tables keep their keys: ``metric_blocks`` and ``latest_metrics`` get
a few rows per batch (one per key and 1,024 steps, one per key), so their checks cost
nothing measurable.

Revision ID: 0011_pg_metrics_without_run_fk
Revises: 0010_runs_deleted_time
"""

from __future__ import annotations

from alembic import op

revision = "0011_pg_metrics_without_run_fk"
down_revision = "0010_runs_deleted_time"
branch_labels = None
depends_on = None

_FK = "fk_metrics_run_uuid_runs"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_constraint(_FK, "metrics", type_="foreignkey")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # Validates every row: fails, changing nothing, if a metric names a missing run.
    op.create_foreign_key(_FK, "metrics", "runs", ["run_uuid"], ["run_uuid"], ondelete="CASCADE")
