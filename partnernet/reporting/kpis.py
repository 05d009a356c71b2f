"""The extra report figures of the web reports (issue 5), on top of the CONTRACT §5 report.

:func:`detailed_report` takes the rows of :func:`partnernet.reporting.services.report` (same
scope, keys, time-zone rules; the JSON API shape is untouched) and adds, from the same live
conversions (neither rejected nor reversed, not tests, on their creation date in the viewer's
zone): the count per event and the sale amounts. Definitions, all money in int minor units,
divisions rounded half up, ``None`` where the divisor is 0:

- ``cost`` = ``revenue`` (client fees; for a partner's scope, its own earnings);
- effective CPC ``ecpc`` = cost / clicks (every recorded click);
- ``cpl`` = cost / ``lead`` conversions; ``cps`` = cost / ``sale`` conversions;
- ``cpa`` = cost / conversions (every event but the tracker's ``click`` and ``impression``);
- ``cpm`` = cost × 1000 / impressions (non-bot impressions);
- ``roas`` = sale amount / cost, a ratio string with 2 decimals (``"4.33"``);
- ``cr`` and ``epc`` as in CONTRACT §5.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import func, literal_column, select

from ..extensions import db
from ..models import Campaign, Click, Conversion, Link
from . import services
from .services import ReportRow

SALE_EVENT = "sale"
LEAD_EVENT = "lead"


def _div(num: int, den: int, scale: int = 1) -> int | None:
    if den <= 0:
        return None
    return int((Decimal(num) * scale / Decimal(den)).quantize(Decimal(1), rounding=ROUND_HALF_UP))


@dataclass
class KpiRow:
    """A :class:`ReportRow` with the per-event counts and sale amount, and the derived KPIs."""

    row: ReportRow
    events: dict[str, int] = field(default_factory=dict)
    sale_amount_minor: int = 0

    def __getattr__(self, name):  # key, currency, clicks, revenue_minor ... of the base row
        return getattr(self.row, name)

    @property
    def cost_minor(self) -> int:
        """What was billed: the row's revenue (client fees)."""
        return self.row.revenue_minor

    @property
    def ecpc_minor(self) -> int | None:
        """Effective CPC: cost / clicks."""
        return _div(self.cost_minor, self.row.clicks)

    @property
    def cpl_minor(self) -> int | None:
        """Cost per lead: cost / ``lead`` conversions."""
        return _div(self.cost_minor, self.events.get(LEAD_EVENT, 0))

    @property
    def cps_minor(self) -> int | None:
        """Cost per sale: cost / ``sale`` conversions."""
        return _div(self.cost_minor, self.events.get(SALE_EVENT, 0))

    @property
    def cpa_minor(self) -> int | None:
        """Cost per action: cost / conversions (tracker events left out)."""
        return _div(self.cost_minor, self.row.conversions)

    @property
    def cpm_minor(self) -> int | None:
        """Cost per thousand impressions: cost × 1000 / impressions."""
        return _div(self.cost_minor, self.row.impressions, 1000)

    @property
    def roas(self) -> str | None:
        """Return on ad spend: sale amount / cost, 2 decimals, half up; None without cost."""
        if self.cost_minor <= 0:
            return None
        value = Decimal(self.sale_amount_minor) / Decimal(self.cost_minor)
        return str(value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def detailed_report(
    group_by: str,
    date_from: date,
    date_to: date,
    tz: str = "UTC",
    *,
    partner_id: int | None = None,
    client_id: int | None = None,
) -> list[KpiRow]:
    """The CONTRACT §5 report rows with per-event counts, sale amounts and the KPIs above, in the
    same order. Raises ValidationError as :func:`partnernet.reporting.services.report`."""
    rows = services.report(group_by, date_from, date_to, tz, partner_id=partner_id, client_id=client_id)
    out = {(r.key, r.currency): KpiRow(r) for r in rows}
    tzinfo = services.zone(tz)
    start = services.local_midnight_utc(date_from, tzinfo)
    end = services.local_midnight_utc(date_to + timedelta(days=1), tzinfo)
    segments = services.offset_segments(start, end, tzinfo)
    dialect = db.session.get_bind().dialect.name
    cv, lk, ck = Conversion, Link, Click
    dims = {
        "day": lambda: services.local_date_expr(cv.created_at, segments, dialect),
        "campaign": lambda: cv.campaign_id,
        "partner": lambda: cv.partner_id,
        "channel": lambda: func.coalesce(lk.channel, ""),
        "sub1": lambda: func.coalesce(ck.sub1, ""),
    }
    if group_by not in dims:
        return list(out.values())
    dim = dims[group_by]().label("k")
    stmt = (
        select(dim, cv.currency, cv.event_key, func.count(), func.coalesce(func.sum(cv.amount_minor), 0))
        .select_from(cv)
        .join(lk, lk.id == cv.link_id)
        .where(cv.status.in_(services.LIVE_STATUSES), cv.created_at >= start, cv.created_at < end)
    )
    if hasattr(cv, "is_test"):
        stmt = stmt.where(cv.is_test.is_(False))
    if group_by == "sub1":
        stmt = stmt.outerjoin(ck, ck.click_id == cv.click_id)
    if partner_id is not None:
        stmt = stmt.where(cv.partner_id == partner_id)
    if client_id is not None:
        stmt = stmt.where(cv.campaign_id.in_(select(Campaign.id).where(Campaign.client_id == client_id)))
    stmt = stmt.group_by(literal_column("k"), cv.currency, cv.event_key)
    for key, currency, event, n, amount in db.session.execute(stmt):
        k = ("" if key is None else key.isoformat() if isinstance(key, date) else str(key), currency)
        row = out.get(k)
        if row is None:
            continue
        row.events[event] = row.events.get(event, 0) + int(n)
        row.sale_amount_minor += int(amount or 0)
    return list(out.values())


def totals(rows: list[KpiRow]) -> list[KpiRow]:
    """One total row per currency (key ``"total"``) summing ``rows``."""
    acc: dict[str, KpiRow] = {}
    for r in rows:
        t = acc.setdefault(r.currency, KpiRow(ReportRow("total", r.currency)))
        for name in ("clicks", "unique_clicks", "impressions", "conversions", "revenue_minor", "payout_minor",
                     "margin_minor"):
            setattr(t.row, name, getattr(t.row, name) + getattr(r.row, name))
        for ev, n in r.events.items():
            t.events[ev] = t.events.get(ev, 0) + n
        t.sale_amount_minor += r.sale_amount_minor
    return [acc[c] for c in sorted(acc)]
