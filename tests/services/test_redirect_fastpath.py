"""The redirect's shortcuts (issue 7: CPU per click) give the same answers and records as the
plain code they stand for (CONTRACT §1): the lean Redis call of the one-trip script, the
destination worked out once per template, the visitor cookie header from a template, the
fallback page's URL computed once and the first query values."""

from __future__ import annotations


import secrets

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.http import dump_cookie, http_date

from partnernet.queue import get_redis
from partnernet.tracking import buffer, hotpath
from partnernet.tracking.urls import build_destination
from partnernet.tracking.views import VISITOR_COOKIE_MAX_AGE_S, visitor_cookie_header
from tests.services.test_redirect import CHROME, get, setup_link, token_of
from tests.services.test_redirect_redis import click_in, count_clicks, other_process  # noqa: F401 - fixture

URL_SAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

# -- the destination, worked out once per template --------------------------------------------

TEMPLATES = [
    "https://shop.example/landing",
    "https://shop.example/landing?utm_source=pn",
    "https://quotes.example/car?utm_source=pn&lang=en-US#quote-form",
    "https://shop.example/?click_id=old&x=1&click_id=older",
    "https://shop.example/?a=1&&b=%20c&tid=7#frag?x=1",
    "https://shop.example/?",
    "https://shop.example/#",
    "myapp:///open?screen=deal",
    "myapp://open",
    "https://shop.example/p?x=A&y=B",
]


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize("param", ["click_id", "tid", "a b", "x"])
def test_destination_split_gives_what_build_destination_builds(template, param):
    split = hotpath.destination_split(template, param)
    assert split is not None
    for _ in range(20):
        click_id = "".join(secrets.choice(URL_SAFE) for _ in range(32))
        expected = build_destination(template, click_id=click_id, subs={"sub1": "s"}, partner_id=3,
                                     campaign_id=4, click_param=param)
        assert split[0] + click_id + split[1] == expected


@settings(max_examples=200, deadline=None)
@given(template=st.text(st.sampled_from("ab=&?#/%:AB{}"), max_size=30).map(lambda t: "https://x.example/" + t),
       param=st.sampled_from(["click_id", "a", "b", "A"]),
       click_id=st.text(st.sampled_from(URL_SAFE), min_size=1, max_size=40))
def test_destination_split_agrees_on_any_template(template, param, click_id):
    split = hotpath.destination_split(template, param)
    if "{" in template:
        assert split is None  # may hold a macro: built per click
        return
    assert split is not None
    assert split[0] + click_id + split[1] == build_destination(
        template, click_id=click_id, subs={}, partner_id=1, campaign_id=2, click_param=param)


def test_templates_with_macros_are_built_per_click():
    assert hotpath.destination_split("https://shop.example/?c={click_id}", "click_id") is None
    assert hotpath.destination_split("https://shop.example/?s={sub1}", "click_id") is None


def test_click_ids_are_url_safe(app):
    signer = app.extensions["partnernet_click_signer"]
    for _ in range(200):
        assert set(signer.make(7, 1_800_000_000)) <= set(URL_SAFE)


# -- the visitor cookie header -----------------------------------------------------------------


@pytest.mark.parametrize("secure", [False, True])
@pytest.mark.parametrize("now", [0, 1_800_000_000, 1_800_000_000.999])
def test_visitor_cookie_header_is_what_werkzeug_writes(secure, now):
    value = "0123456789abcdef0123456789abcdef"
    expected = dump_cookie("pn_vid", value, max_age=VISITOR_COOKIE_MAX_AGE_S,
                           expires=http_date(now + VISITOR_COOKIE_MAX_AGE_S), path="/", httponly=True,
                           samesite="Lax", secure=secure)
    assert visitor_cookie_header("pn_vid", value, secure=secure, now=now) == expected


@pytest.mark.parametrize("name, value", [("pn_vid", "a b"), ("pn_vid", 'x"y'), ("pn_vid", "é" * 16),
                                         ("pn_vid", ""), ("vïd", "abc")])
def test_values_werkzeug_would_quote_are_left_to_it(name, value):
    assert visitor_cookie_header(name, value, secure=False) is None


def test_the_redirect_sets_the_cookie_werkzeug_would(app, client):
    *_, link = setup_link()
    resp = get(client, f"/c/{token_of(app, link)}")
    cookie = resp.headers["Set-Cookie"]
    name = app.config["PARTNERNET_VISITOR_COOKIE"]
    _visitor, value = hotpath.visitor_for(None, "203.0.113.7", CHROME)
    assert cookie.startswith(f"{name}={value}; Expires=")
    assert cookie.endswith(f"; Max-Age={VISITOR_COOKIE_MAX_AGE_S}; HttpOnly; Path=/; SameSite=Lax")
    again = get(client, f"/c/{token_of(app, link)}")  # the browser sends it back: not set again
    assert "Set-Cookie" not in again.headers


def test_https_requests_get_a_secure_cookie(app, client):
    *_, link = setup_link()
    resp = get(client, f"/c/{token_of(app, link)}", base_url="https://localhost")
    assert "; Secure; HttpOnly; " in resp.headers["Set-Cookie"]


# -- query values and the fallback page URL -----------------------------------------------------


def test_first_query_values_and_the_fallback_page(app, client):
    _, camp, _, link = setup_link(campaign_kw={"fallback_url": None, "status": "paused"},
                                  client_kw={"website_url": None})
    tok = token_of(app, link)
    resp = get(client, f"/c/{tok}?sub1=a&sub1=b&sub2=&url=x")
    assert resp.headers["Location"] == "/offer-unavailable"
    resp = client.get(f"/c/{tok}", base_url="http://localhost/pn/", headers={"User-Agent": CHROME})
    assert resp.headers["Location"] == "/pn/offer-unavailable"
    from tests.services.test_redirect import clicks

    rows = clicks()
    assert (rows[0].sub1, rows[0].sub2, rows[0].sub3) == ("a", "", None)


# -- the batch's own Redis connection -----------------------------------------------------------


def _kill_batch_connections() -> int:
    """Close, from the server side, the connections of this test's Redis db that last ran XADD."""
    r = get_redis()
    db_index = r.connection_pool.connection_kwargs.get("db", 0)
    killed = 0
    for c in r.client_list():
        if int(c.get("db", -1)) == int(db_index) and c.get("cmd") == "xadd":
            killed += r.client_kill_filter(_id=c["id"])
    return killed


def test_each_click_is_buffered_once_across_a_lost_connection(redis_app, other_process):
    *_, link = setup_link()
    tok = token_of(redis_app, link)
    web = other_process()
    for i in range(3):
        assert click_in(web, f"/c/{tok}", ip=f"198.51.100.{i + 1}").status_code == 302
    assert _kill_batch_connections() >= 1
    for i in range(3, 6):
        assert click_in(web, f"/c/{tok}", ip=f"198.51.100.{i + 1}").status_code == 302
    assert count_clicks() == 0  # the closed connection was made again: nothing went around Redis
    assert buffer.buffered_count() == 6
    assert buffer.flush_clicks() == 6
    assert count_clicks() == 6
