"""Sub IDs never cause an error page (CONTRACT §1), on SQLite and PostgreSQL.

Attacks tried: NUL, other C0 controls, DEL and C1 controls, the UTF-8 bytes of a lone UTF-16
surrogate and a 10,000-character value in the sub IDs (and in the other query values) of the
tracking link and the pixel; five 255-character sub IDs on the partner's link page, whose QR code
cannot hold the URL. Each answers as usual (302, the GIF, 200) and stores the cleaned value
(README, Tracking: control characters dropped, then cut to 255 code points)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from partnernet.extensions import db
from partnernet.models import TrafficRollup
from partnernet.text import is_clean
from partnernet.tracking.urls import clip_sub
from tests.factories import make_user
from tests.services.test_redirect import clicks, get, query_of, setup_link, token_of


@pytest.mark.parametrize("raw, stored", [
    ("a%00b", "ab"),
    ("a%01b%1Fc", "abc"),
    ("a%7Fb", "ab"),
    ("a%C2%85b%C2%9Fc", "abc"),  # C1 controls (NEL, APC)
    ("tab%09and%0D%0Aline", "tab\tand\r\nline"),
    ("%00%00", ""),
    ("plain text ü", "plain text ü"),
])
def test_control_characters_are_dropped_from_sub_ids(app, client, raw, stored):
    *_, link = setup_link(campaign_kw={"destination_url": "https://acme.example/l?s={sub1}"})
    resp = get(client, f"/c/{token_of(app, link)}?sub1={raw}&sub2={raw}&sub5={raw}")
    assert resp.status_code == 302, resp.get_data(as_text=True)[:200]
    assert query_of(resp.headers["Location"])["s"] == [stored]
    (c,) = clicks()
    assert (c.sub1, c.sub2, c.sub3, c.sub5) == (stored, stored, None, stored)


def test_a_lone_surrogate_and_broken_utf8_never_break_the_redirect(app, client):
    *_, link = setup_link()
    for raw in ("%ED%A0%80x", "%FFx", "%C3x", "%"):
        assert get(client, f"/c/{token_of(app, link)}?sub1={raw}").status_code == 302, raw
    stored = [c.sub1 for c in clicks()]
    assert len(stored) == 4 and all(s is not None and is_clean(s) for s in stored)
    assert clip_sub("a\ud800b\udfff") == "a\ufffdb\ufffd"  # a surrogate in a str: U+FFFD (pure rule)


def test_a_10000_character_sub_id_is_cut_after_cleaning(app, client):
    *_, link = setup_link()
    raw = "%00" * 10 + "x" * 10_000
    resp = get(client, f"/c/{token_of(app, link)}?sub1={raw}&sub4=" + "é" * 10_000)
    assert resp.status_code == 302
    (c,) = clicks()
    assert c.sub1 == "x" * 255 and c.sub4 == "é" * 255


def test_nul_in_other_query_values_and_names_is_not_an_error(app, client):
    *_, link = setup_link(campaign_kw={"deep_link_hosts": ["acme.example"]})
    tok = token_of(app, link)
    resp = get(client, f"/c/{tok}?utm%00x=1&other=a%00b&url=https://acme.example/deep%00x")
    assert resp.status_code == 302
    assert resp.headers["Location"].startswith("https://acme.example/landing?")  # the unsafe url is ignored
    resp = get(client, f"/c/{tok}?url=https://acme.example/deep&sub1=%01ok")
    assert resp.status_code == 302 and resp.headers["Location"].startswith("https://acme.example/deep?")
    assert clicks()[-1].sub1 == "ok"


def test_the_pixel_cleans_its_sub_id(app, client):
    *_, link = setup_link()
    resp = get(client, f"/i/{token_of(app, link)}?sub1=a%00b%01c")
    assert resp.status_code == 200 and resp.mimetype == "image/gif"
    db.session.expire_all()
    subs = set(db.session.scalars(select(TrafficRollup.sub1).where(TrafficRollup.link_id == link.id)))
    assert subs == {"abc"}


def test_other_pages_still_refuse_a_nul(client):
    """Only the tracker cleans what it reads; forms and other pages keep their 400."""
    assert client.get("/login?next=%00").status_code == 400


@pytest.mark.parametrize("sub", ["é" * 255, "x" * 255])
def test_link_page_with_five_long_sub_ids_degrades_its_qr_code(app, client, sub):
    *_, partner, link = setup_link()
    make_user(partner.email, role="partner", partner_id=partner.id)
    assert client.post("/login", data={"email": partner.email, "password": "correct horse battery"}).status_code == 302
    query = {f"sub{i}": sub for i in range(1, 6)}
    page = client.get(f"/partner/links/{link.id}", query_string=query)
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert '<svg' in text and 'class="qr"' in text
    too_long = "too long for a QR code" in text
    assert too_long == (sub[0] == "é")  # 5 x 255 "é" is about 7,700 URL bytes: no QR code holds it
    short = client.get(f"/partner/links/{link.id}", query_string={"sub1": "ig"}).get_data(as_text=True)
    assert "too long for a QR code" not in short and 'class="qr"' in short
