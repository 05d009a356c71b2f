"""The performance report behind ``GET /api/v1/reports`` (CONTRACT §5).

Traffic (clicks, unique clicks, impressions) comes from the hourly
:class:`~partnernet.models.TrafficRollup` rows, never from raw clicks
(ARCHITECTURE: reports read the rollups). Money comes from conversions that are
neither rejected nor reversed, falling on their creation date in the report's
time zone: ``revenue`` = their client fees, ``payout`` = partner split lines of
every role (converter, touch, recruiter), ``margin`` = agency split lines.
``conversions`` counts those same conversions less the tracker's ``click`` and
``impression`` ones. Amounts are int minor units; ``cr`` and ``epc`` are computed
with :class:`~decimal.Decimal`, rounded half up.

Rollups (issue 7 item 4: the staff report over 30 days in under 200 ms). For
``group_by`` day, campaign, partner and channel, :func:`report` reads the coarse
rollups of :mod:`partnernet.models.rollups` instead of every conversion and split
line and every link-hour of traffic:

- traffic: staff and client reports by day or campaign read the per-campaign
  hourly rows; by partner or channel the per-link daily rows of the whole UTC days
  in the range plus the link-level hourly rows of the hours at its two ends. These
  are sums of the same hourly buckets, so the figures are those of the link-level
  hourly rows in every zone. A partner's own report reads its links' hourly rows.
- money: the same layout over the money rollups (hourly per link and partner,
  daily per link and partner, hourly per campaign; a partner's own report reads
  its own hourly rows), used only when that is exact: the range starts and ends on
  whole UTC hours and, by day, every offset of the zone in the range is whole
  hours (UTC, America/New_York, Europe/Paris ...). Otherwise (Asia/Kolkata,
  Australia/Adelaide ...) and for sub1, coupon and number, the conversions and
  split lines are read as before.

**Semantic change with the money rollups:** a conversion counts once its split is
posted, not as soon as it is recorded. A pending conversion whose split job has not
run yet (normally under a second after the postback) is in no figure yet; it enters
with its split and leaves when it is rejected or reversed. ``flask drain`` waits for
the split jobs, so the replay drains before it compares. ``use_rollups=False`` reads
conversions and split lines as before (tests compare the two paths).

Time zones: a day runs from local midnight to local midnight (DST included).
Python's :mod:`zoneinfo` decides the offsets: the SQL adds the offset in force
at each timestamp (a short CASE over the zone's transitions in the range, see
:func:`offset_segments`), so both backends agree and no database time-zone table
is used. A report covers at most :data:`MAX_DAYS` days.
Conversions carry exact timestamps, so they fall on the exact local date.
Rollups are hourly UTC buckets: an hour counts on the local date of its start.
With a zone whose offset is a whole number of hours this is exact; with a
non-whole-hour offset (``Asia/Kolkata`` +05:30, ``Australia/Adelaide``,
``Asia/Kathmandu`` ...) the hour that straddles local midnight counts wholly on
the earlier day, so traffic near a day boundary may shift by up to that part of
an hour (a documented limitation; money figures stay exact).

Scope: ``partner_id`` limits the report to that partner's own rows: traffic of
its links, conversions it converted, and its own split lines (as converter,
touch or recruiter); for a partner ``revenue`` is its own amounts (what the
network paid it), equal to ``payout``, and ``margin`` is 0: the client fee and the
agency's figures are not the partner's to see (CONTRACT v2 §5). By ``sub1``,
``coupon`` and ``number`` a partner's rows carry only its own sub IDs and codes: its
lines as a touch or a recruiter on another partner's conversion count under ``""``
(:data:`CONVERTER_KEYS`). ``client_id`` limits it to that client's
campaigns (all figures).

Keys per ``group_by``: ``day`` → ``YYYY-MM-DD``; ``campaign`` → the campaign id;
``partner`` → the partner id (traffic by the link's partner, conversions and
revenue by the converter, partner split lines by the partner that earned them,
agency lines by the converter); ``channel`` → the link's channel (``""`` for
none); ``sub1`` → the click's sub1 (``""`` for none, and for conversions without
a click, such as coupon and phone conversions); ``coupon`` → the link's coupon code
for conversions without a click (matched by coupon), ``""`` for everything else
(traffic included); ``number`` → likewise the link's tracking number (calls). A
conversion without a click on a link that has both a coupon and a number counts
under its coupon in the one report and under its number in the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import and_, case, func, literal, literal_column, or_, select

from ..errors import ValidationError
from ..extensions import db
from ..models import (
    MONEY_COLUMNS,
    Campaign,
    CampaignMoneyRollup,
    CampaignTrafficRollup,
    Click,
    Conversion,
    ConversionSplit,
    DailyMoneyRollup,
    DailyTrafficRollup,
    Link,
    MoneyRollup,
    TrafficRollup,
)
# Moved by use case; importable from here as before.
from .conversions import conversions_query, get_conversion  # noqa: F401
from .zones import local_date_expr, local_midnight_utc, offset_segments, zone  # noqa: F401

GROUP_BYS = ("day", "campaign", "partner", "channel", "sub1", "coupon", "number")
#: Groupings the coarse rollups answer (:mod:`partnernet.models.rollups`).
ROLLUP_GROUP_BYS = ("day", "campaign", "partner", "channel")
#: Conversions counted and summed in reports (CONTRACT §5: neither rejected nor reversed).
LIVE_STATUSES = ("pending", "approved")
#: Events billed by the tracker: in money figures, not in the ``conversions`` count.
TRACKER_EVENTS = ("click", "impression")
#: Keys that come from the converter's click or link: a partner sees them only on its own conversions.
CONVERTER_KEYS = ("sub1", "coupon", "number")
#: The longest report range, in days (``to - from + 1``).
MAX_DAYS = 3660


@dataclass
class ReportRow:
    """One report row: a key and a currency with counts and int minor-unit amounts."""

    key: str
    currency: str
    clicks: int = 0
    unique_clicks: int = 0
    impressions: int = 0
    conversions: int = 0
    revenue_minor: int = 0
    payout_minor: int = 0
    margin_minor: int = 0

    @property
    def cr(self) -> str:
        """Conversion rate: conversions / unique clicks as a percent string with 2 decimals,
        rounded half up; ``"0.00"`` with no unique click (CONTRACT §5)."""
        return conversion_rate(self.conversions, self.unique_clicks)

    @property
    def epc_minor(self) -> int:
        """Earnings per click: payout / clicks in minor units, rounded half up (0 with no click)."""
        return earnings_per_click(self.payout_minor, self.clicks)


def conversion_rate(conversions: int, unique_clicks: int) -> str:
    """``conversions / unique_clicks × 100`` with 2 decimals, half up; ``"0.00"`` when no unique click."""
    if unique_clicks <= 0:
        return "0.00"
    value = Decimal(conversions) * 100 / Decimal(unique_clicks)
    return str(value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def earnings_per_click(payout_minor: int, clicks: int) -> int:
    """``payout_minor / clicks`` rounded half up to a whole minor unit; 0 when there is no click."""
    if clicks <= 0:
        return 0
    return int((Decimal(payout_minor) / Decimal(clicks)).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def report(
    group_by: str,
    date_from: date,
    date_to: date,
    tz: str = "UTC",
    *,
    partner_id: int | None = None,
    client_id: int | None = None,
    use_rollups: bool = True,
) -> list[ReportRow]:
    """The CONTRACT §5 report: one :class:`ReportRow` per key and currency, ordered by key then
    currency (campaign and partner keys numerically). ``date_from``/``date_to`` are local dates
    in ``tz``, both inclusive. ``partner_id`` / ``client_id`` scope it (see the module notes).
    ``use_rollups`` (default True): read the coarse rollups where they are exact (module notes);
    False reads every conversion and split line.

    Raises ValidationError: ``bad_group_by``, ``unknown_timezone``, ``bad_range`` (``to``
    before ``from``, more than :data:`MAX_DAYS` days, or a date whose local midnight or next
    day cannot be represented, such as ``to=9999-12-31``).
    """
    if group_by not in GROUP_BYS:
        raise ValidationError(
            f"group_by must be one of {', '.join(GROUP_BYS)}", code="bad_group_by", field="group_by"
        )
    tzinfo = zone(tz)
    if date_to < date_from:
        raise ValidationError("to is before from", code="bad_range", field="to")
    ndays = (date_to - date_from).days + 1
    if ndays > MAX_DAYS:
        raise ValidationError(f"a report covers at most {MAX_DAYS} days", code="bad_range", field="to")
    try:  # dates at the ends of the calendar (9999-12-31, 0001-01-01) have no next day or UTC time
        start, end = (
            local_midnight_utc(date_from, tzinfo),
            local_midnight_utc(date_to + timedelta(days=1), tzinfo),
        )
        segments = offset_segments(start, end, tzinfo)
    except (OverflowError, ValueError, OSError):
        raise ValidationError("the dates are outside the range a report can cover", code="bad_range",
                              field="to") from None
    bounds = [start, end]
    dialect = db.session.get_bind().dialect.name

    rows: dict[tuple[str, str], ReportRow] = {}

    def row(key, currency) -> ReportRow:
        k = ("" if key is None else key.isoformat() if isinstance(key, date) else str(key), currency)
        if k not in rows:
            rows[k] = ReportRow(k[0], currency)
        return rows[k]

    def day_of(col):
        return local_date_expr(col, segments, dialect)

    rollups = use_rollups and group_by in ROLLUP_GROUP_BYS
    scope = {"partner_id": partner_id, "client_id": client_id, "day_of": day_of}

    # Traffic, from the hourly rollups (or the coarser ones of the same hours: always exact).
    for src, col, ranges in _traffic_plan(group_by, start, end, rollups and partner_id is None):
        for key, currency, clicks, uniques, impressions in _rollup_rows(
            src, col, ranges, ("clicks", "unique_clicks", "impressions"), group_by, **scope
        ):
            x = row(key, currency)
            x.clicks += int(clicks or 0)
            x.unique_clicks += int(uniques or 0)
            x.impressions += int(impressions or 0)

    # Money, from the money rollups when their hours fit the report's days.
    if rollups and _hours_fit(group_by, segments, end):
        for src, col, ranges in _money_plan(group_by, start, end, partner_id is None):
            for key, currency, count, fees, partner_amounts, agency, entries in _rollup_rows(
                src, col, ranges, MONEY_COLUMNS, group_by, **scope
            ):
                if not entries:  # rows emptied by rejections: no conversion or line of this key
                    continue
                x = row(key, currency)
                x.conversions += int(count or 0)
                x.payout_minor += int(partner_amounts or 0)
                if partner_id is None:
                    x.revenue_minor += int(fees or 0)
                    x.margin_minor += int(agency or 0)
                else:  # the partner's own rows: its amounts are its revenue (see the module notes)
                    x.revenue_minor += int(partner_amounts or 0)
    else:
        _exact_money(group_by, bounds, day_of, row, partner_id=partner_id, client_id=client_id)

    numeric = group_by in ("campaign", "partner")

    def order(x: ReportRow):
        return (int(x.key) if numeric and x.key.isdigit() else 0, x.key, x.currency)

    return sorted(rows.values(), key=order)


def _ceil_hour(at: datetime) -> datetime:
    floor = at.replace(minute=0, second=0, microsecond=0)
    return floor if floor == at else floor + timedelta(hours=1)


def _whole_hour(at: datetime) -> bool:
    return int(at.timestamp()) % 3600 == 0 and at.microsecond == 0


def _hours_fit(group_by: str, segments: list[tuple[datetime, int]], end: datetime) -> bool:
    """True when hourly UTC buckets give the exact money figures of the report: its ends are
    whole UTC hours, and for ``group_by=day`` every offset of the zone in the range is a whole
    number of hours and changes on a whole hour (so every hour falls on one local date)."""
    if not (_whole_hour(segments[0][0]) and _whole_hour(end)):
        return False
    return group_by != "day" or all(_whole_hour(at) and offset % 3600 == 0 for at, offset in segments)


def _days_and_edges(lo: datetime, hi: datetime):
    """Split the whole-hour UTC range ``[lo, hi)`` into whole UTC days ``(first, end)`` (None
    when there is none) and the hour ranges before and after them."""
    first = day_start(lo) if day_start(lo) == lo else day_start(lo) + timedelta(days=1)
    last = day_start(hi)
    if first >= last:
        return None, [(lo, hi)]
    return (first, last), [(a, b) for a, b in ((lo, first), (last, hi)) if a < b]


def day_start(at: datetime) -> datetime:
    """00:00 UTC of the UTC day holding the aware datetime ``at``."""
    return at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _plan(hourly, daily, by_campaign, group_by: str, lo: datetime, hi: datetime, coarse: bool):
    """Which rollup to read for ``[lo, hi)``: ``[(model, time column, [(from, to), ...]), ...]``.
    ``coarse`` (staff and client reports by day, campaign, partner or channel): by day and by
    campaign the per-campaign hourly rows; by partner and channel the daily rows of the whole
    UTC days and the hourly rows of the hours at the ends. Otherwise the link-level hourly rows."""
    if not coarse:
        return [(hourly, hourly.hour, [(lo, hi)])]
    if group_by in ("day", "campaign"):
        return [(by_campaign, by_campaign.hour, [(lo, hi)])]
    days, edges = _days_and_edges(lo, hi)
    return ([(daily, daily.day, [days])] if days else []) + ([(hourly, hourly.hour, edges)] if edges else [])


def _traffic_plan(group_by: str, start: datetime, end: datetime, coarse: bool):
    """:func:`_plan` for traffic. An hour counts when it starts inside ``[start, end)``, so the
    range is taken from the next whole hours: the same hours in every rollup, in every zone."""
    return _plan(TrafficRollup, DailyTrafficRollup, CampaignTrafficRollup, group_by,
                 _ceil_hour(start), _ceil_hour(end), coarse)


def _money_plan(group_by: str, start: datetime, end: datetime, coarse: bool):
    """:func:`_plan` for money (``start``/``end`` whole hours, see :func:`_hours_fit`)."""
    return _plan(MoneyRollup, DailyMoneyRollup, CampaignMoneyRollup, group_by, start, end, coarse)


def _rollup_rows(src, time_col, ranges, measures, group_by: str, *, day_of, partner_id, client_id):
    """Sum ``measures`` of the rollup ``src`` (a link-level or a per-campaign model) over the time
    ``ranges`` (``[(from, to), ...]`` on ``time_col``), per report key and currency: rows of
    ``(key, currency, *sums)``. Traffic takes its currency from the campaign, money its own.
    ``partner_id`` keeps the partner's rows (its links' traffic; its own money rows)."""
    lk, cp = Link, Campaign
    link_level = hasattr(src, "link_id")
    campaign_col = lk.campaign_id if link_level else src.campaign_id
    partner_col = getattr(src, "partner_id", lk.partner_id)
    dims = {"day": lambda: day_of(time_col), "campaign": lambda: campaign_col, "partner": lambda: partner_col,
            "channel": lambda: func.coalesce(lk.channel, ""), "sub1": lambda: func.coalesce(src.sub1, ""),
            # traffic is no coupon or call: it falls under "" (issue 6)
            "coupon": lambda: literal(""), "number": lambda: literal("")}
    currency = getattr(src, "currency", cp.currency)
    stmt = select(dims[group_by]().label("k"), currency, *[func.sum(getattr(src, m)) for m in measures])
    stmt = stmt.select_from(src)
    with_campaign = client_id is not None or not hasattr(src, "currency")
    if link_level and (with_campaign or group_by in ("campaign", "channel") or not hasattr(src, "partner_id")):
        stmt = stmt.join(lk, lk.id == src.link_id)
    if with_campaign:
        stmt = stmt.join(cp, cp.id == campaign_col)
    stmt = stmt.where(or_(*[and_(time_col >= lo, time_col < hi) for lo, hi in ranges]))
    if partner_id is not None:
        stmt = stmt.where(partner_col == partner_id)
    if client_id is not None:
        stmt = stmt.where(cp.client_id == client_id)
    return db.session.execute(stmt.group_by(literal_column("k"), currency))


def _exact_money(group_by: str, bounds, day_of, row, *, partner_id, client_id) -> None:
    """Money of the report read from conversions and their split lines (every zone and group_by)."""
    cv, ck, lk, cp = Conversion, Click, Link, Campaign

    def conv_dim(split_partner=None):
        if group_by == "day":
            return day_of(cv.created_at)
        if group_by == "campaign":
            return cv.campaign_id
        if group_by == "partner":
            return cv.partner_id if split_partner is None else func.coalesce(split_partner, cv.partner_id)
        if group_by == "channel":
            return func.coalesce(lk.channel, "")
        if group_by in ("coupon", "number"):
            col = lk.coupon_code if group_by == "coupon" else lk.tracking_number
            by_code = and_(cv.click_id.is_(None), col.is_not(None), cv.event_key.not_in(TRACKER_EVENTS))
            return case((by_code, col), else_=literal(""))
        return func.coalesce(ck.sub1, "")

    def scoped(stmt):
        stmt = stmt.join(lk, lk.id == cv.link_id)
        if group_by == "sub1":
            stmt = stmt.outerjoin(ck, ck.click_id == cv.click_id)
        stmt = stmt.where(
            cv.status.in_(LIVE_STATUSES), cv.created_at >= bounds[0], cv.created_at < bounds[-1],
            cv.is_test.is_(False),  # test conversions (staff "send test postback") are never money
        )
        if client_id is not None:
            stmt = stmt.where(cv.campaign_id.in_(select(cp.id).where(cp.client_id == client_id)))
        return stmt

    # Conversions: count and client fees.
    dim = conv_dim().label("k")
    counted = case((cv.event_key.in_(TRACKER_EVENTS), 0), else_=1)
    stmt = scoped(select(dim, cv.currency, func.sum(counted), func.sum(cv.client_fee_minor)).select_from(cv))
    if partner_id is not None:
        stmt = stmt.where(cv.partner_id == partner_id)
    for key, currency, count, fees in db.session.execute(stmt.group_by(literal_column("k"), cv.currency)):
        x = row(key, currency)
        x.conversions += int(count or 0)
        if partner_id is None:
            x.revenue_minor += int(fees or 0)

    # Split lines: partner amounts of every role, and the agency's margin.
    s = ConversionSplit
    dim = conv_dim(s.partner_id)
    if partner_id is not None and group_by in CONVERTER_KEYS:
        # a touch's or recruiter's line of another partner's conversion: that partner's sub ID,
        # coupon or number is not this partner's to see (CONTRACT v2 §5), so the line counts under ""
        dim = case((cv.partner_id == partner_id, dim), else_=literal(""))
    dim = dim.label("k")
    is_agency = s.party == "agency"
    stmt = scoped(
        select(
            dim,
            cv.currency,
            func.sum(case((is_agency, 0), else_=s.amount_minor)),
            func.sum(case((is_agency, s.amount_minor), else_=0)),
        )
        .select_from(s)
        .join(cv, cv.id == s.conversion_id)
    )
    if partner_id is not None:
        stmt = stmt.where(and_(s.partner_id == partner_id, ~is_agency))
    stmt = stmt.group_by(literal_column("k"), cv.currency)
    for key, currency, partner_amounts, agency in db.session.execute(stmt):
        x = row(key, currency)
        x.payout_minor += int(partner_amounts or 0)
        if partner_id is None:
            x.margin_minor += int(agency or 0)
        else:
            x.revenue_minor += int(partner_amounts or 0)
