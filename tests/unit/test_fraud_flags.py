"""Fraud flag rules as pure functions (partnernet.conversions.flags; CONTRACT v2 §5 ``flags``):
a table of facts and their flags, properties over the thresholds, and the settings read from
the environment (partnernet.config)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from partnernet.config import DEFAULTS, from_environment
from partnernet.conversions.flags import FLAG_CODES, Facts, FlagSettings, evaluate, fast_threshold_s

S = FlagSettings()  # defaults: 20 clicks / 5 conversions in 24 h, sale 30 s, lead 3 s

TABLE = [
    # (facts, expected flag codes)
    (Facts("sale"), []),
    (Facts("sale", click_age_s=29.9), ["fast_conversion"]),
    (Facts("sale", click_age_s=30), []),
    (Facts("lead", click_age_s=5), []),  # a lead form seconds after the click is normal
    (Facts("lead", click_age_s=2), ["fast_conversion"]),
    (Facts("signup", click_age_s=10), []),
    (Facts("install", click_age_s=10), ["fast_conversion"]),  # judged as a sale
    (Facts("call", click_age_s=10), ["fast_conversion"]),
    (Facts("lead", percent_of_sale=True, click_age_s=10), ["fast_conversion"]),  # a percent-of-sale event is a sale
    (Facts("sale", click_age_s=3600, click_ip="203.0.113.9", ip_clicks=19, ip_conversions=0), []),
    (Facts("sale", click_age_s=3600, click_ip="203.0.113.9", ip_clicks=20, ip_conversions=0), ["ip_flood"]),
    (Facts("sale", click_age_s=3600, click_ip="203.0.113.9", ip_clicks=3, ip_conversions=3), []),
    (Facts("sale", click_age_s=3600, click_ip="203.0.113.9", ip_clicks=3, ip_conversions=4), ["ip_flood"]),
    (Facts("sale", click_age_s=3600, click_ip="203.0.113.9", ip_clicks=1, ip_conversions=0,
           ip_is_partner_login=True), ["self_referral"]),
    (Facts("sale", click_age_s=3600, ip_is_partner_login=True), []),  # no IP known: no IP match
    (Facts("sale", customer_is_partner=True), ["self_referral"]),
    (Facts("sale", click_age_s=1, click_ip="198.51.100.7", ip_clicks=50, ip_conversions=9,
           ip_is_partner_login=True), ["self_referral", "ip_flood", "fast_conversion"]),
]


@pytest.mark.parametrize(("facts", "expected"), TABLE)
def test_flag_table(facts, expected):
    found = evaluate(facts, S)
    assert list(found) == expected
    assert all(isinstance(v, str) and v for v in found.values())


def test_evidence_carries_the_figures():
    found = evaluate(Facts("sale", click_age_s=4.7, click_ip="203.0.113.9", ip_clicks=23, ip_conversions=0,
                           ip_is_partner_login=True), S)
    assert "203.0.113.9" in found["self_referral"]
    assert "23 clicks" in found["ip_flood"] and "limit 20" in found["ip_flood"] and "24 h" in found["ip_flood"]
    assert found["fast_conversion"] == "sale 4 s after the click (under 30 s)"


def test_per_event_setting_wins_and_zero_turns_a_rule_off():
    s = FlagSettings(fast_event_s={"install": 60, "call": 0}, ip_flood_clicks=0, ip_flood_conversions=0)
    assert fast_threshold_s("install", False, s) == 60
    assert evaluate(Facts("install", click_age_s=45), s) == {"fast_conversion": "install 45 s after the click "
                                                                                "(under 60 s)"}
    assert evaluate(Facts("call", click_age_s=0), s) == {}
    assert evaluate(Facts("sale", click_age_s=999, click_ip="x", ip_clicks=10_000, ip_conversions=10_000), s) == {}
    custom = FlagSettings(lead_events=frozenset({"quote_request"}))
    assert fast_threshold_s("quote_request", False, custom) == custom.fast_lead_s
    assert fast_threshold_s("lead", False, custom) == custom.fast_sale_s


@given(age=st.floats(min_value=0, max_value=10_000, allow_nan=False),
       sale_s=st.integers(min_value=0, max_value=3600), lead_s=st.integers(min_value=0, max_value=3600),
       event=st.sampled_from(["sale", "lead", "signup", "install", "call", "deposit"]),
       percent=st.booleans())
def test_fast_conversion_is_exactly_age_under_the_events_threshold(age, sale_s, lead_s, event, percent):
    s = FlagSettings(fast_sale_s=sale_s, fast_lead_s=lead_s)
    limit = fast_threshold_s(event, percent, s)
    assert limit == (lead_s if event in ("lead", "signup") and not percent else sale_s)
    assert ("fast_conversion" in evaluate(Facts(event, percent_of_sale=percent, click_age_s=age), s)) == (
        limit > 0 and age < limit)


@given(clicks=st.integers(min_value=0, max_value=100), convs=st.integers(min_value=0, max_value=100),
       click_limit=st.integers(min_value=0, max_value=50), conv_limit=st.integers(min_value=0, max_value=50),
       login=st.booleans(), customer=st.booleans(), age=st.none() | st.floats(min_value=0, max_value=1e6))
def test_flags_are_ordered_codes_with_evidence_and_monotone(clicks, convs, click_limit, conv_limit, login,
                                                             customer, age):
    s = FlagSettings(ip_flood_clicks=click_limit, ip_flood_conversions=conv_limit)
    facts = Facts("sale", click_age_s=age, click_ip="192.0.2.1", ip_clicks=clicks, ip_conversions=convs,
                  ip_is_partner_login=login, customer_is_partner=customer)
    found = evaluate(facts, s)
    codes = list(found)
    assert codes == [c for c in FLAG_CODES if c in found]
    assert "non_navigation" not in found  # the tracker's flag: such a conversion is rejected bot_click
    assert ("self_referral" in found) == (login or customer)
    flood = (0 < click_limit <= clicks) or (0 < conv_limit <= convs + 1)
    assert ("ip_flood" in found) == flood
    # More clicks and conversions from the IP never take a flag away.
    more = evaluate(Facts("sale", click_age_s=age, click_ip="192.0.2.1", ip_clicks=clicks + 1,
                          ip_conversions=convs + 1, ip_is_partner_login=login, customer_is_partner=customer), s)
    assert set(found) <= set(more)


def test_settings_from_the_environment():
    env = {"PARTNERNET_FLAG_IP_FLOOD_CLICKS": "50", "PARTNERNET_FLAG_IP_FLOOD_CONVERSIONS": "0",
           "PARTNERNET_FLAG_IP_FLOOD_WINDOW_S": "3600", "PARTNERNET_FLAG_FAST_SALE_S": "120",
           "PARTNERNET_FLAG_FAST_LEAD_S": "1", "PARTNERNET_FLAG_FAST_EVENT_S": "install=20, call=0",
           "PARTNERNET_FLAG_LEAD_EVENTS": "lead, quote"}
    s = FlagSettings.from_config(from_environment(env))
    assert (s.ip_flood_clicks, s.ip_flood_conversions, s.ip_flood_window_s) == (50, 0, 3600)
    assert (s.fast_sale_s, s.fast_lead_s) == (120, 1)
    assert dict(s.fast_event_s) == {"install": 20, "call": 0} and s.lead_events == {"lead", "quote"}
    assert FlagSettings.from_config(from_environment({})) == FlagSettings()
    assert FlagSettings.from_config(DEFAULTS) == FlagSettings()  # the app's defaults are the documented ones


@pytest.mark.parametrize("env", [
    {"PARTNERNET_FLAG_FAST_SALE_S": "fast"},
    {"PARTNERNET_FLAG_IP_FLOOD_CLICKS": "-1"},
    {"PARTNERNET_FLAG_FAST_EVENT_S": "install"},
    {"PARTNERNET_FLAG_FAST_EVENT_S": "install=soon"},
    {"PARTNERNET_FLAG_FAST_EVENT_S": "=5"},
])
def test_malformed_settings_stop_the_start(env):
    with pytest.raises(ValueError):
        from_environment(env)
