"""Users, API tokens and permissions in the backend database.

``AuthStore(db)`` works on the tables of migration ``0005_auth``; the server, the
``prefect-mlops users`` / ``tokens`` commands and tests use it alike. One session per
public call. Passwords are hashed with argon2 (memory-hard; slow on purpose, so the
server caches verified credentials instead of re-hashing per request). API tokens are
``mlops_<id>_<secret>`` with a 256-bit secret, stored as their sha256: the clear token
is returned once, by :meth:`AuthStore.create_token`, and never stored or logged.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import time
import unicodedata
from dataclasses import dataclass, field
from typing import Callable, Concatenate, ParamSpec, TypeVar

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tracking_plugin.errors import AlreadyExists, Conflict, InvalidArgument, NotFound
from tracking_plugin.store.db import Database
from tracking_plugin.store.schema import ExperimentRow, GateDecisionRow, LoggedModelRow, RegisteredModelRow, RunRow
from tracking_plugin.store.schema_auth import (
    ApiTokenRow,
    ExperimentPermissionRow,
    FailedLoginRow,
    RegisteredModelPermissionRow,
    UserRow,
)
from tracking_plugin.validation import NAME_LEN

from serving_tasks.tracking_server.auth.permissions import Permission

__all__ = ["ApiToken", "AuthStore", "NewToken", "User", "hash_token"]

_hasher = PasswordHasher()
# Verified against when the user does not exist, so a wrong username costs what a wrong
# password costs (no user enumeration by timing).
_DUMMY_HASH = _hasher.hash("prefect-mlops: no such user")
TOKEN_PREFIX = "mlops_"
MIN_PASSWORD_LEN = 8
MAX_PASSWORD_LEN = 1024


@dataclass(frozen=True)
class User:
    id: int
    username: str
    is_admin: bool

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "username": self.username, "is_admin": self.is_admin}


@dataclass(frozen=True)
class ApiToken:
    """A token as listed: never the secret."""

    token_id: str
    username: str
    name: str
    creation_time: int
    expiry_time: int | None
    revoked_time: int | None

    def to_json(self) -> dict[str, object]:
        return {
            "token_id": self.token_id, "username": self.username, "name": self.name,
            "creation_time": self.creation_time, "expiry_time": self.expiry_time,
            "revoked_time": self.revoked_time,
        }


@dataclass(frozen=True)
class NewToken:
    """A token just created: the only time its secret exists outside the caller."""

    info: ApiToken
    token: str = field(repr=False)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _now_ms() -> int:
    return int(time.time() * 1000)


def normalize_username(username: object) -> str:
    """Usernames are compared in NFC, so a name typed two unicode ways is one user."""
    if not isinstance(username, str) or not username.strip():
        raise InvalidArgument("Username cannot be empty: pass a non-empty 'username'.")
    name = unicodedata.normalize("NFC", username)
    if len(name) > NAME_LEN:
        raise InvalidArgument(f"Username of {len(name)} characters is too long: at most {NAME_LEN}.")
    if any(unicodedata.category(c).startswith("C") for c in name) or ":" in name:
        raise InvalidArgument(
            f"Invalid username {name!r}: control characters and ':' cannot be used (':' separates "
            "the username from the password in HTTP Basic)."
        )
    return name


def _check_password(password: object) -> str:
    if not isinstance(password, str) or not password:
        raise InvalidArgument("Password cannot be empty: pass a non-empty 'password'.")
    if not MIN_PASSWORD_LEN <= len(password) <= MAX_PASSWORD_LEN:
        raise InvalidArgument(
            f"A password must have {MIN_PASSWORD_LEN} to {MAX_PASSWORD_LEN} characters "
            f"(this one has {len(password)})."
        )
    return password


def _user(row: UserRow) -> User:
    return User(row.id, row.username, bool(row.is_admin))


def _experiment_id(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        raise InvalidArgument(f"Invalid experiment id {value!r}: experiment ids are integers.") from None


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _notifies(method: Callable[Concatenate[AuthStore, _P], _R]) -> Callable[Concatenate[AuthStore, _P], _R]:
    """After the method (a grant changed, or a user went), call the store's ``on_change``."""

    @functools.wraps(method)
    def wrapper(self: AuthStore, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(self, *args, **kwargs)
        finally:
            self._changed()

    return wrapper


class AuthStore:
    """Users, tokens and grants of one backend database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        # called after this store changed a grant (or deleted a user): caches of grants drop theirs
        self.on_change: list[Callable[[], None]] = []

    def _changed(self) -> None:
        for callback in self.on_change:
            callback()

    # ------------------------------------------------------------------ users

    def create_user(self, username: str, password: str, *, is_admin: bool = False) -> User:
        name = normalize_username(username)
        password_hash = _hasher.hash(_check_password(password))
        now = _now_ms()
        try:
            with self.db.session() as s:
                if s.scalar(sa.select(UserRow.id).where(UserRow.username == name)) is not None:
                    raise AlreadyExists(f"User {name!r} already exists; pick another username.")
                row = UserRow(username=name, password_hash=password_hash, is_admin=is_admin,
                              creation_time=now, last_update_time=now)
                s.add(row)
                s.flush()
                return _user(row)
        except IntegrityError:
            raise AlreadyExists(f"User {name!r} already exists; pick another username.") from None

    def get_user(self, username: str) -> User:
        name = normalize_username(username)
        with self.db.session(write=False) as s:
            return _user(self._user_row(s, name))

    def list_users(self) -> list[User]:
        with self.db.session(write=False) as s:
            return [_user(r) for r in s.scalars(sa.select(UserRow).order_by(UserRow.username))]

    def has_admin(self) -> bool:
        with self.db.session(write=False) as s:
            return s.scalar(sa.select(UserRow.id).where(UserRow.is_admin.is_(True)).limit(1)) is not None

    def verify_password(self, username: str, password: str) -> User | None:
        """The user when ``password`` is theirs, else None (same cost either way)."""
        found = self.verify_password_hash(username, password)
        return None if found is None else found[0]

    def password_hash(self, username: str) -> tuple[User, str] | None:
        """A user and their stored password hash (no hashing: one indexed read), or None."""
        try:
            name = normalize_username(username)
        except InvalidArgument:
            return None
        with self.db.session(write=False) as s:
            row = s.scalar(sa.select(UserRow).where(UserRow.username == name))
            return None if row is None else (_user(row), row.password_hash)

    def verify_password_hash(self, username: str, password: str) -> tuple[User, str] | None:
        """The user and the hash ``password`` was verified against, else None."""
        try:
            name = normalize_username(username)
        except InvalidArgument:
            name = None
        with self.db.session(write=False) as s:
            row = s.scalar(sa.select(UserRow).where(UserRow.username == name)) if name else None
            user, stored = (_user(row), row.password_hash) if row is not None else (None, _DUMMY_HASH)
        try:
            _hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        return None if user is None else (user, stored)

    def update_password(self, username: str, password: str) -> None:
        name = normalize_username(username)
        password_hash = _hasher.hash(_check_password(password))
        with self.db.session() as s:
            row = self._user_row(s, name)
            row.password_hash = password_hash
            row.last_update_time = _now_ms()

    def set_admin(self, username: str, is_admin: bool) -> User:
        name = normalize_username(username)
        with self.db.session() as s:
            row = self._user_row(s, name)
            if row.is_admin and not is_admin:
                self._refuse_last_admin(s, row, "remove the admin role of")
            row.is_admin = is_admin
            row.last_update_time = _now_ms()
            return _user(row)

    @_notifies
    def delete_user(self, username: str) -> None:
        name = normalize_username(username)
        with self.db.session() as s:
            row = self._user_row(s, name)
            if row.is_admin:
                self._refuse_last_admin(s, row, "delete")
            s.execute(sa.delete(ApiTokenRow).where(ApiTokenRow.user_id == row.id))
            s.execute(sa.delete(ExperimentPermissionRow).where(ExperimentPermissionRow.user_id == row.id))
            s.execute(sa.delete(RegisteredModelPermissionRow).where(RegisteredModelPermissionRow.user_id == row.id))
            s.delete(row)

    @staticmethod
    def _refuse_last_admin(s: Session, row: UserRow, action: str) -> None:
        # Lock the admin rows so two concurrent demotions cannot both pass this check.
        admins = s.scalars(sa.select(UserRow.id).where(UserRow.is_admin.is_(True)).with_for_update()).all()
        if len(admins) <= 1:
            raise Conflict(
                f"Cannot {action} {row.username!r}: it is the last admin. Make another user admin first "
                "(`prefect-mlops users set-admin NAME`)."
            )

    @staticmethod
    def _user_row(s: Session, name: str) -> UserRow:
        row = s.scalar(sa.select(UserRow).where(UserRow.username == name))
        if row is None:
            raise NotFound(f"User {name!r} does not exist; create it with `prefect-mlops users create`.")
        return row

    # ----------------------------------------------------------------- tokens

    def create_token(self, username: str, name: str = "", *, expires_in_seconds: float | None = None) -> NewToken:
        """A new API token of ``username``; the clear token is only in the result."""
        user_name = normalize_username(username)
        if not isinstance(name, str) or len(name) > NAME_LEN:
            raise InvalidArgument(f"Invalid token name: a string of at most {NAME_LEN} characters.")
        if expires_in_seconds is not None and not (0 < expires_in_seconds <= 10 * 365 * 86400):
            raise InvalidArgument(
                f"Invalid expiry {expires_in_seconds!r}: give a number of seconds between 1 and ten years, or none."
            )
        token_id = secrets.token_hex(8)
        token = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
        now = _now_ms()
        expiry = None if expires_in_seconds is None else now + int(expires_in_seconds * 1000)
        with self.db.session() as s:
            user = self._user_row(s, user_name)
            s.add(ApiTokenRow(token_id=token_id, user_id=user.id, token_hash=hash_token(token), name=name,
                              creation_time=now, expiry_time=expiry, revoked_time=None))
        return NewToken(ApiToken(token_id, user_name, name, now, expiry, None), token)

    def list_tokens(self, username: str | None = None) -> list[ApiToken]:
        query = sa.select(ApiTokenRow, UserRow.username).join(UserRow, UserRow.id == ApiTokenRow.user_id)
        with self.db.session(write=False) as s:
            if username is not None:
                query = query.where(UserRow.id == self._user_row(s, normalize_username(username)).id)
            rows = s.execute(query.order_by(ApiTokenRow.creation_time)).all()
            return [
                ApiToken(t.token_id, u, t.name, t.creation_time, t.expiry_time, t.revoked_time) for t, u in rows
            ]

    def get_token(self, token_id: str) -> ApiToken:
        with self.db.session(write=False) as s:
            row = s.execute(
                sa.select(ApiTokenRow, UserRow.username).join(UserRow, UserRow.id == ApiTokenRow.user_id)
                .where(ApiTokenRow.token_id == str(token_id))
            ).first()
            if row is None:
                raise NotFound(f"API token {token_id!r} does not exist; list tokens with `prefect-mlops tokens list`.")
            t, u = row
            return ApiToken(t.token_id, u, t.name, t.creation_time, t.expiry_time, t.revoked_time)

    def revoke_token(self, token_id: str) -> ApiToken:
        with self.db.session() as s:
            row = s.get(ApiTokenRow, str(token_id))
            if row is None:
                raise NotFound(f"API token {token_id!r} does not exist; list tokens with `prefect-mlops tokens list`.")
            if row.revoked_time is None:
                row.revoked_time = _now_ms()
            username = s.scalar(sa.select(UserRow.username).where(UserRow.id == row.user_id))
            return ApiToken(row.token_id, username or "", row.name, row.creation_time, row.expiry_time,
                            row.revoked_time)

    def verify_token(self, token: str) -> tuple[User, int | None] | None:
        """The owner of a live (not revoked, not expired) token and its expiry (ms), else None."""
        digest = hash_token(token)
        with self.db.session(write=False) as s:
            found = s.execute(
                sa.select(ApiTokenRow, UserRow).join(UserRow, UserRow.id == ApiTokenRow.user_id)
                .where(ApiTokenRow.token_hash == digest)
            ).first()
        if found is None:
            return None
        row, user = found
        if not hmac.compare_digest(row.token_hash, digest):
            return None
        if row.revoked_time is not None or (row.expiry_time is not None and row.expiry_time <= _now_ms()):
            return None
        return _user(user), row.expiry_time

    # ---------------------------------------------------------- failed logins
    # One row per sha256(username, address), shared by every worker and replica: a fixed
    # window that starts at the first failure. Only the uncached login path touches it.

    def login_retry_after(self, key: str, limit: int, window_seconds: float) -> int | None:
        """Seconds until ``key`` may try again (0: it may, but has failures on record), or
        None when it has no failures on record."""
        with self.db.session(write=False) as s:
            row = s.get(FailedLoginRow, key)
            if row is None:
                return None
            left_ms = row.window_start + int(window_seconds * 1000) - _now_ms()
            if row.failures < limit or left_ms <= 0:
                return 0
        return -(-left_ms // 1000)  # whole seconds, rounded up

    def record_failed_login(self, key: str, window_seconds: float) -> None:
        """Count one failure of ``key`` (one upsert: concurrent failures all count)."""
        now, window_ms = _now_ms(), int(window_seconds * 1000)
        table = FailedLoginRow.__table__
        if self.db.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
        stmt = insert(table).values(key=key, window_start=now, failures=1)
        expired = stmt.excluded.window_start - table.c.window_start >= window_ms
        stmt = stmt.on_conflict_do_update(
            index_elements=[table.c.key],
            set_={
                "failures": sa.case((expired, 1), else_=table.c.failures + 1),
                "window_start": sa.case((expired, stmt.excluded.window_start), else_=table.c.window_start),
            },
        )
        with self.db.session() as s:
            s.execute(stmt)
            # keep the table small: windows long over are dropped now and then
            if secrets.randbelow(64) == 0:
                s.execute(sa.delete(FailedLoginRow).where(FailedLoginRow.window_start < now - 10 * window_ms))

    def clear_failed_logins(self, key: str) -> None:
        with self.db.session() as s:
            s.execute(sa.delete(FailedLoginRow).where(FailedLoginRow.key == key))

    # ------------------------------------------------------------ permissions

    def experiment_permission(self, user_id: int, experiment_id: object) -> Permission | None:
        """The grant of ``user_id`` on an experiment, or None (the default applies)."""
        with self.db.session(write=False) as s:
            return self._experiment_grant(s, user_id, _experiment_id(experiment_id))

    @staticmethod
    def _experiment_grant(s: Session, user_id: int, experiment_id: int) -> Permission | None:
        value = s.scalar(
            sa.select(ExperimentPermissionRow.permission).where(
                ExperimentPermissionRow.experiment_id == experiment_id, ExperimentPermissionRow.user_id == user_id
            )
        )
        return None if value is None else Permission(value)

    def model_exists(self, name: str) -> bool:
        with self.db.session(write=False) as s:
            return s.scalar(sa.select(RegisteredModelRow.id).where(RegisteredModelRow.name == str(name))) is not None

    def gate_decision_model(self, decision_id: str) -> str | None:
        """The name of the registered model a gate decision belongs to, or None (unknown id)."""
        with self.db.session(write=False) as s:
            return s.scalar(
                sa.select(RegisteredModelRow.name)
                .join(GateDecisionRow, GateDecisionRow.model_id == RegisteredModelRow.id)
                .where(GateDecisionRow.id == str(decision_id))
            )

    def run_experiment(self, run_id: str) -> int | None:
        with self.db.session(write=False) as s:
            return s.scalar(sa.select(RunRow.experiment_id).where(RunRow.run_uuid == str(run_id)))

    def run_grant(self, user_id: int, run_id: str) -> tuple[int, Permission | None] | None:
        """A run's experiment and the user's grant on it (one query: the per-request path of
        every run write), or None for an unknown run."""
        with self.db.session(write=False) as s:
            row = s.execute(
                sa.select(RunRow.experiment_id, ExperimentPermissionRow.permission)
                .outerjoin(ExperimentPermissionRow, sa.and_(
                    ExperimentPermissionRow.experiment_id == RunRow.experiment_id,
                    ExperimentPermissionRow.user_id == user_id))
                .where(RunRow.run_uuid == str(run_id))
            ).first()
        if row is None:
            return None
        return row[0], None if row[1] is None else Permission(row[1])

    def runs_experiments(self, run_ids: list[str]) -> dict[str, int]:
        with self.db.session(write=False) as s:
            rows = s.execute(sa.select(RunRow.run_uuid, RunRow.experiment_id).where(RunRow.run_uuid.in_(run_ids)))
            return {r: e for r, e in rows}

    def run_experiment_by_prefect_id(self, flow_run_id: str | None, task_run_id: str | None) -> int | None:
        with self.db.session(write=False) as s:
            if task_run_id:
                return s.scalar(sa.select(RunRow.experiment_id).where(RunRow.prefect_task_run_id == task_run_id))
            if flow_run_id:
                return s.scalar(sa.select(RunRow.experiment_id).where(RunRow.prefect_flow_run_id == flow_run_id))
            return None

    def logged_model_experiment(self, model_id: str) -> int | None:
        with self.db.session(write=False) as s:
            return s.scalar(sa.select(LoggedModelRow.experiment_id).where(LoggedModelRow.model_id == str(model_id)))

    def experiment_by_name(self, name: str) -> int | None:
        with self.db.session(write=False) as s:
            return s.scalar(sa.select(ExperimentRow.experiment_id).where(ExperimentRow.name == str(name)))

    def models_at_registry_key(self, key: str) -> list[str]:
        """The registered models whose versions are stored under ``<root>/registry/<key>/``
        (``tracking_plugin.registry.registry_key``): a plain name is its own key; a hashed
        key ('~') is matched against every name (rare: names that are not plain file names)."""
        from tracking_plugin.registry import registry_key

        with self.db.session(write=False) as s:
            if "~" not in key:
                found = s.scalar(sa.select(RegisteredModelRow.name).where(RegisteredModelRow.name == key))
                return [] if found is None else [found]
            return [n for n in s.scalars(sa.select(RegisteredModelRow.name)) if registry_key(n) == key]

    def experiments_at_location(self, location: str) -> list[int]:
        """The experiments whose artifact location is exactly ``location``."""
        with self.db.session(write=False) as s:
            return list(s.scalars(sa.select(ExperimentRow.experiment_id).where(
                ExperimentRow.artifact_location.in_([location, location.rstrip("/") + "/"]))))

    def experiment_exists(self, experiment_id: object) -> bool:
        try:
            eid = int(str(experiment_id))
        except ValueError:
            return False
        with self.db.session(write=False) as s:
            return s.get(ExperimentRow, eid) is not None

    def model_permission(self, user_id: int, name: str) -> Permission | None:
        with self.db.session(write=False) as s:
            value = s.scalar(
                sa.select(RegisteredModelPermissionRow.permission)
                .join(RegisteredModelRow, RegisteredModelRow.id == RegisteredModelPermissionRow.model_id)
                .where(RegisteredModelRow.name == str(name), RegisteredModelPermissionRow.user_id == user_id)
            )
            return None if value is None else Permission(value)

    def experiment_grants(self, user_id: int) -> dict[str, Permission]:
        """Every explicit experiment grant of a user (for filtering searches)."""
        with self.db.session(write=False) as s:
            rows = s.execute(
                sa.select(ExperimentPermissionRow.experiment_id, ExperimentPermissionRow.permission)
                .where(ExperimentPermissionRow.user_id == user_id)
            )
            return {str(e): Permission(p) for e, p in rows}

    def model_grants(self, user_id: int) -> dict[str, Permission]:
        with self.db.session(write=False) as s:
            rows = s.execute(
                sa.select(RegisteredModelRow.name, RegisteredModelPermissionRow.permission)
                .join(RegisteredModelRow, RegisteredModelRow.id == RegisteredModelPermissionRow.model_id)
                .where(RegisteredModelPermissionRow.user_id == user_id)
            )
            return {n: Permission(p) for n, p in rows}

    @_notifies
    def grant_experiment(self, experiment_id: object, username: str, permission: Permission, *,
                         create: bool | None = None) -> dict[str, object]:
        """Set a user's permission on an experiment. ``create=True`` refuses an existing
        grant, ``create=False`` a missing one (MLflow's create / update), None upserts."""
        eid = _experiment_id(experiment_id)
        name = normalize_username(username)
        with self.db.session() as s:
            user = self._user_row(s, name)
            if s.get(ExperimentRow, eid) is None:
                raise NotFound(f"Experiment {str(experiment_id)!r} does not exist; grant on an existing experiment id.")
            row = s.get(ExperimentPermissionRow, (eid, user.id))
            if row is not None and create is True:
                raise AlreadyExists(
                    f"User {name!r} already has a permission on experiment {eid}; update it instead."
                )
            if row is None and create is False:
                raise NotFound(f"User {name!r} has no permission on experiment {eid} to update; create it instead.")
            if row is None:
                s.add(ExperimentPermissionRow(experiment_id=eid, user_id=user.id, permission=permission.value))
            else:
                row.permission = permission.value
            return {"experiment_id": str(eid), "user_id": user.id, "permission": permission.value}

    def get_experiment_grant(self, experiment_id: object, username: str) -> dict[str, object]:
        eid = _experiment_id(experiment_id)
        name = normalize_username(username)
        with self.db.session(write=False) as s:
            user = self._user_row(s, name)
            row = s.get(ExperimentPermissionRow, (eid, user.id))
            if row is None:
                raise NotFound(f"User {name!r} has no permission on experiment {eid}.")
            return {"experiment_id": str(eid), "user_id": user.id, "permission": row.permission}

    @_notifies
    def revoke_experiment(self, experiment_id: object, username: str) -> None:
        eid = _experiment_id(experiment_id)
        name = normalize_username(username)
        with self.db.session() as s:
            user = self._user_row(s, name)
            row = s.get(ExperimentPermissionRow, (eid, user.id))
            if row is None:
                raise NotFound(f"User {name!r} has no permission on experiment {eid} to delete.")
            s.delete(row)

    @_notifies
    def grant_model(self, model_name: str, username: str, permission: Permission, *,
                    create: bool | None = None) -> dict[str, object]:
        name = normalize_username(username)
        with self.db.session() as s:
            user = self._user_row(s, name)
            model_id = s.scalar(sa.select(RegisteredModelRow.id).where(RegisteredModelRow.name == str(model_name)))
            if model_id is None:
                raise NotFound(
                    f"Registered model {model_name!r} does not exist; grant on an existing model name."
                )
            row = s.get(RegisteredModelPermissionRow, (model_id, user.id))
            if row is not None and create is True:
                raise AlreadyExists(
                    f"User {name!r} already has a permission on model {model_name!r}; update it instead."
                )
            if row is None and create is False:
                raise NotFound(f"User {name!r} has no permission on model {model_name!r} to update; create it instead.")
            if row is None:
                s.add(RegisteredModelPermissionRow(model_id=model_id, user_id=user.id, permission=permission.value))
            else:
                row.permission = permission.value
            return {"name": model_name, "user_id": user.id, "permission": permission.value}

    def get_model_grant(self, model_name: str, username: str) -> dict[str, object]:
        name = normalize_username(username)
        with self.db.session(write=False) as s:
            user = self._user_row(s, name)
            value = s.scalar(
                sa.select(RegisteredModelPermissionRow.permission)
                .join(RegisteredModelRow, RegisteredModelRow.id == RegisteredModelPermissionRow.model_id)
                .where(RegisteredModelRow.name == str(model_name), RegisteredModelPermissionRow.user_id == user.id)
            )
            if value is None:
                raise NotFound(f"User {name!r} has no permission on model {model_name!r}.")
            return {"name": model_name, "user_id": user.id, "permission": value}

    @_notifies
    def revoke_model(self, model_name: str, username: str) -> None:
        name = normalize_username(username)
        with self.db.session() as s:
            user = self._user_row(s, name)
            model_id = s.scalar(sa.select(RegisteredModelRow.id).where(RegisteredModelRow.name == str(model_name)))
            row = None if model_id is None else s.get(RegisteredModelPermissionRow, (model_id, user.id))
            if row is None:
                raise NotFound(f"User {name!r} has no permission on model {model_name!r} to delete.")
            s.delete(row)
