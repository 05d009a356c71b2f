"""Property and table tests of the split under every attribution model, with two recruiter
tiers (CONTRACT §4; issue 6 item 8): shares never negative, shares add up to the payout,
client fee = partner amounts + margin, margin >= 0, the same input gives the same split."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partnernet.ledger.splits import ATTRIBUTION_MODELS, PayoutRule, split, touch_weights

percents = st.decimals(min_value=0, max_value=100, places=4, allow_nan=False, allow_infinity=False)
rules = st.one_of(
    st.builds(PayoutRule, fixed_minor=st.integers(min_value=0, max_value=10**12)),
    st.builds(PayoutRule, percent=percents),
)


@st.composite
def scenario(draw, model):
    fee = draw(st.integers(min_value=0, max_value=10**12))
    rule = draw(rules)
    n = draw(st.integers(min_value=1, max_value=7))
    pids = draw(st.lists(st.integers(min_value=1, max_value=50), min_size=n, max_size=n, unique=True))
    touches = list(zip(pids, touch_weights(model, n), strict=True))
    tier1, tier2 = {}, {}
    for pid in pids:
        if draw(st.booleans()):
            tier1[pid] = (draw(st.integers(min_value=1, max_value=60)), draw(percents))
            if draw(st.booleans()):
                tier2[pid] = (draw(st.integers(min_value=1, max_value=60)), draw(percents))
    return fee, rule, touches, tier1, tier2


def check(fee, rule, touches, tier1, tier2):
    lines = split(fee, rule, touches, tier1, tier2)
    payout = rule.amount(fee)
    assert all(isinstance(x.amount, int) and x.amount >= 0 for x in lines)
    (margin,) = [x.amount for x in lines if x.role == "margin"]
    assert margin >= 0
    assert fee == sum(x.amount for x in lines if x.role != "margin") + margin
    assert sum(x.amount for x in lines if x.role in ("converter", "touch")) == payout
    assert sum(x.amount for x in lines if x.role == "recruiter") <= fee - payout
    assert len({(x.party, x.role) for x in lines}) == len(lines)
    assert split(fee, rule, list(touches), dict(tier1), dict(tier2)) == lines  # deterministic
    return lines


@pytest.mark.parametrize("model", ATTRIBUTION_MODELS)
def test_every_model_keeps_the_money_exact(model):
    @settings(max_examples=150, deadline=None)
    @given(scenario(model))
    def run(s):
        lines = check(*s)
        touches = s[2]
        shares = {x.partner_id: x.amount for x in lines if x.role in ("converter", "touch")}
        if model == "last_click":
            assert set(shares) == {touches[-1][0]}
        if model == "first_click" and len(touches) > 1:
            assert all(v == 0 for k, v in shares.items() if k != touches[0][0])

    run()


# ----------------------------------------------------------------------------- table tests


@pytest.mark.parametrize(("model", "expected"), [
    ("last_click", [0, 0, 100]),
    ("first_click", [100, 0, 0]),
    ("linear", [33, 33, 34]),  # oldest first: the later touch gets the extra unit
    ("position_based", [40, 20, 40]),
])
def test_100_among_3(model, expected):
    lines = split(100, PayoutRule(fixed_minor=100), list(zip([1, 2, 3], touch_weights(model, 3), strict=True)))
    by = {x.partner_id: x.amount for x in lines if x.role in ("converter", "touch")}
    assert [by.get(p, 0) for p in (1, 2, 3)] == expected


def test_jpy_fee_position_based_four_touches():
    # fee ¥1,000, payout 35% = ¥350; weights 4,1,1,4 (40/10/10/40): 140, 35, 35, 140
    lines = split(1000, PayoutRule(percent=Decimal(35)), list(zip([1, 2, 3, 4], touch_weights("position_based", 4),
                                                                     strict=True)))
    assert [(x.partner_id, x.role, x.amount) for x in lines] == [
        (4, "converter", 140), (3, "touch", 35), (2, "touch", 35), (1, "touch", 140), (None, "margin", 650)]


def test_jpy_linear_odd_yen_goes_to_the_later_touches():
    # ¥1,001 payout among 3: 333.67 each -> 333, 334, 334
    lines = split(1001, PayoutRule(fixed_minor=1001), [(1, 1), (2, 1), (3, 1)])
    assert [(x.partner_id, x.amount) for x in lines] == [(3, 334), (2, 334), (1, 333), (None, 0)]


def test_recruiter_override_larger_than_the_margin_two_tiers():
    # fee 1000, payout 95% = 950, margin 50; tier 1 wants 40% of 950 = 380 -> capped at 50,
    # tier 2 then finds nothing left and makes no line
    lines = split(1000, PayoutRule(percent=Decimal(95)), [(7, 1)], {7: (3, "40")}, {7: (9, "10")})
    assert [(x.party, x.role, x.amount) for x in lines] == [
        ("partner:7", "converter", 950), ("partner:3", "recruiter", 50), ("agency", "margin", 0)]


def test_a_partner_never_earns_an_override_on_its_own_share():
    lines = split(1000, PayoutRule(percent=Decimal(50)), [(7, 1)], {7: (3, "10")}, {7: (7, "10")})
    assert [(x.party, x.role, x.amount) for x in lines] == [
        ("partner:7", "converter", 500), ("partner:3", "recruiter", 50), ("agency", "margin", 450)]
