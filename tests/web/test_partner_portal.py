"""Partner portal pages: sign-up, confirmation, reset, marketplace, links, earnings, profile,
and the ownership matrix (another partner's objects answer 404)."""

import csv
import io
import re

import pytest
from sqlalchemy import select

from partnernet import queue
from partnernet.conversions.services import record_conversion
from partnernet.errors import InvalidState
from partnernet.extensions import db
from partnernet.models import (
    CampaignApplication,
    CouponRequest,
    Link,
    OutboxEmail,
    Partner,
    PartnerProfile,
    User,
)
from partnernet.partners import accounts, applications
from tests.factories import make_campaign, make_client, make_link, make_partner, make_user

PW = "Sunny-Meadow-42"


def _signup_data(**kw):
    data = {"email": "New.Partner@Example.com", "password": PW, "name": "Ann's Deals", "kind": "affiliate",
            "website": "https://ann.example/", "social_handles": "", "audience_size": "5000",
            "channels": ["content", "email"], "payout_method": "bank", "paypal_email": "",
            "payout_iban": "DE89 3704 0044 0532 0130 00", "timezone": "Europe/Berlin", "accept_terms": "y"}
    data.update(kw)
    return data


def _login(client, email, password=PW):
    return client.post("/login", data={"email": email, "password": password})


def _partner_user(partner, email=None, password=PW):
    return make_user(email or partner.email, role="partner", password=password, partner_id=partner.id)


def test_signup_page_renders(client):
    r = client.get("/signup?recruiter=abc")
    assert r.status_code == 200 and b"Become a partner" in r.data and b'value="abc"' in r.data


def test_signup_creates_pending_partner_and_confirmation_email(client):
    r = client.post("/signup", data=_signup_data())
    assert r.status_code == 200 and b"Check your email" in r.data
    user = db.session.scalar(select(User).where(User.email == "new.partner@example.com"))
    assert user.role == "partner" and user.password_hash != PW
    partner = db.session.get(Partner, user.partner_id)
    prof = db.session.get(PartnerProfile, partner.id)
    assert partner.status == "pending" and partner.kind == "affiliate"
    assert (partner.payout_method, partner.iban) == ("bank", "DE89370400440532013000")
    assert prof.channels == ["content", "email"]
    assert prof.timezone == "Europe/Berlin" and prof.email_confirmed_at is None and prof.audience_size == 5000
    mail = db.session.scalar(select(OutboxEmail))
    assert mail.to_addr == "new.partner@example.com" and "/signup/confirm/" in mail.body


@pytest.mark.parametrize("field,value,message", [
    ("password", "short1A", b"at least 10 characters"),
    ("password", "alllowercaseletters"[:12], b"mix upper case"),
    ("payout_iban", "DE89 3704 0044 0532 0130 01", b"check digits are wrong"),
    ("payout_iban", "hello", b"not an IBAN"),
    ("timezone", "Mars/Olympus", b"Not a valid choice"),
    ("accept_terms", "", b"accept the terms"),
    ("email", "not-an-email", b"Invalid email"),
])
def test_signup_refuses_bad_input(client, field, value, message):
    r = client.post("/signup", data=_signup_data(**{field: value}))
    assert r.status_code == 400 and message in r.data
    assert db.session.scalar(select(User)) is None


def test_signup_paypal_needs_an_address_and_duplicate_email_refused(client):
    r = client.post("/signup", data=_signup_data(payout_method="paypal", paypal_email=""))
    assert r.status_code == 400 and b"PayPal account" in r.data
    make_user("new.partner@example.com", role="staff")
    r = client.post("/signup", data=_signup_data(email="NEW.partner@example.com"))
    # v2: the same "check your email" answer as a new sign-up; the owner is emailed instead
    assert r.status_code == 200 and b"Check your email" in r.data
    assert db.session.scalar(select(User).where(User.role == "partner")) is None
    assert db.session.scalar(select(OutboxEmail.kind).where(OutboxEmail.to_addr == "new.partner@example.com")) \
        == "signup_existing"


def test_signup_with_recruiter_token_records_recruiter(client):
    from partnernet.partners.recruiting import make_invite_token

    recruiter = make_partner()
    client.post("/signup", data=_signup_data(recruiter=make_invite_token(recruiter.id)))
    p = db.session.scalar(select(Partner).where(Partner.email == "new.partner@example.com"))
    assert p.recruiter_id == recruiter.id and p.recruiter_percent is not None


def test_signup_with_a_bad_recruiter_token_still_signs_up(client):
    r = client.post("/signup", data=_signup_data(recruiter="forged.token"))
    assert r.status_code == 200
    p = db.session.scalar(select(Partner).where(Partner.email == "new.partner@example.com"))
    assert p.recruiter_id is None


def test_confirmation_link_is_single_use_and_partner_sees_status(client):
    client.post("/signup", data=_signup_data())
    token = re.search(r"/signup/confirm/(\S+)", db.session.scalar(select(OutboxEmail)).body).group(1)
    r = _login(client, "new.partner@example.com")
    assert r.headers["Location"] == "/partner/"
    assert b"Send the email again" in client.get("/partner/").data
    r = client.get(f"/signup/confirm/{token}")
    assert r.status_code == 200 and b"confirmed" in r.data
    assert client.get(f"/signup/confirm/{token}").status_code == 400
    assert client.get("/signup/confirm/garbage").status_code == 400
    page = client.get("/partner/").data
    assert b"reviews your application" in page and b"pending" in page
    assert client.get("/partner/campaigns").status_code == 302  # not approved yet


def test_password_reset_flow(client):
    p = make_partner()
    _partner_user(p)
    assert client.get("/password-reset").status_code == 200
    r = client.post("/password-reset", data={"email": p.email.upper()})
    assert r.status_code == 200 and b"Check your email" in r.data
    token = re.search(r"/password-reset/(\S+)", db.session.scalar(select(OutboxEmail)).body).group(1)
    assert client.get(f"/password-reset/{token}").status_code == 200
    r = client.post(f"/password-reset/{token}", data={"password": "weak"})
    assert r.status_code == 400 and b"at least 10" in r.data
    r = client.post(f"/password-reset/{token}", data={"password": "Brand-New-Pass-7"})
    assert r.status_code == 302
    assert client.post(f"/password-reset/{token}", data={"password": "Another-Pass-88"}).status_code == 400
    assert _login(client, p.email, "Brand-New-Pass-7").status_code == 302
    # an unknown address gets the same answer and no email
    client.post("/password-reset", data={"email": "nobody@example.com"})
    assert db.session.query(OutboxEmail).count() == 1


def test_event_terms_in_plain_words():
    from partnernet.models import CampaignEvent as E

    # CPM: one impression conversion per 1,000 counted impressions (CONTRACT §2: stated per 1,000)
    assert applications.event_terms(E(key="impression", label="Impression", client_fee_minor=300,
                                      payout_minor=150), "USD") == "$1.50 per 1,000 impressions"
    assert applications.event_terms(E(key="impression", label="impression", client_fee_minor=400,
                                      payout_percent=50), "EUR") == "€2.00 per 1,000 impressions"

    assert applications.event_terms(E(key="call", label="call", client_fee_minor=300, payout_minor=210,
                                      min_duration_s=180), "USD") == "$2.10 per qualified call of 3+ minutes"
    assert applications.event_terms(E(key="sale", label="sale", client_fee_percent=12, payout_percent=50),
                                    "EUR") == "6% of each sale"
    assert applications.event_terms(E(key="install", label="install", client_fee_minor=500, payout_percent=60),
                                    "JPY") == "¥300 per install"


@pytest.fixture
def world(app):
    c = make_client()
    auto = make_campaign(c, events=[{"key": "sale", "client_fee_percent": "12", "payout_percent": "50"}],
                         deep_link_hosts=["acme.example"])
    auto.visibility, auto.auto_approve_partners = "approval", True
    manual = make_campaign(c)
    manual.visibility = "approval"
    hidden = make_campaign(c)
    hidden.visibility = "invite_only"
    db.session.commit()
    a = make_partner(kind="influencer")
    b = make_partner()
    _partner_user(a)
    _partner_user(b)
    return {"auto": auto, "manual": manual, "hidden": hidden, "a": a, "b": b}


def test_marketplace_apply_auto_and_manual(client, world):
    a = world["a"]
    _login(client, a.email)
    page = client.get("/partner/campaigns").data.decode()
    assert "6% of each sale" in page and world["manual"].name in page and world["hidden"].name not in page
    assert "Build a link" not in page  # approval campaigns: apply first
    assert client.post(f"/partner/campaigns/{world['auto'].id}/apply").status_code == 302
    assert client.post(f"/partner/campaigns/{world['manual'].id}/apply").status_code == 302
    assert client.post(f"/partner/campaigns/{world['hidden'].id}/apply").status_code == 404
    assert client.post(f"/partner/campaigns/{world['manual'].id}/apply").status_code == 303  # twice
    apps = {x.campaign_id: x for x in db.session.scalars(select(CampaignApplication))}
    assert apps[world["auto"].id].status == "approved" and apps[world["manual"].id].status == "pending"
    staff = make_user("boss@example.com")
    applications.reject_application(apps[world["manual"].id].id, staff.id, "audience too small")
    assert "audience too small" in client.get("/partner/campaigns").data.decode()
    applications.approve_application(apps[world["manual"].id].id, staff.id)
    with pytest.raises(InvalidState):
        applications.approve_application(apps[world["manual"].id].id, staff.id)


def test_link_builder_valid_and_deep_link_error(client, world):
    a = world["a"]
    _login(client, a.email)
    assert b"Apply to a campaign" in client.get("/partner/links/new").data  # approval campaigns only
    client.post(f"/partner/campaigns/{world['auto'].id}/apply")
    r = client.post("/partner/links/new", data={"campaign_id": world["auto"].id, "channel": "social",
                                                "deep_link": "https://evil.example/x"})
    assert r.status_code == 400 and b"allowed hosts: acme.example" in r.data
    r = client.post("/partner/links/new", data={"campaign_id": world["manual"].id, "channel": "social"})
    assert r.status_code == 400  # not an approved campaign: not even a choice
    r = client.post("/partner/links/new", data={"campaign_id": world["auto"].id, "channel": "social",
                                                "sub1": "ig-story", "deep_link": "https://acme.example/shoes",
                                                "coupon_code": "ANN10"})
    assert r.status_code == 302
    page = client.get(r.headers["Location"]).data.decode()
    assert "/c/" in page and "sub1=ig-story" in page and "<svg" in page and "ANN10" in page
    assert "Copy" in page
    # the coupon code is a request for staff (CONTRACT §5 (v2)), never the link's code at once
    link = db.session.scalar(select(Link).where(Link.partner_id == a.id))
    assert link.coupon_code is None and "waiting for review" in page
    assert db.session.scalar(select(CouponRequest.status).where(CouponRequest.link_id == link.id)) == "pending"
    assert world["auto"].name in client.get("/partner/links").data.decode()


def _convert(link, campaign, amount=10000, txn="o-1", status="pending"):
    rec = record_conversion(campaign_id=campaign.id, event=campaign.events[0], link_id=link.id,
                            partner_id=link.partner_id, click_id=None, click_at=None, txn_id=txn,
                            amount_minor=amount, duration_s=None, status=status, reason=None)
    db.session.commit()
    queue.run_pending()
    return rec.conversion


def test_earnings_page_shows_conversion_split_and_csv(client, world):
    a, auto = world["a"], world["auto"]
    link = make_link(a, auto)
    conv = _convert(link, auto)
    _login(client, a.email)
    page = client.get("/partner/earnings").data.decode()
    assert "$100.00" in page and "$6.00" in page and "pending" in page and "<svg" in page
    assert "$12.00" not in page  # the client fee is not the partner's to see (CONTRACT v2 §5)
    csv = client.get("/partner/earnings/conversions.csv")
    assert csv.status_code == 200 and f"{conv.id}," in csv.data.decode() and "100.00,6.00" in csv.data.decode()
    for t in ("balances", "daily", "links", "payouts"):
        assert client.get(f"/partner/earnings/{t}.csv").status_code == 200
    assert client.get("/partner/earnings/other.csv").status_code == 404
    detail = client.get(f"/partner/conversions/{conv.id}").data.decode()
    assert "You (converter)" in detail and "$6.00" in detail
    assert "$6.00" in client.get("/partner/links").data.decode()


def test_profile_forms(client, world):
    a = world["a"]
    _login(client, a.email)
    assert client.get("/partner/profile").status_code == 200
    r = client.post("/partner/profile", data={"action": "payout", "p-payout_method": "bank",
                                              "p-payout_iban": "GB82 WEST 1234 5698 7654 32", "p-timezone": "Asia/Tokyo",
                                              "p-current_password": PW})
    assert r.status_code == 302
    db.session.expire_all()
    assert db.session.get(Partner, a.id).iban == "GB82WEST12345698765432"
    r = client.post("/partner/profile", data={"action": "payout", "p-payout_method": "bank",
                                              "p-payout_iban": "GB82 WEST 1234 5698 7654 33", "p-timezone": "UTC"})
    assert r.status_code == 400 and b"check digits" in r.data
    r = client.post("/partner/profile", data={"action": "password", "w-current_password": "wrong-one",
                                              "w-new_password": "Better-Pass-99"})
    assert r.status_code == 400 and b"current password is wrong" in r.data
    r = client.post("/partner/profile", data={"action": "password", "w-current_password": PW,
                                              "w-new_password": "Better-Pass-99"})
    assert r.status_code == 302
    r = client.post("/partner/profile", data={"action": "api_key"})
    key = re.search(r'id="new-key">(pn_[^<]+)<', r.data.decode()).group(1)
    assert client.get("/api/v1/links", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert key not in client.get("/partner/profile").data.decode()  # shown once


def test_ownership_matrix(client, world):
    a, b, auto = world["a"], world["b"], world["auto"]
    la, lb = make_link(a, auto), make_link(b, auto)
    cb = _convert(lb, auto, txn="b-1")
    _login(client, a.email)
    assert client.get(f"/partner/links/{la.id}").status_code == 200
    assert client.get(f"/partner/links/{lb.id}").status_code == 404
    assert client.get(f"/partner/conversions/{cb.id}").status_code == 404
    assert client.get("/partner/conversions/999999").status_code == 404
    for t, other_id in (("conversions", cb.id), ("links", lb.id)):  # the first column is the row's id
        rows = list(csv.reader(io.StringIO(client.get(f"/partner/earnings/{t}.csv").data.decode())))
        assert rows and str(other_id) not in [row[0] for row in rows[1:]]
    assert "b-1" not in client.get("/partner/earnings").data.decode()
    # other roles get 404 on partner pages, anonymous users go to the sign-in page
    client.post("/logout")
    make_user("staffer@example.com", password=PW)
    assert client.get("/partner/").status_code == 302
    _login(client, "staffer@example.com")
    assert client.get("/partner/").status_code == 404


def test_account_state_for_api_made_partner(app):
    p = make_partner(status="pending")
    assert accounts.account_state(p.id)["step"] == "await_approval"


def test_negative_balance_is_shown_with_its_reversal_and_csv_keeps_numbers(client, world):
    from partnernet.conversions.services import apply_postback_status, lock_conversion_for_change
    from partnernet.ledger.services import partner_account, post_transaction

    a, auto = world["a"], world["auto"]
    link = make_link(a, auto)
    conv = _convert(link, auto, txn="paid-1", status="approved")
    # pay the partner out (a payout posting, as a paid batch makes), then the client reverses the sale
    post_transaction("payout_batch:test", "paid", "USD",
                     [(partner_account(a.id, "payable", "USD"), 600),
                      (partner_account(a.id, "cash_test", "USD"), -600)], memo="test payout")
    db.session.commit()
    c = lock_conversion_for_change(conv.id)
    apply_postback_status(c, "reversed")
    db.session.commit()
    queue.run_pending()
    _login(client, a.email)
    page = client.get("/partner/earnings").data.decode()
    assert "-$6.00" in page and "balance is negative" in page and f"#{conv.id}" in page and "paid-1" in page
    csv = client.get("/partner/earnings/balances.csv").data.decode()
    assert "USD,0.00,0.00,6.00,-6.00" in csv


# --------------------------------------------------------------------------- issue 6 on the portal


def test_links_show_tracking_number_and_coupon(client, world):
    a, b, auto = world["a"], world["b"], world["auto"]
    la = make_link(a, auto, coupon_code="ANNA5", tracking_number="+14155550123")
    make_link(b, auto, tracking_number="+14155550999")
    _login(client, a.email)
    page = client.get("/partner/links").data.decode()
    assert "ANNA5" in page and 'href="tel:+14155550123"' in page and "+14155550999" not in page
    detail = client.get(f"/partner/links/{la.id}").data.decode()
    assert "+14155550123" in detail and "call tracking number" in detail and "ANNA5" in detail
    assert "Request this code" in detail  # an influencer gets the vanity-code form


def test_vanity_code_request_valid_invalid_and_decisions(client, world):
    from partnernet.commission.services import decide_vanity_code
    from partnernet.models import CouponRequest

    a, b, auto = world["a"], world["b"], world["auto"]
    la, la2 = make_link(a, auto, coupon_code="OLD1"), make_link(a, auto)
    make_link(b, auto, coupon_code="TAKEN")
    _login(client, a.email)
    url = f"/partner/links/{la.id}/vanity-code"
    r = client.post(url, data={"code": "no spaces!"})
    assert r.status_code == 400 and b"A-Z a-z 0-9" in r.data
    r = client.post(url, data={"code": ""})
    assert r.status_code == 400 and b"This field is required" in r.data
    r = client.post(url, data={"code": "x" * 65})
    assert r.status_code == 400
    r = client.post(url, data={"code": "taken"})  # case-insensitive, on B's link
    assert r.status_code == 409 and b"taken" in r.data
    assert db.session.scalar(select(CouponRequest)) is None
    r = client.post(url, data={"code": "Anna10"})
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/partner/links/{la.id}")
    page = client.get(f"/partner/links/{la.id}").data.decode()
    assert "Anna10" in page and "pending" in page and "waiting for review" in page
    assert "Anna10 requested" in client.get("/partner/links").data.decode()
    r = client.post(url, data={"code": "Anna11"})  # one pending request per link
    assert r.status_code == 409 and b"pending code request" in r.data
    r = client.post(f"/partner/links/{la2.id}/vanity-code", data={"code": "ANNA10"})  # pending elsewhere
    assert r.status_code == 409
    staff = make_user("boss@example.com")
    req = db.session.scalar(select(CouponRequest))
    decide_vanity_code(req.id, approve=False, actor_user_id=staff.id, note="too close to a brand name")
    page = client.get(f"/partner/links/{la.id}").data.decode()
    assert "rejected" in page and "too close to a brand name" in page and "OLD1" in page
    assert client.post(url, data={"code": "AnnaDeals"}).status_code == 302
    decide_vanity_code(db.session.scalar(select(CouponRequest).where(CouponRequest.status == "pending")).id,
                       approve=True, actor_user_id=staff.id)
    page = client.get(f"/partner/links/{la.id}").data.decode()
    assert "Your coupon code: <strong class=\"coupon\">AnnaDeals</strong>" in page and "approved" in page


def test_vanity_code_only_on_own_link_and_for_influencers(client, world):
    from partnernet.models import CouponRequest

    a, b, auto = world["a"], world["b"], world["auto"]
    la, lb = make_link(a, auto), make_link(b, auto)
    _login(client, b.email)  # b is an affiliate
    assert b"Request this code" not in client.get(f"/partner/links/{lb.id}").data
    r = client.post(f"/partner/links/{lb.id}/vanity-code", data={"code": "BOBBY"})
    assert r.status_code == 403 and b"influencer" in r.data
    assert client.post(f"/partner/links/{la.id}/vanity-code", data={"code": "BOBBY"}).status_code == 404
    assert client.post("/partner/links/999999/vanity-code", data={"code": "BOBBY"}).status_code == 404
    client.post("/logout")
    _login(client, a.email)
    assert client.post(f"/partner/links/{lb.id}/vanity-code", data={"code": "ANNA"}).status_code == 404
    assert db.session.scalar(select(CouponRequest)) is None


def _multi_touch(world):
    """Visitor v clicks A's link, then C's (C converts); linear model, fee 200, payout 50% = 100
    (A 50 touch, C 50 converter); C was recruited by R at 10% (override 5 from the margin)."""
    from datetime import timedelta

    from partnernet import clock
    from partnernet.models import Click

    camp = make_campaign(make_client(name="Multi"), events=[{"key": "sale", "client_fee_minor": 200,
                                                             "payout_percent": "50"}],
                         attribution_model="linear")
    a, r = world["a"], world["b"]
    c = make_partner(recruiter=r, recruiter_percent=10, name="Cora")
    la, lc = make_link(a, camp), make_link(c, camp)
    now = clock.utcnow()
    for i, (link, ago) in enumerate(((la, 3), (lc, 1))):
        db.session.add(Click(click_id=f"mt{i}", link_id=link.id, campaign_id=camp.id, partner_id=link.partner_id,
                             created_at=now - timedelta(hours=ago), visitor="visitor-multi-touch-0001",
                             is_bot=False, is_unique=True))
    db.session.commit()
    rec = record_conversion(campaign_id=camp.id, event=camp.event("sale"), link_id=lc.id, partner_id=c.id,
                            click_id="mt1", click_at=None, txn_id="mt-1", amount_minor=None, duration_s=None,
                            status="pending", reason=None)
    db.session.commit()
    queue.run_pending()
    alone = _convert(lc, camp, txn="c-alone")  # no click: C alone, A has no line on it
    return rec.conversion.id, alone.id, c


def test_touch_and_recruiter_see_their_lines_with_role_and_rule(client, world):
    from partnernet.models import ConversionSplit

    conv_id, alone_id, _c = _multi_touch(world)
    roles = {(s.partner_id, s.role): s for s in db.session.scalars(
        select(ConversionSplit).where(ConversionSplit.conversion_id == conv_id))}
    touch, rec = roles[(world["a"].id, "touch")], roles[(world["b"].id, "recruiter")]
    assert touch.amount_minor == 50 and rec.amount_minor == 5 and touch.rule and rec.rule
    # A earned only as a touch: the conversion is on its earnings page with the role and the rule
    _login(client, world["a"].email)
    page = client.get("/partner/earnings").data.decode()
    assert f"/partner/conversions/{conv_id}" in page and f"/partner/conversions/{alone_id}" not in page
    assert "role-touch" in page and "multi-touch share" in page and touch.rule not in page and "$0.50" in page
    detail = client.get(f"/partner/conversions/{conv_id}").data.decode()
    assert "You (touch)" in detail and "Other partners have a share" in detail and "Yours in all" in detail
    assert client.get(f"/partner/conversions/{alone_id}").status_code == 404
    csv = client.get("/partner/earnings/conversions.csv").data.decode()
    assert f"{conv_id}," in csv and csv.strip().endswith("touch,0.50")
    client.post("/logout")
    # R earned only its recruiter override: it sees that line and its rule
    _login(client, world["b"].email)
    page = client.get("/partner/earnings").data.decode()
    assert f"/partner/conversions/{conv_id}" in page and f"/partner/conversions/{alone_id}" in page
    assert "role-recruiter" in page and rec.rule in page and "$0.05" in page
    detail = client.get(f"/partner/conversions/{conv_id}").data.decode()
    assert "You (recruiter)" in detail and rec.rule in detail and "recruiter override is paid to you" in detail


def test_recruits_page_invite_link_and_statuses(client, world):
    from partnernet.partners.recruiting import recruiter_from_token

    a, b = world["a"], world["b"]
    r1 = make_partner(recruiter=a, recruiter_percent=5, name="Rita Recruit", status="pending")
    r2 = make_partner(recruiter=a, recruiter_percent=5, name="Rob Recruit")
    make_partner(recruiter=r2, recruiter_percent=5, name="Sam Second")
    make_partner(recruiter=b, recruiter_percent=5, name="Bob's Own")
    _login(client, a.email)
    assert b'href="/partner/recruits"' in client.get("/partner/").data
    page = client.get("/partner/recruits").data.decode()
    token = re.search(r'id="invite-url" readonly value="[^"]*/signup\?recruiter=([^"]+)"', page).group(1)
    assert recruiter_from_token(token) == a.id
    assert "Rita Recruit" in page and "Rob Recruit" in page and "Sam Second" in page and "via Rob Recruit" in page
    assert "Bob&#39;s Own" not in page and "Bob's Own" not in page
    assert r1.email not in page and 'badge pending">pending' in page and 'badge approved">approved' in page
    # a partner not approved yet gets no invite link (its token would not be honoured)
    p = make_partner(status="pending")
    _partner_user(p)
    client.post("/logout")
    _login(client, p.email)
    page = client.get("/partner/recruits")
    assert page.status_code == 200 and b"recruiter=" not in page.data and b"No recruits yet" in page.data
