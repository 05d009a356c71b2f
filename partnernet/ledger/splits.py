"""The split of one conversion's client fee (CONTRACT §4). PURE: standard library only.

Who gets what, to the minor unit:

1. **Payout.** A percent payout is ``client fee × percent / 100`` rounded half up; a fixed
   payout is taken as it is; either is capped at the client fee (a payout never exceeds
   the fee).
2. **Touches.** The payout is shared by the touches (``[(partner_id, weight), ...]``,
   oldest first, the converting touch last) with :func:`partnernet.money.allocate`: each
   share is ``payout × weight / Σweights`` rounded down, the minor units left over go one
   each to the largest remainders, ties to the later touch. So with touches in time order,
   100 shared by three equal touches is ``[33, 33, 34]``: the converting (latest) touch gets
   the odd unit. :func:`touch_weights` gives the weights of the four attribution models.
3. **Recruiter overrides.** For each touch, latest first, whose partner has a recruiter:
   ``share × recruiter percent / 100`` rounded half up, capped at what the margin has left,
   and paid out of the margin. A second tier (``second_tier``: the recruiter's own recruiter,
   with its own percent) is taken right after the first, for the same touch, also a percent
   of the touch's share, also capped at what the margin has left. A recruiter earns on the
   shares of the partners it (or its recruit) recruited, never on other overrides. One
   recruiter who earns on several touches (or on both tiers) gets one line with the sum.
4. **Margin.** ``fee − every partner amount``; never negative.

Invariant of every result: ``fee == sum(partner amounts) + margin``, every line ≥ 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import NamedTuple

from ..money import allocate, percent_of

ATTRIBUTION_MODELS = ("last_click", "first_click", "linear", "position_based")
ROLES = ("converter", "touch", "recruiter", "margin")
AGENCY = "agency"


class SplitLine(NamedTuple):
    """One line of a split: ``party`` is ``"partner:<id>"`` or ``"agency"``; ``partner_id`` the
    partner's id (None for the agency); ``role`` converter, touch, recruiter or margin;
    ``amount`` int minor units, >= 0 (CONTRACT §5 ``splits``)."""

    party: str
    partner_id: int | None
    role: str
    amount: int


@dataclass(frozen=True)
class PayoutRule:
    """A converter payout rule, copied from the campaign event onto the conversion:
    ``fixed_minor`` (int minor units) or ``percent`` (Decimal percent of the client fee).
    Neither set means no payout."""

    fixed_minor: int | None = None
    percent: Decimal | str | int | None = None

    def amount(self, fee_minor: int) -> int:
        """The payout for ``fee_minor``: percent rounded half up, or fixed; capped at the fee
        (CONTRACT §4). Raises ValueError for a negative fixed payout or a percent outside 0..100."""
        if self.percent is not None:
            pct = _percent(self.percent, "payout percent")
            payout = percent_of(fee_minor, pct)
        elif self.fixed_minor is not None:
            payout = _int(self.fixed_minor, "fixed payout")
            if payout < 0:
                raise ValueError("a fixed payout cannot be negative")
        else:
            payout = 0
        return min(payout, fee_minor)


def partner_party(partner_id: int) -> str:
    """The party string of a partner: ``"partner:<id>"``."""
    return f"partner:{partner_id}"


def touch_weights(model: str, n: int) -> list[Decimal]:
    """Weights of ``n`` touches (oldest first) under an attribution model (CONTRACT §4).

    ``last_click``: 1 on the last; ``first_click``: 1 on the first; ``linear``: equal;
    ``position_based``: 40% first, 40% last, 20% shared equally by the middle (two touches
    50/50, one 100%). Weights are whole numbers in the right ratio (position based with
    ``n >= 3``: ``2(n-2)`` first and last, ``1`` each in the middle), so shares and their
    remainders are exact. Raises ValueError for an unknown model or ``n < 1``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError("there must be at least one touch")
    if model == "last_click":
        return [Decimal(0)] * (n - 1) + [Decimal(1)]
    if model == "first_click":
        return [Decimal(1)] + [Decimal(0)] * (n - 1)
    if model == "linear" or (model == "position_based" and n <= 2):
        return [Decimal(1)] * n
    if model == "position_based":
        end = Decimal(2 * (n - 2))
        return [end] + [Decimal(1)] * (n - 2) + [end]
    raise ValueError(f"unknown attribution model {model!r}")


def split(
    fee_minor: int,
    payout_rule: PayoutRule,
    touches: list[tuple[int, Decimal | int | str]],
    recruiters: dict[int, tuple[int, Decimal | int | str | None]] | None = None,
    second_tier: dict[int, tuple[int, Decimal | int | str | None]] | None = None,
) -> list[SplitLine]:
    """Split a client fee between partners and the agency (CONTRACT §4).

    - ``fee_minor``: the conversion's client fee, int minor units, >= 0.
    - ``payout_rule``: the converter payout rule (:class:`PayoutRule`).
    - ``touches``: ``[(partner_id, weight), ...]`` oldest first; the last one is the
      converter (role ``converter``), the others have role ``touch``. One entry per partner.
    - ``recruiters``: ``{partner_id: (recruiter_id, percent)}`` for partners that have a
      recruiter (sub-affiliate tier); a None or zero percent means no override.
    - ``second_tier``: ``{partner_id: (recruiters_recruiter_id, percent)}``: the second level
      (the recruiter's recruiter, paid its own percent of the same share), taken after the
      first tier of the same touch. A partner never earns an override on its own share.

    Returns the lines in a fixed order: the converter, the other touches latest first, the
    recruiters in the order their first override was taken, then the agency's margin.
    The converter and margin lines are always present (possibly 0); touch and recruiter
    lines only when above 0. Deterministic: same input, same output.

    Raises ValueError for a negative or non-int fee, no touches, a partner twice in
    ``touches``, negative weights or weights summing to 0, a percent outside 0..100.
    """
    fee = _int(fee_minor, "client fee")
    if fee < 0:
        raise ValueError("the client fee cannot be negative")
    if not touches:
        raise ValueError("a split needs at least one touch")
    partner_ids = [_int(pid, "partner id") for pid, _ in touches]
    if len(set(partner_ids)) != len(partner_ids):
        raise ValueError("a partner may appear once among the touches")
    weights = [_weight(w) for _, w in touches]
    if sum(weights) <= 0:
        raise ValueError("touch weights must add up to more than 0")

    payout = payout_rule.amount(fee)
    shares = allocate(payout, weights)
    margin = fee - payout

    overrides: dict[int, int] = {}
    for pid, share in reversed(list(zip(partner_ids, shares, strict=True))):
        for table in (recruiters, second_tier):
            rec = (table or {}).get(pid)
            if rec is None:
                continue
            recruiter_id, percent = rec
            if recruiter_id is None or percent is None or recruiter_id == pid:
                continue
            amount = min(percent_of(share, _percent(percent, "recruiter percent")), margin)
            if amount <= 0:
                continue
            recruiter_id = _int(recruiter_id, "recruiter id")
            overrides[recruiter_id] = overrides.get(recruiter_id, 0) + amount
            margin -= amount

    converter = partner_ids[-1]
    lines = [SplitLine(partner_party(converter), converter, "converter", shares[-1])]
    for pid, share in reversed(list(zip(partner_ids[:-1], shares[:-1], strict=True))):
        if share > 0:
            lines.append(SplitLine(partner_party(pid), pid, "touch", share))
    for rid, amount in overrides.items():
        lines.append(SplitLine(partner_party(rid), rid, "recruiter", amount))
    lines.append(SplitLine(AGENCY, None, "margin", margin))
    return lines


def partner_total(lines: list[SplitLine]) -> int:
    """Sum of the partner amounts (every line but the margin), minor units."""
    return sum(line.amount for line in lines if line.role != "margin")


def _int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"the {what} must be an int")
    return value


def _weight(value) -> Decimal:
    if isinstance(value, float):
        raise ValueError("weights are Decimals or ints, not floats")
    try:
        w = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"bad weight {value!r}") from None
    if not w.is_finite() or w < 0:
        raise ValueError("weights must be finite and non-negative")
    return w


def _percent(value, what: str) -> Decimal:
    if isinstance(value, float):
        raise ValueError(f"the {what} must be a Decimal, not a float")
    try:
        pct = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"bad {what} {value!r}") from None
    if not pct.is_finite() or pct < 0 or pct > 100:
        raise ValueError(f"the {what} must be between 0 and 100")
    return pct
