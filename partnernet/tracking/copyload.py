"""Bulk insert of click rows: ``COPY`` into a staging table, then one set-based
``INSERT ... SELECT ... ON CONFLICT DO NOTHING RETURNING`` (PostgreSQL); a plain multi-row
``INSERT ... ON CONFLICT DO NOTHING RETURNING`` elsewhere and for small batches.

Why a staging table: ``COPY`` is PostgreSQL's fastest way in (one stream, no per-row
statement), but it cannot skip rows that conflict; the second statement does, so a batch
written again (a writer killed between its commit and its acknowledgement) inserts nothing.
The staging table is a temporary table of the connection, emptied at commit
(``ON COMMIT DELETE ROWS``), made once per connection.
"""

from __future__ import annotations

from sqlalchemy import text

from ..extensions import db
from ..models import Click
from ..reporting.rollup import dialect_insert

#: Batches at least this big go through COPY (below it the staging round trip costs more).
COPY_MIN_ROWS = 32
COLUMNS = ("click_id", "link_id", "campaign_id", "partner_id", "created_at", "ip", "user_agent", "referer",
           "visitor", "sub1", "sub2", "sub3", "sub4", "sub5", "method", "is_bot", "flag", "is_unique",
           "fallback_reason", "destination")
STAGE = "partnernet_click_stage"


def conflict_columns() -> list[str]:
    """The columns of the clicks' unique index that an insert's ``ON CONFLICT`` names."""
    return list(getattr(Click, "CONFLICT_COLUMNS", ("click_id",)))


def insert_clicks(rows: list[dict]) -> set[str]:
    """Insert click ``rows`` (dicts with :data:`COLUMNS`) in the current transaction, skipping
    click IDs already stored; returns the click IDs actually inserted. Does not commit.
    Raises SQLAlchemy / driver errors."""
    if not rows:
        return set()
    bind = db.session.get_bind()
    if bind.dialect.name != "postgresql" or len(rows) < COPY_MIN_ROWS:
        stmt = (dialect_insert(Click).on_conflict_do_nothing(index_elements=conflict_columns())
                .returning(Click.click_id))
        return set(db.session.scalars(stmt, rows))
    conn = db.session.connection()
    raw = conn.connection.driver_connection  # psycopg 3, in this transaction
    cols = ", ".join(COLUMNS)
    with raw.cursor() as cur:
        cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {STAGE} ON COMMIT DELETE ROWS "
                    f"AS SELECT {cols} FROM clicks WITH NO DATA")
        with cur.copy(f"COPY {STAGE} ({cols}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([row[c] for c in COLUMNS])
    conflict = ", ".join(conflict_columns())
    result = conn.execute(text(
        f"INSERT INTO clicks ({cols}) SELECT {cols} FROM {STAGE} "
        f"ON CONFLICT ({conflict}) DO NOTHING RETURNING click_id"))
    inserted = {r[0] for r in result}
    conn.execute(text(f"DELETE FROM {STAGE}"))  # the same transaction may write another batch
    return inserted
