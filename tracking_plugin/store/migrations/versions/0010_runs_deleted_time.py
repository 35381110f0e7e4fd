"""Runs: when they were deleted

Adds ``runs.deleted_time`` (epoch ms, the database's clock; NULL while active), set by
``delete_run`` and cleared by ``restore_run``: ``prefect-mlops gc --older-than`` counts
from it, so a run that ended long ago but was deleted today stays restorable for the whole
period. Runs already deleted keep NULL (gc falls back to their end or start time).

Revision ID: 0010_runs_deleted_time
Revises: 0009_pg_runs_experiment_start
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_runs_deleted_time"
down_revision = "0009_pg_runs_experiment_start"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("deleted_time", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("deleted_time")
