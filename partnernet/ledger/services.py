"""The double-entry ledger (CONTRACT §4, ARCHITECTURE: every money movement is a balanced
ledger transaction): posting, bringing a conversion's postings level with its status,
partner earnings, the sweeper and ``flask ledger verify``.

Sign convention: a posting's ``amount_minor`` > 0 debits its account, < 0 credits it;
every transaction's postings add up to 0. ``LedgerAccount.balance_minor`` is the signed
sum of the account's postings, moved by ``UPDATE ... SET balance_minor = balance_minor + x``
in the same database transaction as the postings.

Accounts, one per owner, kind and currency (``code`` is unique):

============================== =============================================================
``client:<id>:receivable:CUR`` what a client owes for its conversions (debit balance)
``partner:<id>:pending:CUR``   what a partner earns on pending conversions (credit balance)
``partner:<id>:payable:CUR``   approved earnings not yet paid out (credit balance; a debit
                               balance after a reversal of money already paid)
``agency:margin_pending:CUR``  the agency's margin on pending conversions
``agency:margin:CUR``          the agency's margin on approved conversions
``agency:cash:CUR``            money paid out to partners (credited by payout batches)
============================== =============================================================

Transactions of a conversion (``source`` ``"conversion:<id>"``), unique on (source, kind):

- ``split``: Dr receivable fee; Cr each partner's pending its amounts; Cr margin_pending;
- ``approve``: each pending amount moves to payable, margin_pending to margin;
- ``reject`` (rejected after pending) / ``reverse`` (reversed): the exact negation of
  everything posted for the conversion so far, so its net is zero.

A payout batch posts ``("payout_batch:<id>", "paid")``: Dr each partner's payable, Cr cash
(:mod:`partnernet.payouts.services`).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import String, bindparam, cast, func, insert, literal, or_, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm.attributes import set_committed_value

from .. import queue
from ..errors import NotFound
from ..clock import utcnow
from ..extensions import db
from ..models import (
    Campaign,
    Conversion,
    ConversionSplit,
    LedgerAccount,
    LedgerPosting,
    LedgerTransaction,
    Partner,
)
from ..models.conversions import LAGGING
from .splits import SplitLine, split

log = logging.getLogger(__name__)

# Account kinds.
RECEIVABLE = "receivable"
PENDING = "pending"
PAYABLE = "payable"
MARGIN_PENDING = "margin_pending"
MARGIN = "margin"
CASH = "cash"

# Transaction kinds.
SPLIT = "split"
APPROVE = "approve"
REJECT = "reject"
REVERSE = "reverse"
PAID = "paid"

_MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class Account:
    """An account's identity: owner (``partner``, ``client``, ``agency``), owner id (None for the
    agency), kind and currency. :attr:`code` is its unique ledger code."""

    owner_type: str
    owner_id: int | None
    kind: str
    currency: str

    @property
    def code(self) -> str:
        """``"partner:7:payable:EUR"``, ``"agency:margin:JPY"``..."""
        if self.owner_id is None:
            return f"{self.owner_type}:{self.kind}:{self.currency}"
        return f"{self.owner_type}:{self.owner_id}:{self.kind}:{self.currency}"


def partner_account(partner_id: int, kind: str, currency: str) -> Account:
    """A partner's ``pending`` or ``payable`` account in ``currency``."""
    return Account("partner", partner_id, kind, currency)


def client_account(client_id: int, kind: str, currency: str) -> Account:
    """A client's ``receivable`` account in ``currency``."""
    return Account("client", client_id, kind, currency)


def agency_account(kind: str, currency: str) -> Account:
    """The agency's ``margin_pending``, ``margin`` or ``cash`` account in ``currency``."""
    return Account("agency", None, kind, currency)


# --------------------------------------------------------------------------- posting


def ensure_accounts(accounts: list[Account]) -> dict[Account, int]:
    """The ids of ``accounts``, creating the missing ones (race-safe: INSERT ... ON CONFLICT DO
    NOTHING on the unique code, in code order so that concurrent creators never deadlock).
    Does not commit."""
    wanted = {a.code: a for a in accounts}
    if not wanted:
        return {}
    found = dict(db.session.execute(
        select(LedgerAccount.code, LedgerAccount.id).where(LedgerAccount.code.in_(list(wanted)))
    ).all())
    missing = sorted(code for code in wanted if code not in found)
    if missing:
        dialect = db.session.get_bind().dialect.name
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        for code in missing:
            a = wanted[code]
            db.session.execute(
                dialect_insert(LedgerAccount)
                .values(code=code, owner_type=a.owner_type, owner_id=a.owner_id, kind=a.kind,
                        currency=a.currency, balance_minor=0)
                .on_conflict_do_nothing(index_elements=["code"])
            )
        found.update(db.session.execute(
            select(LedgerAccount.code, LedgerAccount.id).where(LedgerAccount.code.in_(missing))
        ).all())
    return {a: found[code] for code, a in wanted.items()}


def apply_balances(deltas: dict[int, int]) -> None:
    """Move cached balances: ``{account_id: delta}``, ``UPDATE ... SET balance_minor =
    balance_minor + delta`` for each account, sent as one executemany in account-id order so
    that two writers never deadlock on the shared (agency) accounts. Does not commit."""
    params = [{"aid": acct_id, "delta": deltas[acct_id]} for acct_id in sorted(deltas) if deltas[acct_id]]
    if not params:
        return
    table = LedgerAccount.__table__
    db.session.execute(
        table.update().where(table.c.id == bindparam("aid"))
        .values(balance_minor=table.c.balance_minor + bindparam("delta")),
        params,
    )


def post_transaction(source: str, kind: str, currency: str, postings: list[tuple[Account, int]],
                     *, memo: str | None = None, extra=None,
                     balances: dict[int, int] | None = None) -> LedgerTransaction | None:
    """Post one balanced transaction, unique on (``source``, ``kind``), inside a SAVEPOINT.

    ``postings``: ``[(Account, amount_minor), ...]``, debits > 0, credits < 0, every account in
    ``currency``. Postings to the same account are merged and zero amounts dropped (a
    transaction may end up with no posting at all: it still marks the movement as done).
    Balances move with :func:`apply_balances` once the postings are written; a caller that
    posts several transactions in one database transaction passes a ``balances`` dict to
    collect the deltas in, and applies them once at the end, so that every row lock on an
    account is taken in one account-id order (no deadlock between two posters).
    ``extra``: an optional callable run inside the same SAVEPOINT after the postings (e.g.
    writing the conversion's split lines).

    Returns the new transaction, or None when (source, kind) was already posted (the unique
    constraint is the backstop; the SAVEPOINT is rolled back and the caller's transaction
    goes on). Raises ValueError when the postings do not balance or mix currencies.
    Does not commit.
    """
    if sum(amount for _, amount in postings) != 0:
        raise ValueError(f"unbalanced transaction {source} {kind}: {postings!r}")
    if any(acct.currency != currency for acct, _ in postings):
        raise ValueError(f"transaction {source} {kind} mixes currencies")
    merged: dict[Account, int] = defaultdict(int)
    for acct, amount in postings:
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise ValueError("posting amounts are int minor units")
        merged[acct] += amount
    merged = {a: x for a, x in merged.items() if x != 0}
    ids = ensure_accounts(list(merged))
    try:
        with db.session.begin_nested():
            txn = LedgerTransaction(source=source, kind=kind, currency=currency, memo=memo)
            db.session.add(txn)
            db.session.flush()
            rows = sorted((ids[a], x) for a, x in merged.items())
            if rows:
                db.session.execute(insert(LedgerPosting), [
                    {"transaction_id": txn.id, "account_id": acct_id, "amount_minor": x}
                    for acct_id, x in rows
                ])
            if extra is not None:
                extra(txn)
                db.session.flush()
    except IntegrityError:
        log.info("ledger transaction %s %s already posted", source, kind)
        return None
    if balances is None:
        apply_balances(dict(rows))
    else:
        for acct_id, x in rows:
            balances[acct_id] = balances.get(acct_id, 0) + x
    return txn


# --------------------------------------------------------------------------- conversions


def conversion_source(conversion_id: int) -> str:
    """The ledger ``source`` of a conversion: ``"conversion:<id>"``."""
    return f"conversion:{conversion_id}"


@dataclass(frozen=True)
class SplitDetail:
    """A computed split and why: ``lines`` (:class:`SplitLine`), the payout ``rule_text``
    (:mod:`partnernet.ledger.payout_rules`), the recruiter ids paid at tier 1 and at tier 2."""

    lines: list[SplitLine]
    rule_text: str
    tier1: frozenset
    tier2: frozenset


@dataclass(frozen=True)
class _CampaignInfo:
    client_id: int
    model: str


def _campaign_infos(campaign_ids) -> dict[int, _CampaignInfo]:
    return {
        cid: _CampaignInfo(client_id, model)
        for cid, client_id, model in db.session.execute(
            select(Campaign.id, Campaign.client_id, Campaign.attribution_model)
            .where(Campaign.id.in_(sorted(set(campaign_ids))))
        ).all()
    }


def _recruiters_of(partner_ids: list[int], percent_col) -> dict[int, tuple[int, Decimal]]:
    """``{partner id: (its recruiter's id, percent)}`` for those of ``partner_ids`` that have a
    recruiter other than themselves and a percent in ``percent_col`` (``recruiter_percent`` for
    tier 1, the recruiter's ``tier2_percent`` for tier 2). One query."""
    if not partner_ids:
        return {}
    return {
        pid: (rid, pct)
        for pid, rid, pct in db.session.execute(
            select(Partner.id, Partner.recruiter_id, percent_col).where(Partner.id.in_(partner_ids))
        ).all()
        if rid is not None and pct is not None and rid != pid
    }


def compute_split_details(convs: list[Conversion],
                          campaigns: dict[int, _CampaignInfo] | None = None) -> dict[int, SplitDetail]:
    """The splits of ``convs``, ``{conversion id: SplitDetail}`` (CONTRACT §4; issue 6): the
    payout from the rule that applies (event, tier, per-partner override, performance bonus;
    :func:`partnernet.ledger.payout_rules.resolve_payouts`), shared by the touches of the
    campaign's attribution model (:mod:`partnernet.ledger.attribution`), recruiter overrides of
    two tiers out of the margin (tier 1: the touch partner's recruiter at ``recruiter_percent``;
    tier 2: that recruiter's own recruiter at the recruiter's ``tier2_percent``).

    Set-based: campaigns, payout rules and recruiters of the whole batch are read in a handful of
    queries. Under ``last_click`` only the converter can earn (the other touches weigh 0, and so
    do their recruiters' overrides), so no touch is looked up; the other models read each
    conversion's touches. Reads, never writes."""
    from .attribution import weighted_touches
    from .payout_rules import resolve_payouts
    from .splits import ATTRIBUTION_MODELS

    if not convs:
        return {}
    campaigns = campaigns if campaigns is not None else _campaign_infos(c.campaign_id for c in convs)
    touches: dict[int, list[tuple[int, Decimal]]] = {}
    for conv in convs:
        model = campaigns[conv.campaign_id].model
        if model not in ATTRIBUTION_MODELS or model == "last_click":
            touches[conv.id] = [(conv.partner_id, Decimal(1))]
        else:
            touches[conv.id] = weighted_touches(conv, model)
    pids = sorted({pid for ts in touches.values() for pid, _ in ts})
    recruiters = _recruiters_of(pids, Partner.recruiter_percent)
    up = _recruiters_of(sorted({rid for rid, _ in recruiters.values()}), Partner.tier2_percent)
    resolved = resolve_payouts(convs)
    out: dict[int, SplitDetail] = {}
    for conv in convs:
        ts = touches[conv.id]
        mine = {pid: recruiters[pid] for pid, _ in ts if pid in recruiters}
        second_tier = {pid: up[rid] for pid, (rid, _pct) in mine.items() if rid in up and up[rid][0] != pid}
        rule = resolved[conv.id]
        lines = split(int(conv.client_fee_minor or 0), rule.rule, ts, mine, second_tier)
        out[conv.id] = SplitDetail(lines, rule.text, frozenset(rid for rid, _ in mine.values()),
                                   frozenset(r for r, _ in second_tier.values()))
    return out


def compute_split_detail(conv: Conversion) -> SplitDetail:
    """The split of one conversion (see :func:`compute_split_details`). Reads, never writes."""
    return compute_split_details([conv])[conv.id]


def compute_split(conv: Conversion) -> list[SplitLine]:
    """The split lines of ``conv`` (see :func:`compute_split_details`). Reads, never writes."""
    return compute_split_detail(conv).lines


def _rule_text(detail: SplitDetail, line: SplitLine) -> str:
    if line.role in ("converter", "touch"):
        return detail.rule_text
    if line.role == "recruiter":
        t1, t2 = line.partner_id in detail.tier1, line.partner_id in detail.tier2
        if t1 and t2:
            return "recruiter override tiers 1+2"
        return "recruiter override tier 2" if t2 else "recruiter override"
    return "fee minus partner amounts"


def _split_postings(conv: Conversion, client_id: int, lines: list[SplitLine]) -> list[tuple[Account, int]]:
    cur = conv.currency
    postings: list[tuple[Account, int]] = [
        (client_account(client_id, RECEIVABLE, cur), conv.client_fee_minor),
    ]
    for line in lines:
        if line.role == "margin":
            postings.append((agency_account(MARGIN_PENDING, cur), -line.amount))
        else:
            postings.append((partner_account(line.partner_id, PENDING, cur), -line.amount))
    return postings


def _approve_postings(split_postings: dict[Account, int]) -> list[tuple[Account, int]]:
    out: list[tuple[Account, int]] = []
    for acct, amount in split_postings.items():
        if acct.kind == PENDING:
            out += [(acct, -amount), (partner_account(acct.owner_id, PAYABLE, acct.currency), amount)]
        elif acct.kind == MARGIN_PENDING:
            out += [(acct, -amount), (agency_account(MARGIN, acct.currency), amount)]
    return out


def _is_postgresql() -> bool:
    return db.session.get_bind().dialect.name == "postgresql"


def lock_conversions(conversion_ids, *, skip_locked: bool = False) -> list[Conversion]:
    """Load the conversions ``conversion_ids``, fresh, holding their row locks until commit, in id
    order (so two lockers never deadlock): ``SELECT ... ORDER BY id FOR NO KEY UPDATE`` on PostgreSQL
    (``SKIP LOCKED`` with ``skip_locked``: rows another transaction holds are left out); on
    SQLite a no-op UPDATE first, which takes the database write lock before anything is read
    (so two syncs never work from the same stale snapshot). Unknown ids are left out."""
    ids = sorted({int(i) for i in conversion_ids})
    if not ids:
        return []
    stmt = (select(Conversion).where(Conversion.id.in_(ids)).order_by(Conversion.id)
            .execution_options(populate_existing=True))
    if _is_postgresql():
        stmt = stmt.with_for_update(skip_locked=skip_locked, key_share=True)
    else:
        db.session.execute(
            update(Conversion).where(Conversion.id.in_(ids))
            .values(ledger_status=Conversion.ledger_status)
            .execution_options(synchronize_session=False)
        )
    return list(db.session.scalars(stmt))


@dataclass
class _Txn:
    conv: Conversion
    kind: str
    postings: dict[Account, int]
    lines: list[tuple[SplitLine, str]] | None = None  # split lines and rule texts (kind split)


def _merge(postings: list[tuple[Account, int]]) -> dict[Account, int]:
    merged: dict[Account, int] = defaultdict(int)
    for acct, amount in postings:
        merged[acct] += amount
    return {a: x for a, x in merged.items() if x != 0}


def post_conversion(conv: Conversion) -> str:
    """Post whatever the ledger lacks for ``conv``'s current status; set ``ledger_status``.
    One conversion of :func:`post_conversions` (see there for the rules). Returns the new
    ledger status. Does not commit."""
    return post_conversions([conv])[conv.id]


def post_conversions(convs: list[Conversion]) -> dict[int, str]:
    """Post whatever the ledger lacks for each conversion's current status, set-based, and set
    ``ledger_status``. Returns ``{conversion id: new ledger status}``.

    The caller holds the conversions' row locks (:func:`lock_conversions`, or
    ``lock_conversion_for_change`` for a status change) and commits. Rules (CONTRACT §3/§4):

    - ``pending``: the split (transaction ``split`` and the ``conversion_splits`` lines);
    - ``approved``: the split, then ``approve``;
    - ``rejected``: when the split was posted, ``reject``: the exact negation of it; when
      nothing was posted (rejected at creation, or before its split ran) nothing is posted
      and the conversion keeps no split lines;
    - ``reversed``: ``reverse``, the exact negation of everything posted (also after a payout:
      the partner's payable goes into debit and later earnings net against it); nothing
      when nothing was posted.

    Idempotent: what is already posted is not posted again. Whatever the batch size, the writes
    are a fixed number of statements: the posted kinds, the old postings and the split lines
    to undo are read in one query each; the transactions are inserted in one multi-row INSERT,
    their postings and split lines in one each; each account's cached balance moves by one
    UPDATE (in account-id order, so two posters never deadlock); the money rollups of the
    reports move with each split posted (+) and each split undone (−)
    (:func:`partnernet.reporting.rollup.apply_conversion_money`). A test conversion (staff
    "send test postback") is never money: nothing is posted for it. Raises ValueError for an
    unknown status or an unbalanced transaction (a bug). Does not commit.
    """
    result: dict[int, str] = {}
    convs = [c for c in convs if not _skip_test(c, result)]
    if not convs:
        return result
    sources = {c.id: conversion_source(c.id) for c in convs}
    by_source = {v: k for k, v in sources.items()}
    done: dict[int, set[str]] = defaultdict(set)
    for source, kind in db.session.execute(
        select(LedgerTransaction.source, LedgerTransaction.kind).where(LedgerTransaction.source.in_(list(by_source)))
    ):
        done[by_source[source]].add(kind)

    to_split, to_approve, to_undo = [], [], []
    for conv in convs:
        kinds = done[conv.id]
        if conv.status in ("pending", "approved"):
            if kinds & {REJECT, REVERSE}:
                log.error("conversion %s is %s but its ledger was already undone (%s)",
                          conv.id, conv.status, sorted(kinds))
                result[conv.id] = conv.ledger_status or ""
                continue
            if SPLIT not in kinds:
                to_split.append(conv)
            if conv.status == "approved" and APPROVE not in kinds:
                to_approve.append(conv)
        elif conv.status in ("rejected", "reversed"):
            if SPLIT in kinds and not kinds & {REJECT, REVERSE}:
                to_undo.append(conv)
        else:  # pragma: no cover - the model allows nothing else
            raise ValueError(f"unknown conversion status {conv.status!r}")
        result[conv.id] = conv.status

    txns: list[_Txn] = []
    money: list[tuple[Conversion, list[dict], int]] = []
    split_postings: dict[int, dict[Account, int]] = {}
    if to_split:
        campaigns = _campaign_infos(c.campaign_id for c in to_split)
        details = compute_split_details(to_split, campaigns)
        for conv in to_split:
            detail = details[conv.id]
            postings = _merge(_split_postings(conv, campaigns[conv.campaign_id].client_id, detail.lines))
            split_postings[conv.id] = postings
            txns.append(_Txn(conv, SPLIT, postings, [(line, _rule_text(detail, line)) for line in detail.lines]))
            money.append((conv, [{"partner_id": line.partner_id, "role": line.role, "amount_minor": line.amount}
                                 for line in detail.lines], 1))
    if to_approve:
        missing = [sources[c.id] for c in to_approve if c.id not in split_postings]
        for conv_id, postings in _postings_by_source(missing, SPLIT).items():
            split_postings[conv_id] = postings
        for conv in to_approve:
            txns.append(_Txn(conv, APPROVE, _merge(_approve_postings(split_postings.get(conv.id, {})))))
    if to_undo:
        nets = _postings_by_source([sources[c.id] for c in to_undo], None)
        lines = _split_lines_of([c.id for c in to_undo])
        for conv in to_undo:
            kind = REJECT if conv.status == "rejected" else REVERSE
            txns.append(_Txn(conv, kind, {a: -x for a, x in nets.get(conv.id, {}).items() if x}))
            money.append((conv, lines.get(conv.id, []), -1))
    _write(txns)
    if money:
        from ..reporting.rollup import apply_conversion_money

        apply_conversion_money(money)
    by_status: dict[str, list[int]] = defaultdict(list)
    for conv in convs:
        status = result[conv.id]
        if status != (conv.ledger_status or "") and status:
            by_status[status].append(conv.id)
            set_committed_value(conv, "ledger_status", status)
    for status, ids in by_status.items():
        db.session.execute(
            update(Conversion).where(Conversion.id.in_(ids)).values(ledger_status=status)
            .execution_options(synchronize_session=False)
        )
    return result


def _skip_test(conv: Conversion, result: dict[int, str]) -> bool:
    if conv.is_test:  # a test conversion (staff "send test postback") is never money
        log.info("conversion %s is a test conversion: nothing is posted", conv.id)
        result[conv.id] = conv.ledger_status or ""
    return conv.is_test


def _postings_by_source(sources: list[str], kind: str | None) -> dict[int, dict[Account, int]]:
    """Sum of the postings of each source (of transaction ``kind``, or of every kind), per account:
    ``{conversion id: {Account: amount}}``, one query."""
    if not sources:
        return {}
    stmt = (
        select(LedgerTransaction.source, LedgerAccount.owner_type, LedgerAccount.owner_id, LedgerAccount.kind,
               LedgerAccount.currency, func.sum(LedgerPosting.amount_minor))
        .join(LedgerPosting, LedgerPosting.account_id == LedgerAccount.id)
        .join(LedgerTransaction, LedgerTransaction.id == LedgerPosting.transaction_id)
        .where(LedgerTransaction.source.in_(sources))
        .group_by(LedgerTransaction.source, LedgerAccount.id, LedgerAccount.owner_type, LedgerAccount.owner_id,
                  LedgerAccount.kind, LedgerAccount.currency)
    )
    if kind is not None:
        stmt = stmt.where(LedgerTransaction.kind == kind)
    out: dict[int, dict[Account, int]] = defaultdict(dict)
    for source, ot, oid, akind, cur, total in db.session.execute(stmt):
        out[int(source.rpartition(":")[2])][Account(ot, oid, akind, cur)] = int(total)
    return out


def _split_lines_of(conversion_ids: list[int]) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = defaultdict(list)
    for cid, pid, role, amount in db.session.execute(
        select(ConversionSplit.conversion_id, ConversionSplit.partner_id, ConversionSplit.role,
               ConversionSplit.amount_minor).where(ConversionSplit.conversion_id.in_(conversion_ids))
        .order_by(ConversionSplit.id)
    ):
        out[cid].append({"partner_id": pid, "role": role, "amount_minor": int(amount)})
    return out


def _write(txns: list[_Txn]) -> None:
    """Insert the transactions, their postings and split lines, and move the balances: a fixed
    number of statements for the whole batch. Raises ValueError for an unbalanced transaction
    or mixed currencies; IntegrityError when one of them was posted meanwhile (the caller's
    locks make that a bug; the sync retries)."""
    if not txns:
        return
    for t in txns:
        if sum(t.postings.values()) != 0:
            raise ValueError(f"unbalanced transaction conversion:{t.conv.id} {t.kind}: {t.postings!r}")
        if any(a.currency != t.conv.currency for a in t.postings):
            raise ValueError(f"transaction conversion:{t.conv.id} {t.kind} mixes currencies")
    ids = ensure_accounts(list({a for t in txns for a in t.postings}))
    now = utcnow()
    rows = [{"source": conversion_source(t.conv.id), "kind": t.kind, "currency": t.conv.currency,
             "memo": f"{t.kind} conversion {t.conv.id}", "created_at": now} for t in txns]
    # Core table statements (not ORM bulk inserts): one multi-row INSERT each, no per-row ORM work.
    t_txn = LedgerTransaction.__table__
    returned = db.session.execute(t_txn.insert().returning(t_txn.c.id, t_txn.c.source, t_txn.c.kind), rows).all()
    txn_ids = {(source, kind): tid for tid, source, kind in returned}
    postings, lines, deltas = [], [], defaultdict(int)
    for t in txns:
        tid = txn_ids[(conversion_source(t.conv.id), t.kind)]
        for acct_id, amount in sorted((ids[a], x) for a, x in t.postings.items()):
            postings.append({"transaction_id": tid, "account_id": acct_id, "amount_minor": amount})
            deltas[acct_id] += amount
        for line, rule in t.lines or ():
            lines.append({"conversion_id": t.conv.id, "party": line.party, "partner_id": line.partner_id,
                          "role": line.role, "amount_minor": line.amount, "rule": rule})
    if postings:
        db.session.execute(LedgerPosting.__table__.insert(), postings)
    if lines:
        db.session.execute(ConversionSplit.__table__.insert(), lines)
    apply_balances(dict(deltas))


def _prepare_attribution(conversion_ids: list[int]) -> None:
    """Before splits are posted: make sure each converting click (and so every click buffered
    before it) is written, flushing the Redis click buffer when one is not
    (:func:`partnernet.ledger.attribution.ensure_click_written`). Only for conversions with a
    click whose split is not posted yet; one query finds the missing clicks."""
    from ..models import Click
    from .attribution import ensure_click_written

    if not conversion_ids:
        return
    click_ids = set(db.session.scalars(
        select(Conversion.click_id).where(
            Conversion.id.in_(conversion_ids), Conversion.click_id.is_not(None), Conversion.ledger_status.is_(None),
            Conversion.status.in_(("pending", "approved")),
        )
    ))
    if not click_ids:
        return
    found = set(db.session.scalars(select(Click.click_id).where(Click.click_id.in_(sorted(click_ids)))))
    for click_id in sorted(click_ids - found):
        ensure_click_written(click_id)


def _is_retryable(err: OperationalError) -> bool:
    orig = getattr(err, "orig", None)
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return code in ("40P01", "40001")  # deadlock detected, serialization failure


def sync_conversions(conversion_ids, *, skip_locked: bool = False) -> dict[int, str]:
    """Bring the ledger level with the status of each conversion in ``conversion_ids``, in one
    database transaction, then commit. Returns ``{conversion id: new ledger_status}`` for the
    conversions found (and, with ``skip_locked``, not held by another transaction).

    Idempotent and safe to run twice or concurrently: the conversion rows are locked first, in
    id order (PostgreSQL ``FOR NO KEY UPDATE``), and the unique (source, kind) constraint is the
    backstop. A deadlock, serialization failure or unique violation is retried (three attempts
    in all); other errors are raised after a rollback.
    """
    ids = sorted({int(i) for i in conversion_ids})
    _prepare_attribution(ids)
    for attempt in range(1, _MAX_ATTEMPTS + 1):
        try:
            convs = lock_conversions(ids, skip_locked=skip_locked)
            result = post_conversions(convs)
            db.session.commit()
            return result
        except IntegrityError:
            db.session.rollback()
            log.info("ledger sync of %s conversion(s) raced another; retrying", len(ids))
        except OperationalError as err:
            db.session.rollback()
            if not _is_retryable(err) or attempt == _MAX_ATTEMPTS:
                raise
            log.info("ledger sync of %s conversion(s): %s; retrying", len(ids), err.orig)
        except Exception:
            db.session.rollback()
            raise
    raise RuntimeError(f"ledger sync of conversions {ids[:10]}... kept colliding")


def sync_conversion(conversion_id: int) -> str | None:
    """Bring the ledger level with conversion ``conversion_id``'s status, then commit (see
    :func:`sync_conversions`). Returns the new ``ledger_status``, or None when there is no such
    conversion (logged)."""
    result = sync_conversions([conversion_id])
    if conversion_id not in result:
        log.warning("ledger sync: no conversion %s", conversion_id)
        return None
    return result[conversion_id]


def _lagging_filter():
    """Conversions whose ledger does not reflect their status. A rejected conversion with
    nothing posted (``ledger_status`` None) needs nothing, so it is not lagging. The partial
    index ``ix_conversions_ledger_lag`` holds exactly these rows."""
    return LAGGING


#: Default number of conversions per ledger transaction in :func:`sync_lagging`.
BATCH_SIZE = 500


def sync_lagging(*, batch_size: int = BATCH_SIZE, time_budget_s: float | None = None) -> tuple[int, bool]:
    """Bring the ledger level with every lagging conversion (the split job, CONTRACT §4), in id
    order, ``batch_size`` conversions per database transaction (:func:`sync_conversions` with
    ``SKIP LOCKED``, so two workers share the work). One pass: a conversion that starts lagging
    behind the pass's position is left to the next run (its change schedules one). Rows that
    were skipped because another transaction held them are taken again at the end of the pass,
    this time waiting for their locks (a status change or a staff action holds them for
    milliseconds), so no lagging conversion is left behind. A batch that fails is retried
    conversion by conversion, so one bad conversion (logged) never holds the others back.

    Returns ``(conversions synced, finished)``; ``finished`` is False when ``time_budget_s``
    (seconds, monotonic) ran out first."""
    deadline = None if time_budget_s is None else time.monotonic() + time_budget_s
    last_id, synced, skipped = 0, 0, []
    while True:
        ids = list(db.session.scalars(
            select(Conversion.id).where(_lagging_filter(), Conversion.id > last_id)
            .order_by(Conversion.id).limit(batch_size)
        ))
        db.session.rollback()
        if not ids:
            break
        last_id = ids[-1]
        done = _sync_batch(ids, skip_locked=True)
        synced += len(done)
        skipped += [cid for cid in ids if cid not in done]
        if deadline is not None and time.monotonic() > deadline:
            return synced, False
    if skipped:
        synced += len(_sync_batch(skipped, skip_locked=False))
    return synced, True


def _sync_batch(ids: list[int], *, skip_locked: bool) -> dict[int, str]:
    try:
        return sync_conversions(ids, skip_locked=skip_locked)
    except Exception:  # noqa: BLE001 - isolate the bad conversion, keep the others moving
        log.exception("ledger sync of a batch of %s conversions failed; retrying one by one", len(ids))
    done: dict[int, str] = {}
    for cid in ids:
        try:
            done.update(sync_conversions([cid], skip_locked=skip_locked))
        except Exception:  # noqa: BLE001
            done[cid] = ""  # not skipped: failed, logged; the sweeper tries again
            log.exception("ledger sync of conversion %s failed; the sweeper will retry it", cid)
    return done


def requeue_stuck(limit: int = 100_000) -> int:
    """Schedule the split job when any conversion's ``ledger_status`` lags its status
    (ARCHITECTURE: the sweeper; a lost job delays money, never loses it). Conversions
    rejected at creation are left alone. Returns how many conversions lag (at most ``limit``
    counted); without Redis the job runs in-process before returning."""
    from .tasks import schedule_ledger_sync

    n = int(db.session.scalar(
        select(func.count()).select_from(select(Conversion.id).where(_lagging_filter()).limit(limit).subquery())
    ) or 0)
    db.session.rollback()
    if n:
        schedule_ledger_sync(force=True)
        db.session.commit()  # sends the job
        if not queue.redis_url():
            queue.run_pending()
    return n


# --------------------------------------------------------------------------- reading


def partner_earnings(partner_id: int) -> list[dict]:
    """A partner's earnings per currency, read from the ledger (CONTRACT §5 earnings).

    Returns ``[{"currency", "pending", "approved", "paid", "balance"}, ...]`` (int minor units),
    one entry per currency in which the partner has any posting, sorted by currency:
    ``pending``: its amounts (converter, touch, recruiter) on pending conversions;
    ``approved``: the same on approved conversions, paid ones included, reversed ones left out;
    ``paid``: paid out by payout batches; ``balance`` = approved − paid (negative after a
    reversal of money already paid). Raises NotFound for an unknown partner.
    """
    if db.session.get(Partner, partner_id) is None:
        raise NotFound(f"no partner {partner_id}")
    rows = db.session.execute(
        select(LedgerAccount.currency, LedgerAccount.kind, LedgerTransaction.kind,
               func.sum(LedgerPosting.amount_minor))
        .join(LedgerPosting, LedgerPosting.account_id == LedgerAccount.id)
        .join(LedgerTransaction, LedgerTransaction.id == LedgerPosting.transaction_id)
        .where(LedgerAccount.owner_type == "partner", LedgerAccount.owner_id == partner_id)
        .group_by(LedgerAccount.currency, LedgerAccount.kind, LedgerTransaction.kind)
    ).all()
    out: dict[str, dict] = {}
    for cur, acct_kind, txn_kind, total in rows:
        e = out.setdefault(cur, {"currency": cur, "pending": 0, "approved": 0, "paid": 0, "balance": 0})
        total = int(total)
        if acct_kind == PENDING:
            e["pending"] -= total
        elif acct_kind == PAYABLE:
            e["balance"] -= total
            if txn_kind == PAID:
                e["paid"] += total
    for e in out.values():
        e["approved"] = e["balance"] + e["paid"]
    return [out[c] for c in sorted(out)]


def account_balance(account: Account) -> int:
    """The cached signed balance of ``account`` (0 when it has no posting yet), minor units."""
    value = db.session.scalar(select(LedgerAccount.balance_minor).where(LedgerAccount.code == account.code))
    return int(value or 0)


def verify_ledger() -> list[str]:
    """Check the whole ledger (CONTRACT §4/§6 ``flask ledger verify``). Returns the problems
    found, as readable lines; an empty list means all is well:

    - every transaction's postings add up to 0, in the transaction's currency;
    - every account's ``balance_minor`` equals the sum of its postings;
    - every conversion's split lines add up to its client fee, none negative, and a
      conversion has split lines exactly when its ``split`` transaction exists;
    - every conversion's ``ledger_status`` equals its status (a rejected conversion with
      nothing posted excepted). A lag here means a sync job has not run (yet).
    """
    problems: list[str] = []
    s = db.session
    for tid, source, kind, total in s.execute(
        select(LedgerTransaction.id, LedgerTransaction.source, LedgerTransaction.kind,
               func.coalesce(func.sum(LedgerPosting.amount_minor), 0))
        .outerjoin(LedgerPosting, LedgerPosting.transaction_id == LedgerTransaction.id)
        .group_by(LedgerTransaction.id, LedgerTransaction.source, LedgerTransaction.kind)
        .having(func.coalesce(func.sum(LedgerPosting.amount_minor), 0) != 0)
    ):
        problems.append(f"transaction {tid} ({source} {kind}) does not balance: postings sum to {total}")
    for tid, source, kind, code in s.execute(
        select(LedgerTransaction.id, LedgerTransaction.source, LedgerTransaction.kind, LedgerAccount.code)
        .join(LedgerPosting, LedgerPosting.transaction_id == LedgerTransaction.id)
        .join(LedgerAccount, LedgerAccount.id == LedgerPosting.account_id)
        .where(LedgerAccount.currency != LedgerTransaction.currency)
    ):
        problems.append(f"transaction {tid} ({source} {kind}) posts to {code} in another currency")
    for aid, code, cached, total in s.execute(
        select(LedgerAccount.id, LedgerAccount.code, LedgerAccount.balance_minor,
               func.coalesce(func.sum(LedgerPosting.amount_minor), 0))
        .outerjoin(LedgerPosting, LedgerPosting.account_id == LedgerAccount.id)
        .group_by(LedgerAccount.id, LedgerAccount.code, LedgerAccount.balance_minor)
        .having(LedgerAccount.balance_minor != func.coalesce(func.sum(LedgerPosting.amount_minor), 0))
    ):
        problems.append(f"account {aid} ({code}) has balance {cached} but its postings sum to {total}")
    for cid, fee, total, lowest in s.execute(
        select(Conversion.id, Conversion.client_fee_minor, func.sum(ConversionSplit.amount_minor),
               func.min(ConversionSplit.amount_minor))
        .join(ConversionSplit, ConversionSplit.conversion_id == Conversion.id)
        .group_by(Conversion.id, Conversion.client_fee_minor)
        .having(or_(func.sum(ConversionSplit.amount_minor) != Conversion.client_fee_minor,
                    func.min(ConversionSplit.amount_minor) < 0))
    ):
        problems.append(f"conversion {cid}: split lines sum to {total} (lowest {lowest}),"
                        f" client fee is {fee}")
    has_lines = select(ConversionSplit.id).where(ConversionSplit.conversion_id == Conversion.id).exists()
    has_split = (
        select(LedgerTransaction.id)
        .where(LedgerTransaction.kind == SPLIT,
               LedgerTransaction.source == literal("conversion:").concat(cast(Conversion.id, String)))
        .exists()
    )
    for (cid,) in s.execute(select(Conversion.id).where(has_lines != has_split).order_by(Conversion.id)):
        problems.append(f"conversion {cid}: split lines and split transaction do not match")
    for cid, status, ledger_status in s.execute(
        select(Conversion.id, Conversion.status, Conversion.ledger_status)
        .where(_lagging_filter()).order_by(Conversion.id)
    ):
        problems.append(f"conversion {cid} is {status} but its ledger reflects {ledger_status or 'nothing'}"
                        " (sync not run yet?)")
    return problems
