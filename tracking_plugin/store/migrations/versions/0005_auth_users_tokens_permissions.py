"""Authentication of the tracking server: users, API tokens, per-resource permissions

Adds ``auth_users`` (argon2 password hashes), ``auth_tokens`` (sha256 of API tokens,
optional expiry, revocation time), ``auth_experiment_permissions`` and
``auth_registered_model_permissions`` (READ / EDIT / MANAGE / NO_PERMISSIONS per user).

Revision ID: 0005_auth
Revises: 0004_logged_models
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_auth"
down_revision = "0004_logged_models"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "auth_users",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("username", sa.String(256), nullable=False),
        sa.Column("password_hash", sa.String(256), nullable=False),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("creation_time", sa.BigInteger(), nullable=False),
        sa.Column("last_update_time", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_users")),
        sa.UniqueConstraint("username", name=op.f("uq_auth_users_username")),
    )
    op.create_table(
        "auth_tokens",
        sa.Column("token_id", sa.String(32), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("creation_time", sa.BigInteger(), nullable=False),
        sa.Column("expiry_time", sa.BigInteger(), nullable=True),
        sa.Column("revoked_time", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["auth_users.id"], name=op.f("fk_auth_tokens_user_id_auth_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("token_id", name=op.f("pk_auth_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_auth_tokens_token_hash")),
    )
    op.create_index("ix_auth_tokens_user_id", "auth_tokens", ["user_id"])
    op.create_table(
        "auth_experiment_permissions",
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("permission", sa.String(32), nullable=False),
        sa.ForeignKeyConstraint(
            ["experiment_id"], ["experiments.experiment_id"],
            name=op.f("fk_auth_experiment_permissions_experiment_id_experiments"), ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["auth_users.id"], name=op.f("fk_auth_experiment_permissions_user_id_auth_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("experiment_id", "user_id", name=op.f("pk_auth_experiment_permissions")),
    )
    op.create_index("ix_auth_experiment_permissions_user_id", "auth_experiment_permissions", ["user_id"])
    op.create_table(
        "auth_registered_model_permissions",
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("permission", sa.String(32), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id"], ["registered_models.id"],
            name=op.f("fk_auth_registered_model_permissions_model_id_registered_models"), ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["auth_users.id"], name=op.f("fk_auth_registered_model_permissions_user_id_auth_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("model_id", "user_id", name=op.f("pk_auth_registered_model_permissions")),
    )
    op.create_index("ix_auth_registered_model_permissions_user_id", "auth_registered_model_permissions", ["user_id"])


def downgrade() -> None:
    op.drop_table("auth_registered_model_permissions")
    op.drop_table("auth_experiment_permissions")
    op.drop_table("auth_tokens")
    op.drop_table("auth_users")
