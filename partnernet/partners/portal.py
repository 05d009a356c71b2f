"""What the partner pages read (issue 3): links with their figures, earnings from the ledger,
the daily chart from the report, a table by link and sub ID from the rollups, conversions with
the partner's own lines (:mod:`.portal_conversions`), payout history. Every query is scoped to one partner; another partner's object
is NotFound (404). Amounts are int minor units with their currency."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from flask import current_app
from markupsafe import Markup, escape
from sqlalchemy import func, select

from ..errors import Forbidden, NotFound
from ..extensions import db
from ..filters import money
from ..ledger.services import partner_earnings
from ..models import (
    Click,
    Conversion,
    ConversionSplit,
    CouponRequest,
    Link,
    Partner,
    PayoutBatch,
    PayoutItem,
    TrafficRollup,
)
from ..reporting.services import conversion_rate, earnings_per_click, report
from .accounts import partner_timezone
from .portal_conversions import ConversionView, OwnLine, conversions_for, get_own_conversion  # noqa: F401

LIVE = ("pending", "approved")
TRACKER_EVENTS = ("click", "impression")
SUB_KEYS = ("sub1", "sub2", "sub3", "sub4", "sub5")


def tracking_url(link_id: int, subs: dict | None = None) -> str:
    """The public tracking URL of a link (``<base>/c/<token>``) with optional sub IDs."""
    token = current_app.extensions["partnernet_link_signer"].dumps(link_id)
    base = current_app.config.get("PARTNERNET_BASE_URL", "").rstrip("/")
    query = {k: v for k, v in (subs or {}).items() if k in SUB_KEYS and v}
    return f"{base}/c/{token}" + (("?" + urlencode(query)) if query else "")


def qr_svg(text: str) -> Markup:
    """An inline SVG QR code of ``text`` (segno), safe to put in a page."""
    import io

    import segno

    buf = io.BytesIO()
    segno.make(text, error="m").save(buf, kind="svg", scale=4, border=2, xmldecl=False, svgns=True,
                                     svgclass="qr", lineclass=None)
    return Markup(buf.getvalue().decode())


def get_own_link(partner_id: int, link_id: int) -> Link:
    """The link ``link_id`` when it is the partner's; NotFound otherwise."""
    link = db.session.get(Link, link_id)
    if link is None or link.partner_id != partner_id:
        raise NotFound(f"no link {link_id}")
    return link


@dataclass
class LinkRow:
    """One link of the links list with its all-time figures."""

    link: Link
    url: str
    currency: str
    clicks: int = 0
    unique_clicks: int = 0
    conversions: int = 0
    earnings_minor: int = 0
    requests: list = field(default_factory=list)  # CouponRequest, newest first

    @property
    def pending_request(self):
        """The link's pending vanity-code request, or None."""
        return next((r for r in self.requests if r.status == "pending"), None)


def links_with_figures(partner_id: int) -> list[LinkRow]:
    """The partner's links, newest first, with clicks (rollups), live conversions (not the
    tracker's click/impression ones) and its earnings on them (its split lines)."""
    links = list(db.session.scalars(select(Link).where(Link.partner_id == partner_id).order_by(Link.id.desc())))
    if not links:
        return []
    ids = [x.id for x in links]
    traffic = {lid: (int(c or 0), int(u or 0)) for lid, c, u in db.session.execute(
        select(TrafficRollup.link_id, func.sum(TrafficRollup.clicks), func.sum(TrafficRollup.unique_clicks))
        .where(TrafficRollup.link_id.in_(ids)).group_by(TrafficRollup.link_id)).all()}
    convs = {lid: int(n) for lid, n in db.session.execute(
        select(Conversion.link_id, func.count()).where(
            Conversion.link_id.in_(ids), Conversion.status.in_(LIVE), Conversion.event_key.notin_(TRACKER_EVENTS))
        .group_by(Conversion.link_id)).all()}
    earn = {lid: int(a or 0) for lid, a in db.session.execute(
        select(Conversion.link_id, func.sum(ConversionSplit.amount_minor))
        .join(Conversion, Conversion.id == ConversionSplit.conversion_id)
        .where(Conversion.link_id.in_(ids), Conversion.status.in_(LIVE), ConversionSplit.partner_id == partner_id)
        .group_by(Conversion.link_id)).all()}
    reqs: dict[int, list[CouponRequest]] = {}
    for r in coupon_requests(partner_id):
        reqs.setdefault(r.link_id, []).append(r)
    out = []
    for x in links:
        c, u = traffic.get(x.id, (0, 0))
        out.append(LinkRow(link=x, url=tracking_url(x.id), currency=x.campaign.currency, clicks=c,
                           unique_clicks=u, conversions=convs.get(x.id, 0), earnings_minor=earn.get(x.id, 0),
                           requests=reqs.get(x.id, [])))
    return out


# --------------------------------------------------------------------------- vanity coupon codes


def coupon_requests(partner_id: int, link_id: int | None = None) -> list[CouponRequest]:
    """The partner's vanity coupon-code requests (issue 6 item 3), newest first, optionally of
    one link: ``status`` pending, approved or rejected, ``note`` the staff's reason."""
    stmt = (select(CouponRequest).where(CouponRequest.partner_id == partner_id)
            .order_by(CouponRequest.created_at.desc(), CouponRequest.id.desc()))
    if link_id is not None:
        stmt = stmt.where(CouponRequest.link_id == link_id)
    return list(db.session.scalars(stmt))


def request_vanity_code(partner_id: int, link_id: int, code: str) -> CouponRequest:
    """An influencer asks for the vanity coupon ``code`` on its link (issue 6 item 3): the
    portal offers it to influencers only (Forbidden 403 ``influencers_only`` otherwise), then
    :func:`partnernet.commission.services.request_vanity_code` applies the rules and commits:
    NotFound (not the partner's link), ValidationError 400 ``bad_coupon_code``, Duplicate 409
    ``duplicate_coupon_code`` (taken, case-insensitively), InvalidState 409 (a request is
    pending on this link)."""
    from ..commission.services import request_vanity_code as _request

    get_own_link(partner_id, link_id)
    partner = db.session.get(Partner, partner_id)
    if partner is None or partner.kind != "influencer":
        raise Forbidden("vanity coupon codes are for influencer partners", code="influencers_only", field="code")
    return _request(partner_id, link_id, (code or "").strip())


# --------------------------------------------------------------------------- recruits


@dataclass
class RecruitRow:
    """A partner recruited by the viewer (``level`` 1: directly; 2: by one of its recruits,
    CONTRACT §4 recruiter override and its second tier)."""

    partner_id: int
    name: str
    kind: str
    status: str
    joined_at: datetime
    level: int
    via: str = ""  # level 2: the name of the recruit who recruited it


def recruits_of(partner_id: int) -> list[RecruitRow]:
    """The partner's recruits (first level) then their recruits (second level), newest first
    within each level. Shows names and statuses only, never contact details."""
    first = list(db.session.scalars(select(Partner).where(Partner.recruiter_id == partner_id, Partner.id != partner_id)
                                    .order_by(Partner.created_at.desc(), Partner.id.desc())))
    out = [RecruitRow(p.id, p.name, p.kind, p.status, p.created_at, 1) for p in first]
    names = {p.id: p.name for p in first}
    if names:
        for p in db.session.scalars(select(Partner).where(Partner.recruiter_id.in_(list(names)),
                                                          Partner.id != partner_id)
                                    .order_by(Partner.created_at.desc(), Partner.id.desc())):
            out.append(RecruitRow(p.id, p.name, p.kind, p.status, p.created_at, 2, via=names[p.recruiter_id]))
    return out


# --------------------------------------------------------------------------- earnings


@dataclass
class Balance:
    """One currency of the partner's earnings (ledger), and for a negative balance the
    reversals that caused it."""

    currency: str
    pending: int
    approved: int
    paid: int
    balance: int
    reversals: list = field(default_factory=list)


def balances(partner_id: int) -> list[Balance]:
    """Pending, approved, paid and balance per currency (:func:`ledger.services.partner_earnings`);
    a negative balance lists the partner's latest reversed conversions in that currency."""
    out = []
    for e in partner_earnings(partner_id):
        b = Balance(e["currency"], e["pending"], e["approved"], e["paid"], e["balance"])
        if b.balance < 0:
            b.reversals = list(db.session.scalars(
                select(Conversion).where(Conversion.partner_id == partner_id, Conversion.status == "reversed",
                                         Conversion.currency == b.currency)
                .order_by(Conversion.reversed_at.desc()).limit(5)))
        out.append(b)
    return out


def local_today(tz: str) -> date:
    """Today's date in zone ``tz``."""
    return datetime.now(UTC).astimezone(ZoneInfo(tz)).date()


@dataclass
class DayPoint:
    """One day of the chart (local date in the partner's zone)."""

    day: date
    clicks: int = 0
    conversions: int = 0
    earnings: dict = field(default_factory=dict)  # currency -> minor units


def daily_series(partner_id: int, days: int = 30, today: date | None = None) -> tuple[list[DayPoint], str]:
    """The last ``days`` local days (today included) in the partner's zone from
    :func:`reporting.services.report` (``group_by="day"``, scoped to the partner: its earnings).
    Returns (points oldest first, the zone name)."""
    tz = partner_timezone(partner_id)
    today = today or local_today(tz)
    start = today - timedelta(days=days - 1)
    points = {start + timedelta(days=i): DayPoint(start + timedelta(days=i)) for i in range(days)}
    for row in report("day", start, today, tz, partner_id=partner_id):
        p = points.get(date.fromisoformat(row.key))
        if p is None:
            continue
        p.clicks += row.clicks
        p.conversions += row.conversions
        if row.currency:
            p.earnings[row.currency] = p.earnings.get(row.currency, 0) + row.payout_minor
    return [points[d] for d in sorted(points)], tz


def chart_svg(points: list[DayPoint], currency: str | None) -> Markup:
    """Server-rendered SVG: clicks as bars, conversions as dots, earnings in ``currency`` as a
    line, each scaled to its own maximum; day labels every 5 days; a <title> per day."""
    w, h, pad_l, pad_b, pad_t = 720, 220, 8, 22, 10
    n = max(len(points), 1)
    step = (w - pad_l * 2) / n
    ch = h - pad_b - pad_t
    max_c = max([p.clicks for p in points] + [1])
    max_v = max([p.conversions for p in points] + [1])
    max_e = max([p.earnings.get(currency, 0) for p in points] + [1]) if currency else 1
    parts = [(f'<svg class="pn-chart" viewBox="0 0 {w} {h}" role="img" preserveAspectRatio="none" '
             f'aria-label="Clicks, conversions and earnings per day">')]
    line = []
    for i, p in enumerate(points):
        x = pad_l + i * step
        bh = ch * p.clicks / max_c
        tip = f"{p.day.isoformat()}: {p.clicks} clicks, {p.conversions} conversions"
        if currency:
            tip += f", {money(p.earnings.get(currency, 0), currency)}"
        parts.append(f'<g><title>{escape(tip)}</title><rect class="bar" x="{x + step * .15:.1f}" '
                     f'y="{pad_t + ch - bh:.1f}" width="{step * .7:.1f}" height="{bh:.1f}"/>')
        if p.conversions:
            cy = pad_t + ch - ch * p.conversions / max_v
            parts.append(f'<circle class="conv" cx="{x + step / 2:.1f}" cy="{cy:.1f}" r="4"/>')
        parts.append("</g>")
        if currency:
            line.append(f"{x + step / 2:.1f},{pad_t + ch - ch * p.earnings.get(currency, 0) / max_e:.1f}")
        if i % 5 == 0 or i == len(points) - 1:
            parts.append(f'<text x="{x + step / 2:.1f}" y="{h - 6}" text-anchor="middle">'
                         f'{p.day.strftime("%m-%d")}</text>')
    if line:
        parts.append(f'<polyline class="earn" fill="none" points="{" ".join(line)}"/>')
    parts.append(f'<line class="axis" x1="{pad_l}" y1="{pad_t + ch}" x2="{w - pad_l}" y2="{pad_t + ch}"/></svg>')
    return Markup("".join(parts))


@dataclass
class SubRow:
    """One (link, sub1) row of the table by link and sub ID."""

    link_id: int
    campaign: str
    sub1: str
    currency: str
    clicks: int = 0
    unique_clicks: int = 0
    conversions: int = 0
    earnings_minor: int = 0

    @property
    def cr(self) -> str:
        """Conversions / unique clicks, percent with 2 decimals (reporting rounding)."""
        return conversion_rate(self.conversions, self.unique_clicks)

    @property
    def epc_minor(self) -> int:
        """Earnings per click in minor units (reporting rounding)."""
        return earnings_per_click(self.earnings_minor, self.clicks)


def by_link_and_sub(partner_id: int) -> list[SubRow]:
    """All-time figures per (link, sub1) of the partner's links: traffic from the rollups,
    live conversions and the partner's own split amounts by the click's sub1 (``""`` without)."""
    rows: dict[tuple[int, str], SubRow] = {}
    links = {x.id: x for x in db.session.scalars(select(Link).where(Link.partner_id == partner_id))}

    def row(lid, sub) -> SubRow:
        k = (lid, sub or "")
        if k not in rows:
            x = links[lid]
            rows[k] = SubRow(lid, x.campaign.name, k[1], x.campaign.currency)
        return rows[k]

    if not links:
        return []
    for lid, sub, c, u in db.session.execute(
            select(TrafficRollup.link_id, TrafficRollup.sub1, func.sum(TrafficRollup.clicks),
                   func.sum(TrafficRollup.unique_clicks))
            .where(TrafficRollup.link_id.in_(list(links))).group_by(TrafficRollup.link_id, TrafficRollup.sub1)):
        r = row(lid, sub)
        r.clicks += int(c or 0)
        r.unique_clicks += int(u or 0)
    base = (select(Conversion.link_id, Click.sub1, func.count(func.distinct(Conversion.id)))
            .outerjoin(Click, Click.click_id == Conversion.click_id)
            .where(Conversion.link_id.in_(list(links)), Conversion.status.in_(LIVE),
                   Conversion.event_key.notin_(TRACKER_EVENTS))
            .group_by(Conversion.link_id, Click.sub1))
    for lid, sub, n in db.session.execute(base):
        row(lid, sub).conversions += int(n)
    for lid, sub, amt in db.session.execute(
            select(Conversion.link_id, Click.sub1, func.sum(ConversionSplit.amount_minor))
            .join(Conversion, Conversion.id == ConversionSplit.conversion_id)
            .outerjoin(Click, Click.click_id == Conversion.click_id)
            .where(Conversion.link_id.in_(list(links)), Conversion.status.in_(LIVE),
                   ConversionSplit.partner_id == partner_id)
            .group_by(Conversion.link_id, Click.sub1)):
        row(lid, sub).earnings_minor += int(amt or 0)
    return [rows[k] for k in sorted(rows, key=lambda k: (-k[0], k[1]))]


def payout_history(partner_id: int) -> list[tuple[PayoutItem, PayoutBatch]]:
    """The partner's payout items in batches that are approved or paid, newest first."""
    return list(db.session.execute(
        select(PayoutItem, PayoutBatch).join(PayoutBatch, PayoutBatch.id == PayoutItem.batch_id)
        .where(PayoutItem.partner_id == partner_id, PayoutBatch.status.in_(("approved", "paid")))
        .order_by(PayoutBatch.id.desc())).all())

