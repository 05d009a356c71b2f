"""The conversion ledger (CONTRACT §4, ARCHITECTURE: every money movement is a balanced ledger
transaction): bringing a conversion's postings level with its status (the split job) and the
sweeper. Accounts and balanced transactions are in :mod:`partnernet.ledger.accounts`, the split
computation in :mod:`partnernet.ledger.split_details`, earnings and ``flask ledger verify`` in
:mod:`partnernet.ledger.reading`; their public names are re-exported here.

Transactions of a conversion (``source`` ``"conversion:<id>"``), unique on (source, kind):

- ``split``: Dr receivable fee; Cr each partner's pending its amounts; Cr margin_pending;
- ``approve``: each pending amount moves to payable, margin_pending to margin;
- ``reject`` (rejected after pending) / ``reverse`` (reversed): the exact negation of
  everything posted for the conversion so far, so its net is zero;
- ``adjustment:<n>`` (v2 §3): the difference of every split line after an ``adjusted`` postback
  (:mod:`partnernet.ledger.adjustments`); ``approve`` moves the net of the split and these.

A payout batch posts ``("payout_batch:<id>", "paid")``: Dr each partner's payable, Cr cash
(:mod:`partnernet.payouts.services`).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm.attributes import set_committed_value

from .. import queue
from ..clock import utcnow
from ..extensions import db
from ..models import Conversion, ConversionSplit, LedgerAccount, LedgerPosting, LedgerTransaction
from ..models.conversions import LAGGING
from .accounts import (  # noqa: F401 - re-exported: the ledger's public names live here too
    APPROVE,
    CASH,
    MARGIN,
    MARGIN_PENDING,
    PAID,
    PAYABLE,
    PENDING,
    RECEIVABLE,
    REJECT,
    REVERSE,
    SPLIT,
    Account,
    agency_account,
    apply_balances,
    client_account,
    conversion_source,
    ensure_accounts,
    partner_account,
    post_transaction,
)
from .reading import account_balance, partner_earnings, verify_ledger  # noqa: F401 - re-exported
from .split_details import (  # noqa: F401 - re-exported
    SplitDetail,
    _campaign_infos,
    _rule_text,
    compute_split,
    compute_split_detail,
    compute_split_details,
)
from .splits import SplitLine

log = logging.getLogger(__name__)

_MAX_ATTEMPTS = 3


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
        # Every kind: the split and its adjustments (partnernet.ledger.adjustments), which is all
        # a conversion not yet approved nor undone has posted; approve moves their net.
        for conv_id, postings in _postings_by_source(missing, None).items():
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
