"""Test factories: build catalog rows directly (no HTTP), commit, return them.

Money arguments are minor units; percents are decimal strings.
"""

from __future__ import annotations

import itertools
from decimal import Decimal

from partnernet.extensions import db
from partnernet.models import Campaign, CampaignEvent, Client, Link, Partner, User

_seq = itertools.count(1)


def make_client(*, name="Acme", currency="USD", require_signature=False, website_url="https://acme.example/"):
    n = next(_seq)
    c = Client(name=f"{name} {n}", currency=currency, website_url=website_url,
               postback_key=f"pk_test_{n}", postback_secret=f"secret_{n}", require_signature=require_signature)
    db.session.add(c)
    db.session.commit()
    return c


def make_campaign(client, *, events=None, default_event=None, budget_minor=None, status="active",
                  destination_url="https://acme.example/landing", fallback_url="https://acme.example/fallback",
                  deep_link_hosts=None, click_param="click_id", hold_days=30, attribution_window_days=30,
                  attribution_model="last_click"):
    """``events``: list of dicts with key, client_fee_minor | client_fee_percent, payout_minor |
    payout_percent, min_duration_s, min_amount_minor, one_per_click."""
    events = events or [{"key": "sale", "client_fee_minor": 1000, "payout_percent": "50"}]
    camp = Campaign(client_id=client.id, name=f"Campaign {next(_seq)}", currency=client.currency,
                    destination_url=destination_url, fallback_url=fallback_url, click_param=click_param,
                    deep_link_hosts=deep_link_hosts or [], attribution_window_days=attribution_window_days,
                    hold_days=hold_days, attribution_model=attribution_model, budget_minor=budget_minor,
                    status=status, default_event=default_event or events[0]["key"])
    for e in events:
        e = dict(e)
        for k in ("client_fee_percent", "payout_percent"):
            if e.get(k) is not None:
                e[k] = Decimal(str(e[k]))
        camp.events.append(CampaignEvent(label=e.get("label", e["key"]), **{k: v for k, v in e.items() if k != "label"}))
    db.session.add(camp)
    db.session.commit()
    return camp


def make_partner(*, status="approved", kind="affiliate", recruiter=None, recruiter_percent=None, name=None):
    n = next(_seq)
    p = Partner(email=f"partner{n}@example.com", name=name or f"Partner {n}", kind=kind, status=status,
                recruiter_id=recruiter.id if recruiter else None,
                recruiter_percent=Decimal(str(recruiter_percent)) if recruiter_percent is not None else None)
    db.session.add(p)
    db.session.commit()
    return p


def make_link(partner, campaign, *, channel="affiliate", deep_link=None, coupon_code=None, tracking_number=None):
    link = Link(partner_id=partner.id, campaign_id=campaign.id, channel=channel, deep_link=deep_link,
                coupon_code=coupon_code, coupon_code_lower=coupon_code.lower() if coupon_code else None,
                tracking_number=tracking_number)
    db.session.add(link)
    db.session.commit()
    return link


def make_user(email, role="staff", password="correct horse battery", **kw):
    from partnernet.auth.services import create_user

    return create_user(email, password, role, **kw)
