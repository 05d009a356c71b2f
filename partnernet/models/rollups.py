"""Coarse rollups that the staff report reads instead of conversions, split lines and the
link-level hourly traffic (issue 7 item 4; :mod:`partnernet.reporting.rollup` keeps them).

Money (kept by the ledger engine through
:func:`partnernet.reporting.rollup.apply_conversion_money`, each time a split is posted or a
posted split is rejected or reversed):

- :class:`MoneyRollup`: per UTC hour of the conversion's ``created_at``, link, partner and
  currency. ``partner_id`` is the converter for ``conversions``, ``revenue_minor`` and
  ``margin_minor``, and the partner that earned the amount for ``payout_minor`` (touch and
  recruiter lines of other partners sit in their own rows, with only a payout);
- :class:`DailyMoneyRollup`: the same per UTC day (reports over whole days by partner or
  channel read it, and the hourly rows for the hours at the ends of the range);
- :class:`CampaignMoneyRollup`: per UTC hour, campaign and currency (reports by day or by
  campaign, in any whole-hour time zone).

Traffic (kept by the click flusher next to :class:`~partnernet.models.TrafficRollup`):

- :class:`DailyTrafficRollup`: per UTC day and link, every ``sub1`` together;
- :class:`CampaignTrafficRollup`: per UTC hour and campaign.

All counts are ints and all amounts int minor units of ``currency`` (CONTRACT §4). ``hour``
and ``day`` are the UTC instants that start the bucket (``day`` at 00:00 UTC).

The id columns carry no foreign key on purpose: these rows are derived (rebuilt from the
conversions, split lines and hourly traffic at will), and a foreign-key check takes a KEY
SHARE lock on the campaign, link or partner row inside the ledger's posting transaction,
where it would wait behind any FOR UPDATE lock on that row (a partner's status change, for
one) while holding the posting's account locks.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .base import MinorUnits, UTCDateTime
from .tracking import TrafficCounts

#: Measure columns of the money rollups, in this order everywhere.
MONEY_COLUMNS = ("conversions", "revenue_minor", "payout_minor", "margin_minor", "entries")
#: Measure columns of the traffic rollups (those of ``TrafficRollup``), in this order everywhere.
TRAFFIC_COLUMNS = ("clicks", "unique_clicks", "bot_clicks", "fallback_clicks", "impressions", "bot_impressions")


class _Money:
    """Money measures: live conversions less the tracker's ``click``/``impression`` ones, client
    fees, partner amounts of every role, the agency's margin (CONTRACT §5 ``GET /reports``);
    ``entries`` counts the live conversions (every event) and partner split lines summed into
    the row, so a row brought back to nothing by a rejection (``entries`` 0) is told apart
    from one holding a conversion of fee 0, and reports show a key exactly when the
    conversions and split lines would."""

    conversions: Mapped[int] = mapped_column(default=0)
    revenue_minor: Mapped[int] = mapped_column(MinorUnits, default=0)
    payout_minor: Mapped[int] = mapped_column(MinorUnits, default=0)
    margin_minor: Mapped[int] = mapped_column(MinorUnits, default=0)
    entries: Mapped[int] = mapped_column(default=0)


class _LinkPartnerKey:
    """The key columns after the time bucket of the link-level money rollups."""

    link_id: Mapped[int] = mapped_column(primary_key=True, sort_order=-1)
    partner_id: Mapped[int] = mapped_column(primary_key=True, sort_order=-1)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True, sort_order=-1)


class MoneyRollup(_LinkPartnerKey, _Money, db.Model):
    """Money per (UTC hour, link, partner, currency) of the conversions whose split is posted."""

    __tablename__ = "money_rollups"
    __table_args__ = (Index("ix_money_rollups_partner_hour", "partner_id", "hour"),)

    hour: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True, sort_order=-2)


class DailyMoneyRollup(_LinkPartnerKey, _Money, db.Model):
    """Money per (UTC day, link, partner, currency): :class:`MoneyRollup` summed by day."""

    __tablename__ = "money_rollups_daily"

    day: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True, sort_order=-2)


class CampaignMoneyRollup(_Money, db.Model):
    """Money per (UTC hour, campaign, currency): :class:`MoneyRollup` summed over links and partners."""

    __tablename__ = "money_rollups_campaign"

    hour: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)


class DailyTrafficRollup(TrafficCounts, db.Model):
    """Traffic per (UTC day, link): ``TrafficRollup`` summed by day over every ``sub1``."""

    __tablename__ = "traffic_rollups_daily"

    day: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    link_id: Mapped[int] = mapped_column(primary_key=True)


class CampaignTrafficRollup(TrafficCounts, db.Model):
    """Traffic per (UTC hour, campaign): ``TrafficRollup`` summed over the campaign's links and ``sub1``."""

    __tablename__ = "traffic_rollups_campaign"

    hour: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(primary_key=True)
