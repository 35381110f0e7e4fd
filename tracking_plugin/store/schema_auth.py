"""Tables of the tracking server's authentication: users, API tokens, permissions.

Part of :data:`tracking_plugin.store.schema.Base`'s metadata (imported at the bottom of
``schema.py``) so the one migration chain creates them and the schema test covers them.
Secrets are never stored in clear: passwords as argon2 hashes, API tokens as the sha256
of a 256-bit random token (a fast hash is enough for a secret that cannot be guessed).
Permissions name experiments and registered models by id, so a rename keeps them, and
go with their experiment, model or user (``ON DELETE CASCADE``).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from tracking_plugin.store.schema import Base
from tracking_plugin.validation import NAME_LEN

__all__ = ["ApiTokenRow", "ExperimentPermissionRow", "FailedLoginRow", "RegisteredModelPermissionRow", "UserRow"]


class UserRow(Base):
    __tablename__ = "auth_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(NAME_LEN), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    creation_time: Mapped[int] = mapped_column(BigInteger)
    last_update_time: Mapped[int] = mapped_column(BigInteger)


class ApiTokenRow(Base):
    __tablename__ = "auth_tokens"

    token_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("auth_users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN))
    creation_time: Mapped[int] = mapped_column(BigInteger)
    expiry_time: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    revoked_time: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class ExperimentPermissionRow(Base):
    __tablename__ = "auth_experiment_permissions"

    experiment_id: Mapped[int] = mapped_column(
        ForeignKey("experiments.experiment_id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("auth_users.id", ondelete="CASCADE"), primary_key=True, index=True)
    permission: Mapped[str] = mapped_column(String(32))


class RegisteredModelPermissionRow(Base):
    __tablename__ = "auth_registered_model_permissions"

    model_id: Mapped[int] = mapped_column(ForeignKey("registered_models.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("auth_users.id", ondelete="CASCADE"), primary_key=True, index=True)
    permission: Mapped[str] = mapped_column(String(32))


class FailedLoginRow(Base):
    """Failed logins per (username, client address), shared by every worker and replica.

    ``key`` is the sha256 of the pair (no username or address in clear); one row per key,
    counted in a fixed window that starts at the first failure (see
    ``serving_tasks.tracking_server.auth.credentials``). A success deletes the row.
    """

    __tablename__ = "auth_failed_logins"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    window_start: Mapped[int] = mapped_column(BigInteger)  # ms
    failures: Mapped[int] = mapped_column(Integer)
