"""SQLAlchemy 2 schema of the whole backend: tracking and registry tables.

Rows here never leave the store; stores convert them to ``tracking_plugin.entities``.
Alembic migrations under ``store/migrations`` create exactly these tables; a test checks
that the migrated database matches this metadata.

Notes on choices that differ from MLflow:
- ``runs.experiment_id`` is indexed (search filters by experiment first).
- Metric history has a surrogate key and an index on (run_uuid, key, step): inserts are
  plain appends and history reads are index range scans. NaN is stored as ``is_nan`` with
  value 0 because SQLite turns NaN into NULL; +/-inf are stored as they are.
- ``runs.prefect_flow_run_id`` and ``runs.prefect_task_run_id`` are unique so any process
  of a flow run finds the same tracking run.
- Registered models have an integer id so a rename touches one row.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "Base",
    "ExperimentRow",
    "ExperimentTagRow",
    "GateDecisionRow",
    "LatestMetricRow",
    "LoggedModelParamRow",
    "LoggedModelRow",
    "LoggedModelTagRow",
    "MetricRow",
    "ModelTransitionRow",
    "ModelVersionRow",
    "ModelVersionTagRow",
    "ParamRow",
    "RegisteredModelAliasRow",
    "RegisteredModelRow",
    "RegisteredModelTagRow",
    "RunDatasetInputRow",
    "RunModelLinkRow",
    "RunRow",
    "RunTagRow",
]

# BIGINT autoincrement is not a rowid alias on SQLite; INTEGER is.
BigIntPK = BigInteger().with_variant(Integer, "sqlite")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Length limits live with the validation that enforces them before SQL sees a value.
from tracking_plugin.validation import (  # noqa: E402
    KEY_LEN,
    NAME_LEN,
    PARAM_VALUE_LEN,
    TAG_VALUE_LEN,
    URI_LEN,
)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


# ---------------------------------------------------------------- tracking


class ExperimentRow(Base):
    __tablename__ = "experiments"

    experiment_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN), unique=True)
    artifact_location: Mapped[str] = mapped_column(String(URI_LEN))
    lifecycle_stage: Mapped[str] = mapped_column(String(32), default="active")
    creation_time: Mapped[int] = mapped_column(BigInteger)
    last_update_time: Mapped[int] = mapped_column(BigInteger)


class ExperimentTagRow(Base):
    __tablename__ = "experiment_tags"

    experiment_id: Mapped[int] = mapped_column(
        ForeignKey("experiments.experiment_id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(KEY_LEN), primary_key=True)
    value: Mapped[str] = mapped_column(String(TAG_VALUE_LEN))


# SQLite: rows of the key/value tables live in their (run_uuid, key) primary key, so
# loading a page of runs' data is one B-tree lookup per run and table instead of two.
_WITHOUT_ROWID = {"sqlite_with_rowid": False}


class RunRow(Base):
    __tablename__ = "runs"
    __table_args__ = (
        # SQLite: a search checks, orders and reads candidate runs from this index alone
        # (the lookup key and what filters and the default order read come first).
        Index(
            "ix_runs_search_rows", "run_uuid", "start_time", "experiment_id", "lifecycle_stage", "name", "status",
            "end_time", "user_id", "artifact_uri", "parent_run_id", "prefect_flow_run_id", "prefect_task_run_id",
        ).ddl_if(dialect="sqlite"),
        # PostgreSQL: the runs of an experiment in the default search order (start_time
        # DESC, run_uuid), so a page (keyset token) is read in order, not sorted (0008).
        Index(
            "ix_runs_experiment_start", "experiment_id", text("start_time DESC"), "run_uuid"
        ).ddl_if(dialect="postgresql"),
    )

    run_uuid: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN))
    experiment_id: Mapped[int] = mapped_column(
        ForeignKey("experiments.experiment_id"), index=True
    )
    user_id: Mapped[str] = mapped_column(String(NAME_LEN))
    status: Mapped[str] = mapped_column(String(20))
    start_time: Mapped[int] = mapped_column(BigInteger, index=True)
    end_time: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    artifact_uri: Mapped[str] = mapped_column(String(URI_LEN))
    lifecycle_stage: Mapped[str] = mapped_column(String(32), default="active")
    # When the run was last deleted (the database's clock, epoch ms); None while active.
    # prefect-mlops gc --older-than counts from it (0010).
    deleted_time: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    parent_run_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    prefect_flow_run_id: Mapped[str | None] = mapped_column(
        String(64), nullable=True, unique=True
    )
    prefect_task_run_id: Mapped[str | None] = mapped_column(
        String(64), nullable=True, unique=True
    )


class ParamRow(Base):
    __tablename__ = "params"
    __table_args__ = (
        Index("ix_params_key_value", "key", "value", "run_uuid").ddl_if(dialect="sqlite"),
        # PostgreSQL b-trees cannot hold 6,000-char values: index a prefix instead and
        # filter with ``left(value, 200) = left(:v, 200) AND value = :v``.
        Index(
            "ix_params_key_value_prefix", "key", text("left(value, 200)"), postgresql_include=["run_uuid"]
        ).ddl_if(dialect="postgresql"),
        _WITHOUT_ROWID,
    )

    run_uuid: Mapped[str] = mapped_column(
        ForeignKey("runs.run_uuid", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(KEY_LEN), primary_key=True)
    value: Mapped[str] = mapped_column(String(PARAM_VALUE_LEN))


class RunTagRow(Base):
    __tablename__ = "tags"
    __table_args__ = (
        Index("ix_tags_key_value", "key", "value", "run_uuid").ddl_if(dialect="sqlite"),
        Index(
            "ix_tags_key_value_prefix", "key", text("left(value, 200)"), postgresql_include=["run_uuid"]
        ).ddl_if(dialect="postgresql"),
        _WITHOUT_ROWID,
    )

    run_uuid: Mapped[str] = mapped_column(
        ForeignKey("runs.run_uuid", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(KEY_LEN), primary_key=True)
    value: Mapped[str] = mapped_column(String(TAG_VALUE_LEN))


class MetricRow(Base):
    """Full metric history: every logged point (on SQLite identical points are one, as in
    MLflow; PostgreSQL keeps a point logged twice unless ``skip_logged_points``)."""

    __tablename__ = "metrics"
    # Covering (migration 0008): history reads and the chart's min/max buckets are range
    # scans of this index alone, with no table-row lookup per point.
    # SQLite (migration 0012): the table is WITHOUT ROWID and these six columns are its
    # primary key, in place of ``id`` and this index (one B-tree written per point instead
    # of two); histories are ordered by (step, timestamp, value, is_nan) on both backends.
    # This metadata describes PostgreSQL's table (tests/store/test_migrations.py).
    # The key to runs is SQLite's only (migration 0011): PostgreSQL would check it with a
    # trigger per inserted point; log_batch checks the run once per batch there instead,
    # holding the lock that trigger took (FOR KEY SHARE), which gc's marking waits for.
    __table_args__ = (
        Index("ix_metrics_history", "run_uuid", "key", "step", "timestamp", "value", "is_nan"),
        ForeignKeyConstraint(["run_uuid"], ["runs.run_uuid"], ondelete="CASCADE").ddl_if(dialect="sqlite"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    run_uuid: Mapped[str] = mapped_column(String(32))
    key: Mapped[str] = mapped_column(String(KEY_LEN))
    value: Mapped[float] = mapped_column(Float(precision=53))
    is_nan: Mapped[bool] = mapped_column(Boolean, default=False)
    timestamp: Mapped[int] = mapped_column(BigInteger)
    step: Mapped[int] = mapped_column(BigInteger, default=0)


METRIC_BLOCK_SHIFT = 10  # a block holds the steps s with s >> 10 equal: 1,024 steps


class MetricBlockRow(Base):
    """Per (run, key, block of 1,024 steps): how many non-NaN points the history holds
    there, their first and last step and their lowest and highest value. ``log_batch``
    folds every batch in; the web UI's chart reduces a long history to min/max buckets
    from these rows instead of reading every point (migration 0008)."""

    __tablename__ = "metric_blocks"
    __table_args__ = (_WITHOUT_ROWID,)

    run_uuid: Mapped[str] = mapped_column(
        ForeignKey("runs.run_uuid", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(KEY_LEN), primary_key=True)
    block: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    n_points: Mapped[int] = mapped_column(BigInteger)
    min_step: Mapped[int] = mapped_column(BigInteger)
    max_step: Mapped[int] = mapped_column(BigInteger)
    min_value: Mapped[float] = mapped_column(Float(precision=53))
    max_value: Mapped[float] = mapped_column(Float(precision=53))


class LatestMetricRow(Base):
    """Latest value per (run, key): the point with the greatest (step, timestamp), as MLflow."""

    __tablename__ = "latest_metrics"
    # Covering: a filter on (key, value) yields run ids without touching the table.
    __table_args__ = (Index("ix_latest_metrics_key_value", "key", "value", "run_uuid"), _WITHOUT_ROWID)

    run_uuid: Mapped[str] = mapped_column(
        ForeignKey("runs.run_uuid", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(KEY_LEN), primary_key=True)
    value: Mapped[float] = mapped_column(Float(precision=53))
    is_nan: Mapped[bool] = mapped_column(Boolean, default=False)
    timestamp: Mapped[int] = mapped_column(BigInteger)
    step: Mapped[int] = mapped_column(BigInteger, default=0)


# ---------------------------------------------------------------- registry


class RegisteredModelRow(Base):
    __tablename__ = "registered_models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN), unique=True)
    creation_time: Mapped[int] = mapped_column(BigInteger)
    last_updated_time: Mapped[int] = mapped_column(BigInteger)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Highest version number handed out; read and bumped under a row lock so concurrent
    # registrations get distinct, gapless numbers.
    last_version: Mapped[int] = mapped_column(Integer, default=0)


class RegisteredModelTagRow(Base):
    __tablename__ = "registered_model_tags"

    model_id: Mapped[int] = mapped_column(
        ForeignKey("registered_models.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(KEY_LEN), primary_key=True)
    value: Mapped[str] = mapped_column(String(TAG_VALUE_LEN))


class ModelVersionRow(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[int] = mapped_column(
        ForeignKey("registered_models.id", ondelete="CASCADE"), index=True
    )
    version: Mapped[int] = mapped_column(Integer)
    creation_time: Mapped[int] = mapped_column(BigInteger)
    last_updated_time: Mapped[int] = mapped_column(BigInteger)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    user_id: Mapped[str | None] = mapped_column(String(NAME_LEN), nullable=True)
    current_stage: Mapped[str] = mapped_column(String(20), default="None")
    source: Mapped[str] = mapped_column(String(URI_LEN))
    storage_location: Mapped[str | None] = mapped_column(String(URI_LEN), nullable=True)
    run_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    status: Mapped[str] = mapped_column(String(32))
    status_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    gate_decision_id: Mapped[str | None] = mapped_column(String(36), nullable=True)


class ModelVersionTagRow(Base):
    __tablename__ = "model_version_tags"

    version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(KEY_LEN), primary_key=True)
    value: Mapped[str] = mapped_column(String(TAG_VALUE_LEN))


class RegisteredModelAliasRow(Base):
    __tablename__ = "registered_model_aliases"

    model_id: Mapped[int] = mapped_column(
        ForeignKey("registered_models.id", ondelete="CASCADE"), primary_key=True
    )
    alias: Mapped[str] = mapped_column(String(KEY_LEN), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)


class ModelTransitionRow(Base):
    """Append-only audit log: one row per stage change or alias move. Never updated."""

    __tablename__ = "model_transitions"
    __table_args__ = (Index("ix_model_transitions_model_id_id", "model_id", "id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("registered_models.id", ondelete="CASCADE"))
    model_name: Mapped[str] = mapped_column(String(NAME_LEN))  # name at the time
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    kind: Mapped[str] = mapped_column(String(16))  # "stage" | "alias"
    subject: Mapped[str | None] = mapped_column(String(KEY_LEN), nullable=True)
    from_value: Mapped[str | None] = mapped_column(String(64), nullable=True)
    to_value: Mapped[str | None] = mapped_column(String(64), nullable=True)
    timestamp: Mapped[int] = mapped_column(BigInteger)
    # With --auth, ``actor`` is the authenticated user and ``claimed_actor`` what the client
    # said it was (unverified); without auth, ``actor`` is the client's word.
    actor: Mapped[str | None] = mapped_column(String(NAME_LEN), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    prefect_flow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    gate_decision_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    claimed_actor: Mapped[str | None] = mapped_column(String(NAME_LEN), nullable=True)


class GateDecisionRow(Base):
    """A stored evaluation-gate decision, linked to the candidate model version."""

    __tablename__ = "gate_decisions"
    __table_args__ = (Index("ix_gate_decisions_model_id_version", "model_id", "version"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("registered_models.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    passed: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(Text)
    decision_json: Mapped[str] = mapped_column(Text)  # inputs and per-rule outcomes
    created_time: Mapped[int] = mapped_column(BigInteger)
    prefect_flow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


# ---------------------------------------------------------------- logged models, run inputs/outputs


class LoggedModelRow(Base):
    """A model logged by MLflow 3's ``log_model`` (``models:/m-<id>``), before registration."""

    __tablename__ = "logged_models"

    model_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.experiment_id"), index=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN))
    artifact_location: Mapped[str] = mapped_column(String(URI_LEN))
    creation_time: Mapped[int] = mapped_column(BigInteger)
    last_updated_time: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(32))
    status_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    model_type: Mapped[str | None] = mapped_column(String(NAME_LEN), nullable=True)
    source_run_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    lifecycle_stage: Mapped[str] = mapped_column(String(32), default="active")


class LoggedModelTagRow(Base):
    __tablename__ = "logged_model_tags"

    model_id: Mapped[str] = mapped_column(
        ForeignKey("logged_models.model_id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(KEY_LEN), primary_key=True)
    value: Mapped[str] = mapped_column(String(TAG_VALUE_LEN))


class LoggedModelParamRow(Base):
    __tablename__ = "logged_model_params"

    model_id: Mapped[str] = mapped_column(
        ForeignKey("logged_models.model_id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(KEY_LEN), primary_key=True)
    value: Mapped[str] = mapped_column(String(PARAM_VALUE_LEN))


class RunDatasetInputRow(Base):
    """A dataset a run read (MLflow's ``log_input``), one row per (run, name, digest)."""

    __tablename__ = "run_dataset_inputs"

    run_uuid: Mapped[str] = mapped_column(ForeignKey("runs.run_uuid", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    source_type: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(Text)
    schema: Mapped[str | None] = mapped_column(Text, nullable=True)
    profile: Mapped[str | None] = mapped_column(Text, nullable=True)
    tags_json: Mapped[str] = mapped_column(Text, default="{}")


class RunModelLinkRow(Base):
    """A logged model a run used (``direction='input'``) or produced (``'output'``, at a step)."""

    __tablename__ = "run_model_links"

    run_uuid: Mapped[str] = mapped_column(ForeignKey("runs.run_uuid", ondelete="CASCADE"), primary_key=True)
    model_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    direction: Mapped[str] = mapped_column(String(8), primary_key=True)
    step: Mapped[int] = mapped_column(BigInteger, default=0)


# The tracking server's users, tokens and permissions: same metadata, same migrations.
from tracking_plugin.store import schema_auth as _schema_auth  # noqa: E402,F401
# Tombstones of garbage-collected runs (prefect-mlops gc).
from tracking_plugin.store import schema_gc as _schema_gc  # noqa: E402,F401
