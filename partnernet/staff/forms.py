"""Staff console forms: shape checks only (the rules live in the services)."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField, IntegerField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional, Regexp

from ..models import ATTRIBUTION_MODELS, CAMPAIGN_STATUSES


class ActionForm(FlaskForm):
    """A bare POST (CSRF only): approve, suspend, approve a batch, mark it paid..."""


class ReasonForm(FlaskForm):
    """An action with an optional reason (required for a partner rejection, by the service)."""

    reason = TextAreaField("Reason (e-mailed)", validators=[Optional(), Length(max=500)])


class BulkReviewForm(FlaskForm):
    """Approve or reject the ticked conversions; ``ids`` come as repeated ``ids`` fields."""

    action = SelectField("Action", choices=[("approve", "Approve"), ("reject", "Reject")])
    reason = StringField("Reject reason", validators=[Optional(), Length(max=32)])


class BatchForm(FlaskForm):
    """A new payout batch: currency and minimum (a decimal string in that currency)."""

    currency = StringField("Currency", validators=[DataRequired(), Regexp(r"^[A-Za-z]{3}$", message="a 3-letter code")])
    min_amount = StringField("Minimum per partner", default="0",
                             validators=[DataRequired(), Regexp(r"^[0-9]+(\.[0-9]+)?$", message="a plain decimal")])


class ClientForm(FlaskForm):
    """A client's editable fields (currency only on creation)."""

    name = StringField("Name", validators=[DataRequired(), Length(max=200)])
    currency = StringField("Currency", default="USD", validators=[Optional(), Length(max=3)])
    website_url = StringField("Website URL", validators=[Optional(), Length(max=2048)])
    require_signature = BooleanField("Require signed postbacks")
    ip_allowlist = StringField("Postback IP allow-list (comma-separated IPs or networks; empty = any)",
                               validators=[Optional(), Length(max=2000)])
    timezone = StringField("Time zone", default="UTC", validators=[DataRequired(), Length(max=64)])


EVENTS_HELP = ("One event per line: key | label | client fee | payout, then any of the options "
               "min_duration_s=<seconds>, min_amount=<amount>, one_per_click. A fee or payout ending in % is a "
               "percent (client fee: of the sale amount; payout: of the client fee), e.g. "
               "'sale | Sale | 8% | 50% | min_amount=5.00', 'call | Call | 3.00 | 70% | min_duration_s=180' "
               "or 'lead | Lead | 2.00 | 1.20 | one_per_click'.")


class CampaignForm(FlaskForm):
    """A campaign's fields; events as text lines (see :data:`EVENTS_HELP`)."""

    client_id = SelectField("Client", coerce=int, validators=[InputRequired()])
    name = StringField("Name", validators=[DataRequired(), Length(max=200)])
    status = SelectField("Status", choices=[(s, s) for s in CAMPAIGN_STATUSES])
    destination_url = StringField("Destination URL", validators=[DataRequired(), Length(max=2048)])
    fallback_url = StringField("Fallback URL", validators=[Optional(), Length(max=2048)])
    deep_link_hosts = StringField("Deep-link hosts (comma-separated)", validators=[Optional(), Length(max=2000)])
    events = TextAreaField("Events and pricing", description=EVENTS_HELP, validators=[DataRequired()])
    default_event = StringField("Default event", validators=[DataRequired(), Length(max=64)])
    budget = StringField("Budget (empty = none)", validators=[Optional(), Length(max=20)])
    hold_days = IntegerField("Hold days", default=30, validators=[InputRequired(), NumberRange(0, 3650)])
    attribution_window_days = IntegerField("Attribution window (days)", default=30,
                                           validators=[InputRequired(), NumberRange(1, 3650)])
    attribution_model = SelectField("Attribution model", choices=[(m, m) for m in ATTRIBUTION_MODELS])
    visibility = SelectField("Visibility", default="public",
                             choices=[("public", "public: any approved partner promotes it at once"),
                                      ("approval", "approval: partners apply, staff decide"),
                                      ("invite_only", "invite only: hidden, staff grant access")])
    auto_approve_partners = BooleanField("Approve partners' applications at once (approval campaigns)")
    daily_cap = StringField("Daily cap (empty = none)", validators=[Optional(), Length(max=20)])
    monthly_cap = StringField("Monthly cap (empty = none)", validators=[Optional(), Length(max=20)])


class OverrideForm(FlaskForm):
    """A per-partner payout on a campaign: partner, event ("" = every event), and the payout as
    a fixed amount (``2.50``) or a percent of the client fee (``60%``)."""

    partner_id = SelectField("Partner", coerce=int, validators=[InputRequired()])
    event = SelectField("Event", default="")
    payout = StringField("Payout (2.50 fixed, or 60% of the client fee)",
                         validators=[DataRequired(), Length(max=20)])


class GrantForm(FlaskForm):
    """Give a partner access to an approval or invite-only campaign (an approved application)."""

    partner_id = SelectField("Partner", coerce=int, validators=[InputRequired()])


def parse_event_lines(text: str) -> list[dict]:
    """The events textarea as CONTRACT §5 event objects (money and percents stay strings; the
    catalog service validates them). Each line is ``key | label | fee | payout`` followed by any
    of ``min_duration_s=N``, ``min_amount=X`` and ``one_per_click``, so that editing a campaign
    keeps every rule of its events. Raises ValueError with a readable message."""
    events = []
    for n, line in enumerate((text or "").splitlines(), 1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split("|")]
        if len(parts) < 4:
            raise ValueError(f"line {n}: expected key | label | client fee | payout")
        key, label, fee, payout = parts[:4]
        ev = {"key": key, "label": label or key}
        ev["client_fee_percent" if fee.endswith("%") else "client_fee"] = fee.rstrip("%").strip()
        ev["payout_percent" if payout.endswith("%") else "payout"] = payout.rstrip("%").strip()
        for opt in filter(None, parts[4:]):
            name, eq, value = (x.strip() for x in opt.partition("="))
            if name == "one_per_click" and not eq:
                ev["one_per_click"] = True
            elif name == "min_duration_s" and eq and value.isdigit():
                ev["min_duration_s"] = int(value)
            elif name == "min_amount" and eq and value:
                ev["min_amount"] = value
            else:
                raise ValueError(f"line {n}: unknown option {opt!r} (min_duration_s=N, min_amount=X, one_per_click)")
        events.append(ev)
    if not events:
        raise ValueError("give at least one event")
    return events


def event_lines(campaign) -> str:
    """A campaign's events as the textarea's lines (the inverse of :func:`parse_event_lines`)."""
    from ..catalog.services import percent_text
    from ..money import format_minor

    lines = []
    for e in campaign.events:
        fee = (percent_text(e.client_fee_percent) + "%") if e.client_fee_percent is not None else \
            format_minor(e.client_fee_minor or 0, campaign.currency)
        pay = (percent_text(e.payout_percent) + "%") if e.payout_percent is not None else \
            format_minor(e.payout_minor or 0, campaign.currency)
        opts = []
        if e.min_duration_s is not None:
            opts.append(f"min_duration_s={e.min_duration_s}")
        if e.min_amount_minor is not None:
            opts.append(f"min_amount={format_minor(e.min_amount_minor, campaign.currency)}")
        if e.one_per_click:
            opts.append("one_per_click")
        lines.append(" | ".join([e.key, e.label, fee, pay, *opts]))
    return "\n".join(lines)
