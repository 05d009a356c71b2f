"""What a partner may see (CONTRACT v2 §5): never the client fee, the margin, another partner's
amounts or another partner's sub IDs, in the API, the portal pages and every CSV; and every CSV
neutralises formula cells (OWASP "CSV Injection"). Staff and clients still see their figures.

The shared conversion: visitor v clicks partner A's link (sub1 ``A-secret``), then partner B's
(sub1 ``B-secret``) and buys (sale 150.00) through B's click; linear attribution. B was recruited
by R at 10 %. Client fee 97.31, fixed payout 48.67 shared by the two touches: A 24.33, B 24.34
(the minor unit left over goes to the later touch); R 10 % of B's 24.34 = 2.43; margin
97.31 - 24.33 - 24.34 - 2.43 = 46.21. Each figure is a distinct string, so finding one in a
page or a file is a leak.
"""

from __future__ import annotations

import csv
import io
import itertools
from datetime import timedelta

import pytest
from flask import g
from sqlalchemy import select

from partnernet import clock, csvsafe, queue
from partnernet.conversions.services import record_conversion
from partnernet.extensions import db
from partnernet.models import Click, ConversionSplit, TrafficRollup
from partnernet.reporting.rollup import rebuild_rollups
from tests.factories import make_campaign, make_client, make_link, make_partner, make_user
from tests.web.test_api_support import Api, new_key

PW = "Sunny-Meadow-42"
FEE, A_AMT, B_AMT, R_AMT, MARGIN = "97.31", "24.33", "24.34", "2.43", "46.21"
GROUPS = ("sub1", "day", "campaign", "partner", "channel", "coupon", "number")
PORTAL_CSVS = ("balances", "daily", "links", "conversions", "payouts")
_n = itertools.count(1)


def _click(link, visitor, ago, sub1) -> str:
    """A non-bot unique click ``ago`` before now, and its hourly traffic row (as the flusher writes)."""
    at = clock.utcnow() - ago
    cid = f"vis{next(_n):05d}"
    db.session.add(Click(click_id=cid, link_id=link.id, campaign_id=link.campaign_id, partner_id=link.partner_id,
                         created_at=at, visitor=visitor, sub1=sub1, is_bot=False, is_unique=True))
    db.session.add(TrafficRollup(hour=at.replace(minute=0, second=0, microsecond=0), link_id=link.id, sub1=sub1,
                                 clicks=1, unique_clicks=1))
    db.session.commit()
    return cid


def _convert(camp, link, click_id, txn, amount_minor=15000):
    rec = record_conversion(campaign_id=camp.id, event=camp.event("sale"), link_id=link.id,
                            partner_id=link.partner_id, click_id=click_id, click_at=None, txn_id=txn,
                            amount_minor=amount_minor, duration_s=None, status="pending", reason=None)
    db.session.commit()
    queue.run_pending()
    return rec.conversion.id


@pytest.fixture
def shared(app):
    """The shared conversion of the module notes, with a login and an API key for A, B, R, staff and
    the client."""
    adv = make_client(name="Shop")
    camp = make_campaign(adv, events=[{"key": "sale", "client_fee_minor": 9731, "payout_minor": 4867}],
                         attribution_model="linear")
    r = make_partner(name="Rita Recruiter")
    a = make_partner(name="Ann Affiliate")
    b = make_partner(name="Ben Blogger", recruiter=r, recruiter_percent="10")
    la, lb = make_link(a, camp), make_link(b, camp)
    v = "visitor-shared-0123456789"
    _click(la, v, timedelta(hours=3), "A-secret")
    conv_click = _click(lb, v, timedelta(hours=1), "B-secret")
    conv_id = _convert(camp, lb, conv_click, "ORDER-77")
    rebuild_rollups()
    lines = {(s.partner_id, s.role): s.amount_minor for s in db.session.scalars(
        select(ConversionSplit).where(ConversionSplit.conversion_id == conv_id))}
    # the fixture is what the notes say (staff's view of the split)
    assert lines == {(b.id, "converter"): 2434, (a.id, "touch"): 2433, (r.id, "recruiter"): 243,
                     (None, "margin"): 4621}
    users = {}
    for name, partner in (("a", a), ("b", b), ("r", r)):
        make_user(f"{name}@visibility.example", role="partner", password=PW, partner_id=partner.id)
        users[name] = (f"{name}@visibility.example", new_key("partner", partner_id=partner.id)[0])
    make_user("boss@visibility.example", role="staff", password=PW)
    users["staff"] = ("boss@visibility.example", new_key("staff")[0])
    make_user("owner@visibility.example", role="client", password=PW, client_id=adv.id)
    users["client"] = ("owner@visibility.example", new_key("client", client_id=adv.id)[0])
    return {"camp": camp, "adv": adv, "a": a, "b": b, "r": r, "conv": conv_id, "users": users}


def _range():
    today = clock.utcnow().date()
    return {"from": (today - timedelta(days=2)).isoformat(), "to": (today + timedelta(days=1)).isoformat()}


def _api(client, w, who) -> Api:
    return Api(client, w["users"][who][1])


def _login(app, w, who):
    g.pop("_login_user", None)  # the tests' shared app context caches the signed-in user in g
    web = app.test_client()
    assert web.post("/login", data={"email": w["users"][who][0], "password": PW}).status_code in (302, 303)
    g.pop("_login_user", None)
    return web


def _api_texts(api, w):
    """Every API answer a partner key gets about the shared conversion and the reports, as text."""
    out = {"conversions": api.get("/conversions").get_data(as_text=True),
           "conversion": api.get(f"/conversions/{w['conv']}").get_data(as_text=True)}
    for group in GROUPS:
        resp = api.get("/reports", query_string={"group_by": group, **_range()})
        assert resp.status_code == 200, resp.get_json()
        out[f"report:{group}"] = resp.get_data(as_text=True)
    return out


def _portal_texts(web, w):
    """Every partner page and CSV download touching the conversion, as text."""
    out = {}
    for path in ("/partner/", "/partner/earnings", f"/partner/conversions/{w['conv']}", "/partner/links",
                 "/partner/recruits"):
        resp = web.get(path)
        assert resp.status_code == 200, path
        out[path] = resp.get_data(as_text=True)
    for table in PORTAL_CSVS:
        resp = web.get(f"/partner/earnings/{table}.csv")
        assert resp.status_code == 200 and resp.mimetype == "text/csv", table
        out[table + ".csv"] = resp.get_data(as_text=True)
    for group in ("sub1", "day", "campaign", "partner", "channel"):
        q = {"group_by": group, **_range()}
        out[f"/reports:{group}"] = web.get("/reports", query_string=q).get_data(as_text=True)
        resp = web.get("/reports", query_string={**q, "format": "csv"})
        assert resp.status_code == 200 and resp.mimetype == "text/csv"
        out[f"/reports.csv:{group}"] = resp.get_data(as_text=True)
    return out


def _assert_hidden(texts: dict, forbidden: list[str]):
    for where, text in texts.items():
        for secret in forbidden:
            assert secret not in text, f"{secret!r} leaks in {where}"


# --------------------------------------------------------------------------- API


def test_touch_partner_api_sees_only_its_own_line_and_sub_ids(client, shared):
    w = shared
    api = _api(client, w, "a")
    got = api.get(f"/conversions/{w['conv']}").get_json()
    assert "client_fee" not in got and got["amount"] == "150.00"  # the sale amount may stay
    assert got["splits"] == [{"party": f"partner:{w['a'].id}", "role": "touch", "amount": A_AMT,
                              "rule": "multi-touch share"}]
    (listed,) = api.get("/conversions").get_json()["items"]
    assert listed == got
    _assert_hidden(_api_texts(api, w), [FEE, B_AMT, R_AMT, MARGIN, "48.67", "B-secret"])
    rows = api.get("/reports", query_string={"group_by": "sub1", **_range()}).get_json()["items"]
    # its own click's sub ID with its traffic; its touch amount on B's conversion under "" (not B's sub ID)
    assert {r["key"]: (r["clicks"], r["payout"], r["revenue"], r["margin"]) for r in rows} == {
        "": (0, A_AMT, A_AMT, "0.00"), "A-secret": (1, "0.00", "0.00", "0.00")}


def test_converter_api_sees_its_line_but_not_the_fee_margin_or_the_touch(client, shared):
    w = shared
    api = _api(client, w, "b")
    got = api.get(f"/conversions/{w['conv']}").get_json()
    assert "client_fee" not in got
    assert got["splits"] == [{"party": f"partner:{w['b'].id}", "role": "converter", "amount": B_AMT,
                              "rule": "event"}]  # the rule's name, not "event: 48.67 USD"
    _assert_hidden(_api_texts(api, w), [FEE, A_AMT, R_AMT, MARGIN, "48.67", "A-secret"])
    rows = api.get("/reports", query_string={"group_by": "sub1", **_range()}).get_json()["items"]
    assert {r["key"]: (r["clicks"], r["conversions"], r["payout"], r["revenue"], r["margin"]) for r in rows} == {
        "B-secret": (1, 1, B_AMT, B_AMT, "0.00")}
    for group in GROUPS:
        for r in api.get("/reports", query_string={"group_by": group, **_range()}).get_json()["items"]:
            assert r["revenue"] == r["payout"] and r["margin"] == "0.00", (group, r)


def test_recruiter_api_sees_its_override_only(client, shared):
    w = shared
    api = _api(client, w, "r")
    got = api.get(f"/conversions/{w['conv']}").get_json()
    assert "client_fee" not in got
    assert got["splits"] == [{"party": f"partner:{w['r'].id}", "role": "recruiter", "amount": R_AMT,
                              "rule": "recruiter override"}]
    _assert_hidden(_api_texts(api, w), [FEE, A_AMT, B_AMT, MARGIN, "48.67", "A-secret", "B-secret"])
    rows = api.get("/reports", query_string={"group_by": "sub1", **_range()}).get_json()["items"]
    assert [(r["key"], r["payout"], r["margin"]) for r in rows] == [("", R_AMT, "0.00")]


def test_staff_and_client_keys_still_see_fee_margin_and_sub_ids(client, shared):
    w = shared
    for who in ("staff", "client"):
        api = _api(client, w, who)
        got = api.get(f"/conversions/{w['conv']}").get_json()
        assert got["client_fee"] == FEE, who
        assert sorted(s["amount"] for s in got["splits"]) == sorted([A_AMT, B_AMT, R_AMT, MARGIN]), who
        rows = api.get("/reports", query_string={"group_by": "sub1", **_range()}).get_json()["items"]
        by_key = {r["key"]: r for r in rows}
        assert set(by_key) == {"A-secret", "B-secret"}, who
        assert (by_key["B-secret"]["revenue"], by_key["B-secret"]["margin"]) == (FEE, MARGIN), who


# --------------------------------------------------------------------------- portal


@pytest.mark.parametrize("who, own, forbidden", [
    ("a", A_AMT, [FEE, B_AMT, R_AMT, MARGIN, "B-secret", "Client paid"]),
    ("b", B_AMT, [FEE, A_AMT, R_AMT, MARGIN, "A-secret", "Client paid"]),
    ("r", R_AMT, [FEE, A_AMT, B_AMT, MARGIN, "A-secret", "B-secret", "Client paid"]),
])
def test_portal_pages_and_csvs_show_own_amounts_only(app, shared, who, own, forbidden):
    w = shared
    texts = _portal_texts(_login(app, w, who), w)
    _assert_hidden(texts, forbidden)
    detail = texts[f"/partner/conversions/{w['conv']}"]
    assert own in detail and "$150.00" in detail and "Other partners have a share" in detail
    assert "Margin" not in texts["/reports:sub1"]
    rows = list(csv.DictReader(io.StringIO(texts["conversions.csv"])))
    assert [(r["sale_amount"], r["your_total"]) for r in rows] == [("150.00", own)]
    assert "client_paid" not in rows[0]
    for group in ("sub1", "day", "campaign", "partner", "channel"):
        for r in csv.DictReader(io.StringIO(texts[f"/reports.csv:{group}"])):
            assert r["margin"] == "" and r["revenue"] == r["payout"], (group, r)


def test_touch_partner_portal_tables_keep_its_own_sub_id(app, shared):
    w = shared
    web = _login(app, w, "a")
    links = list(csv.DictReader(io.StringIO(web.get("/partner/earnings/links.csv").get_data(as_text=True))))
    assert [(r["sub1"], r["clicks"]) for r in links] == [("A-secret", "1")]
    conversions = list(csv.DictReader(io.StringIO(
        web.get("/partner/earnings/conversions.csv").get_data(as_text=True))))
    assert [(r["sub1"], r["your_roles"], r["your_share"]) for r in conversions] == [("", "touch", A_AMT)]
    # B converted through its own click: it sees its own sub ID on its conversion
    web_b = _login(app, w, "b")
    rows = list(csv.DictReader(io.StringIO(web_b.get("/partner/earnings/conversions.csv").get_data(as_text=True))))
    assert [(r["sub1"], r["your_roles"]) for r in rows] == [("B-secret", "converter")]


def test_staff_report_csv_still_has_fee_margin_and_every_sub_id(app, shared):
    w = shared
    web = _login(app, w, "staff")
    text = web.get("/reports", query_string={"group_by": "sub1", "format": "csv", **_range()}).get_data(as_text=True)
    rows = {r["key"]: r for r in csv.DictReader(io.StringIO(text))}
    assert set(rows) == {"A-secret", "B-secret"}
    assert (rows["B-secret"]["revenue"], rows["B-secret"]["margin"]) == (FEE, MARGIN)


# --------------------------------------------------------------------------- CSV injection


EVIL_SUBS = ('=HYPERLINK("http://x")', "@SUM(1)")


def _assert_safe_csv(text: str, where: str) -> list[list[str]]:
    """No cell of ``text`` starts like a formula unless it is a plain number; returns the rows."""
    rows = list(csv.reader(io.StringIO(text, newline="")))
    for row in rows:
        for value in row:
            assert (not value or value[0] not in csvsafe.FORMULA_LEADS
                    or csvsafe.PLAIN_NUMBER.fullmatch(value)), f"{value!r} in {where}"
    return rows


def _cells(rows) -> set[str]:
    return {v for row in rows for v in row}


@pytest.fixture
def evil(app, shared):
    """Partner E named like a formula, with clicks whose sub1 are formulas and conversions on them
    whose txn_id are formulas; a second campaign named like a formula."""
    w = shared
    camp = make_campaign(w["adv"], events=[{"key": "sale", "client_fee_minor": 1000, "payout_minor": 400}])
    camp.name = "=1+1 campaign"
    e = make_partner(name="@SUM(1) Partner")
    le = make_link(e, camp)
    for i, sub in enumerate(EVIL_SUBS):
        click_id = _click(le, f"visitor-evil-{i}", timedelta(minutes=30 + i), sub)
        _convert(camp, le, click_id, ("-2+3", "+cmd|' /C calc'!A0")[i])
    rebuild_rollups()
    make_user("e@visibility.example", role="partner", password=PW, partner_id=e.id)
    w["users"]["e"] = ("e@visibility.example", new_key("partner", partner_id=e.id)[0])
    return {**w, "e": e, "evil_camp": camp}


def test_sub_ids_like_formulas_are_neutralised_in_every_report_and_earnings_csv(app, evil):
    w = evil
    quoted = {"'" + s for s in EVIL_SUBS}
    for who in ("staff", "client", "e"):
        web = _login(app, w, who)
        base = "/client/reports" if who == "client" else "/reports"
        for group in ("sub1", "campaign", "partner"):
            text = web.get(base, query_string={"group_by": group, "format": "csv", **_range()}).get_data(as_text=True)
            rows = _assert_safe_csv(text, f"{who} {group}")
            if group == "sub1":
                assert quoted <= _cells(rows), who
    web = _login(app, w, "e")
    for table in PORTAL_CSVS:
        rows = _assert_safe_csv(web.get(f"/partner/earnings/{table}.csv").get_data(as_text=True), table)
        if table in ("links", "conversions"):
            assert quoted <= _cells(rows), table
    # the partner sees its own formula-like sub IDs on its pages as plain text (escaped HTML)
    assert "=HYPERLINK(&#34;http://x&#34;)" in web.get("/partner/earnings").get_data(as_text=True)


def test_invoice_csv_neutralises_campaign_names_and_order_ids(app, evil):
    from partnernet.clients import invoices

    w = evil
    today = clock.utcnow().date()
    (inv,) = invoices.build_invoice(w["adv"].id, today.year, today.month)
    for who, path in (("client", f"/client/invoices/{inv.id}.csv"), ("staff", f"/staff/invoices/{inv.id}.csv")):
        resp = _login(app, w, who).get(path)
        assert resp.status_code == 200, (who, path)
        cells = _cells(_assert_safe_csv(resp.get_data(as_text=True), path))
        assert {"'-2+3", "'+cmd|' /C calc'!A0", "'=1+1 campaign"} <= cells and "97.31" in cells


def test_payout_files_neutralise_names_and_keep_amounts(app, evil):
    from partnernet.conversions.review import approve_conversion
    from partnernet.models import Conversion
    from partnernet.payouts.exports import export_csv, export_paypal_csv
    from partnernet.payouts.services import approve_batch, create_batch

    w = evil
    maker, checker = make_user("maker@visibility.example"), make_user("checker@visibility.example")
    for conv in db.session.scalars(select(Conversion).where(Conversion.partner_id == w["e"].id)).all():
        approve_conversion(conv.id, user_id=maker.id)
    batch = create_batch("USD", 0, maker.id)
    approve_batch(batch.id, checker.id)
    bank = _assert_safe_csv(export_csv(batch.id), "export.csv")
    assert bank[0][:5] == ["partner_id", "name", "payout_email", "amount", "currency"]
    assert [r[1:5] for r in bank[1:]] == [["'@SUM(1) Partner", w["e"].email, "8.00", "USD"]]
    paypal = _assert_safe_csv(export_paypal_csv(batch.id), "paypal.csv")
    assert [r[:3] for r in paypal] == [[w["e"].email, "8.00", "USD"]]


def test_api_answers_carry_formula_sub_ids_as_they_are(client, evil):
    # JSON is not a spreadsheet: the API keeps the partner's own sub IDs unchanged
    rows = _api(client, evil, "e").get("/reports", query_string={"group_by": "sub1", **_range()}).get_json()["items"]
    assert set(EVIL_SUBS) <= {r["key"] for r in rows}
