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
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import String, and_, cast, func, insert, literal, or_, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from .. import queue
from ..errors import NotFound
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
    """Move cached balances: ``{account_id: delta}``, each ``UPDATE ... SET balance_minor =
    balance_minor + delta``, in account-id order so that two writers never deadlock on the
    shared (agency) accounts. Does not commit."""
    for acct_id in sorted(deltas):
        delta = deltas[acct_id]
        if delta:
            db.session.execute(
                update(LedgerAccount)
                .where(LedgerAccount.id == acct_id)
                .values(balance_minor=LedgerAccount.balance_minor + delta)
                .execution_options(synchronize_session=False)
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


def posted_kinds(source: str) -> set[str]:
    """The kinds of the transactions already posted for ``source``."""
    return set(db.session.scalars(select(LedgerTransaction.kind).where(LedgerTransaction.source == source)))


def _net_by_account(source: str) -> dict[Account, int]:
    """Sum of every posting of ``source``, per account."""
    rows = db.session.execute(
        select(LedgerAccount.owner_type, LedgerAccount.owner_id, LedgerAccount.kind, LedgerAccount.currency,
               func.sum(LedgerPosting.amount_minor))
        .join(LedgerPosting, LedgerPosting.account_id == LedgerAccount.id)
        .join(LedgerTransaction, LedgerTransaction.id == LedgerPosting.transaction_id)
        .where(LedgerTransaction.source == source)
        .group_by(LedgerAccount.id, LedgerAccount.owner_type, LedgerAccount.owner_id, LedgerAccount.kind,
                  LedgerAccount.currency)
    ).all()
    return {Account(ot, oid, kind, cur): int(total) for ot, oid, kind, cur, total in rows}


def _postings_of(source: str, kind: str) -> dict[Account, int]:
    rows = db.session.execute(
        select(LedgerAccount.owner_type, LedgerAccount.owner_id, LedgerAccount.kind, LedgerAccount.currency,
               LedgerPosting.amount_minor)
        .join(LedgerPosting, LedgerPosting.account_id == LedgerAccount.id)
        .join(LedgerTransaction, LedgerTransaction.id == LedgerPosting.transaction_id)
        .where(LedgerTransaction.source == source, LedgerTransaction.kind == kind)
    ).all()
    out: dict[Account, int] = defaultdict(int)
    for ot, oid, akind, cur, amount in rows:
        out[Account(ot, oid, akind, cur)] += amount
    return dict(out)


# --------------------------------------------------------------------------- conversions


def conversion_source(conversion_id: int) -> str:
    """The ledger ``source`` of a conversion: ``"conversion:<id>"``."""
    return f"conversion:{conversion_id}"


def _touches(conv: Conversion) -> list[tuple[int, Decimal]]:
    """The touches that share the payout, oldest first, the converter last, with the weights of
    the campaign's attribution model (CONTRACT §4; :mod:`partnernet.ledger.attribution`)."""
    from .attribution import weighted_touches

    model = db.session.scalar(select(Campaign.attribution_model).where(Campaign.id == conv.campaign_id))
    return weighted_touches(conv, model)


@dataclass(frozen=True)
class SplitDetail:
    """A computed split and why: ``lines`` (:class:`SplitLine`), the payout ``rule_text``
    (:mod:`partnernet.ledger.payout_rules`), the recruiter ids paid at tier 1 and at tier 2."""

    lines: list[SplitLine]
    rule_text: str
    tier1: frozenset
    tier2: frozenset


def compute_split_detail(conv: Conversion) -> SplitDetail:
    """The split of ``conv`` (CONTRACT §4; issue 6): the payout from the rule that applies
    (event, tier, per-partner override, performance bonus), shared by the touches of the
    campaign's attribution model, recruiter overrides of two tiers out of the margin
    (tier 1: the touch partner's recruiter at ``recruiter_percent``; tier 2: that recruiter's
    own recruiter at the recruiter's ``tier2_percent``). Reads, never writes."""
    from .payout_rules import resolve_payout

    touches = _touches(conv)
    pids = [pid for pid, _ in touches]
    rows = db.session.execute(
        select(Partner.id, Partner.recruiter_id, Partner.recruiter_percent).where(Partner.id.in_(pids))
    ).all()
    recruiters = {pid: (rid, pct) for pid, rid, pct in rows if rid is not None and pct is not None and rid != pid}
    second_tier: dict[int, tuple[int, Decimal]] = {}
    first = {rid for rid, _ in recruiters.values()}
    if first:
        up = {
            rid: (rid2, pct2)
            for rid, rid2, pct2 in db.session.execute(
                select(Partner.id, Partner.recruiter_id, Partner.tier2_percent).where(Partner.id.in_(first))
            ).all()
            if rid2 is not None and pct2 is not None and rid2 != rid
        }
        for pid, (rid, _pct) in recruiters.items():
            if rid in up and up[rid][0] != pid:
                second_tier[pid] = up[rid]
    resolved = resolve_payout(conv)
    lines = split(int(conv.client_fee_minor or 0), resolved.rule, touches, recruiters, second_tier)
    return SplitDetail(lines, resolved.text, frozenset(first), frozenset(r for r, _ in second_tier.values()))


def compute_split(conv: Conversion) -> list[SplitLine]:
    """The split lines of ``conv`` (see :func:`compute_split_detail`). Reads, never writes."""
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


def lock_conversion(conversion_id: int) -> Conversion | None:
    """Load the conversion, fresh, holding its row lock until commit: ``SELECT ... FOR UPDATE``
    on PostgreSQL; on SQLite a no-op UPDATE first, which takes the database write lock
    before anything is read (so two syncs never work from the same stale snapshot)."""
    stmt = select(Conversion).where(Conversion.id == conversion_id).execution_options(populate_existing=True)
    if db.session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    else:
        db.session.execute(
            update(Conversion).where(Conversion.id == conversion_id)
            .values(ledger_status=Conversion.ledger_status)
            .execution_options(synchronize_session=False)
        )
    return db.session.scalar(stmt)


def post_conversion(conv: Conversion) -> str:
    """Post whatever the ledger lacks for ``conv``'s current status; set ``ledger_status``.

    The caller holds the conversion's row lock (``staff_set_status`` or :func:`sync_conversion`)
    and commits. Rules (CONTRACT §3/§4):

    - ``pending``: the split (transaction ``split`` and the ``conversion_splits`` lines);
    - ``approved``: the split, then ``approve``;
    - ``rejected``: when the split was posted, ``reject``: the exact negation of it; when
      nothing was posted (rejected at creation, or before its split ran) nothing is posted
      and the conversion keeps no split lines;
    - ``reversed``: ``reverse``, the exact negation of everything posted (also after a payout:
      the partner's payable goes into debit and later earnings net against it); nothing
      when nothing was posted.

    Idempotent: what is already posted is not posted again. Returns the new ledger status.
    Does not commit.
    """
    if conv.is_test:  # a test conversion (staff "send test postback") is never money
        log.info("conversion %s is a test conversion: nothing is posted", conv.id)
        return conv.ledger_status or ""
    source = conversion_source(conv.id)
    done = posted_kinds(source)
    status = conv.status
    deltas: dict[int, int] = {}
    if status in ("pending", "approved"):
        if done & {REJECT, REVERSE}:
            log.error("conversion %s is %s but its ledger was already undone (%s)",
                      conv.id, status, sorted(done))
            return conv.ledger_status or ""
        if SPLIT not in done:
            _post_split(conv, deltas)
        if status == "approved" and APPROVE not in done:
            post_transaction(source, APPROVE, conv.currency, _approve_postings(_postings_of(source, SPLIT)),
                             memo=f"approve conversion {conv.id}", balances=deltas)
    elif status in ("rejected", "reversed"):
        kind = REJECT if status == "rejected" else REVERSE
        other = REVERSE if kind == REJECT else REJECT
        if SPLIT in done and not done & {kind, other}:
            net = _net_by_account(source)
            post_transaction(source, kind, conv.currency, [(a, -x) for a, x in net.items()],
                             memo=f"{kind} conversion {conv.id}", balances=deltas)
    else:  # pragma: no cover - the model allows nothing else
        raise ValueError(f"unknown conversion status {status!r}")
    apply_balances(deltas)
    conv.ledger_status = status
    return status


def _post_split(conv: Conversion, deltas: dict[int, int]) -> None:
    client_id = db.session.scalar(select(Campaign.client_id).where(Campaign.id == conv.campaign_id))
    detail = compute_split_detail(conv)
    lines = detail.lines

    def write_lines(_txn) -> None:
        for line in lines:
            db.session.add(ConversionSplit(
                conversion_id=conv.id, party=line.party, partner_id=line.partner_id, role=line.role,
                amount_minor=line.amount, rule=_rule_text(detail, line),
            ))

    post_transaction(conversion_source(conv.id), SPLIT, conv.currency,
                     _split_postings(conv, client_id, lines), memo=f"split conversion {conv.id}",
                     extra=write_lines, balances=deltas)


def _prepare_attribution(conversion_id: int) -> None:
    """Before a split is posted: make sure the converting click (and so every click buffered
    before it) is written, flushing the Redis click buffer when it is not
    (:func:`partnernet.ledger.attribution.ensure_click_written`). Only for a conversion with a
    click whose split is not posted yet."""
    from .attribution import ensure_click_written

    row = db.session.execute(
        select(Conversion.click_id, Conversion.status, Conversion.ledger_status).where(Conversion.id == conversion_id)
    ).first()
    if row is None:
        return
    click_id, status, ledger_status = row
    if click_id and ledger_status is None and status in ("pending", "approved"):
        ensure_click_written(click_id)


def _is_retryable(err: OperationalError) -> bool:
    orig = getattr(err, "orig", None)
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return code in ("40P01", "40001")  # deadlock detected, serialization failure


def sync_conversion(conversion_id: int) -> str | None:
    """Bring the ledger level with conversion ``conversion_id``'s status, then commit.

    Idempotent and safe to run twice or concurrently: the conversion row is locked first
    (PostgreSQL ``FOR UPDATE``), and the unique (source, kind) constraint is the backstop.
    A deadlock or serialization failure is retried (three attempts in all).
    Returns the new ``ledger_status``, or None when there is no such conversion (logged).
    """
    _prepare_attribution(conversion_id)
    for attempt in range(1, _MAX_ATTEMPTS + 1):
        try:
            conv = lock_conversion(conversion_id)
            if conv is None:
                db.session.rollback()
                log.warning("ledger sync: no conversion %s", conversion_id)
                return None
            result = post_conversion(conv)
            db.session.commit()
            return result
        except IntegrityError:
            db.session.rollback()
            log.info("ledger sync of conversion %s raced another; retrying", conversion_id)
        except OperationalError as err:
            db.session.rollback()
            if not _is_retryable(err) or attempt == _MAX_ATTEMPTS:
                raise
            log.info("ledger sync of conversion %s: %s; retrying", conversion_id, err.orig)
    raise RuntimeError(f"ledger sync of conversion {conversion_id} kept colliding")


def _lagging_filter():
    """Conversions whose ledger does not reflect their status. A rejected conversion with
    nothing posted (``ledger_status`` None) needs nothing, so it is not lagging."""
    return and_(
        Conversion.is_test.is_(False),
        or_(Conversion.ledger_status.is_(None), Conversion.ledger_status != Conversion.status),
        ~and_(Conversion.status == "rejected", Conversion.ledger_status.is_(None)),
    )


def requeue_stuck(limit: int = 100_000) -> int:
    """Re-enqueue the ledger sync of every conversion whose ``ledger_status`` lags its status
    (ARCHITECTURE: the sweeper; a lost job delays money, never loses it). Conversions
    rejected at creation are left alone. At most ``limit`` at a time. Commits (the jobs are
    sent after commit); without Redis they run in-process before returning.
    Returns how many were queued."""
    from ..conversions.services import queue_ledger_sync

    convs = db.session.scalars(
        select(Conversion).where(_lagging_filter()).order_by(Conversion.id).limit(limit)
    ).all()
    for conv in convs:
        queue_ledger_sync(conv)
    db.session.commit()
    if not queue.redis_url():
        queue.run_pending()
    return len(convs)


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
