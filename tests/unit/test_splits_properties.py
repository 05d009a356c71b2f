"""Property tests of the split (CONTRACT §4): whatever the input, the money adds up."""

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from partnernet.ledger.splits import ATTRIBUTION_MODELS, PayoutRule, split, touch_weights

fees = st.integers(min_value=0, max_value=10**12)
percents = st.decimals(min_value=0, max_value=100, places=4, allow_nan=False, allow_infinity=False)
rules = st.one_of(
    st.builds(PayoutRule, fixed_minor=st.integers(min_value=0, max_value=10**12)),
    st.builds(PayoutRule, percent=percents),
)


@st.composite
def scenarios(draw):
    fee = draw(fees)
    rule = draw(rules)
    n = draw(st.integers(min_value=1, max_value=8))
    pids = draw(st.lists(st.integers(min_value=1, max_value=10**6), min_size=n, max_size=n, unique=True))
    if draw(st.booleans()):
        weights = touch_weights(draw(st.sampled_from(ATTRIBUTION_MODELS)), n)
    else:
        weights = draw(st.lists(st.integers(min_value=0, max_value=1000), min_size=n, max_size=n)
                       .filter(lambda ws: sum(ws) > 0))
    touches = list(zip(pids, weights, strict=True))
    recruiters = {}
    for pid in pids:
        if draw(st.booleans()):
            recruiters[pid] = (draw(st.integers(min_value=1, max_value=10**6)), draw(percents))
    return fee, rule, touches, recruiters


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_split_invariants(scenario):
    fee, rule, touches, recruiters = scenario
    lines = split(fee, rule, touches, recruiters)
    payout = min(rule.amount(fee), fee)

    assert all(isinstance(line.amount, int) and line.amount >= 0 for line in lines)
    margin = [line.amount for line in lines if line.role == "margin"]
    assert len(margin) == 1 and margin[0] >= 0
    partner_sum = sum(line.amount for line in lines if line.role != "margin")
    assert fee == partner_sum + margin[0]
    # the shares of the touches add up to the payout exactly
    assert sum(line.amount for line in lines if line.role in ("converter", "touch")) == payout
    assert payout <= fee
    # overrides come out of the margin only
    assert sum(line.amount for line in lines if line.role == "recruiter") <= fee - payout
    # one converter, and it is the last touch
    conv = [line for line in lines if line.role == "converter"]
    assert len(conv) == 1 and conv[0].partner_id == touches[-1][0]
    # (party, role) is unique: the conversion_splits unique constraint holds
    assert len({(line.party, line.role) for line in lines}) == len(lines)
    # deterministic
    assert split(fee, rule, list(touches), dict(recruiters)) == lines


@settings(max_examples=200, deadline=None)
@given(fees, percents)
def test_percent_payout_is_half_up_and_capped(fee, pct):
    lines = split(fee, PayoutRule(percent=pct), [(1, 1)])
    exact = Decimal(fee) * pct / 100
    got = lines[0].amount
    assert got <= fee
    assert exact - Decimal("0.5") < got <= exact + Decimal("0.5")


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=10**9), st.integers(min_value=1, max_value=12))
def test_equal_shares_differ_by_at_most_one_and_later_touches_get_the_extra(payout, n):
    lines = split(payout, PayoutRule(fixed_minor=payout), [(i, 1) for i in range(1, n + 1)])
    by_pid = {line.partner_id: line.amount for line in lines if line.role in ("converter", "touch")}
    shares = [by_pid.get(i, 0) for i in range(1, n + 1)]
    assert sum(shares) == payout
    assert max(shares) - min(shares) <= 1
    assert shares == sorted(shares)  # the extra units sit on the later touches
