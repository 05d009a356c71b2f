"""The tracking link and the impression pixel, in-process mode (no Redis), on SQLite and
PostgreSQL (CONTRACT §1, §2)."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import func, select

from partnernet import clock, create_app
from partnernet.extensions import db
from partnernet.models import Click, Conversion, LinkCounter, TrafficRollup
from partnernet.signing import LinkSigner
from partnernet.tracking.hotpath import state_cache, visitor_for
from partnernet.tracking.visitor import visitor_signer
from tests.factories import make_campaign, make_client, make_link, make_partner

CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/124.0.0.0 Safari/537.36")
INSTAGRAM = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
             "Mobile/15E148 Instagram 327.0.0.33.111 (iPhone14,5; iOS 17_4; en_US; en; scale=3.00; 1170x2532)")
CPC_EVENTS = [{"key": "install", "client_fee_minor": 450, "payout_minor": 300},
              {"key": "click", "client_fee_minor": 12, "payout_minor": 8}]


def token_of(app, link) -> str:
    return app.extensions["partnernet_link_signer"].dumps(link.id)


def setup_link(*, campaign_kw=None, partner_status="approved", link_kw=None, client_kw=None):
    client = make_client(**(client_kw or {}))
    camp = make_campaign(client, **(campaign_kw or {}))
    partner = make_partner(status=partner_status)
    link = make_link(partner, camp, **(link_kw or {}))
    return client, camp, partner, link


def get(http, path, *, ua=CHROME, ip="203.0.113.7", method="GET", **kw):
    """Request ``path`` from ``ip`` with User-Agent ``ua`` (None: no User-Agent header at all)."""
    headers = kw.pop("headers", {})
    if ua is not None:
        headers["User-Agent"] = ua
    http.environ_base.pop("HTTP_USER_AGENT", None)  # the Flask test client's default agent
    return http.open(path, method=method, headers=headers, environ_base={"REMOTE_ADDR": ip}, **kw)


def clicks():
    db.session.expire_all()
    return list(db.session.scalars(select(Click).order_by(Click.id)))


def query_of(location: str) -> dict:
    return parse_qs(urlsplit(location).query, keep_blank_values=True)


# -- the redirect ------------------------------------------------------------------------------


def test_redirect_appends_click_id_and_records_the_click(app, client):
    _, camp, partner, link = setup_link(campaign_kw={
        "destination_url": "https://quotes.example/car?utm_source=pn&lang=en-US#quote-form"})
    resp = get(client, f"/c/{token_of(app, link)}?sub1=plc_7358&sub2=300x250",
               headers={"Referer": "https://news.example/a"})
    assert resp.status_code == 302
    assert resp.headers["Cache-Control"] == "no-store"
    loc = resp.headers["Location"]
    rows = clicks()
    assert len(rows) == 1
    c = rows[0]
    assert loc == f"https://quotes.example/car?utm_source=pn&lang=en-US&click_id={c.click_id}#quote-form"
    ref = app.extensions["partnernet_click_signer"].verify(c.click_id)
    assert ref is not None and ref.link_id == link.id and not ref.bot and not ref.fallback
    assert len(c.click_id) <= 40
    assert (c.link_id, c.campaign_id, c.partner_id) == (link.id, camp.id, partner.id)
    assert (c.sub1, c.sub2, c.sub3) == ("plc_7358", "300x250", None)
    assert c.ip == "203.0.113.7" and c.user_agent == CHROME and c.referer == "https://news.example/a"
    assert c.is_unique and not c.is_bot and c.fallback_reason is None and c.method == "GET"
    assert c.destination == loc
    cookie = resp.headers["Set-Cookie"]
    signed = visitor_signer(app).sign(c.visitor)  # v2: the cookie is the visitor id, signed
    assert cookie.startswith(f"{app.config['PARTNERNET_VISITOR_COOKIE']}={signed};")
    assert c.flag is None
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Max-Age=31536000" in cookie


def test_click_ids_differ_per_click(app, client):
    *_, link = setup_link()
    locs = {get(client, f"/c/{token_of(app, link)}").headers["Location"] for _ in range(3)}
    assert len(locs) == 3
    assert len({c.click_id for c in clicks()}) == 3


def test_click_id_macro_and_other_macros(app, client):
    _, camp, partner, link = setup_link(campaign_kw={
        "destination_url": "https://track.example/i?cid={click_id}&adgroup={sub1}&p={partner_id}&c={campaign_id}"
                           "&s5={sub5}"})
    resp = get(client, f"/c/{token_of(app, link)}", query_string={"sub1": "tt bio & #1"})
    c = clicks()[0]
    assert resp.headers["Location"] == (f"https://track.example/i?cid={c.click_id}&adgroup=tt%20bio%20%26%20%231"
                                        f"&p={partner.id}&c={camp.id}&s5=")


def test_existing_click_param_is_replaced_and_custom_name_used(app, client):
    *_, link = setup_link(campaign_kw={"destination_url": "https://s.example/?aff=OLD&x=1", "click_param": "aff"})
    loc = get(client, f"/c/{token_of(app, link)}").headers["Location"]
    assert loc == f"https://s.example/?aff={clicks()[0].click_id}&x=1"


def test_app_scheme_destination_kept(app, client):
    *_, link = setup_link(campaign_kw={"destination_url": "myapp://product/12?ref=pn"})
    loc = get(client, f"/c/{token_of(app, link)}").headers["Location"]
    assert loc == f"myapp://product/12?ref=pn&click_id={clicks()[0].click_id}"


@pytest.mark.parametrize(
    "url, honoured",
    [
        ("https://m.shop.example/p/1?size=M", True),
        ("https://shop.example/en/sale#top", True),
        ("https://evilshop.example/", False),
        ("https://shop.example@evil.example/", False),
        ("//evil.example/x", False),
        ("javascript:alert(document.cookie)", False),
        ("ftp://www.shop.example/file", False),
    ],
)
def test_deep_link_param(app, client, url, honoured):
    *_, link = setup_link(campaign_kw={"destination_url": "https://www.shop.example/",
                                       "deep_link_hosts": ["shop.example"]})
    loc = get(client, f"/c/{token_of(app, link)}", query_string={"url": url}).headers["Location"]
    parts = urlsplit(loc)
    if honoured:
        assert loc.startswith(url.split("#")[0].split("?")[0])
        assert parts.hostname.endswith("shop.example")
    else:
        assert parts.scheme == "https" and parts.hostname == "www.shop.example" and parts.path == "/"
    assert query_of(loc)["click_id"] == [clicks()[0].click_id]


def test_link_deep_link_is_default_and_url_param_wins(app, client):
    *_, link = setup_link(
        campaign_kw={"destination_url": "https://www.shop.example/", "deep_link_hosts": ["shop.example"]},
        link_kw={"deep_link": "https://www.shop.example/de/sale?color=red#reviews"})
    tok = token_of(app, link)
    loc = get(client, f"/c/{tok}").headers["Location"]
    assert loc.startswith("https://www.shop.example/de/sale?color=red&click_id=") and loc.endswith("#reviews")
    loc = get(client, f"/c/{tok}", query_string={"url": "https://m.shop.example/x"}).headers["Location"]
    assert loc.startswith("https://m.shop.example/x?click_id=")
    loc = get(client, f"/c/{tok}", query_string={"url": "https://evil.example/"}).headers["Location"]
    assert loc.startswith("https://www.shop.example/de/sale?color=red&click_id=")


def test_sub_ids_are_cut_to_255_code_points_never_an_error(app, client):
    *_, link = setup_link()
    subs = {"sub1": "ü" * 300, "sub2": "日本語テスト", "sub3": "<script>alert(1)</script>",
            "sub4": "a&b=c#d%e+f\tg", "sub5": "😀" * 300}
    resp = get(client, f"/c/{token_of(app, link)}", query_string=subs)
    assert resp.status_code == 302
    c = clicks()[0]
    assert c.sub1 == "ü" * 255 and c.sub2 == "日本語テスト" and c.sub3 == subs["sub3"]
    assert c.sub4 == subs["sub4"] and c.sub5 == "😀" * 255


# -- tokens --------------------------------------------------------------------------------------


def _tampered(token: str) -> list[str]:
    mid = len(token) // 2
    out = [token[:mid] + ("B" if token[mid] == "A" else "A") + token[mid + 1:],
           token[:-1] + ("A" if token[-1] != "A" else "B"),
           token + "A", token[:-1], token.upper() if token.upper() != token else token.lower()]
    # the last character with its case changed, when it is a letter
    if token[-1].isalpha():
        out.append(token[:-1] + token[-1].swapcase())
    return [t for t in out if t != token]


def test_tampered_tokens_answer_html_404(app, client):
    *_, link = setup_link()
    token = token_of(app, link)
    for bad in _tampered(token):
        for method in ("GET", "HEAD"):
            resp = get(client, f"/c/{bad}", method=method)
            assert resp.status_code == 404, bad
            assert "Location" not in resp.headers
        assert "text/html" in get(client, f"/c/{bad}").content_type
        assert get(client, f"/i/{bad}").status_code == 404
    assert clicks() == []


def test_unknown_link_and_junk_tokens_404(app, client):
    signer = app.extensions["partnernet_link_signer"]
    for path in (f"/c/{signer.dumps(999999)}", "/c/x", "/c/" + "A" * 250, f"/i/{signer.dumps(999999)}"):
        assert get(client, path).status_code == 404


def test_tokens_signed_with_a_fallback_key_still_work(app, tmp_path):
    *_, link = setup_link()
    old_token = LinkSigner([app.config["SECRET_KEY"]]).dumps(link.id)
    rotated = create_app({
        "TESTING": True, "SQLALCHEMY_DATABASE_URI": app.config["SQLALCHEMY_DATABASE_URI"],
        "SECRET_KEY": "a-new-secret-key", "SECRET_KEY_FALLBACKS": [app.config["SECRET_KEY"]], "REDIS_URL": None,
    })
    assert rotated.extensions["partnernet_link_signer"].dumps(link.id) != old_token
    with rotated.app_context():
        try:
            assert get(rotated.test_client(), f"/c/{old_token}").status_code == 302
        finally:
            db.session.remove()
            db.engine.dispose()


# -- fallback ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "campaign_kw, partner_status, reason",
    [
        ({"status": "paused"}, "approved", "paused"),
        ({"budget_minor": 1000}, "approved", "over_budget"),  # spent set to the budget below
        ({}, "suspended", "partner_suspended"),
        ({}, "pending", "partner_not_approved"),
        ({}, "rejected", "partner_not_approved"),
        ({"status": "paused", "budget_minor": 1000}, "suspended", "paused"),  # first reason wins
    ],
)
def test_fallback_reasons(app, client, campaign_kw, partner_status, reason):
    kw = {"deep_link_hosts": ["acme.example"], **campaign_kw}
    _, camp, _, link = setup_link(campaign_kw=kw, partner_status=partner_status)
    if camp.budget_minor is not None:
        camp.spent_minor = camp.budget_minor
        db.session.commit()
    resp = get(client, f"/c/{token_of(app, link)}", query_string={"url": "https://acme.example/deep", "sub1": "s"})
    assert resp.status_code == 302
    assert resp.headers["Location"] == "https://acme.example/fallback"  # as it is: no deep link, no click id
    c = clicks()[0]
    assert c.fallback_reason == reason and c.is_unique and not c.is_bot
    assert app.extensions["partnernet_click_signer"].verify(c.click_id).fallback is True


def test_fallback_destination_order(app, client):
    client_row, camp, _, link = setup_link(campaign_kw={"status": "paused", "fallback_url": None},
                                           client_kw={"website_url": "https://acme.example/home"})
    assert get(client, f"/c/{token_of(app, link)}").headers["Location"] == "https://acme.example/home"
    client_row.website_url = ""
    db.session.commit()
    loc = get(client, f"/c/{token_of(app, link)}").headers["Location"]
    assert urlsplit(loc).path == "/offer-unavailable"
    page = client.get(loc)
    assert page.status_code == 200 and b"not available" in page.data


def test_over_budget_boundary(app, client):
    _, camp, _, link = setup_link(campaign_kw={"budget_minor": 1000})
    camp.spent_minor = 999
    db.session.commit()
    assert get(client, f"/c/{token_of(app, link)}").headers["Location"].startswith("https://acme.example/landing")
    camp.spent_minor = 1000
    db.session.commit()
    assert get(client, f"/c/{token_of(app, link)}").headers["Location"] == "https://acme.example/fallback"


# -- bots ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, ua",
    [("HEAD", CHROME), ("GET", None), ("GET", "   "), ("GET", "Mozilla/5.0 (compatible; Googlebot/2.1)"),
     ("GET", "curl/8.5.0"), ("GET", "WhatsApp/2.23.20.0 A"), ("GET", "TelegramBot (like TwitterBot)")],
)
def test_bots_are_redirected_but_flagged(app, client, method, ua):
    *_, link = setup_link(campaign_kw={"events": CPC_EVENTS})
    resp = get(client, f"/c/{token_of(app, link)}", method=method, ua=ua)
    assert resp.status_code == 302
    c = clicks()[0]
    assert query_of(resp.headers["Location"])["click_id"] == [c.click_id]
    assert c.is_bot and not c.is_unique and c.method == method
    assert app.extensions["partnernet_click_signer"].verify(c.click_id).bot is True
    assert db.session.scalar(select(func.count()).select_from(Conversion)) == 0


def test_in_app_browser_is_human(app, client):
    *_, link = setup_link()
    get(client, f"/c/{token_of(app, link)}", ua=INSTAGRAM)
    assert not clicks()[0].is_bot


# -- unique clicks and the visitor ---------------------------------------------------------------


def test_unique_per_visitor_and_link_with_cookie_jar(app, client):
    *_, link = setup_link()
    *_, link2 = setup_link()
    tok = token_of(app, link)
    r1 = get(client, f"/c/{tok}")
    r2 = get(client, f"/c/{tok}", ip="198.51.100.1")  # same cookie jar, other IP: same visitor
    r3 = get(client, f"/c/{token_of(app, link2)}")
    assert "Set-Cookie" in r1.headers and "Set-Cookie" not in r2.headers
    rows = clicks()
    assert [c.is_unique for c in rows] == [True, False, True]
    assert rows[0].visitor == rows[1].visitor == rows[2].visitor
    assert r3.status_code == 302


def test_visitor_without_cookie_is_ip_and_user_agent(app):
    *_, link = setup_link()
    tok = token_of(app, link)
    a, b = app.test_client(use_cookies=False), app.test_client(use_cookies=False)
    r1 = get(a, f"/c/{tok}")
    get(b, f"/c/{tok}")  # another client, same IP and agent: same visitor
    get(b, f"/c/{tok}", ip="198.51.100.2")  # other IP: other visitor
    rows = clicks()
    assert [c.is_unique for c in rows] == [True, False, True]
    # the cookie carries that same id, signed, so a browser keeping it stays that visitor
    expected, cookie = visitor_for(None, "203.0.113.7", CHROME)
    assert rows[0].visitor == expected and cookie == visitor_signer(app).sign(expected)
    assert f"={cookie};" in r1.headers["Set-Cookie"]


def test_bot_clicks_never_use_up_uniqueness(app, client):
    *_, link = setup_link()
    tok = token_of(app, link)
    get(client, f"/c/{tok}", method="HEAD")
    get(client, f"/c/{tok}")
    assert [c.is_unique for c in clicks()] == [False, True]


def test_unique_window(app, client):
    *_, link = setup_link()
    tok = token_of(app, link)
    start = clock.utcnow()
    clock.set_now(start)
    get(client, f"/c/{tok}")
    clock.set_now(start + timedelta(hours=23))
    get(client, f"/c/{tok}")
    clock.set_now(start + timedelta(hours=24, seconds=1))
    get(client, f"/c/{tok}")
    assert [c.is_unique for c in clicks()] == [True, False, True]


def test_garbage_cookie_is_replaced(app, client):
    *_, link = setup_link()
    name = app.config["PARTNERNET_VISITOR_COOKIE"]
    client.set_cookie(name, "not a valid; visitor")
    resp = get(client, f"/c/{token_of(app, link)}")
    expected, cookie = visitor_for(None, "203.0.113.7", CHROME)
    assert clicks()[0].visitor == expected
    assert f"{name}={cookie};" in resp.headers["Set-Cookie"]


# -- rollups and CPC conversions -----------------------------------------------------------------


def test_rollups_and_cpc_conversions(app, client):
    _, camp, partner, link = setup_link(campaign_kw={"events": CPC_EVENTS, "default_event": "install"})
    tok = token_of(app, link)
    get(client, f"/c/{tok}", query_string={"sub1": "a"})  # unique, billable -> conversion
    get(client, f"/c/{tok}", query_string={"sub1": "a"})  # repeat
    get(client, f"/c/{tok}", query_string={"sub1": "b"}, method="HEAD")  # bot
    other = app.test_client()
    get(other, f"/c/{tok}", ip="198.51.100.9")  # another visitor, unique -> conversion
    camp.status = "paused"
    db.session.commit()
    get(app.test_client(), f"/c/{tok}", ip="198.51.100.10")  # fallback, unique, not billable
    db.session.expire_all()
    roll = {r.sub1: r for r in db.session.scalars(select(TrafficRollup))}
    assert (roll["a"].clicks, roll["a"].unique_clicks, roll["a"].bot_clicks, roll["a"].fallback_clicks) == (2, 1, 0, 0)
    assert (roll["b"].clicks, roll["b"].unique_clicks, roll["b"].bot_clicks) == (1, 0, 1)
    assert (roll[""].clicks, roll[""].unique_clicks, roll[""].fallback_clicks) == (2, 2, 1)
    assert all(r.link_id == link.id and r.hour.minute == 0 for r in roll.values())
    convs = list(db.session.scalars(select(Conversion).order_by(Conversion.id)))
    rows = clicks()
    assert [c.click_id for c in convs] == [rows[0].click_id, rows[3].click_id]
    for conv in convs:
        assert (conv.event_key, conv.status, conv.txn_id, conv.client_fee_minor) == ("click", "pending", None, 12)
        assert conv.partner_id == partner.id and conv.link_id == link.id and conv.click_at is not None
    db.session.refresh(camp)
    assert camp.spent_minor == 24


def test_cpc_click_over_budget_is_rejected(app, client):
    _, camp, _, link = setup_link(campaign_kw={"events": CPC_EVENTS, "budget_minor": 20})
    tok = token_of(app, link)
    get(client, f"/c/{tok}")
    get(app.test_client(), f"/c/{tok}", ip="198.51.100.3")  # 12 + 12 > 20
    convs = list(db.session.scalars(select(Conversion).order_by(Conversion.id)))
    assert [(c.status, c.reason) for c in convs] == [("pending", None), ("rejected", "over_budget")]


def test_no_conversion_without_click_event(app, client):
    *_, link = setup_link()
    get(client, f"/c/{token_of(app, link)}")
    assert db.session.scalar(select(func.count()).select_from(Conversion)) == 0


# -- impressions ---------------------------------------------------------------------------------


def test_impression_pixel(app, client):
    *_, link = setup_link()
    tok = token_of(app, link)
    resp = get(client, f"/i/{tok}")
    assert resp.status_code == 200 and resp.mimetype == "image/gif"
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.data.startswith(b"GIF89a") and len(resp.data) == 43
    get(client, f"/i/{tok}", ua="facebookexternalhit/1.1")
    get(client, f"/i/{tok}", query_string={"sub1": "banner"})
    db.session.expire_all()
    roll = {r.sub1: r for r in db.session.scalars(select(TrafficRollup))}
    assert (roll[""].impressions, roll[""].bot_impressions, roll[""].clicks) == (1, 1, 0)  # impressions: non-bot
    assert (roll["banner"].impressions, roll["banner"].bot_impressions) == (1, 0)
    # v2: the same visitor in the same hour is billed once (both hits count as impressions)
    assert db.session.get(LinkCounter, link.id).impressions == 1
    assert clicks() == []


def test_every_thousandth_impression_is_a_conversion(app, client):
    events = [{"key": "sale", "client_fee_minor": 1000, "payout_minor": 500},
              {"key": "impression", "client_fee_minor": 250, "payout_minor": 100}]
    _, camp, partner, link = setup_link(campaign_kw={"events": events})
    db.session.add(LinkCounter(link_id=link.id, impressions=998))
    db.session.commit()
    tok = token_of(app, link)
    get(client, f"/i/{tok}", ip="198.51.100.1")
    get(client, f"/i/{tok}", ip="198.51.100.2", method="HEAD")  # bots are not counted
    get(client, f"/i/{tok}", ip="198.51.100.1")  # the same visitor in the same hour: not billed
    assert db.session.scalar(select(func.count()).select_from(Conversion)) == 0
    get(client, f"/i/{tok}", ip="198.51.100.3")  # the 1,000th billable
    get(client, f"/i/{tok}", ip="198.51.100.4")
    convs = list(db.session.scalars(select(Conversion)))
    assert len(convs) == 1
    conv = convs[0]
    assert (conv.event_key, conv.dedup_key, conv.click_id, conv.status, conv.client_fee_minor) == (
        "impression", f"i:{link.id}:1000", None, "pending", 250)
    assert conv.partner_id == partner.id
    db.session.expire_all()
    assert db.session.get(LinkCounter, link.id).impressions == 1001


def test_impressions_in_fallback_are_not_billed(app, client):
    *_, link = setup_link(campaign_kw={"status": "paused"})
    get(client, f"/i/{token_of(app, link)}")
    db.session.expire_all()
    assert db.session.scalar(select(TrafficRollup.impressions)) == 1
    assert db.session.get(LinkCounter, link.id) is None


def test_state_is_read_fresh_without_redis(app, client):
    """Without Redis every redirect reads the state, so a pause made by another process is
    seen at once (no stale in-process cache)."""
    _, camp, _, link = setup_link()
    tok = token_of(app, link)
    assert get(client, f"/c/{tok}").headers["Location"].startswith("https://acme.example/landing")
    camp.status = "paused"
    db.session.commit()  # no bump_state_version: a writer that forgot still takes effect
    assert get(client, f"/c/{tok}").headers["Location"] == "https://acme.example/fallback"
    assert state_cache(app).entries  # the last state is kept for a database outage
