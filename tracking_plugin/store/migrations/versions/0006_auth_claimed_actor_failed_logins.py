"""Audit rows keep the client's claimed actor beside the authenticated one; failed logins
are counted in the database (shared by workers and replicas)

Adds ``model_transitions.claimed_actor`` (nullable: rows written before stay as they
were) and the ``auth_failed_logins`` table.

Revision ID: 0006_auth_claimed
Revises: 0005_auth
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_auth_claimed"
down_revision = "0005_auth"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("model_transitions") as batch:
        batch.add_column(sa.Column("claimed_actor", sa.String(256), nullable=True))
    op.create_table(
        "auth_failed_logins",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("window_start", sa.BigInteger(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_auth_failed_logins")),
    )


def downgrade() -> None:
    op.drop_table("auth_failed_logins")
    with op.batch_alter_table("model_transitions") as batch:
        batch.drop_column("claimed_actor")
