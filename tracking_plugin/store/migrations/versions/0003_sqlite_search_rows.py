"""SQLite search index holding every run column

On SQLite, ``ix_runs_search`` (run_uuid, start_time, experiment_id, lifecycle_stage)
becomes ``ix_runs_search_rows``: the same leading columns, then every other column of
``runs``. A search then checks, orders and reads its candidate runs from this one index
(one B-tree lookup per run) instead of checking them in the index and reading the page's
rows through the primary key (two lookups per run). PostgreSQL is unchanged.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_SEARCH_COLUMNS = ["run_uuid", "start_time", "experiment_id", "lifecycle_stage"]
_OTHER_COLUMNS = [
    "name", "status", "end_time", "user_id", "artifact_uri", "parent_run_id", "prefect_flow_run_id",
    "prefect_task_run_id",
]


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.drop_index("ix_runs_search", table_name="runs")
    op.create_index("ix_runs_search_rows", "runs", _SEARCH_COLUMNS + _OTHER_COLUMNS)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.drop_index("ix_runs_search_rows", table_name="runs")
    op.create_index("ix_runs_search", "runs", _SEARCH_COLUMNS)
