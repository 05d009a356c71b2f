"""The demo seed (issue 6 item 6): the multi-touch campaign splits among the partners a shopper
met, and the recruiter-of-recruiter chain earns two override tiers; the ledger verifies."""

from __future__ import annotations

from sqlalchemy import select

from partnernet import queue
from partnernet.demo import seed, simulate_traffic
from partnernet.extensions import db
from partnernet.ledger.services import verify_ledger
from partnernet.models import Conversion, ConversionSplit, Partner


def test_demo_has_multi_touch_and_recruiter_examples(pg_app):
    rows = seed()
    simulate_traffic(pg_app, rows)
    queue.run_pending()
    db.session.expire_all()
    names = {p.id: p.email.split(".")[0].capitalize() for p in db.session.scalars(select(Partner))}

    def split_of(txn):
        conv = db.session.scalar(select(Conversion).where(Conversion.txn_id == txn))
        return [(names.get(s.partner_id, "agency"), s.role, s.amount_minor) for s in db.session.scalars(
            select(ConversionSplit).where(ConversionSplit.conversion_id == conv.id).order_by(ConversionSplit.id))]

    # LOOK-0: €150.00 sale, fee 10% = 1500, payout 60% = 900, position based over Kai, Ava, Ben: 40/20/40
    # Ben's recruiter Ava earns 10% of 360 = 36; Ava's recruiter Zoe: tier 1 8% of Ava's 180 = 14 (14.4),
    # tier 2 4% of Ben's 360 = 14 (14.4); one line of 28 for Zoe.
    assert split_of("LOOK-0") == [
        ("Ben", "converter", 360), ("Ava", "touch", 180), ("Kai", "touch", 360),
        ("Ava", "recruiter", 36), ("Zoe", "recruiter", 28), ("agency", "margin", 536),
    ]
    # LOOK-1: two touches, 50/50 of 60% of 2000
    assert split_of("LOOK-1")[:2] == [("Kai", "converter", 600), ("Ava", "touch", 600)]
    assert verify_ledger() == []
