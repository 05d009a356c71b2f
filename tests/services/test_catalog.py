"""Catalog use cases (partnernet.catalog.services): the rules behind CONTRACT §5's staff calls."""

from __future__ import annotations

from decimal import Decimal

import pytest

from partnernet.catalog import links as catalog_links
from partnernet.catalog import services as catalog
from partnernet.errors import Duplicate, Forbidden, InvalidState, NotFound, ValidationError
from partnernet.extensions import db
from partnernet.models import Campaign, CampaignEvent, Link, Partner
from tests.factories import make_campaign, make_client, make_link, make_partner
from tests.web.test_api_support import make_conversion


def _body(client_id, **over):
    body = {
        "client_id": str(client_id),
        "name": "C",
        "destination_url": "https://shop.example.com/",
        "default_event": "sale",
        "events": [{"key": "sale", "client_fee": "10.00", "payout_percent": "50"}],
    }
    body.update(over)
    return body


def test_deep_link_allow_list():
    hosts = ["shop.example.com", "example.org"]
    assert catalog.deep_link_allowed("https://shop.example.com/x", hosts)
    assert catalog.deep_link_allowed("http://a.b.shop.example.com/x?y=1", hosts)
    assert catalog.deep_link_allowed("https://EXAMPLE.org./", hosts)
    assert not catalog.deep_link_allowed("https://evilshop.example.com/", hosts)
    assert not catalog.deep_link_allowed("https://shop.example.com.evil.net/", hosts)
    assert not catalog.deep_link_allowed("ftp://shop.example.com/", hosts)
    assert not catalog.deep_link_allowed("myapp://shop.example.com/", hosts)
    assert not catalog.deep_link_allowed("https://[::1/", hosts)
    assert not catalog.deep_link_allowed("https://shop.example.com/", [])


def test_check_url_and_hosts():
    for ok in (
        "https://a.example/",
        "http://a.example:8080/p?q={click_id}",
        "myapp://open/x",
        "com.example.app://deep",
    ):
        assert catalog.check_url(ok, "u") == ok
    for bad in (
        "",
        "a.example/x",
        "https://",
        "javascript://x",
        "file:///etc/passwd",
        "mailto:a@b.c",
        "https://a.example/\n",
        "https://[bad/",
        "x" * 3000,
    ):
        with pytest.raises(ValidationError) as err:
            catalog.check_url(bad, "u")
        assert err.value.code == "bad_url" and err.value.field == "u"
    assert catalog.normalize_host(" Shop.Example.COM. ", "h") == "shop.example.com"
    for bad in (
        "https://a.example",
        "a.example:80",
        "a.example/x",
        "-a.example",
        "*.a.example",
        "bücher.de",
        "",
    ):
        with pytest.raises(ValidationError):
            catalog.normalize_host(bad, "h")


def test_percent_text():
    assert catalog.percent_text(Decimal("8.0000")) == "8"
    assert catalog.percent_text(Decimal("12.5000")) == "12.5"
    assert catalog.percent_text(Decimal("100.0000")) == "100"
    assert catalog.percent_text(Decimal("0.0000")) == "0"
    assert catalog.percent_text(None) is None


def test_create_campaign_stores_minor_units_and_percents(app):
    client = make_client(currency="KWD")  # three minor digits
    camp = catalog.create_campaign(
        _body(
            client.id,
            budget="1.250",
            events=[{"key": "sale", "client_fee_percent": "7.25", "payout": "0.500", "min_amount": "10"}],
        )
    )
    assert camp.currency == "KWD" and camp.budget_minor == 1250
    ev = camp.event("sale")
    assert ev.client_fee_minor is None and ev.client_fee_percent == Decimal("7.25")
    assert ev.payout_minor == 500 and ev.min_amount_minor == 10000 and ev.label == "sale"


def test_update_campaign_keeps_history_and_rows(app):
    client = make_client()
    camp = catalog.create_campaign(
        _body(
            client.id,
            events=[
                {"key": "sale", "client_fee": "10.00", "payout_percent": "50"},
                {"key": "lead", "client_fee": "2.00", "payout": "1.00"},
            ],
        )
    )
    sale_id = camp.event("sale").id
    link = make_link(make_partner(), camp)
    conv = make_conversion(link, event="sale")
    assert conv.client_fee_minor == 1000
    catalog.update_campaign(camp.id, {"events": [{"key": "sale", "client_fee": "25.00", "payout": "5.00"}]})
    db.session.expire_all()
    camp = db.session.get(Campaign, camp.id)
    assert [e.key for e in camp.events] == ["sale"]
    assert camp.event("sale").id == sale_id  # updated in place
    assert camp.event("sale").client_fee_minor == 2500 and camp.event("sale").payout_percent is None
    assert db.session.query(CampaignEvent).count() == 1
    # the conversion already recorded keeps its fee and payout rule (CONTRACT §4)
    db.session.refresh(conv)
    assert conv.client_fee_minor == 1000 and conv.payout_percent == Decimal(50)
    # a new conversion takes the new price
    assert make_conversion(link, event="sale").client_fee_minor == 2500


def test_update_campaign_rolls_back_on_error(app):
    camp = make_campaign(make_client(), budget_minor=1000)
    with pytest.raises(ValidationError):
        catalog.update_campaign(camp.id, {"budget": "5.00", "status": "closed"})
    db.session.rollback()
    db.session.expire_all()
    assert db.session.get(Campaign, camp.id).budget_minor == 1000


def test_update_campaign_as_client(app):
    x, y = make_client(), make_client()
    cx = make_campaign(x)
    assert catalog.update_campaign(cx.id, {"status": "paused"}, as_client_id=x.id).status == "paused"
    with pytest.raises(Forbidden):
        catalog.update_campaign(cx.id, {"fallback_url": "https://x.example/"}, as_client_id=x.id)
    with pytest.raises(NotFound):
        catalog.update_campaign(cx.id, {"status": "active"}, as_client_id=y.id)


@pytest.mark.parametrize(
    "start, action, result",
    [
        ("pending", "approve", "approved"),
        ("pending", "reject", "rejected"),
        ("pending", "suspend", None),
        ("approved", "approve", None),
        ("approved", "reject", None),
        ("approved", "suspend", "suspended"),
        ("suspended", "approve", "approved"),
        ("suspended", "reject", None),
        ("suspended", "suspend", None),
        ("rejected", "approve", None),
        ("rejected", "reject", None),
        ("rejected", "suspend", None),
    ],
)
def test_partner_transitions(app, start, action, result):
    p = make_partner(status=start)
    if result is None:
        with pytest.raises(InvalidState):
            catalog.set_partner_status(p.id, action, user_id=1)
        db.session.expire_all()
        assert db.session.get(Partner, p.id).status == start
    else:
        assert catalog.set_partner_status(p.id, action, user_id=1).status == result


def test_unknown_partner_and_action(app):
    with pytest.raises(NotFound):
        catalog.set_partner_status(424242, "approve", user_id=1)
    with pytest.raises(ValueError):
        catalog.set_partner_status(1, "delete", user_id=1)


def test_create_link_race_on_coupon_answers_duplicate(app, monkeypatch):
    """Two requests pass the up-front check at once: the unique constraint decides, and the loser
    gets the same 409 as a plain duplicate (not a 500)."""
    camp = make_campaign(make_client())
    p = make_partner()
    make_link(p, camp, coupon_code="RACE10", tracking_number="+14155550000")
    real = catalog_links._check_unique_codes
    calls = []

    def first_call_sees_nothing(coupon, number):
        calls.append(coupon)
        if len(calls) > 1:
            real(coupon, number)

    monkeypatch.setattr(catalog_links, "_check_unique_codes", first_call_sees_nothing)
    with pytest.raises(Duplicate) as err:
        catalog_links.create_link({"partner_id": p.id, "campaign_id": camp.id, "coupon_code": "race10"})
    assert err.value.code == "duplicate_coupon_code" and len(calls) == 2
    calls.clear()
    with pytest.raises(Duplicate) as err:
        catalog_links.create_link({"partner_id": p.id, "campaign_id": camp.id,
                                   "tracking_number": "+14155550000"})
    assert err.value.code == "duplicate_tracking_number"
    assert db.session.query(Link).count() == 1


def test_create_partner_email_race_answers_duplicate(app, monkeypatch):
    catalog.create_partner({"email": "x@example.com", "name": "X", "kind": "affiliate"})
    original = db.session.scalar
    skipped = []

    def scalar(stmt, *a, **kw):
        if not skipped and "partners.email" in str(stmt):
            skipped.append(stmt)
            return None  # the up-front check saw nothing: a concurrent insert won
        return original(stmt, *a, **kw)

    monkeypatch.setattr(db.session, "scalar", scalar)
    with pytest.raises(Duplicate) as err:
        catalog.create_partner({"email": "X@example.com", "name": "X2", "kind": "affiliate"})
    assert err.value.code == "duplicate_email" and skipped
    monkeypatch.undo()
    assert db.session.query(Partner).count() == 1


# --------------------------------------------------------------------------- (v2) who may promote what


def test_may_promote_and_promotable_campaigns(app):
    from partnernet.catalog import access
    from partnernet.models import CampaignApplication

    acme = make_client()
    pub, appr, inv = (make_campaign(acme) for _ in range(3))
    appr.visibility, inv.visibility = "approval", "invite_only"
    paused = make_campaign(acme, status="paused")
    db.session.commit()
    p, pending = make_partner(), make_partner(status="pending")
    assert {c.id for c in access.promotable_campaigns(p.id)} == {pub.id}
    assert {c.id for c in access.promotable_campaigns(p.id, active_only=False)} == {pub.id, paused.id}
    assert access.promotable_campaigns(pending.id) == [] and not access.may_promote(pending.id, pub.id)
    assert not access.may_promote(p.id, 999999) and not access.may_promote(999999, pub.id)
    app_row, created = access.grant_access(inv.id, p.id, None)
    assert created and app_row.status == "approved"
    assert access.grant_access(inv.id, p.id, None)[1] is False
    assert {c.id for c in access.promotable_campaigns(p.id)} == {pub.id, inv.id}
    with pytest.raises(NotFound):
        access.grant_access(999999, p.id, None)
    with pytest.raises(ValidationError) as err:
        access.grant_access(inv.id, 999999, None)
    assert err.value.code == "unknown_partner"
    assert db.session.query(CampaignApplication).count() == 1


def test_partner_link_checks_come_before_shape_checks(app):
    """A partner's forbidden field is refused as forbidden whatever its value, and an unknown
    campaign answers like a hidden one (campaign_not_available), never unknown_campaign."""
    from partnernet.catalog import links

    camp = make_campaign(make_client())
    p = make_partner()
    with pytest.raises(Forbidden) as err:
        links.create_link({"campaign_id": camp.id, "coupon_code": 5}, as_partner_id=p.id)
    assert err.value.code == "forbidden" and err.value.field == "coupon_code"
    with pytest.raises(Forbidden) as err:
        links.create_link({"campaign_id": "424242"}, as_partner_id=p.id)
    assert err.value.code == "campaign_not_available"
    with pytest.raises(ValidationError) as err:
        links.create_link({"campaign_id": "424242", "partner_id": p.id})
    assert err.value.code == "unknown_campaign"  # staff: v1 answer
    assert db.session.query(Link).count() == 0
