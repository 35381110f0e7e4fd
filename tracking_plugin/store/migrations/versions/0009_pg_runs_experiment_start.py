"""PostgreSQL: runs of an experiment in the default search order

Adds ``ix_runs_experiment_start`` on ``runs (experiment_id, start_time DESC, run_uuid)``
(PostgreSQL only): search_runs' default order and its keyset page tokens read an
experiment's runs in order from it instead of sorting them all for every page.

Revision ID: 0009_pg_runs_experiment_start
Revises: 0008_metrics_history_index
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_pg_runs_experiment_start"
down_revision = "0008_metrics_history_index"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.create_index(
        "ix_runs_experiment_start", "runs", ["experiment_id", sa.text("start_time DESC"), "run_uuid"]
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index("ix_runs_experiment_start", table_name="runs")
