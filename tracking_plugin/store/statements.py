"""SQL written once for both dialects: SQLAlchemy Core statements compiled per dialect.

:class:`Statement` is what :class:`tracking_plugin.store.db.Transaction` runs on the
driver's own cursor: a Core statement built from the tables in
:mod:`tracking_plugin.store.schema`, compiled once per dialect into the driver's
positional placeholders (``?`` for sqlite3, ``%s`` for psycopg) and executed with plain
tuples. :func:`in_list` bounds the shapes of ``IN (...)`` statements; :data:`DIALECTS`
holds the two dialects (SQLite's with table hints, for ``INDEXED BY``).
"""

from __future__ import annotations

from typing import Any, Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.ext.compiler import compiles

__all__ = ["DIALECTS", "DatabaseClockMs", "Statement", "in_list"]


class _SQLiteCompiler(sqlite_dialect.base.SQLiteCompiler):
    """SQLite's compiler plus table hints: ``select.with_hint(table, "INDEXED BY ix",
    "sqlite")`` renders ``table INDEXED BY ix`` (SQLAlchemy's own drops table hints)."""

    def get_from_hint_text(self, table: Any, text: str) -> str:
        return text


class _SQLiteDialect(sqlite_dialect.pysqlite.SQLiteDialect_pysqlite):
    statement_compiler = _SQLiteCompiler


# The dialects statements are compiled with to run on the driver's cursor, both positional:
# ``?`` for sqlite3 (its default), ``%s`` for psycopg (SQLAlchemy's default there is the
# named ``%(name)s``, which would make every call build a dict).
DIALECTS: dict[str, sa.Dialect] = {
    "sqlite": _SQLiteDialect(),
    "postgresql": pg_dialect.psycopg.dialect(paramstyle="format"),
}


class Statement:
    """A SQLAlchemy Core statement for :class:`Transaction`, compiled once per dialect.

    ``build`` is the statement, or a function of the dialect name that returns it (for
    dialect constructs such as upserts). ``params`` names its bind parameters in the order
    the caller passes their values: the statement runs with plain tuples, whichever order
    the dialect's SQL wants them in (mapped once, when it is compiled), so an
    ``executemany`` of 100,000 rows hands the rows to the driver as they are. An INSERT
    without ``.values()`` inserts exactly the columns named by ``params``.

    Every bind parameter must be named in ``params``: constants go into the SQL
    (``sa.literal_column``) or are passed like any other value. Dialect-only statements
    (``PRAGMA``, ``SET LOCAL``) are ``sa.text`` and say which dialect they are for.
    """

    __slots__ = ("_build", "params", "compiled", "_built")

    def __init__(self, build: Any, params: Sequence[str] = ()) -> None:
        self._build = build
        self.params = tuple(params)
        # dialect name -> (SQL, positions of the values in the SQL's order, or None when
        # that is the order of ``params``)
        self.compiled: dict[str, tuple[str, tuple[int, ...] | None]] = {}
        self._built: dict[str, Any] = {}

    def build(self, dialect: str) -> Any:
        """The Core statement for ``dialect`` (also for executing in a Session)."""
        stmt = self._built.get(dialect)
        if stmt is None:
            stmt = self._built[dialect] = self._build(dialect) if callable(self._build) else self._build
        return stmt

    def compile(self, dialect: str) -> tuple[str, tuple[int, ...] | None]:
        entry = self.compiled.get(dialect)
        if entry is not None:
            return entry
        stmt = self.build(dialect)
        column_keys = None
        if isinstance(stmt, sa.Insert):
            # inline(): no implicit ``RETURNING id`` on PostgreSQL (nobody reads it).
            column_keys = None if stmt._values else list(self.params)
            stmt = stmt.inline()
        compiled = stmt.compile(dialect=DIALECTS[dialect], column_keys=column_keys)
        names = tuple(compiled.positiontup or ())
        unknown = sorted(set(names) - set(self.params))
        if unknown:
            raise TypeError(
                f"Statement {compiled.string!r} binds {unknown} that are not among its params "
                f"{list(self.params)}: name them in params= or put constants in the SQL."
            )
        order = tuple(self.params.index(name) for name in names)
        entry = (compiled.string, None if order == tuple(range(len(self.params))) else order)
        self.compiled[dialect] = entry
        return entry

    def __repr__(self) -> str:
        return f"Statement({self.build('sqlite')!s}, params={self.params!r})"


def in_list(values: Sequence[Any], limit: int) -> tuple[int, tuple[Any, ...]]:
    """``values`` (at most ``limit``, at least one) padded to the next power of two (or to
    ``limit``) by repeating the last one, with that length: ``IN (...)`` statements are
    compiled per length, so a few lengths cover every list (repeats do not change an IN)."""
    n = len(values)
    size = min(1 << (n - 1).bit_length(), limit)
    return size, (*values, *(values[-1],) * (size - n))


class DatabaseClockMs(sa.sql.expression.FunctionElement[int]):
    """The database's own clock in epoch milliseconds, for times that must not depend on
    the writing process's clock (audit rows, a run's deletion time that gc counts from):
    a worker whose clock is off cannot misdate or reorder them. SQLite's clock is the
    machine's that holds the file."""

    type = sa.BigInteger()
    inherit_cache = True


@compiles(DatabaseClockMs, "postgresql")
def _pg_clock_ms(element: Any, compiler: Any, **kw: Any) -> str:
    return "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"


@compiles(DatabaseClockMs, "sqlite")
def _sqlite_clock_ms(element: Any, compiler: Any, **kw: Any) -> str:
    return "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"
