"""Logged models (MLflow 3's ``models:/m-<id>``) and the inputs/outputs of runs

Adds ``logged_models`` with their tags and params, the datasets a run read
(``run_dataset_inputs``) and the logged models a run used or produced
(``run_model_links``), which the tracking server needs for MLflow 3's ``log_model``.

Revision ID: 0004_logged_models
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_logged_models"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "logged_models",
        sa.Column("model_id", sa.String(64), nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("artifact_location", sa.String(1000), nullable=False),
        sa.Column("creation_time", sa.BigInteger(), nullable=False),
        sa.Column("last_updated_time", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("status_message", sa.Text(), nullable=True),
        sa.Column("model_type", sa.String(256), nullable=True),
        sa.Column("source_run_id", sa.String(32), nullable=True),
        sa.Column("lifecycle_stage", sa.String(32), nullable=False),
        sa.ForeignKeyConstraint(
            ["experiment_id"], ["experiments.experiment_id"], name=op.f("fk_logged_models_experiment_id_experiments")
        ),
        sa.PrimaryKeyConstraint("model_id", name=op.f("pk_logged_models")),
    )
    op.create_index("ix_logged_models_experiment_id", "logged_models", ["experiment_id"])
    op.create_index("ix_logged_models_source_run_id", "logged_models", ["source_run_id"])
    for table, value_len in (("logged_model_tags", 8000), ("logged_model_params", 6000)):
        op.create_table(
            table,
            sa.Column("model_id", sa.String(64), nullable=False),
            sa.Column("key", sa.String(250), nullable=False),
            sa.Column("value", sa.String(value_len), nullable=False),
            sa.ForeignKeyConstraint(
                ["model_id"], ["logged_models.model_id"], name=op.f(f"fk_{table}_model_id_logged_models"),
                ondelete="CASCADE",
            ),
            sa.PrimaryKeyConstraint("model_id", "key", name=op.f(f"pk_{table}")),
        )
    op.create_table(
        "run_dataset_inputs",
        sa.Column("run_uuid", sa.String(32), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("source_type", sa.String(64), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("schema", sa.Text(), nullable=True),
        sa.Column("profile", sa.Text(), nullable=True),
        sa.Column("tags_json", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_uuid"], ["runs.run_uuid"], name=op.f("fk_run_dataset_inputs_run_uuid_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_uuid", "name", "digest", name=op.f("pk_run_dataset_inputs")),
    )
    op.create_table(
        "run_model_links",
        sa.Column("run_uuid", sa.String(32), nullable=False),
        sa.Column("model_id", sa.String(64), nullable=False),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_uuid"], ["runs.run_uuid"], name=op.f("fk_run_model_links_run_uuid_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_uuid", "model_id", "direction", name=op.f("pk_run_model_links")),
    )


def downgrade() -> None:
    for table in ("run_model_links", "run_dataset_inputs", "logged_model_params", "logged_model_tags"):
        op.drop_table(table)
    op.drop_index("ix_logged_models_source_run_id", "logged_models")
    op.drop_index("ix_logged_models_experiment_id", "logged_models")
    op.drop_table("logged_models")
