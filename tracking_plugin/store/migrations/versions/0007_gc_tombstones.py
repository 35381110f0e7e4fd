"""Garbage collection: tombstones of removed runs

Adds ``gc_tombstones`` (run id, experiment id, ``pending`` | ``done``, time): written by
``prefect-mlops gc`` so a run it is removing or has removed reads as garbage-collected, and
an interrupted gc is finished by the next one.

Revision ID: 0007_gc
Revises: 0006_auth_claimed
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_gc"
down_revision = "0006_auth_claimed"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gc_tombstones",
        sa.Column("run_uuid", sa.String(32), nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("gc_time", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("run_uuid", name=op.f("pk_gc_tombstones")),
    )


def downgrade() -> None:
    op.drop_table("gc_tombstones")
