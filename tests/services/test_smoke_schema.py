"""The schema builds on both backends and the factories produce a usable catalog."""

from partnernet.models import Campaign
from tests.factories import make_campaign, make_client, make_link, make_partner


def test_catalog_roundtrip(app):
    client = make_client(currency="EUR")
    camp = make_campaign(client, events=[{"key": "sale", "client_fee_percent": "8", "payout_percent": "75"}])
    partner = make_partner()
    link = make_link(partner, camp, coupon_code="SPRING10")
    got = app.extensions["sqlalchemy"].session.get(Campaign, camp.id)
    assert got.currency == "EUR"
    assert got.event("sale").client_fee_percent == 8
    assert link.coupon_code_lower == "spring10"
