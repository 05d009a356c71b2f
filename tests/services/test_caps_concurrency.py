"""Budgets and caps are exact under concurrency on PostgreSQL (issue 5): with room for N
conversions, 10 x N postbacks fired at once (threads, each with its own app context, through
the Flask test client) bill exactly N; the rest are rejected with the budget's or cap's reason."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from sqlalchemy import func, select

from partnernet.extensions import db
from partnernet.models import Campaign, Conversion
from tests.concurrency import fire_postbacks
from tests.factories import make_campaign, make_client, make_link, make_partner

N = 3
FEE = 1000


def _fire_distinct(app, key: str, link_id: int, n: int) -> list[tuple[int, dict]]:
    """``n`` postbacks, each with its own click and txn_id, released together by a barrier."""
    signer = app.extensions["partnernet_click_signer"]
    click_ids = [signer.make(link_id, int(time.time())) for _ in range(n)]
    return fire_postbacks(app, lambda i: {"key": key, "click_id": click_ids[i], "txn_id": f"T-{i}"}, n)


@pytest.mark.parametrize("limit, reason", [("budget_minor", "over_budget"), ("daily_cap_minor", "over_daily_cap"),
                                           ("monthly_cap_minor", "over_monthly_cap")])
def test_ten_times_n_postbacks_bill_exactly_n(pg_app, limit, reason):
    adv = make_client()
    adv.timezone = "America/Chicago"
    camp = make_campaign(adv, events=[{"key": "sale", "client_fee_minor": FEE, "payout_percent": "50"}])
    setattr(camp, limit, N * FEE)
    db.session.commit()
    link = make_link(make_partner(), camp)
    answers = _fire_distinct(pg_app, adv.postback_key, link.id, 10 * N)
    assert Counter(st for st, _ in answers) == {201: N, 200: 9 * N}
    assert Counter(body.get("reason") for st, body in answers if st == 200) == {reason: 9 * N}
    db.session.expire_all()
    camp = db.session.get(Campaign, camp.id)
    assert camp.spent_minor == N * FEE
    billed = db.session.scalar(select(func.coalesce(func.sum(Conversion.client_fee_minor), 0))
                               .where(Conversion.status == "pending"))
    assert billed == N * FEE
    assert db.session.scalar(select(func.count()).select_from(Conversion)) == 10 * N
    if limit != "budget_minor":
        assert camp.cap_reached_reason == reason
