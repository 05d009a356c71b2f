"""Keeping the report rollups (:mod:`partnernet.models.rollups`) in step, and rebuilding them.

Money: :func:`apply_conversion_money` is called by the ledger engine inside its transaction
each time it posts a conversion's split (sign +1) and each time it rejects or reverses a
conversion whose split was posted (sign -1). So a conversion is in the money rollups from
its split's posting until it is rejected or reversed; a conversion rejected at creation is
never posted and never counted; a test conversion (``is_test``) never counts. Status changes
that move no split (pending → approved) change nothing here.

Traffic: :func:`apply_traffic_counts` is called by the click flusher
(:func:`partnernet.tracking.buffer.write_records`) with the same hourly deltas it adds to
:class:`~partnernet.models.TrafficRollup`, in the same transaction.

:func:`rebuild_money_rollup` and :func:`rebuild_traffic_rollups` recompute the rollups from
scratch with set-based SQL (``flask reports rebuild-rollup``): for an existing database, after
a bulk load, or to check the incremental path.

Writes are upserts (``INSERT ... ON CONFLICT DO UPDATE`` adding the deltas, PostgreSQL and
SQLite), aggregated per key in Python first and executed table by table in key order, so
that concurrent writers take their row locks in one order and do not deadlock. Rows brought
back to zero by a rejection are kept (they add nothing to any figure).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from sqlalchemy import Integer, and_, case, delete, exists, func, insert, literal, select, text, union_all

from ..extensions import db
from ..models import (
    MONEY_COLUMNS,
    TRAFFIC_COLUMNS,
    CampaignMoneyRollup,
    CampaignTrafficRollup,
    Conversion,
    ConversionSplit,
    DailyMoneyRollup,
    DailyTrafficRollup,
    Link,
    MoneyRollup,
    TrafficRollup,
)
from .services import LIVE_STATUSES, TRACKER_EVENTS, day_start

MONEY_TABLES = (MoneyRollup, DailyMoneyRollup, CampaignMoneyRollup)
TRAFFIC_TABLES = (DailyTrafficRollup, CampaignTrafficRollup)

Deltas = dict[tuple, list[int]]


def hour_of(at: datetime) -> datetime:
    """The start (UTC) of the UTC hour holding the aware datetime ``at``."""
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)



def dialect_insert(model):
    """The dialect's INSERT (with ``on_conflict_do_nothing``/``on_conflict_do_update``) for
    ``model`` (a model or a table): PostgreSQL or SQLite. Raises RuntimeError for another database."""
    name = db.session.get_bind().dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as insert_of_dialect
    elif name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as insert_of_dialect
    else:  # pragma: no cover
        raise RuntimeError(f"unsupported database dialect {name}")
    return insert_of_dialect(model)


_UPSERTS: dict[tuple, object] = {}


def _upsert_statement(model, keys: tuple[str, ...], measures: tuple[str, ...]):
    """``INSERT INTO model's table ... ON CONFLICT (keys) DO UPDATE SET m = m + excluded.m``, a Core
    statement built once per dialect and kept (building ``excluded`` costs about a millisecond)."""
    dialect = db.session.get_bind().dialect.name
    cache_key = (dialect, model.__tablename__, keys, measures)
    stmt = _UPSERTS.get(cache_key)
    if stmt is None:
        table = model.__table__
        ins = dialect_insert(table)
        stmt = ins.on_conflict_do_update(
            index_elements=list(keys), set_={m: table.c[m] + ins.excluded[m] for m in measures}
        )
        _UPSERTS[cache_key] = stmt
    return stmt


def upsert_add(model, keys: tuple[str, ...], measures: tuple[str, ...], deltas: Mapping[tuple, list[int]]) -> None:
    """Add ``deltas`` (``{key tuple: [measure ints]}``, keys in the order of ``keys``) to the
    rollup ``model``: one ``INSERT ... ON CONFLICT (keys) DO UPDATE SET m = m + excluded.m``
    with the rows in key order. Rows whose measures are all 0 are left out. Does not commit."""
    rows = [
        {**dict(zip(keys, key, strict=True)), **dict(zip(measures, values, strict=True))}
        for key, values in sorted(deltas.items())
        if any(values)
    ]
    if rows:
        db.session.execute(_upsert_statement(model, keys, measures), rows)


def _add(deltas: Deltas, key: tuple, values: Iterable[int]) -> None:
    acc = deltas.get(key)
    if acc is None:
        deltas[key] = list(values)
    else:
        for i, v in enumerate(values):
            acc[i] += v


# --------------------------------------------------------------------------- money


def apply_conversion_money(entries: Iterable[tuple[Conversion, list[dict], int]]) -> None:
    """Move the money rollups by the splits of ``entries``: ``(conversion, lines, sign)``.

    ``conversion`` is a :class:`~partnernet.models.Conversion` (``created_at``, ``link_id``,
    ``campaign_id``, ``partner_id``, ``currency``, ``event_key``, ``client_fee_minor``,
    ``is_test`` are read); ``lines`` its split lines, dicts ``{"partner_id": int | None (None =
    the agency), "role": "converter" | "touch" | "recruiter" | "margin", "amount_minor": int}``
    adding up to the client fee; ``sign`` +1 when the split is posted, -1 when the conversion
    is rejected or reversed after its split was posted.

    Per UTC hour of ``created_at``, link and currency: the converter's row gains ``sign`` x
    (1 conversion unless the event is ``click`` or ``impression``, the client fee, the agency
    lines as margin); each partner line adds ``sign`` x its amount to the payout of the row of
    the partner that earned it (CONTRACT §5 ``GET /reports``); ``entries`` moves by ``sign`` for
    the conversion (converter's row) and for each partner line (earner's row). Test conversions
    are skipped.
    The daily and campaign rollups move by the same amounts.

    Raises ValueError for a sign other than +1/-1. Does not commit: the caller's transaction
    (the ledger posting) commits or rolls back the rollups with the split.
    """
    hourly: Deltas = {}
    campaign: Deltas = {}
    for conv, lines, sign in entries:
        if sign not in (1, -1):
            raise ValueError(f"sign must be +1 or -1, not {sign!r}")
        if conv.is_test:
            continue
        hour, cur = hour_of(conv.created_at), conv.currency
        counted = 0 if conv.event_key in TRACKER_EVENTS else 1
        fee = int(conv.client_fee_minor or 0)
        margin = sum(int(line["amount_minor"]) for line in lines if line["partner_id"] is None)
        _add(hourly, (hour, conv.link_id, conv.partner_id, cur), (sign * counted, sign * fee, 0, sign * margin, sign))
        payout = partner_lines = 0
        for line in lines:
            if line["partner_id"] is not None:
                amount = sign * int(line["amount_minor"])
                payout, partner_lines = payout + amount, partner_lines + sign
                _add(hourly, (hour, conv.link_id, int(line["partner_id"]), cur), (0, 0, amount, 0, sign))
        _add(campaign, (hour, conv.campaign_id, cur),
             (sign * counted, sign * fee, payout, sign * margin, sign + partner_lines))
    daily: Deltas = {}
    for (hour, link_id, partner_id, cur), values in hourly.items():
        _add(daily, (day_start(hour), link_id, partner_id, cur), values)
    upsert_add(MoneyRollup, ("hour", "link_id", "partner_id", "currency"), MONEY_COLUMNS, hourly)
    upsert_add(DailyMoneyRollup, ("day", "link_id", "partner_id", "currency"), MONEY_COLUMNS, daily)
    upsert_add(CampaignMoneyRollup, ("hour", "campaign_id", "currency"), MONEY_COLUMNS, campaign)


def _trunc(col, unit: str, dialect: str):
    """SQL truncating the UTC timestamp ``col`` to its UTC ``unit`` (``hour`` or ``day``):
    PostgreSQL ``timestamptz``; SQLite text in the format SQLAlchemy stores datetimes in, so
    that the rows written here and the upserts of Python datetimes meet on one key."""
    if dialect == "postgresql":
        return func.timezone("UTC", func.date_trunc(unit, func.timezone("UTC", col)))
    return func.strftime("%Y-%m-%d %H:00:00.000000" if unit == "hour" else "%Y-%m-%d 00:00:00.000000", col)


def _lock(models) -> None:
    """On PostgreSQL, lock the rollup tables against writers until commit (a rebuild must not
    interleave with incremental upserts); SQLite has one writer at a time anyway."""
    if db.session.get_bind().dialect.name == "postgresql":
        names = ", ".join(m.__tablename__ for m in models)
        db.session.execute(text(f"LOCK TABLE {names} IN SHARE ROW EXCLUSIVE MODE"))


def _refill_coarse(source, key_cols: dict, target, measures: tuple[str, ...], joins=()) -> None:
    """INSERT INTO ``target`` the rows of ``source`` summed by ``key_cols`` (``{target column:
    SQL expression}``), joining ``joins`` (``(model, on)`` pairs)."""
    exprs = list(key_cols.values())
    stmt = select(*exprs, *[func.sum(getattr(source, m)) for m in measures]).select_from(source)
    for model, on in joins:
        stmt = stmt.join(model, on)
    stmt = stmt.group_by(*exprs)
    db.session.execute(insert(target).from_select([*key_cols, *measures], stmt))


def rebuild_money_rollup() -> int:
    """Recompute every money rollup from ``conversions`` and ``conversion_splits`` and commit.

    Counted: conversions with status pending or approved (CONTRACT §5: neither rejected nor
    reversed), not ``is_test``, that have split lines (their split is posted), with the rules
    of :func:`apply_conversion_money`. Set-based: one ``INSERT ... SELECT`` per table, the
    hourly rows first, the daily and campaign rows summed from them. The rollup tables are
    locked (PostgreSQL) so that no split posted meanwhile is lost or counted twice.
    Returns the number of hourly rows written.
    """
    dialect = db.session.get_bind().dialect.name
    _lock(MONEY_TABLES)
    for model in MONEY_TABLES:
        db.session.execute(delete(model))
    cv, s = Conversion, ConversionSplit
    hour = _trunc(cv.created_at, "hour", dialect)
    live = and_(cv.status.in_(LIVE_STATUSES), cv.is_test.is_(False))
    zero = literal(0, Integer)
    is_agency = s.party == "agency"
    conversions = select(
        hour.label("hour"), cv.link_id.label("link_id"), cv.partner_id.label("partner_id"),
        cv.currency.label("currency"),
        case((cv.event_key.in_(TRACKER_EVENTS), 0), else_=1).label("conversions"),
        cv.client_fee_minor.label("revenue_minor"), zero.label("payout_minor"), zero.label("margin_minor"),
        literal(1, Integer).label("entries"),
    ).where(live, exists().where(s.conversion_id == cv.id))
    # partner lines on the earner's row, agency lines (margin) on the converter's
    lines = (
        select(hour, cv.link_id, case((is_agency, cv.partner_id), else_=s.partner_id), cv.currency, zero, zero,
               case((is_agency, 0), else_=s.amount_minor), case((is_agency, s.amount_minor), else_=0),
               case((is_agency, 0), else_=1))
        .select_from(s).join(cv, cv.id == s.conversion_id)
        .where(live)
    )
    u = union_all(conversions, lines).subquery()
    keys = (u.c.hour, u.c.link_id, u.c.partner_id, u.c.currency)
    summed = select(*keys, *[func.sum(u.c[m]) for m in MONEY_COLUMNS]).group_by(*keys)
    db.session.execute(
        insert(MoneyRollup).from_select(["hour", "link_id", "partner_id", "currency", *MONEY_COLUMNS], summed)
    )
    m = MoneyRollup
    _refill_coarse(m, {"day": _trunc(m.hour, "day", dialect), "link_id": m.link_id, "partner_id": m.partner_id,
                       "currency": m.currency}, DailyMoneyRollup, MONEY_COLUMNS)
    _refill_coarse(m, {"hour": m.hour, "campaign_id": Link.campaign_id, "currency": m.currency},
                   CampaignMoneyRollup, MONEY_COLUMNS, joins=[(Link, Link.id == m.link_id)])
    return _count_and_commit(MoneyRollup)


def _count_and_commit(model) -> int:
    """The rows of ``model`` (as this transaction sees them), then commit."""
    written = db.session.scalar(select(func.count()).select_from(model))
    db.session.commit()
    return int(written or 0)


# --------------------------------------------------------------------------- traffic


def apply_traffic_counts(deltas: Mapping[tuple, list[int]], campaign_of: Mapping[int, int]) -> None:
    """Add the hourly traffic ``deltas`` (``{(hour, link_id, sub1): [counts in the order of
    TRAFFIC_COLUMNS]}``, what the flusher adds to ``TrafficRollup``) to the daily and campaign
    traffic rollups; ``campaign_of`` maps every link id to its campaign id. Does not commit."""
    daily: Deltas = {}
    campaign: Deltas = {}
    for (hour, link_id, _sub1), values in deltas.items():
        _add(daily, (day_start(hour), link_id), values)
        _add(campaign, (hour, campaign_of[link_id]), values)
    upsert_add(DailyTrafficRollup, ("day", "link_id"), TRAFFIC_COLUMNS, daily)
    upsert_add(CampaignTrafficRollup, ("hour", "campaign_id"), TRAFFIC_COLUMNS, campaign)


def rebuild_traffic_rollups() -> int:
    """Recompute the daily and campaign traffic rollups from ``traffic_rollups`` and commit
    (set-based; the tables are locked on PostgreSQL meanwhile). Returns the daily rows written."""
    dialect = db.session.get_bind().dialect.name
    _lock(TRAFFIC_TABLES)
    for model in TRAFFIC_TABLES:
        db.session.execute(delete(model))
    r = TrafficRollup
    _refill_coarse(r, {"day": _trunc(r.hour, "day", dialect), "link_id": r.link_id}, DailyTrafficRollup,
                   TRAFFIC_COLUMNS)
    _refill_coarse(r, {"hour": r.hour, "campaign_id": Link.campaign_id}, CampaignTrafficRollup, TRAFFIC_COLUMNS,
                   joins=[(Link, Link.id == r.link_id)])
    return _count_and_commit(DailyTrafficRollup)


def rebuild_rollups() -> dict[str, int]:
    """:func:`rebuild_money_rollup` then :func:`rebuild_traffic_rollups` (each commits).
    Returns ``{"money_rows": n, "traffic_daily_rows": n}``."""
    return {"money_rows": rebuild_money_rollup(), "traffic_daily_rows": rebuild_traffic_rollups()}

