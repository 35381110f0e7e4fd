# Over 600 lines on purpose: the engines, sessions, driver-level transactions and migrations of
# both dialects share one connection handling (retries, pings, error translation, pool events).
"""Engines, sessions and migrations for the backend database.

``Database(uri)`` only builds an engine: it neither connects nor migrates. The schema is
brought up to date by an explicit :meth:`Database.upgrade` (also ``prefect-mlops db
upgrade``) or, on first use, by :meth:`Database.ensure_schema`, which the client calls
once per process. Both are safe when several processes start at once: PostgreSQL takes an
advisory lock, SQLite an immediate (write) transaction, and the loser finds the schema at
head and does nothing.

PostgreSQL restarts (failover, upgrade, ``pg_ctl restart``) are ridden out: taking a
connection is retried with exponential backoff until ``retry_deadline`` seconds have
passed (nothing was sent yet, so any operation may retry), and operations that can be
replayed whole (:meth:`Database.replaying`: a metric batch replayed without the points
already stored, run status changes) are run again when the connection drops in the middle
of their transaction, which the server has rolled back. Never inside a transaction: a
retry is always a new one. Past the deadline the call fails with ``BackendUnavailable``
naming the database (password hidden).

SQLite runs in WAL mode with ``synchronous=NORMAL`` and a busy timeout; write sessions
start with ``BEGIN IMMEDIATE`` so two writers queue on the lock instead of failing with
"database is locked" when a read transaction tries to upgrade to a write.

The stores' hot paths skip the Session: :meth:`Database.transaction` hands out a
:class:`Transaction` on the driver's own connection, which runs :class:`Statement` objects,
SQLAlchemy Core statements compiled once per dialect into the driver's positional
placeholders (``?`` for sqlite3, ``%s`` for psycopg) and executed with plain tuples.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

if TYPE_CHECKING:
    from pydantic import SecretStr

from tracking_plugin.errors import BackendUnavailable, Conflict, InvalidArgument
from tracking_plugin.store.statements import DIALECTS, Statement, in_list
from tracking_plugin.urls import redact_uri

__all__ = ["DIALECTS", "Database", "MIGRATIONS_DIR", "Statement", "Transaction", "in_list"]

_T = TypeVar("_T")
# First pause before retrying a lost PostgreSQL connection, doubled up to the cap.
_RETRY_FIRST_DELAY = 0.05
_RETRY_MAX_DELAY = 2.0

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_log = logging.getLogger(__name__)
# PostgreSQL's serialization failure and deadlock: the transaction lost a race, the
# server is fine. They arrive as OperationalError but mean "retry", not "unavailable".
_RETRYABLE_SQLSTATES = {"40001", "40P01"}


def _sqlstate(exc: DBAPIError) -> str | None:
    return getattr(getattr(exc, "orig", None), "sqlstate", None)


# Arbitrary constant: the advisory lock that serialises migrations on PostgreSQL.
_PG_MIGRATION_LOCK = 7_246_113_901


def _normalise_uri(uri: str) -> str:
    if uri.startswith("postgresql://") or uri.startswith("postgres://"):
        # psycopg 3 is the driver we ship (extra `postgres`); psycopg2 is not installed.
        return "postgresql+psycopg://" + uri.split("://", 1)[1]
    return uri


_REPEATABLE_READ = 3  # psycopg.IsolationLevel.REPEATABLE_READ (psycopg is imported only for PostgreSQL)
# A pooled PostgreSQL connection idle longer than this is pinged (a round trip) at
# checkout; one used more recently only has its socket looked at (see _pg_check_alive).
_PG_PING_AFTER_IDLE = 10.0


def _pg_mark_idle(dbapi_conn: Any, record: Any) -> None:
    record.info["mlops_idle_since"] = time.monotonic()


def _pg_check_alive(dbapi_conn: Any, record: Any, proxy: Any) -> None:
    """Pool checkout: hand out only a live PostgreSQL connection, without a round trip
    for one that was in use a moment ago (SQLAlchemy's ``pool_pre_ping`` sends ``;`` and
    waits for the answer at every checkout: one of the five round trips of a
    ``log_param``).

    An idle connection receives nothing unless the server is ending it (a restart or
    ``pg_terminate_backend`` sends an error and closes the socket), so a readable socket,
    or a connection psycopg already knows is broken, gets the real ping; so does one idle
    for over ``_PG_PING_AFTER_IDLE`` seconds (a network path that went away sends
    nothing). A failed ping raises ``DisconnectionError``: the pool drops the connection
    and checks out a fresh one, as with ``pool_pre_ping``.
    """
    import select

    idle_since = record.info.get("mlops_idle_since")
    try:
        suspect = (
            dbapi_conn.broken
            or dbapi_conn.closed
            or idle_since is None
            or time.monotonic() - idle_since > _PG_PING_AFTER_IDLE
            or bool(select.select([dbapi_conn.fileno()], [], [], 0)[0])
        )
        if suspect:  # SQLAlchemy's ping: ';' outside a transaction
            before = dbapi_conn.autocommit
            dbapi_conn.autocommit = True
            try:
                dbapi_conn.execute(";")
            finally:
                if not dbapi_conn.closed:
                    dbapi_conn.autocommit = before
    except Exception as exc:  # noqa: BLE001 - any failure here means "not usable"
        raise sa.exc.DisconnectionError(f"Pooled PostgreSQL connection is not usable: {exc}") from exc


class Transaction:
    """One transaction on the driver's own connection, for the hot paths of the store.

    SQLAlchemy's Session and Connection cost 100-300 us per transaction on this kind of
    machine, against ~10 us for SQLite itself; ``log_metric``, run create/end and page
    loading of search are dominated by that. Statements here are :class:`Statement`
    (SQLAlchemy Core compiled once per dialect into the driver's positional style) run
    with plain tuples; results are plain tuples.
    """

    __slots__ = ("cursor", "dialect", "postgres")

    def __init__(self, cursor: Any, dialect: str) -> None:
        self.cursor = cursor
        self.dialect = dialect
        self.postgres = dialect == "postgresql"

    def execute(self, statement: Statement, params: Sequence[Any] = (), *, binary: bool = False) -> Any:
        """Run one statement with the values of its ``params``; returns the DB-API cursor.
        ``binary``: PostgreSQL sends the result in binary (cheaper to decode: arrays and
        numbers); only for PostgreSQL."""
        sql, order = statement.compiled.get(self.dialect) or statement.compile(self.dialect)
        values = params if order is None else [params[i] for i in order]
        if binary:
            self.cursor.execute(sql, values, binary=True)
        else:
            self.cursor.execute(sql, values)
        return self.cursor

    def executemany(self, statement: Statement, rows: Sequence[Sequence[Any]]) -> int:
        """Run one statement per row; returns the driver's rowcount (may be -1)."""
        sql, order = statement.compiled.get(self.dialect) or statement.compile(self.dialect)
        if order is not None:
            rows = [[row[i] for i in order] for row in rows]
        self.cursor.executemany(sql, rows)
        return int(self.cursor.rowcount)

    def execute_compiled(self, sql: str, params: Sequence[Any]) -> Any:
        """Run SQL compiled for this dialect by :data:`DIALECTS` with its values in order
        (statements compiled with their values, as search's); returns the cursor."""
        self.cursor.execute(sql, params)
        return self.cursor

    def one(self, statement: Statement, params: Sequence[Any] = (), *, binary: bool = False) -> tuple[Any, ...] | None:
        return self.execute(statement, params, binary=binary).fetchone()  # type: ignore[no-any-return]

    def all(self, statement: Statement, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.execute(statement, params).fetchall()  # type: ignore[no-any-return]


class Database:
    """An engine plus session factories for one database URI."""

    def __init__(
        self,
        uri: str,
        *,
        busy_timeout: float = 60.0,
        password: SecretStr | None = None,
        retry_deadline: float = 15.0,
        pool_size: int = 5,
        max_overflow: int = 10,
    ) -> None:
        """``password``: the database password when it is kept out of ``uri`` (a saved
        block's); it goes into the engine's URL only, never into ``self.uri``.
        ``retry_deadline``: seconds a PostgreSQL operation keeps retrying a lost
        connection (0: fail at once). ``pool_size``/``max_overflow``: PostgreSQL
        connections this process keeps / may add."""
        if pool_size < 1 or max_overflow < 0:
            raise InvalidArgument(
                f"Invalid connection pool size {pool_size} (+{max_overflow} overflow): "
                "use pool_size >= 1 and max_overflow >= 0."
            )
        self._pool = (pool_size, max_overflow)
        uri = _normalise_uri(uri)
        try:
            url = make_url(uri)
            if password is not None:
                url = url.set(password=password.get_secret_value())
        except Exception as exc:
            raise InvalidArgument(
                f"Invalid tracking URI {redact_uri(uri)!r}: expected a SQLAlchemy URL such as "
                "'sqlite:///mlops.db' or 'postgresql+psycopg://user:pw@host/db'."
            ) from exc
        self.uri = uri
        self.dialect = url.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise InvalidArgument(
                f"Unsupported tracking URI {redact_uri(uri)!r}: use sqlite:///path.db or "
                "postgresql+psycopg://... (MySQL and others are not supported)."
            )
        self.engine = self._create_engine(url, busy_timeout)
        self._writer = self.engine.execution_options(mlops_write=True)
        self._read_sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._write_sessions = sessionmaker(self._writer, expire_on_commit=False)
        self._schema_ready = False
        self._schema_lock = threading.Lock()
        # Clear while a background checkpoint of this database is queued or running.
        self._checkpoint_idle = threading.Event()
        self._checkpoint_idle.set()
        self._bulk_rows = 0  # rows committed by bulk transactions since the last checkpoint request
        self._busy_timeout = busy_timeout
        self.retry_deadline = max(0.0, retry_deadline)
        dbapi = self.engine.dialect.loaded_dbapi
        # The driver's own exception classes, for code that runs on a Transaction.
        self.IntegrityError: type[Exception] = dbapi.IntegrityError
        self._OperationalError: type[Exception] = dbapi.OperationalError

    # ------------------------------------------------------------------ engine

    def _create_engine(self, url: sa.URL, busy_timeout: float) -> Engine:
        if self.dialect == "sqlite":
            database = url.database or ""
            if database and database != ":memory:" and not database.startswith("file:"):
                Path(database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
            engine = sa.create_engine(
                url,
                connect_args={"timeout": busy_timeout, "check_same_thread": False},
                pool_size=8,
                max_overflow=16,
            )
            timeout_ms = int(busy_timeout * 1000)

            @event.listens_for(engine, "connect")
            def _on_connect(dbapi_conn: Any, _record: Any) -> None:
                # Take transaction control from pysqlite so we can say BEGIN IMMEDIATE.
                dbapi_conn.isolation_level = None
                cursor = dbapi_conn.cursor()
                _enter_wal_mode(cursor, busy_timeout)
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.execute(f"PRAGMA busy_timeout={timeout_ms}")
                cursor.execute("PRAGMA foreign_keys=ON")
                # 16 MiB of page cache instead of 2: a search over 100,000 runs touches more
                # pages than the default holds (~7% faster); it grows only as pages are read.
                cursor.execute("PRAGMA cache_size=-16384")
                cursor.close()

            @event.listens_for(engine, "begin")
            def _on_begin(conn: sa.Connection) -> None:
                write = conn.get_execution_options().get("mlops_write", False)
                conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

            return engine
        engine = sa.create_engine(
            url,
            pool_size=self._pool[0],
            max_overflow=self._pool[1],
            connect_args={"connect_timeout": 10},
        )
        event.listen(engine, "checkout", _pg_check_alive)
        event.listen(engine, "checkin", _pg_mark_idle)
        return engine

    # ---------------------------------------------------------------- sessions

    @contextmanager
    def session(self, *, write: bool = True) -> Iterator[Session]:
        """One transaction: commit on success, roll back on any error.

        Connection failures become :class:`BackendUnavailable` naming the database;
        every other exception passes through unchanged after the rollback.
        """
        factory = self._write_sessions if write else self._read_sessions
        try:
            if self.dialect == "postgresql":
                # Wait out a restart here, where nothing has been sent and a retry is safe:
                # the checkout pings and leaves a live connection in the pool.
                self._retrying_connect(lambda: self.engine.raw_connection().close())
            with factory() as session, session.begin():
                yield session
        except OperationalError as exc:
            if _sqlstate(exc) in _RETRYABLE_SQLSTATES:
                raise Conflict(
                    f"A concurrent transaction on {redact_uri(self.uri)!r} conflicted with this one "
                    f"({_sqlstate(exc)}: {str(exc.orig).splitlines()[0]}). Nothing was written; "
                    "retry the call."
                ) from exc
            raise self._unavailable(exc) from exc
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise self._unavailable(exc) from exc
            raise

    @contextmanager
    def transaction(
        self, *, write: bool = True, bulk: bool = False, rows: int | None = None, snapshot: bool = False,
        autocommit: bool = False,
    ) -> Iterator[Transaction]:
        """One transaction on a pooled driver connection: commit on success, roll back on
        any error. Same locking and error translation as :meth:`session` (SQLite writes
        start with ``BEGIN IMMEDIATE``).

        ``bulk=True`` is for large inserts whose parent row the transaction has already
        checked under its write lock. On SQLite it turns two things off for this
        transaction only: the per-row foreign-key lookups (a fifth of the cost of a large
        metric batch) and the automatic WAL checkpoint at commit, whose two syncs would
        otherwise run in the caller's thread (another fifth); a background thread runs
        that checkpoint instead (:func:`_request_checkpoint`), while the caller goes on. The
        next bulk transaction waits for it first, so the WAL starts over from its beginning
        instead of growing with every batch. Durability is unchanged: with
        ``synchronous=NORMAL`` a WAL commit is never synced, only checkpoints are.

        ``snapshot=True`` (PostgreSQL): the transaction runs at REPEATABLE READ, so all its
        statements see one snapshot (a read in several statements); psycopg says so in its
        BEGIN, no round trip more. SQLite transactions always read one snapshot.

        ``autocommit=True`` (PostgreSQL): for calls whose one write is one statement; each
        statement is its own transaction (no BEGIN/COMMIT round trips), committed on return.

        ``rows``: how many rows the bulk transaction writes, when the caller knows. The
        checkpoint is then asked for once bulk commits since the last one reach
        ``_BULK_CHECKPOINT_ROWS`` (about SQLite's own 1,000-page automatic checkpoint), not
        after each: a tracking server taking 1,000-point log-batch calls back to back would
        otherwise sync twice per call. Without ``rows`` every bulk commit asks for it.
        """
        postgres = self.dialect == "postgresql"
        relax = bulk and not postgres
        if relax:
            self._checkpoint_idle.wait(self._busy_timeout)
        fairy = self._retrying_connect(self.engine.raw_connection)
        isolation = snapshot and postgres
        auto = autocommit and postgres and not isolation
        try:
            if isolation:
                fairy.driver_connection.isolation_level = _REPEATABLE_READ
            if auto:
                fairy.driver_connection.autocommit = True
            cursor = fairy.cursor()
            if relax:
                # Both are no-ops inside a transaction: set them before BEGIN.
                cursor.execute("PRAGMA foreign_keys=OFF")
                cursor.execute("PRAGMA wal_autocheckpoint=0")
            if not postgres:
                cursor.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield Transaction(cursor, self.dialect)
            except BaseException:
                try:
                    if postgres:
                        fairy.rollback()
                    elif fairy.driver_connection.in_transaction:
                        cursor.execute("ROLLBACK")
                except self._OperationalError:
                    pass  # the connection broke: the error below says so
                raise
            if postgres:
                fairy.commit()
            else:
                cursor.execute("COMMIT")
                if relax:
                    self._bulk_rows += _BULK_CHECKPOINT_ROWS if rows is None else rows
                    if self._bulk_rows >= _BULK_CHECKPOINT_ROWS:
                        self._bulk_rows = 0
                        _request_checkpoint(self)
        except self._OperationalError as exc:
            state = getattr(exc, "sqlstate", None)
            if state in _RETRYABLE_SQLSTATES:
                raise Conflict(
                    f"A concurrent transaction on {redact_uri(self.uri)!r} conflicted with this one "
                    f"({state}: {str(exc).splitlines()[0]}). Nothing was written; retry the call."
                ) from exc
            if postgres:
                fairy.invalidate(exc)  # a broken connection must not go back to the pool
            raise self._unavailable(exc) from exc
        finally:
            if isolation or auto:
                try:
                    if isolation:
                        fairy.driver_connection.isolation_level = None
                    if auto:
                        fairy.driver_connection.autocommit = False
                except Exception as exc:  # never pool a connection left at another level or autocommit
                    fairy.invalidate(exc)
            if relax:
                try:
                    restore = fairy.cursor()
                    restore.execute("PRAGMA foreign_keys=ON")
                    restore.execute(f"PRAGMA wal_autocheckpoint={_WAL_AUTOCHECKPOINT}")
                except Exception as exc:  # never pool a connection without its checks
                    fairy.invalidate(exc)
            fairy.close()

    def _retrying_connect(self, connect: Callable[[], _T]) -> _T:
        """``connect()``, retried while PostgreSQL refuses connections (a restart), with
        backoff, until ``retry_deadline``; then ``BackendUnavailable``. Nothing has been
        sent when it fails, so any operation may retry it."""
        postgres = self.dialect == "postgresql"
        deadline = time.monotonic() + (self.retry_deadline if postgres else 0.0)
        delay = _RETRY_FIRST_DELAY
        while True:
            try:
                return connect()
            # A pool checkout whose ping fails raises the driver's own error, unwrapped.
            except (OperationalError, self._OperationalError) as exc:
                if not postgres or time.monotonic() + delay > deadline:
                    raise self._unavailable(exc) from exc
                if delay == _RETRY_FIRST_DELAY:
                    _log.warning(
                        "Tracking database %r unreachable (%s); retrying for up to %.0f s",
                        redact_uri(self.uri), _first_line(exc), self.retry_deadline,
                    )
                time.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_DELAY)

    def replaying(self, operation: Callable[[bool], _T]) -> _T:
        """Run ``operation(replay)`` (one whole transaction) and run it again, with
        ``replay=True``, when PostgreSQL's connection is lost in the middle, until
        ``retry_deadline``. Only for operations whose replay is harmless even if the lost
        transaction did commit (the server dropped the connection after COMMIT arrived):
        ``replay`` tells the operation to skip what is already stored."""
        if self.dialect != "postgresql":
            return operation(False)
        deadline = time.monotonic() + self.retry_deadline
        delay = _RETRY_FIRST_DELAY
        replay = False
        while True:
            try:
                return operation(replay)
            except BackendUnavailable as exc:
                if time.monotonic() + delay > deadline:
                    raise
                _log.warning("Replaying a write to %r after a lost connection: %s", redact_uri(self.uri), exc)
            time.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX_DELAY)
            replay = True

    def checkpoint(self) -> None:
        """Copy SQLite's WAL into the database file as far as readers allow (``PASSIVE``:
        waits for nobody). What SQLite's automatic checkpoint does; a no-op elsewhere."""
        if self.dialect != "sqlite":
            return
        fairy = self.engine.raw_connection()
        try:
            fairy.cursor().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            fairy.close()

    def _unavailable(self, exc: Exception) -> BackendUnavailable:
        detail = _first_line(exc)
        return BackendUnavailable(
            f"Tracking database {redact_uri(self.uri)!r} is unavailable: {redact_uri(detail)}. Check that "
            "the server is running and PREFECT_MLOPS_TRACKING_URI is right."
        )

    # -------------------------------------------------------------- migrations

    def _alembic_config(self, connection: sa.Connection) -> Any:
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.attributes["connection"] = connection
        return cfg

    def current_revision(self) -> str | None:
        """The applied migration revision, or None for an empty database."""
        from alembic.migration import MigrationContext

        try:
            with self.engine.connect() as conn:
                return MigrationContext.configure(conn).get_current_revision()
        except OperationalError as exc:
            raise self._unavailable(exc) from exc

    @staticmethod
    def head_revision() -> str:
        from alembic.config import Config
        from alembic.script import ScriptDirectory

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        head = ScriptDirectory.from_config(cfg).get_current_head()
        assert head is not None
        return head

    def upgrade(self, revision: str = "head") -> None:
        """Apply pending migrations; a no-op at head. Safe to call from many processes."""
        from alembic import command

        try:
            with self._writer.connect() as conn:
                with conn.begin():
                    if self.dialect == "postgresql":
                        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
                    # SQLite: the writer connection began with BEGIN IMMEDIATE: we hold the lock.
                    command.upgrade(self._alembic_config(conn), revision)
        except OperationalError as exc:
            raise self._unavailable(exc) from exc
        self._schema_ready = True

    def ensure_schema(self) -> None:
        """Upgrade once per process when the database is not at head (first use)."""
        if self._schema_ready:
            return
        with self._schema_lock:
            if self._schema_ready:
                return
            if self.current_revision() != self.head_revision():
                self.upgrade()
            self._schema_ready = True

    def dispose(self) -> None:
        self._checkpoint_idle.wait(self._busy_timeout)  # it would reopen a connection
        self.engine.dispose()


def _first_line(exc: Exception) -> str:
    """The first line of a database error's message (the driver's, when wrapped)."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else repr(exc)


def _enter_wal_mode(cursor: Any, timeout: float) -> None:
    """``PRAGMA journal_mode=WAL``, retried while another connection holds the lock.

    On a new database file (still in rollback-journal mode) connections that switch it at
    the same moment can get "database is locked" at once: SQLite does not call the busy
    handler when two readers both want to write the header (it would deadlock). Several
    processes starting on a new file hit this; once the file is in WAL mode it is a no-op.
    """
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)


# SQLite's own default: a checkpoint once the WAL holds this many pages after a commit.
_WAL_AUTOCHECKPOINT = 1000
# Bulk commits ask for a checkpoint once they have written this many rows (a metric point
# is ~220 bytes of WAL in 1,000-point commits, measured with the WITHOUT ROWID history of
# migration 0012: about _WAL_AUTOCHECKPOINT pages of 4 KiB).
_BULK_CHECKPOINT_ROWS = 20_000

# Checkpoints after bulk transactions run here, one thread per process for every database;
# a database asked for again while one is pending is checkpointed once. Weak references: a
# Database that is gone needs no checkpoint (SQLite checkpoints when its last connection
# closes). ``_checkpointed`` holds every database that ever asked, for a forked child.
_checkpoint_wanted: weakref.WeakSet[Database] = weakref.WeakSet()
_checkpoint_cond = threading.Condition()
_checkpoint_thread: threading.Thread | None = None
_checkpointed: weakref.WeakSet[Database] = weakref.WeakSet()


def _request_checkpoint(db: Database) -> None:
    global _checkpoint_thread
    with _checkpoint_cond:
        db._checkpoint_idle.clear()
        _checkpoint_wanted.add(db)
        _checkpointed.add(db)
        if _checkpoint_thread is None or not _checkpoint_thread.is_alive():
            _checkpoint_thread = threading.Thread(
                target=_checkpoint_loop, name="prefect-mlops-sqlite-checkpoint", daemon=True
            )
            _checkpoint_thread.start()
        _checkpoint_cond.notify()


def _checkpoint_loop() -> None:
    while True:
        with _checkpoint_cond:
            while not _checkpoint_wanted:
                _checkpoint_cond.wait()
            wanted = list(_checkpoint_wanted)
            _checkpoint_wanted.clear()
        _checkpoint_all(wanted)
        del wanted  # hold no database while idle


def _checkpoint_all(databases: list[Database]) -> None:
    for db in databases:
        try:
            db.checkpoint()
        except Exception as exc:  # noqa: BLE001 - the next commit's automatic checkpoint retries
            _log.debug("WAL checkpoint of %s failed: %s", redact_uri(db.uri), exc)
        finally:
            with _checkpoint_cond:
                if db not in _checkpoint_wanted:  # asked again meanwhile: not idle yet
                    db._checkpoint_idle.set()


def _reset_checkpointer_after_fork() -> None:
    # A forked child has none of the parent's threads (its checkpoints will not run) and
    # may have copied the lock held.
    global _checkpoint_cond, _checkpoint_thread
    _checkpoint_cond = threading.Condition()
    _checkpoint_thread = None
    _checkpoint_wanted.clear()
    for db in list(_checkpointed):
        db._checkpoint_idle.set()


os.register_at_fork(after_in_child=_reset_checkpointer_after_fork)
