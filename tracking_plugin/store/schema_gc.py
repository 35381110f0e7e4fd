"""The table garbage collection keeps: one tombstone per run it removed (or is removing).

``prefect-mlops gc`` removes a run in three steps (see :mod:`tracking_plugin.store.sql_gc`):
mark it (``runs.lifecycle_stage = 'gc_pending'`` and a ``pending`` tombstone, one
transaction), delete its files, then delete its rows and set the tombstone ``done`` (one
transaction). A gc killed between the steps leaves a run that reads as gone and that the
next gc finishes. The tombstone (a few dozen bytes) is what lets ``get_run`` say a run was
garbage-collected, and when, instead of only that it does not exist.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from tracking_plugin.store.schema import Base

__all__ = ["GcTombstoneRow"]


class GcTombstoneRow(Base):
    __tablename__ = "gc_tombstones"

    run_uuid: Mapped[str] = mapped_column(String(32), primary_key=True)
    # No foreign key: the experiment may be removed by the same gc.
    experiment_id: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))  # "pending" | "done"
    gc_time: Mapped[int] = mapped_column(BigInteger)
