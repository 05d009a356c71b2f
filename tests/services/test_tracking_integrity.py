"""Result integrity on the tracking side (CONTRACT v2 §1, §2), attacked through HTTP on SQLite and
PostgreSQL: forged visitor cookies, cookie stuffing with ``<img>`` / ``<iframe>`` loads, one
browser reloading an impression pixel, and mail scanners and messenger previews clicking links.
"""

from __future__ import annotations

import secrets
import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from partnernet import clock
from partnernet.extensions import db
from partnernet.ledger.attribution import touches
from partnernet.models import Click, Conversion, LinkCounter, TrafficRollup
from partnernet.signing import VisitorCookieSigner
from partnernet.tracking.visitor import visitor_for, visitor_signer
from tests.factories import make_campaign, make_client, make_link, make_partner

CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/124.0.0.0 Safari/537.36")
IP = "203.0.113.7"
CPC_EVENTS = [{"key": "sale", "client_fee_minor": 200, "payout_percent": "50"},
              {"key": "click", "client_fee_minor": 12, "payout_minor": 8}]
CPM_EVENTS = [{"key": "impression", "client_fee_minor": 250, "payout_minor": 150}]


def token_of(app, link) -> str:
    return app.extensions["partnernet_link_signer"].dumps(link.id)


def get(http, path, *, ua=CHROME, ip=IP, headers=None, **kw):
    """GET ``path`` as a browser at ``ip`` (the test client's own agent removed)."""
    http.environ_base.pop("HTTP_USER_AGENT", None)
    return http.get(path, headers={"User-Agent": ua, **(headers or {})}, environ_base={"REMOTE_ADDR": ip}, **kw)


def clicks() -> list[Click]:
    db.session.expire_all()
    return list(db.session.scalars(select(Click).order_by(Click.id)))


def count(model) -> int:
    return db.session.scalar(select(func.count()).select_from(model))


def cookie_value(resp, app) -> str | None:
    name = app.config["PARTNERNET_VISITOR_COOKIE"]
    for header in resp.headers.getlist("Set-Cookie"):
        if header.startswith(name + "="):
            return header.split(";", 1)[0].split("=", 1)[1]
    return None


def postback(http, client_row, click_id, txn):
    return http.get("/postback", query_string={"key": client_row.postback_key, "click_id": click_id, "txn_id": txn})


# -- the visitor cookie is issued and signed by the server --------------------------------------


def test_a_made_up_cookie_on_every_request_gives_no_new_unique_clicks(app):
    adv = make_client()
    camp = make_campaign(adv, events=CPC_EVENTS)
    link = make_link(make_partner(), camp)
    http = app.test_client(use_cookies=False)
    name = app.config["PARTNERNET_VISITOR_COOKIE"]
    forged = [secrets.token_hex(16) for _ in range(10)]  # the v1 cookie shape: accepted as is before v2
    forged += [secrets.token_urlsafe(36)[:48] for _ in range(10)]  # the v2 shape, a made-up signature
    answers = [get(http, f"/c/{token_of(app, link)}", headers={"Cookie": f"{name}={value}"}) for value in forged]
    assert all(r.status_code == 302 for r in answers)
    rows = clicks()
    expected, signed = visitor_for(None, IP, CHROME)
    assert [c.is_unique for c in rows] == [True] + [False] * 19
    assert {c.visitor for c in rows} == {expected}  # the IP and agent, never the forged value
    assert {cookie_value(r, app) for r in answers} == {signed}  # a fresh signed cookie each time
    assert count(Conversion) == 1  # one CPC conversion, not twenty


def test_an_altered_signed_cookie_is_ignored(app):
    link = make_link(make_partner(), make_campaign(make_client()))
    name = app.config["PARTNERNET_VISITOR_COOKIE"]
    good = visitor_signer(app).sign("a" * 32)
    altered = [good[:-1] + ("A" if good[-1] != "A" else "B"),  # the last character of the MAC
               "b" + good[1:],  # another visitor id under the same MAC
               good.upper() if good.upper() != good else good.lower(),
               good + "x"]
    http = app.test_client(use_cookies=False)
    for value in altered:
        resp = get(http, f"/c/{token_of(app, link)}", headers={"Cookie": f"{name}={value}"})
        assert cookie_value(resp, app) == visitor_for(None, IP, CHROME)[1]
    assert {c.visitor for c in clicks()} == {visitor_for(None, IP, CHROME)[0]}


def test_a_signed_cookie_keeps_its_visitor_across_networks(app):
    link = make_link(make_partner(), make_campaign(make_client()))
    tok = token_of(app, link)
    browser = app.test_client()
    first = get(browser, f"/c/{tok}")
    assert cookie_value(first, app) is not None
    second = get(browser, f"/c/{tok}", ip="198.51.100.20")  # same browser on another network
    assert cookie_value(second, app) is None  # a valid, current cookie is not set again
    rows = clicks()
    assert rows[0].visitor == rows[1].visitor and [c.is_unique for c in rows] == [True, False]


def test_cookies_signed_before_a_key_rotation_still_verify():
    old, new = "old-secret-key", "new-secret-key"
    cookie = VisitorCookieSigner([old]).sign("0123456789abcdef0123456789abcdef")
    rotated = VisitorCookieSigner([new, old])
    assert rotated.verify(cookie) == ("0123456789abcdef0123456789abcdef", False)  # verified, re-sign it
    assert rotated.verify(rotated.sign("0123456789abcdef0123456789abcdef"))[1] is True
    assert VisitorCookieSigner([new]).verify(cookie) is None  # the old key dropped: ignored
    with pytest.raises(ValueError):
        rotated.sign("not a visitor id")


# -- non-navigation requests (cookie stuffing) ----------------------------------------------------


@pytest.mark.parametrize("dest", ["image", "iframe", "script", "empty", "IMAGE", ""])
def test_an_img_or_iframe_load_is_redirected_but_never_billable(app, dest):
    adv = make_client()
    camp = make_campaign(adv, events=CPC_EVENTS)
    link = make_link(make_partner(), camp)
    tok = token_of(app, link)
    browser = app.test_client()
    stuffed = get(browser, f"/c/{tok}", headers={"Sec-Fetch-Dest": dest, "Sec-Fetch-Mode": "no-cors"})
    assert stuffed.status_code == 302 and stuffed.headers["Location"].startswith("https://acme.example/landing?")
    (c,) = clicks()
    assert (c.is_bot, c.flag, c.is_unique) == (True, "non_navigation", False)
    assert app.extensions["partnernet_click_signer"].verify(c.click_id).bot is True
    assert count(Conversion) == 0  # no CPC conversion
    # the advertiser's postback on the stuffed click is rejected bot_click
    answer = postback(app.test_client(), adv, c.click_id, "ORDER-1")
    assert answer.status_code == 200 and answer.get_json()["reason"] == "bot_click"
    # the same person really clicking later is unique: the stuffed load used nothing up
    real = get(browser, f"/c/{tok}", headers={"Sec-Fetch-Dest": "document", "Sec-Fetch-Mode": "navigate"})
    assert real.status_code == 302
    rows = clicks()
    assert (rows[1].is_bot, rows[1].flag, rows[1].is_unique) == (False, None, True)
    db.session.expire_all()
    roll = db.session.scalars(select(TrafficRollup)).one()
    assert (roll.clicks, roll.unique_clicks, roll.bot_clicks) == (2, 1, 1)  # reports: a bot click


def test_requests_without_the_header_are_judged_as_before(app):
    link = make_link(make_partner(), make_campaign(make_client()))
    get(app.test_client(), f"/c/{token_of(app, link)}")
    get(app.test_client(), f"/c/{token_of(app, link)}", ua="curl/8.5.0", ip="198.51.100.3")
    rows = clicks()
    assert [(c.is_bot, c.flag, c.is_unique) for c in rows] == [(False, None, True), (True, "bot", False)]


def test_a_stuffed_click_is_never_a_touch(app):
    adv = make_client()
    camp = make_campaign(adv, events=CPC_EVENTS[:1], attribution_model="linear")
    stuffer, honest, converter = (make_partner(name=n) for n in ("Stuffer", "Honest", "Converter"))
    ls, lh, lc = (make_link(p, camp) for p in (stuffer, honest, converter))
    browser = app.test_client()
    get(browser, f"/c/{token_of(app, ls)}", headers={"Sec-Fetch-Dest": "image"})  # hidden <img> on a page
    get(browser, f"/c/{token_of(app, ls)}", headers={"Sec-Fetch-Dest": "iframe"})  # hidden <iframe>
    get(browser, f"/c/{token_of(app, lh)}")  # a real click without the header (in-app browser)
    get(browser, f"/c/{token_of(app, lc)}", headers={"Sec-Fetch-Dest": "document"})
    converting = clicks()[-1]
    assert postback(app.test_client(), adv, converting.click_id, "ORDER-9").status_code == 201
    conv = db.session.scalars(select(Conversion)).one()
    assert [t.partner_id for t in touches(conv)] == [honest.id, converter.id]


# -- mail scanners and messenger previews ---------------------------------------------------------


@pytest.mark.parametrize("ua", [
    "Mozilla/4.0 (compatible; ms-office; MSOffice 16)",
    "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17231; Pro)",
    "Mozilla/5.0 (compatible; Mimecast-URL-Protect/1.0)",
    "Barracuda Sentinel (EE)",
    "Mozilla/5.0 (compatible; proofpoint-urldefense)",
    "Mozilla/5.0 (compatible; Symantec Click-time URL Protection)",
    "Viber",
])
def test_a_scanner_opening_a_mailed_link_is_a_bot_and_leaves_the_unique_click_to_the_person(app, ua):
    adv = make_client()
    link = make_link(make_partner(), make_campaign(adv, events=CPC_EVENTS))
    tok = token_of(app, link)
    scan = get(app.test_client(), f"/c/{tok}", ua=ua)
    assert scan.status_code == 302
    person = get(app.test_client(), f"/c/{tok}")  # same network (the company's gateway), a browser
    assert person.status_code == 302
    rows = clicks()
    assert [(c.is_bot, c.flag, c.is_unique) for c in rows] == [(True, "bot", False), (False, None, True)]
    assert postback(app.test_client(), adv, rows[0].click_id, "T-scan").get_json()["reason"] == "bot_click"
    convs = db.session.execute(select(Conversion.event_key, Conversion.status, Conversion.reason, Conversion.click_id)
                               .order_by(Conversion.id)).all()
    assert [tuple(c) for c in convs] == [("click", "pending", None, rows[1].click_id),  # the person's CPC only
                                         ("sale", "rejected", "bot_click", rows[0].click_id)]


# -- billable impressions (§2) ----------------------------------------------------------------------


def test_1100_pixel_hits_from_one_browser_bill_one_impression(app):
    camp = make_campaign(make_client(), events=CPM_EVENTS)
    link = make_link(make_partner(), camp)
    tok = token_of(app, link)
    start = clock.utcnow().replace(minute=5, second=0, microsecond=0)
    clock.set_now(start)
    browser = app.test_client()
    for _ in range(1100):  # past the 1,000th: billed per hit, this would make a CPM conversion
        assert get(browser, f"/i/{tok}", headers={"Sec-Fetch-Dest": "image"}).status_code == 200
    get(app.test_client(), f"/i/{tok}", ip="198.51.100.50")  # another visitor: billable
    db.session.expire_all()
    assert db.session.get(LinkCounter, link.id).impressions == 2
    assert db.session.scalar(select(func.sum(TrafficRollup.impressions))) == 1101  # all recorded
    clock.set_now(start + timedelta(hours=1))  # the next hour: the browser is billable again
    get(browser, f"/i/{tok}")
    db.session.expire_all()
    assert db.session.get(LinkCounter, link.id).impressions == 3
    assert count(Conversion) == 0  # 3 billable impressions: far from the 1,000th


def test_a_pixel_hit_with_a_signed_cookie_is_that_visitor(app):
    link = make_link(make_partner(), make_campaign(make_client(), events=CPM_EVENTS))
    name = app.config["PARTNERNET_VISITOR_COOKIE"]
    cookie = visitor_signer(app).sign("f" * 32)
    for ip in ("198.51.100.1", "198.51.100.2", "198.51.100.3"):  # one cookie, three networks: one visitor
        get(app.test_client(use_cookies=False), f"/i/{token_of(app, link)}", ip=ip,
            headers={"Cookie": f"{name}={cookie}"})
    for i in range(3):  # made-up cookies: the visitor is the IP and agent (one visitor)
        get(app.test_client(use_cookies=False), f"/i/{token_of(app, link)}", ip="198.51.100.9",
            headers={"Cookie": f"{name}={secrets.token_hex(24)}"})
    db.session.expire_all()
    assert db.session.get(LinkCounter, link.id).impressions == 2


def test_concurrent_pixel_hits_of_one_visitor_bill_once(pg_app):
    link = make_link(make_partner(), make_campaign(make_client(), events=CPM_EVENTS))
    tok = token_of(pg_app, link)
    n = 12
    barrier = threading.Barrier(n)
    errors: list = []

    def hit() -> None:
        try:
            with pg_app.app_context():
                http = pg_app.test_client()
                barrier.wait(timeout=60)
                assert get(http, f"/i/{tok}").status_code == 200
                db.session.remove()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=hit) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    db.session.expire_all()
    assert db.session.get(LinkCounter, link.id).impressions == 1
    assert db.session.scalar(select(func.sum(TrafficRollup.impressions))) == n
