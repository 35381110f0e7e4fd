"""PostgreSQL bulk paths of the SQL store (issue 19), kept apart from the dialect-neutral
statements so each stays small.

- :func:`copy_metrics`: a large batch of metric points goes in with ``COPY ... FROM STDIN
  (FORMAT BINARY)`` on the transaction's psycopg cursor instead of ``executemany``. Same
  table, same transaction, same type checks (the server applies them to COPY as to
  INSERT), so all of the batch is written or none of it; it only skips the per-row
  statement round of an INSERT (about 4x faster for 100,000 points). ``metrics`` has no
  foreign key on PostgreSQL (migration 0011): the caller has checked and locked the run
  (``sql_tracking._RUN_STAGE_LOCKED``).
(A search page's ``run_uuid = ANY(:run_ids)`` lookups are Core statements in
``_sql_search``.)
"""

from __future__ import annotations

from typing import Any, Sequence

__all__: list[str] = []  # private to the SQL store

# Below this many points an executemany (pipelined by psycopg) is as fast as COPY.
COPY_MIN_POINTS = 200

_METRIC_COPY = "COPY metrics (run_uuid, key, value, is_nan, timestamp, step) FROM STDIN (FORMAT BINARY)"
_METRIC_TYPES = ["varchar", "varchar", "float8", "bool", "int8", "int8"]


def copy_metrics(cursor: Any, rows: Sequence[tuple[str, str, float, bool, int, int]]) -> None:
    """Append validated metric rows (``_METRIC_COLUMNS`` order) with binary COPY."""
    with cursor.copy(_METRIC_COPY) as copy:
        copy.set_types(_METRIC_TYPES)
        write = copy.write_row
        for row in rows:
            write(row)

