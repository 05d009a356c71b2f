"""The split of a client fee (CONTRACT §4): table tests."""

from decimal import Decimal

import pytest

from partnernet.ledger.splits import PayoutRule, SplitLine, partner_total, split, touch_weights
from partnernet.money import allocate


def amounts(lines):
    return {(line.party, line.role): line.amount for line in lines}


def test_single_converter_percent_payout():
    lines = split(1000, PayoutRule(percent=Decimal("50")), [(7, 1)])
    assert lines == [
        SplitLine("partner:7", 7, "converter", 500),
        SplitLine("agency", None, "margin", 500),
    ]


def test_percent_payout_rounds_half_up():
    # 1999 × 8% = 159.92 -> 160; 25 × 50% = 12.5 -> 13
    assert split(1999, PayoutRule(percent="8"), [(1, 1)])[0].amount == 160
    assert split(25, PayoutRule(percent="50"), [(1, 1)])[0].amount == 13


def test_fixed_payout_taken_as_is():
    lines = split(1000, PayoutRule(fixed_minor=300), [(1, 1)])
    assert amounts(lines) == {("partner:1", "converter"): 300, ("agency", "margin"): 700}


def test_payout_never_exceeds_fee():
    lines = split(500, PayoutRule(fixed_minor=800), [(1, 1)])
    assert amounts(lines) == {("partner:1", "converter"): 500, ("agency", "margin"): 0}


def test_no_payout_rule_gives_everything_to_margin():
    lines = split(500, PayoutRule(), [(1, 1)])
    assert amounts(lines) == {("partner:1", "converter"): 0, ("agency", "margin"): 500}


def test_zero_fee():
    lines = split(0, PayoutRule(percent="75"), [(1, 1)], {1: (2, "10")})
    assert lines == [SplitLine("partner:1", 1, "converter", 0), SplitLine("agency", None, "margin", 0)]


def test_allocate_gives_the_odd_unit_to_the_later_position():
    assert allocate(100, [Decimal(1)] * 3) == [33, 33, 34]


def test_three_equal_touches_later_touch_wins_the_tie():
    # Touches are in time order (oldest first, converter last): the converting touch is the
    # "later touch" of CONTRACT §4 and gets the 34.
    lines = split(200, PayoutRule(fixed_minor=100), [(1, 1), (2, 1), (3, 1)])
    assert lines == [
        SplitLine("partner:3", 3, "converter", 34),
        SplitLine("partner:2", 2, "touch", 33),
        SplitLine("partner:1", 1, "touch", 33),
        SplitLine("agency", None, "margin", 100),
    ]


def test_two_left_over_units_go_to_the_two_latest_on_ties():
    lines = split(101, PayoutRule(fixed_minor=101), [(1, 1), (2, 1), (3, 1)])
    assert amounts(lines) == {("partner:3", "converter"): 34, ("partner:2", "touch"): 34,
                              ("partner:1", "touch"): 33, ("agency", "margin"): 0}


def test_largest_remainder_beats_position():
    # 10 by weights 2:1 -> 6.67 and 3.33: the odd unit goes to the larger remainder (.67),
    # the earlier touch, although the later touch would win a tie.
    assert allocate(10, [Decimal(2), Decimal(1)]) == [7, 3]
    lines = split(10, PayoutRule(fixed_minor=10), [(1, 2), (2, 1)])
    assert amounts(lines)[("partner:1", "touch")] == 7
    assert amounts(lines)[("partner:2", "converter")] == 3


def test_jpy_has_no_minor_digits_but_the_same_rules():
    # ¥1000 fee, 33% payout = 330 yen, shared by two touches linearly
    lines = split(1000, PayoutRule(percent="33"), [(1, 1), (2, 1)])
    assert amounts(lines) == {("partner:2", "converter"): 165, ("partner:1", "touch"): 165,
                              ("agency", "margin"): 670}
    lines = split(999, PayoutRule(percent="50"), [(1, 1), (2, 1)])  # 499.5 -> 500, 250/250
    assert amounts(lines) == {("partner:2", "converter"): 250, ("partner:1", "touch"): 250,
                              ("agency", "margin"): 499}


def test_recruiter_override_out_of_the_margin():
    lines = split(1000, PayoutRule(percent="50"), [(7, 1)], {7: (3, Decimal("10"))})
    assert lines == [
        SplitLine("partner:7", 7, "converter", 500),
        SplitLine("partner:3", 3, "recruiter", 50),
        SplitLine("agency", None, "margin", 450),
    ]


def test_recruiter_override_rounds_half_up():
    lines = split(1000, PayoutRule(fixed_minor=125), [(7, 1)], {7: (3, "10")})  # 12.5 -> 13
    assert amounts(lines)[("partner:3", "recruiter")] == 13
    assert amounts(lines)[("agency", "margin")] == 862


def test_recruiter_override_larger_than_the_margin_is_capped():
    # payout 950 of 1000 leaves a margin of 50; a 20% override would be 190
    lines = split(1000, PayoutRule(fixed_minor=950), [(7, 1)], {7: (3, "20")})
    assert amounts(lines) == {("partner:7", "converter"): 950, ("partner:3", "recruiter"): 50,
                              ("agency", "margin"): 0}


def test_overrides_taken_latest_touch_first_when_margin_runs_out():
    # fee 1000, payout 900 (450 each), margin 100. Both touches have recruiters at 20% (90 each):
    # the latest touch's recruiter (of partner 2) is served first: 90, the other gets 10.
    lines = split(1000, PayoutRule(fixed_minor=900), [(1, 1), (2, 1)], {1: (10, "20"), 2: (20, "20")})
    assert lines == [
        SplitLine("partner:2", 2, "converter", 450),
        SplitLine("partner:1", 1, "touch", 450),
        SplitLine("partner:20", 20, "recruiter", 90),
        SplitLine("partner:10", 10, "recruiter", 10),
        SplitLine("agency", None, "margin", 0),
    ]


def test_one_recruiter_of_two_touches_gets_one_line():
    lines = split(1000, PayoutRule(fixed_minor=400), [(1, 1), (2, 1)], {1: (9, "10"), 2: (9, "10")})
    assert amounts(lines)[("partner:9", "recruiter")] == 40
    assert [line.role for line in lines].count("recruiter") == 1


def test_recruiter_who_is_also_a_touch_gets_two_lines():
    lines = split(1000, PayoutRule(fixed_minor=400), [(1, 1), (2, 1)], {2: (1, "10")})
    assert amounts(lines) == {("partner:2", "converter"): 200, ("partner:1", "touch"): 200,
                              ("partner:1", "recruiter"): 20, ("agency", "margin"): 580}


def test_zero_and_missing_recruiter_percent_make_no_line():
    lines = split(1000, PayoutRule(fixed_minor=400), [(1, 1)], {1: (9, None)})
    assert [line.role for line in lines] == ["converter", "margin"]
    lines = split(1000, PayoutRule(fixed_minor=400), [(1, 1)], {1: (9, "0")})
    assert [line.role for line in lines] == ["converter", "margin"]


def test_no_override_on_a_zero_share():
    lines = split(1000, PayoutRule(fixed_minor=400), [(1, 0), (2, 1)], {1: (9, "50")})
    assert [line.role for line in lines] == ["converter", "margin"]
    assert partner_total(lines) == 400


@pytest.mark.parametrize(
    ("model", "n", "expected"),
    [
        ("last_click", 1, [1]),
        ("last_click", 3, [0, 0, 1]),
        ("first_click", 3, [1, 0, 0]),
        ("linear", 4, [1, 1, 1, 1]),
        ("position_based", 1, [1]),
        ("position_based", 2, [1, 1]),
        ("position_based", 3, [2, 1, 2]),
        ("position_based", 5, [6, 1, 1, 1, 6]),
    ],
)
def test_touch_weights(model, n, expected):
    assert touch_weights(model, n) == [Decimal(x) for x in expected]


def test_position_based_is_40_40_20():
    touches = list(zip([1, 2, 3, 4], touch_weights("position_based", 4), strict=True))
    lines = split(1000, PayoutRule(fixed_minor=1000), touches)
    assert amounts(lines) == {("partner:4", "converter"): 400, ("partner:3", "touch"): 100,
                              ("partner:2", "touch"): 100, ("partner:1", "touch"): 400,
                              ("agency", "margin"): 0}


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((-1, PayoutRule(percent="50"), [(1, 1)]), {}),
        ((100, PayoutRule(percent="50"), []), {}),
        ((100, PayoutRule(percent="50"), [(1, 1), (1, 1)]), {}),
        ((100, PayoutRule(percent="50"), [(1, 0)]), {}),
        ((100, PayoutRule(percent="50"), [(1, -1), (2, 2)]), {}),
        ((100, PayoutRule(percent="50"), [(1, 0.5)]), {}),
        ((100, PayoutRule(percent="101"), [(1, 1)]), {}),
        ((100, PayoutRule(percent=0.5), [(1, 1)]), {}),
        ((100, PayoutRule(fixed_minor=-5), [(1, 1)]), {}),
        ((1.5, PayoutRule(percent="50"), [(1, 1)]), {}),
        ((100, PayoutRule(percent="50"), [(1, 1)]), {"recruiters": {1: (2, "150")}}),
    ],
)
def test_bad_input_raises_value_error(args, kwargs):
    with pytest.raises(ValueError):
        split(*args, **kwargs)


def test_unknown_model_raises():
    with pytest.raises(ValueError):
        touch_weights("time_decay", 2)
    with pytest.raises(ValueError):
        touch_weights("linear", 0)
