"""CONTRACT v2 §3 rule 6 ``partner_suspended``, applied to a replay's ``expected.json``.

The replay generator (``make_traffic.py``, rule R15) was written against CONTRACT v1: a
conversion from a click made before a partner's suspension, posted after it, still counts and
pays. CONTRACT v2 rejects it: a conversion credited to a partner who is not approved when the
postback arrives is recorded ``rejected`` with reason ``partner_suspended``, clicks included;
only ``bot_click`` and ``fallback_click`` come before it. The contract wins, so
:func:`apply_partner_suspended_rule` rewrites the expectations before a replay compares them.

Which postbacks: every postback after a ``suspend`` action that is the first one of its
conversion (same campaign, event and ``txn_id``; without ``txn_id`` the same click and event),
whose conversion would be credited to the suspended partner (the partner of the click named by
``click_seq``, or of the link with that ``coupon``) and that the generator expects to be
answered 200/201 (R09: right key or signature, one identifier and no literal click ID, a known
event, status, currency and amount; a known coupon). Its click is not a bot click (R03; a bot
click stays ``bot_click``, which comes first).

What changes, for each such postback:

- answered 200 ``rejected`` instead of what the generator expected: a created conversion moves
  from ``created``/201 to ``rejected``/200; a conversion the generator rejected for a later
  reason (``below_min_duration``, ``below_min_amount``, ``over_budget``) keeps its answer and
  changes reason;
- the conversion ends ``rejected`` (reason ``partner_suspended``) whatever later postbacks of it
  ask (they answer 200 ``existing`` either way), so its status changes by postback
  (``approved_by_postback``, ``reversed_after_payout``) and by ``approve_all``
  (``approved_by_staff``) no longer happen;
- money: its client fee, payout and recruiter override (R16) leave the per-currency totals, the
  campaign's report row (conversions, revenue, payout, margin) and ``spent`` (budgeted campaign),
  and the converter's and the recruiter's earnings (``pending`` or ``approved`` as the conversion
  stood at the end, ``balance`` with them); ``negative_balances`` is recomputed.

Not handled (the generator never makes them, R15: the suspended partner has no link to the
budgeted campaign and is suspended after the payout): a payout batch after the suspension that
would have paid such a conversion, and later ``over_budget`` decisions that the removed spend
would change. When they occur a note says so and the figures are left as they are.
"""

from __future__ import annotations

import re
from collections import Counter
from decimal import ROUND_HALF_UP, Decimal
from typing import Iterable

MINOR_DIGITS = {"USD": 2, "EUR": 2, "JPY": 0}
STATUSES = ("pending", "approved", "rejected", "reversed")
#: R03: bot user agents (case-insensitive substrings); HEAD requests and no User-Agent are bots too.
BOT_UA_TOKENS = ("googlebot", "bingbot", "facebookexternalhit", "twitterbot", "slackbot", "whatsapp",
                 "telegrambot", "discordbot", "linkedinbot", "uptimerobot", "curl/")
#: Reasons of the generator that come after partner_suspended in CONTRACT §3 step 6.
LATER_REASONS = ("below_min_duration", "below_min_amount", "over_budget")


def _minor(value: str, currency: str) -> int:
    return int(Decimal(value).scaleb(MINOR_DIGITS.get(currency, 2)))


def _fmt(minor: int, currency: str) -> str:
    digits = MINOR_DIGITS.get(currency, 2)
    if digits == 0:
        return str(minor)
    sign, a = ("-" if minor < 0 else ""), abs(minor)
    return f"{sign}{a // 10 ** digits}.{a % 10 ** digits:0{digits}d}"


def _pct(minor: int, percent) -> int:
    return int((Decimal(minor) * Decimal(str(percent)) / 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _valid_amount(text: str, currency: str) -> bool:
    """CONTRACT §3 (R09): a positive plain decimal with at most the currency's minor digits."""
    digits = MINOR_DIGITS.get(currency, 2)
    pattern = r"\d+" if digits == 0 else r"\d+(\.\d{1,%d})?" % digits
    return bool(re.fullmatch(pattern, text)) and Decimal(text) > 0


def _is_bot(click: dict) -> bool:
    ua = click.get("ua")
    return click.get("method") == "HEAD" or not ua or any(t in ua.lower() for t in BOT_UA_TOKENS)


class _World:
    """The scenario as the rule needs it: campaigns, currencies, links, coupons, recruiters."""

    def __init__(self, scenario: dict):
        self.camps = {c["ref"]: c for c in scenario["campaigns"]}
        cur = {c["ref"]: c["currency"] for c in scenario["clients"]}
        self.currency = {ref: cur[c["client_id"]] for ref, c in self.camps.items()}
        self.links = {ln["ref"]: ln for ln in scenario["links"]}
        self.coupon = {ln["coupon_code"]: ln for ln in scenario["links"] if ln.get("coupon_code")}
        self.partners = {p["ref"]: p for p in scenario["partners"]}

    def event(self, camp: str, key: str | None) -> dict | None:
        key = key or self.camps[camp]["default_event"]
        if key in ("click", "impression"):
            return None
        return next((e for e in self.camps[camp]["events"] if e["key"] == key), None)

    def money(self, camp: str, ev: dict, amount: int | None, partner: str) -> dict:
        """R16 / CONTRACT §4: fee, converter payout, recruiter override, margin (minor units)."""
        cur = self.currency[camp]
        if "client_fee_percent" in ev:
            fee = _pct(amount or 0, ev["client_fee_percent"])
        else:
            fee = _minor(ev["client_fee"], cur)
        payout = min(_minor(ev["payout"], cur) if "payout" in ev else _pct(fee, ev["payout_percent"]), fee)
        p = self.partners[partner]
        recruiter, override = p.get("recruiter_id"), 0
        if recruiter:
            override = min(_pct(payout, p["recruiter_percent"]), fee - payout)
        return {"fee": fee, "payout": payout, "override": override, "margin": fee - payout - override,
                "recruiter": recruiter}


def _first_reason(world: _World, camp: str, ev: dict, pb: dict, amount: int | None) -> str | None:
    """The generator's own rejection (R11) other than bot_click, without the budget (see below)."""
    if ev.get("min_duration_s") is not None and (pb.get("duration") is None
                                                 or int(pb["duration"]) < ev["min_duration_s"]):
        return "below_min_duration"
    if ev.get("min_amount") is not None and (amount or 0) < _minor(ev["min_amount"], world.currency[camp]):
        return "below_min_amount"
    return None


def apply_partner_suspended_rule(expected: dict, scenario: dict, traffic: Iterable[dict]) -> list[str]:
    """Rewrite ``expected`` (an ``expected.json`` document, changed in place) to CONTRACT v2 §3
    rule 6 ``partner_suspended`` (see the module docstring). ``scenario``: ``scenario.json``;
    ``traffic``: the events of ``traffic.jsonl`` in ``seq`` order. Returns notes for the report
    (what was changed, and anything the rule could not adjust)."""
    world = _World(scenario)
    suspended: set[str] = set()
    clicks: dict[int, dict] = {}
    seen_keys: set[tuple] = set()
    convs: dict[tuple, dict] = {}       # affected conversions by dedup key
    budget_spent = Counter()            # budgeted campaign -> fee taken out (for "spent")
    notes: list[str] = []
    changed_reasons = Counter()
    for e in traffic:
        kind = e["type"]
        if kind == "click":
            if not e["link"].startswith("tampered:"):
                clicks[e["seq"]] = {"link": e["link"], "bot": _is_bot(e)}
            continue
        if kind == "action":
            if e["action"] == "suspend":
                suspended.add(e["partner"])
            elif e["action"] == "approve_all":
                for c in convs.values():
                    if c["status"] == "pending":
                        c["status"] = "approved"
                        expected["conversions"]["approved_by_staff"] -= 1
            elif e["action"] == "payout" and any(c["status"] == "approved" for c in convs.values()):
                notes.append(f"v2 partner_suspended: payout at seq {e['seq']} after a suspension is not adjusted")
            continue
        camp = e["campaign"]
        ids = [x for x in (e.get("click_seq"), e.get("coupon"), e.get("click_id_literal")) if x is not None]
        if e["auth"] not in ("key", "sig") or len(ids) != 1 or e.get("click_id_literal") is not None:
            continue
        ev = world.event(camp, e.get("event"))
        cur = world.currency[camp]
        status = e.get("status") or "pending"
        if (ev is None or status not in STATUSES or e.get("currency") not in (None, cur)
                or (e.get("amount") is not None and not _valid_amount(e["amount"], cur))):
            continue
        if e.get("coupon") is not None:
            link = world.coupon.get(e["coupon"])
            if link is None:
                continue
            click = None
        else:
            click = clicks[e["click_seq"]]
            link = world.links[click["link"]]
        key = (camp, ev["key"], e["txn_id"]) if e.get("txn_id") else (camp, ev["key"], "click", e["click_seq"])
        if key in convs:  # a later postback of an affected conversion: answered existing, changes nothing now
            c = convs[key]
            if status == "approved" and c["status"] == "pending":
                c["status"] = "approved"
                expected["conversions"]["approved_by_postback"] -= 1
            elif status == "reversed" and c["status"] in ("pending", "approved"):
                c["status"] = "reversed"
            continue
        first = key not in seen_keys
        seen_keys.add(key)
        if not first or link["partner_id"] not in suspended or (click is not None and click["bot"]):
            continue
        amount = _minor(e["amount"], cur) if e.get("amount") is not None else None
        money = world.money(camp, ev, amount, link["partner_id"])
        reason = _first_reason(world, camp, ev, e, amount)
        budgeted = camp == expected["over_budget"].get("campaign")
        if reason is None and budgeted and e["seq"] in expected["over_budget"]["rejected_postback_seqs"]:
            reason = "over_budget"
        if reason is not None:  # rejected anyway: only the reason changes
            _move_reason(expected, reason, e)
            changed_reasons[reason] += 1
            continue
        convs[key] = {"seq": e["seq"], "camp": camp, "event": ev["key"], "currency": cur,
                      "partner": link["partner_id"], "status": "pending", **money}
        if budgeted:
            budget_spent[camp] += money["fee"]
    for c in convs.values():
        _take_out(expected, c)
    for camp, fee in budget_spent.items():
        notes.append(f"v2 partner_suspended: {camp} spends {_fmt(fee, world.currency[camp])} less; later "
                     "over_budget decisions are not recomputed")
    _recompute_negative_balances(expected, scenario)
    if convs or changed_reasons:
        seqs = sorted(c["seq"] for c in convs.values())
        notes.insert(0, f"CONTRACT v2 §3 rule 6 partner_suspended applied to expected.json (R15 predates it): "
                        f"{len(convs)} conversion(s) posted after the suspension now rejected (seqs {seqs}), "
                        f"{sum(changed_reasons.values())} rejection(s) now give partner_suspended as their reason")
    return notes


def _move_reason(expected: dict, reason: str, e: dict) -> None:
    by_reason = expected["conversions"]["by_rejection_reason"]
    by_reason[reason] -= 1
    by_reason["partner_suspended"] = by_reason.get("partner_suspended", 0) + 1
    if reason == "over_budget":
        ob = expected["over_budget"]
        ob["rejected_postback_seqs"] = [s for s in ob["rejected_postback_seqs"] if s != e["seq"]]
        if e.get("txn_id") in ob["rejected_txn_ids"]:
            ob["rejected_txn_ids"].remove(e["txn_id"])


def _take_out(expected: dict, c: dict) -> None:
    """One created conversion becomes ``rejected``/``partner_suspended``: move its answer, status
    and reason, and take its money out of every figure that included it."""
    cur, camp = c["currency"], c["camp"]
    pb, cv = expected["postbacks"], expected["conversions"]
    pb["by_http_status"]["201"] -= 1
    pb["by_http_status"]["200"] += 1
    pb["by_outcome"]["created"] -= 1
    pb["by_outcome"]["rejected"] = pb["by_outcome"].get("rejected", 0) + 1
    cv["by_status"][c["status"]] -= 1
    cv["by_status"]["rejected"] += 1
    cv["by_rejection_reason"]["partner_suspended"] = cv["by_rejection_reason"].get("partner_suspended", 0) + 1
    if c["status"] not in ("pending", "approved"):
        return  # reversed: its money had left every figure already
    tot = expected["totals"][cur]
    tot["conversions"] -= 1
    for k, amount in (("client_fee", c["fee"]), ("partner_amount", c["payout"]),
                      ("recruiter_override", c["override"]), ("margin", c["margin"])):
        tot[k] = _fmt(_minor(tot[k], cur) - amount, cur)
    row = expected["campaigns"][camp]
    if c["event"] not in ("click", "impression"):
        row["conversions"] -= 1
    for k, amount in (("revenue", c["fee"]), ("payout", c["payout"] + c["override"]), ("margin", c["margin"])):
        row[k] = _fmt(_minor(row[k], cur) - amount, cur)
    if "spent" in row:
        row["spent"] = _fmt(_minor(row["spent"], cur) - c["fee"], cur)
    for partner, amount in ((c["partner"], c["payout"]), (c["recruiter"], c["override"])):
        if partner and amount:
            item = next(i for i in expected["earnings"][partner] if i["currency"] == cur)
            item[c["status"]] = _fmt(_minor(item[c["status"]], cur) - amount, cur)
            if c["status"] == "approved":
                item["balance"] = _fmt(_minor(item["balance"], cur) - amount, cur)


def _recompute_negative_balances(expected: dict, scenario: dict) -> None:
    expected["negative_balances"] = [
        {"partner": p["ref"], "currency": i["currency"], "balance": i["balance"]}
        for p in scenario["partners"] for i in expected["earnings"].get(p["ref"], [])
        if i["balance"].startswith("-")
    ]
