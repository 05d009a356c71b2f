"""Monthly partitions of ``clicks`` and the retention of raw clicks (CONTRACT v2 §6 "Periodic work
runs by itself": both are periodic tasks of :data:`partnernet.schedule.tasks.TASKS`).

On PostgreSQL ``clicks`` is ``PARTITION BY RANGE (created_at)``: one partition a UTC month,
``clicks_yYYYYmMM`` holding ``[month start, next month start)``, and ``clicks_default`` taking
any click whose month has no partition yet, so an insert never fails when the schedule is late.
:func:`ensure_partitions` makes this month's and the next months' partitions ahead of time;
:func:`drop_old_partitions` drops a whole month once every row in it is older than
``PARTNERNET_CLICK_RETENTION_DAYS`` (0, the default, keeps clicks for ever).

On SQLite (and on a PostgreSQL ``clicks`` that is not partitioned) the table is a plain one:
there is nothing to make, and retention deletes old rows in chunks of :data:`CHUNK`, each its
own transaction. Rollups (``traffic_rollups`` and the daily ones) are never touched: reports
read them, not raw clicks, so they stay complete after raw clicks go.

Every DDL statement runs with ``lock_timeout`` :data:`LOCK_TIMEOUT`: a partition change waits
for an ``ACCESS EXCLUSIVE`` lock, and a waiting request would hold up every click insert
behind it. A run that times out fails (the run row says so) and is taken again later.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from flask import current_app
from sqlalchemy import delete, select, text

from ..clock import utcnow
from ..extensions import db
from ..models.tracking import (DEFAULT_PARTITION, PARTITION_MONTHS_AHEAD, Click, add_months, month_start,
                               partition_ddl, partition_name)

CHUNK = 5000
LOCK_TIMEOUT = "5s"
_MONTHLY = re.compile(r"^clicks_y(\d{4})m(\d{2})$")


@dataclass
class Dropped:
    """What :func:`drop_old_partitions` removed: ``partitions`` (names of the dropped monthly
    partitions, PostgreSQL) and ``rows`` (rows deleted one by one: SQLite, or old rows left in
    the default partition)."""

    partitions: list[str] = field(default_factory=list)
    rows: int = 0


def is_partitioned() -> bool:
    """True when the database is PostgreSQL and ``clicks`` is a partitioned table."""
    if db.session.get_bind().dialect.name != "postgresql":
        return False
    return bool(db.session.scalar(text(
        "SELECT count(*) FROM pg_partitioned_table WHERE partrelid = to_regclass('clicks')")))


def partitions() -> dict[str, datetime | None]:
    """The partitions of ``clicks`` (PostgreSQL): ``{name: month start}``, ``None`` for the
    default partition and for any partition not named ``clicks_yYYYYmMM``. Empty on SQLite."""
    if not is_partitioned():
        return {}
    names = db.session.scalars(text(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = to_regclass('clicks') ORDER BY c.relname"))
    out: dict[str, datetime | None] = {}
    for name in names:
        found = _MONTHLY.match(name)
        out[name] = datetime(int(found[1]), int(found[2]), 1, tzinfo=UTC) if found else None
    return out


def _default_partition() -> str | None:
    """The name of the default partition of ``clicks``, or None when it has none."""
    return db.session.scalar(text(
        "SELECT partdefid::regclass::text FROM pg_partitioned_table "
        "WHERE partrelid = to_regclass('clicks') AND partdefid <> 0"))


def _create_month(start: datetime) -> None:
    """Create the partition of ``start``'s month in the session's transaction (PostgreSQL).
    Rows of that month already in the default partition move into it: the default partition is
    locked, the new table made and filled from it, then attached (an attach would fail while
    the default partition holds rows of the range)."""
    name, end = partition_name(start), add_months(start, 1)
    db.session.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
    default = _default_partition()
    if default is None:
        db.session.execute(text(partition_ddl(start)))
        return
    db.session.execute(text(f"LOCK TABLE {default} IN ACCESS EXCLUSIVE MODE"))
    cols = ", ".join(f'"{c.name}"' for c in Click.__table__.columns)
    db.session.execute(text(f"CREATE TABLE {name} (LIKE clicks)"))
    db.session.execute(text(
        f"WITH moved AS (DELETE FROM {default} WHERE created_at >= :lo AND created_at < :hi "
        f"RETURNING {cols}) INSERT INTO {name} ({cols}) SELECT {cols} FROM moved"), {"lo": start, "hi": end})
    db.session.execute(text(f"ALTER TABLE clicks ATTACH PARTITION {name} "
                            f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"))


def ensure_partitions(months_ahead: int = PARTITION_MONTHS_AHEAD, now: datetime | None = None) -> list[str]:
    """Make the default partition and the partitions of ``now``'s month (default: now, aware UTC)
    and the ``months_ahead`` months after it where missing, each in its own transaction
    (PostgreSQL; a no-op returning ``[]`` on SQLite or an unpartitioned ``clicks``). Rows of
    those months waiting in the default partition move into their partition, so this never
    fails on them. Returns the names made, e.g. ``["clicks_y2027m03"]``. Raises the database
    error (rolled back) when a lock is not had within :data:`LOCK_TIMEOUT`."""
    if not is_partitioned():
        return []
    made: list[str] = []
    if _default_partition() is None:
        db.session.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
        db.session.execute(text(f"CREATE TABLE {DEFAULT_PARTITION} PARTITION OF clicks DEFAULT"))
        db.session.commit()
        made.append(DEFAULT_PARTITION)
    have = partitions()
    start = month_start(now or utcnow())
    for ahead in range(max(0, months_ahead) + 1):
        month = add_months(start, ahead)
        if partition_name(month) in have:
            continue
        try:
            _create_month(month)
            db.session.commit()
        except Exception:
            db.session.rollback()
            raise
        made.append(partition_name(month))
    db.session.commit()
    return made


def _delete_older(cut: datetime, table_name: str | None = None) -> int:
    """Delete the clicks created before ``cut`` in chunks of :data:`CHUNK`, committing each;
    only from partition ``table_name`` (by ``ctid``, PostgreSQL) when given. Returns the count."""
    total = 0
    while True:
        if table_name is None:
            ids = db.session.scalars(select(Click.id).where(Click.created_at < cut).limit(CHUNK)).all()
            if ids:
                db.session.execute(delete(Click).where(Click.id.in_(ids)).execution_options(
                    synchronize_session=False))
            count = len(ids)
        else:
            count = db.session.execute(text(
                f"DELETE FROM {table_name} WHERE ctid IN "
                f"(SELECT ctid FROM {table_name} WHERE created_at < :cut LIMIT {CHUNK})"),
                {"cut": cut}).rowcount
        db.session.commit()
        total += count
        if count < CHUNK:
            return total


def drop_old_partitions(keep_days: int, now: datetime | None = None) -> Dropped:
    """Remove raw clicks older than ``keep_days`` days before ``now`` (default: now, aware UTC);
    ``keep_days`` 0 or less keeps everything. PostgreSQL (partitioned): every monthly partition
    whose range ends at or before the cut-off is dropped whole (each in its own transaction),
    and rows older than the cut-off left in the default partition are deleted in chunks.
    SQLite: rows older than the cut-off are deleted in chunks. Rollups are never touched.
    Returns :class:`Dropped`. Raises the database error (rolled back) on a lock timeout."""
    out = Dropped()
    if keep_days <= 0:
        return out
    cut = (now or utcnow()) - timedelta(days=keep_days)
    if not is_partitioned():
        out.rows = _delete_older(cut)
        return out
    for name, start in partitions().items():
        if start is None or add_months(start, 1) > cut:
            continue
        try:
            db.session.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
            db.session.execute(text(f"DROP TABLE {name}"))
            db.session.commit()
        except Exception:
            db.session.rollback()
            raise
        out.partitions.append(name)
    default = _default_partition()
    if default is not None:
        out.rows = _delete_older(cut, default)
    return out


def partitions_task(now: datetime) -> str:
    """Periodic task: :func:`ensure_partitions` as of ``now``. Returns a one-line summary."""
    if not is_partitioned():
        return "clicks not partitioned (SQLite): nothing to do"
    made = ensure_partitions(now=now)
    return f"made {', '.join(made)}" if made else "all partitions present"


def retention_task(now: datetime) -> str:
    """Periodic task: :func:`drop_old_partitions` with ``PARTNERNET_CLICK_RETENTION_DAYS`` (0, the
    default, keeps raw clicks for ever). Returns a one-line summary."""
    days = max(0, int(current_app.config.get("PARTNERNET_CLICK_RETENTION_DAYS") or 0))
    if not days:
        return "click retention off (PARTNERNET_CLICK_RETENTION_DAYS=0)"
    dropped = drop_old_partitions(days, now=now)
    names = f" ({', '.join(dropped.partitions)})" if dropped.partitions else ""
    return (f"clicks older than {days} days: dropped {len(dropped.partitions)} partition(s){names}, "
            f"deleted {dropped.rows} row(s)")
