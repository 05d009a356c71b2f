"""partnernet.tracking.urls: deep-link allow-list, macros and query merging (CONTRACT §1)."""

from __future__ import annotations

import pytest

from partnernet.tracking.urls import (
    build_destination,
    choose_destination,
    clip_sub,
    deep_link_allowed,
    expand_macros,
    host_allowed,
    set_query_param,
)

SHOP = ["shop.example"]


@pytest.mark.parametrize(
    "url, allowed, ok",
    [
        ("https://shop.example/en/sale#top", SHOP, True),
        ("http://www.shop.example/gift-cards?amount=25", SHOP, True),
        ("https://m.shop.example/p/1?size=M&color=blue", SHOP, True),
        ("HTTPS://WWW.SHOP.EXAMPLE/X", SHOP, True),  # scheme and host compared lower-case
        ("https://shop.example./x", SHOP, True),  # trailing dot of a FQDN
        ("https://shop.example:8443/x", SHOP, True),  # a port does not change the host
        ("https://user:pw@shop.example/", SHOP, True),  # userinfo ignored, host is shop.example
        ("  https://shop.example/x  ", SHOP, True),  # surrounding spaces trimmed
        ("https://www.shop.example/x", ["*.shop.example"], True),
        ("https://www.shop.example/x", ["https://shop.example/"], True),
        ("https://shop.example/x", ["SHOP.Example"], True),
        # refused
        ("https://evilshop.example/", SHOP, False),  # look-alike, not a sub-domain
        ("https://shop.example.evil.example/login", SHOP, False),
        ("https://shop.example@evil.example/", SHOP, False),  # userinfo trick
        ("https://evil.example\\@shop.example/", SHOP, False),  # backslash: browsers go to evil.example
        ("https://evil.example%2eshop.example/", SHOP, False),  # percent in host
        ("https:/\\evil.example", SHOP, False),
        ("//evil.example/x", SHOP, False),  # protocol-relative
        ("//shop.example/x", SHOP, False),  # protocol-relative even on an allowed host
        ("https:shop.example/x", SHOP, False),  # no authority
        ("javascript:alert(document.cookie)", SHOP, False),
        ("javascript://shop.example/%0Aalert(1)", SHOP, False),
        ("data:text/html,<h1>hi</h1>", SHOP, False),
        ("ftp://www.shop.example/file", SHOP, False),
        ("myapp://shop.example/x", SHOP, False),  # app schemes only from the campaign or link
        ("https://evil.example/phish", SHOP, False),
        ("https://shop.example/x", [], False),  # no allow-list: no deep links at all
        ("https://shop.example/x", None, False),
        ("https://sh\top.example/x", SHOP, False),  # control characters
        ("https://shop.example:99999/x", SHOP, False),  # bad port
        ("https://[::1]/x", SHOP, False),
        ("https:///shop.example", SHOP, False),
        ("", SHOP, False),
        (None, SHOP, False),
        ("https://" + "a" * 5000 + ".shop.example/", SHOP, False),
    ],
)
def test_deep_link_allowed(url, allowed, ok):
    assert deep_link_allowed(url, allowed) is ok


@pytest.mark.parametrize(
    "host, allowed, ok",
    [
        ("shop.example", SHOP, True),
        ("a.b.shop.example", SHOP, True),
        ("evilshop.example", SHOP, False),
        ("shop.example.evil", SHOP, False),
        ("example", SHOP, False),
        ("", SHOP, False),
        (None, SHOP, False),
        ("bücher.example", ["xn--bcher-kva.example"], True),  # IDN compared as punycode
        ("bücher.example", ["bücher.example"], True),
    ],
)
def test_host_allowed(host, allowed, ok):
    assert host_allowed(host, allowed) is ok


def test_choose_destination_order():
    camp = "https://www.shop.example/"
    link = "https://www.shop.example/de/sale?x=1#reviews"
    assert choose_destination("https://m.shop.example/p/1", link, camp, SHOP) == ("url", "https://m.shop.example/p/1")
    assert choose_destination("https://evil.example/", link, camp, SHOP) == ("link", link)
    assert choose_destination(None, link, camp, SHOP) == ("link", link)
    assert choose_destination("", None, camp, SHOP) == ("campaign", camp)
    assert choose_destination("javascript:alert(1)", None, camp, SHOP) == ("campaign", camp)


@pytest.mark.parametrize(
    "template, values, expected",
    [
        ("https://t.example/?cid={click_id}&ag={sub1}", {"click_id": "AB_c-1", "sub1": "a b&c"},
         "https://t.example/?cid=AB_c-1&ag=a%20b%26c"),
        ("https://t.example/{partner_id}/{campaign_id}", {"partner_id": 7, "campaign_id": 3}, "https://t.example/7/3"),
        ("https://t.example/?s={sub2}&t={sub3}", {}, "https://t.example/?s=&t="),  # absent sub -> ""
        ("https://t.example/?s={sub1}", {"sub1": "日本/#?"}, "https://t.example/?s=%E6%97%A5%E6%9C%AC%2F%23%3F"),
        ("https://t.example/?s={sub1}", {"sub1": "{click_id}"}, "https://t.example/?s=%7Bclick_id%7D"),  # one pass
        ("https://t.example/?x={unknown}&y={SUB1}", {"sub1": "a"}, "https://t.example/?x={unknown}&y={SUB1}"),
        ("https://t.example/?a={sub1}&b={sub1}", {"sub1": "+%"}, "https://t.example/?a=%2B%25&b=%2B%25"),
    ],
)
def test_expand_macros(template, values, expected):
    assert expand_macros(template, values) == expected


@pytest.mark.parametrize(
    "url, expected",
    [
        ("https://s.example/", "https://s.example/?click_id=CID"),
        ("https://s.example", "https://s.example?click_id=CID"),
        # keeps order, encoding and fragment
        ("https://q.example/car?utm_source=partnernet&utm_medium=cpa&lang=en-US#quote-form",
         "https://q.example/car?utm_source=partnernet&utm_medium=cpa&lang=en-US&click_id=CID#quote-form"),
        ("https://s.example/search?q=rote+schuhe&page=2", "https://s.example/search?q=rote+schuhe&page=2&click_id=CID"),
        ("https://s.example/?q=a%20b%2Bc&x=%E6%97%A5", "https://s.example/?q=a%20b%2Bc&x=%E6%97%A5&click_id=CID"),
        ("https://s.example/?flag&=odd&&z=1", "https://s.example/?flag&=odd&&z=1&click_id=CID"),
        # replaces an existing value in place, once
        ("https://s.example/?a=1&click_id=OLD&b=2", "https://s.example/?a=1&click_id=CID&b=2"),
        ("https://s.example/?click_id=1&a=1&click_id=2", "https://s.example/?click_id=CID&a=1"),
        ("https://s.example/?click%5Fid=OLD&a=1", "https://s.example/?click_id=CID&a=1"),  # encoded name
        ("https://s.example/?click_id&a=1", "https://s.example/?click_id=CID&a=1"),
        ("https://s.example/?click_ids=1", "https://s.example/?click_ids=1&click_id=CID"),  # other name
        # fragment edge cases
        ("https://s.example/#a?b=1", "https://s.example/?click_id=CID#a?b=1"),
        ("https://s.example/?#", "https://s.example/?click_id=CID#"),
        ("https://s.example/p?x=1#", "https://s.example/p?x=1&click_id=CID#"),
        # app schemes are kept as they are
        ("myapp://product/12?ref=pn#top", "myapp://product/12?ref=pn&click_id=CID#top"),
        ("myapp:///path", "myapp:///path?click_id=CID"),
        ("myapp:open", "myapp:open?click_id=CID"),
    ],
)
def test_set_query_param(url, expected):
    assert set_query_param(url, "click_id", "CID") == expected


def test_set_query_param_encodes_name_and_value():
    assert set_query_param("https://s.example/?a=1", "my id", "x&y") == "https://s.example/?a=1&my%20id=x%26y"


def test_build_destination_appends_click_param_without_macro():
    url = build_destination("https://www.shop.example/de/sale?color=red&size=42#reviews", click_id="CID",
                            subs={"sub1": "x"}, partner_id=1, campaign_id=2, click_param="click_id")
    assert url == "https://www.shop.example/de/sale?color=red&size=42&click_id=CID#reviews"


def test_build_destination_custom_click_param():
    url = build_destination("https://s.example/?aff_click=old", click_id="CID", subs={}, partner_id=1,
                            campaign_id=2, click_param="aff_click")
    assert url == "https://s.example/?aff_click=CID"


def test_build_destination_with_click_id_macro_adds_no_param():
    url = build_destination("https://track.hanabi.example/i/partnernet?cid={click_id}&adgroup={sub1}&src=pn",
                            click_id="CID", subs={"sub1": "tt bio&1"}, partner_id=1, campaign_id=2)
    assert url == "https://track.hanabi.example/i/partnernet?cid=CID&adgroup=tt%20bio%261&src=pn"


def test_build_destination_app_scheme_and_ids():
    url = build_destination("myapp://open/{campaign_id}?p={partner_id}&s={sub5}", click_id="CID", subs={},
                            partner_id=9, campaign_id=4)
    assert url == "myapp://open/4?p=9&s=&click_id=CID"


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, None),
        ("", ""),
        ("plc_7358", "plc_7358"),
        ("ü" * 300, "ü" * 255),  # code points, not bytes
        ("😀" * 300, "😀" * 255),  # astral code points
        ("a\x00b", "ab"),
        ("x" * 255, "x" * 255),
    ],
)
def test_clip_sub(value, expected):
    assert clip_sub(value) == expected
