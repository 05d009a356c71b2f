"""The payout terms in force, read from rows of :data:`partnernet.ledger.payout_rules._TERMS`
that the postback's fast path (:mod:`partnernet.postbacks.fastpath`) fetched inside its own
statement (CONTRACT v2 §4 terms fixed at recording, v2 §3 rule 6 the partner's status).

:func:`terms_from_rows` is what :func:`partnernet.ledger.payout_rules.recording_terms` does with
the rows of its query, on rows read elsewhere; ``tests/services/test_postback_fastpath.py``
checks that both give the same :class:`~partnernet.ledger.payout_rules.Terms` for tiers,
overrides, bonuses and recruiters. No query here.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from ..ledger.payout_rules import Terms, _Bonus, _Override, _resolve, _Tier


def terms_from_rows(rows: Sequence[Sequence], *, partner_id: int, event_key: str, payout_minor: int | None,
                    payout_percent: Decimal | None, fee_minor: int) -> Terms:
    """The :class:`~partnernet.ledger.payout_rules.Terms` of a conversion of ``event_key`` credited
    to ``partner_id`` with the client fee ``fee_minor`` (minor units) and the event payout
    ``payout_minor`` / ``payout_percent``, from ``rows``: the non-empty result of ``_TERMS`` (one
    row per applicable override and bonus pair, columns in its order). Raises IndexError on no
    rows (the partner or the campaign does not exist: the caller goes the plain way)."""
    first = rows[0]
    status, currency = first[0], first[1]
    tier = _Tier(first[2], first[3], first[4]) if first[2] is not None else None
    overrides = [_Override(*r[10:13]) for r in {r[9]: r for r in rows if r[9] is not None}.values()]
    bonuses = sorted({_Bonus(r[13], r[14], r[15], r[16], int(r[17] or 0)) for r in rows if r[13] is not None},
                     key=lambda b: (-b.bonus_points, b.id))
    resolved = _resolve(fee=fee_minor, currency=currency, event_key=event_key, fixed=payout_minor,
                        percent=payout_percent, tier=tier, overrides=overrides, bonuses=bonuses,
                        approved=lambda b: b.approved)
    rid, rpct, rid2, rpct2 = first[5], first[6], first[7], first[8]
    recruiter = (rid, Decimal(rpct)) if rid is not None and rpct is not None and rid != partner_id else None
    recruiter2 = None
    if recruiter is not None and rid2 is not None and rpct2 is not None and rid2 not in (rid, partner_id):
        recruiter2 = (rid2, Decimal(rpct2))
    return Terms(status, resolved, recruiter, recruiter2)
