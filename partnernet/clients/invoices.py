"""Client invoices (issue 5): per client, per calendar month in the client's time zone, per currency.

What is billed: every conversion of the client's campaigns that is live (pending or approved,
CONTRACT §5 ``spent``), not a test, created before the end of the period and not billed on an
invoice yet (:class:`~partnernet.models.InvoiceCharge` is unique per conversion, so no conversion
is ever billed twice; a straggler of an earlier month lands on the next invoice built). One line per
billable action (date, campaign, event, txn_id, fee); the tracker's ``click`` and ``impression``
conversions (CPC / CPM) are summed per campaign, day-less, as a count at one unit fee.

Credits: a conversion billed on an *issued or paid* invoice of an earlier period that has since
been rejected or reversed becomes a negative ``credit`` line on the invoice being built (once:
``InvoiceCharge.credit_invoice_id``). A draft is rebuilt from scratch each time, so a draft never
needs a credit.

Status: ``draft`` → ``issued`` → ``paid``. :func:`build_invoice` rebuilds a draft and returns an
issued or paid invoice unchanged: an issued invoice never changes. The total of an invoice is the
sum of its lines, in minor units (CONTRACT §4, no float anywhere).

The ledger check: for a client whose invoices all cover the same conversions, the sum of the
invoices' totals equals the balance of ``client:<id>:receivable:<CUR>`` once every conversion's
ledger sync has run (split posts the fee, reject/reverse negate it).
"""

from __future__ import annotations

import io
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import delete, select, update

from .. import csvsafe, queue
from ..clock import utcnow
from ..errors import InvalidState, NotFound, ValidationError
from ..extensions import db
from ..models import Campaign, Client, Conversion, Invoice, InvoiceCharge, InvoiceLine, ScheduleRun
from .periods import local_midnight, month_start, next_month, parse_month

LIVE = ("pending", "approved")
DEAD = ("rejected", "reversed")
TRACKER_KIND = {"click": "clicks", "impression": "impressions"}
BUILD_JOB = "partnernet.clients.invoices.build_invoice_job"


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def month_arg(text: str) -> tuple[int, int]:
    """``"YYYY-MM"`` as (year, month); raises ValidationError ``bad_month`` (400)."""
    try:
        return parse_month(text)
    except ValueError as err:
        raise ValidationError(str(err), code="bad_month", field="month") from None


def _lock_client(client_id: int) -> Client:
    """The client row, locked, so two builds for one client run one after the other."""
    stmt = select(Client).where(Client.id == client_id).execution_options(populate_existing=True)
    if db.session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    else:
        db.session.execute(update(Client).where(Client.id == client_id).values(name=Client.name)
                           .execution_options(synchronize_session=False))
    client = db.session.scalar(stmt)
    if client is None:
        raise NotFound(f"no client {client_id}")
    return client


def build_invoice(client_id: int, year: int, month: int) -> list[Invoice]:
    """Build (or rebuild, while draft) the client's invoices for ``year``-``month``, one per currency
    with something to bill or credit, and commit. Issued and paid invoices are returned unchanged.
    Returns every invoice of that period of the client (ordered by currency). Raises NotFound."""
    client = _lock_client(client_id)
    tz = _zone(client.timezone)
    first = month_start(year, month)
    _start, end = local_midnight(first, tz), local_midnight(next_month(first), tz)
    existing = {inv.currency: inv for inv in db.session.scalars(
        select(Invoice).where(Invoice.client_id == client_id, Invoice.period_start == first))}
    # Rebuild drafts from scratch: release their charges and credits.
    for inv in existing.values():
        if inv.status == "draft":
            db.session.execute(delete(InvoiceCharge).where(InvoiceCharge.invoice_id == inv.id))
            db.session.execute(update(InvoiceCharge).where(InvoiceCharge.credit_invoice_id == inv.id)
                               .values(credit_invoice_id=None))
            inv.lines.clear()
    db.session.flush()
    frozen = {cur for cur, inv in existing.items() if inv.status != "draft"}

    camp_ids = select(Campaign.id).where(Campaign.client_id == client_id)
    names = dict(db.session.execute(select(Campaign.id, Campaign.name).where(Campaign.client_id == client_id)).all())
    charged = select(InvoiceCharge.conversion_id)
    to_bill = list(db.session.scalars(
        select(Conversion).where(
            Conversion.campaign_id.in_(camp_ids), Conversion.status.in_(LIVE), Conversion.is_test.is_(False),
            Conversion.created_at < end, Conversion.id.not_in(charged),
        ).order_by(Conversion.created_at, Conversion.id)))
    earlier_issued = select(Invoice.id).where(Invoice.client_id == client_id, Invoice.status != "draft",
                                              Invoice.period_start < first)
    to_credit = list(db.session.execute(
        select(InvoiceCharge, Conversion)
        .join(Conversion, Conversion.id == InvoiceCharge.conversion_id)
        .where(InvoiceCharge.invoice_id.in_(earlier_issued), InvoiceCharge.credit_invoice_id.is_(None),
               Conversion.status.in_(DEAD))
        .order_by(Conversion.id)).all())

    by_currency: dict[str, dict] = defaultdict(lambda: {"bill": [], "credit": []})
    for conv in to_bill:
        by_currency[conv.currency]["bill"].append(conv)
    for charge, conv in to_credit:
        by_currency[conv.currency]["credit"].append((charge, conv))

    now = utcnow()
    for currency, work in sorted(by_currency.items()):
        if currency in frozen:
            continue  # an issued invoice never changes: these wait for the next period's invoice
        inv = existing.get(currency)
        if inv is None:
            inv = Invoice(client_id=client_id, currency=currency, period_start=first, period_end=next_month(first),
                          timezone=client.timezone or "UTC", status="draft",
                          number=f"INV-{client_id}-{year:04d}{month:02d}-{currency}")
            db.session.add(inv)
            existing[currency] = inv
        inv.timezone = client.timezone or "UTC"
        inv.built_at = now
        db.session.flush()
        lines: list[InvoiceLine] = []
        grouped: dict[tuple, InvoiceLine] = {}
        for conv in work["bill"]:
            kind = TRACKER_KIND.get(conv.event_key)
            if kind:
                key = (kind, conv.campaign_id, conv.event_key, conv.client_fee_minor)
                line = grouped.get(key)
                if line is None:
                    line = grouped[key] = InvoiceLine(
                        kind=kind, campaign_id=conv.campaign_id, campaign_name=names.get(conv.campaign_id, ""),
                        event_key=conv.event_key, quantity=0, unit_minor=conv.client_fee_minor, amount_minor=0,
                        occurred_on=None)
                    lines.append(line)
                line.quantity += 1
                line.amount_minor += conv.client_fee_minor
            else:
                lines.append(InvoiceLine(
                    kind="conversion", occurred_on=conv.created_at.astimezone(tz).date(),
                    campaign_id=conv.campaign_id, campaign_name=names.get(conv.campaign_id, ""),
                    event_key=conv.event_key, txn_id=conv.txn_id, conversion_id=conv.id, quantity=1,
                    unit_minor=conv.client_fee_minor, amount_minor=conv.client_fee_minor))
            db.session.add(InvoiceCharge(conversion_id=conv.id, invoice_id=inv.id, amount_minor=conv.client_fee_minor))
        for charge, conv in work["credit"]:
            when = conv.reversed_at or conv.rejected_at or now
            lines.append(InvoiceLine(
                kind="credit", occurred_on=when.astimezone(tz).date(), campaign_id=conv.campaign_id,
                campaign_name=names.get(conv.campaign_id, ""), event_key=conv.event_key, txn_id=conv.txn_id,
                conversion_id=conv.id, credited_invoice_id=charge.invoice_id, quantity=1,
                unit_minor=-charge.amount_minor, amount_minor=-charge.amount_minor))
            charge.credit_invoice_id = inv.id
        for i, line in enumerate(lines):
            line.position = i
            inv.lines.append(line)
        inv.total_minor = sum(line.amount_minor for line in lines)
    db.session.commit()
    return sorted((inv for inv in existing.values()), key=lambda inv: inv.currency)


def build_invoice_job(client_id: int, month: str) -> int:
    """RQ job: build the client's invoices for ``month`` (``YYYY-MM``). Safe to run twice (a draft is
    rebuilt, an issued invoice is left alone). Returns the number of invoices of the period."""
    year, mon = month_arg(month)
    return len(build_invoice(client_id, year, mon))


def enqueue_builds(month: str) -> list[int]:
    """Queue :func:`build_invoice_job` for every client and ``month`` and commit (in-process mode runs
    them on the next :func:`partnernet.queue.run_pending`). Returns the client ids. Raises
    ValidationError ``bad_month``."""
    month_arg(month)
    ids = list(db.session.scalars(select(Client.id).order_by(Client.id)))
    for cid in ids:
        queue.enqueue(BUILD_JOB, cid, month, job_id=f"invoice-build-{cid}-{month}")
    db.session.commit()
    return ids


def build_due_invoices(now: datetime) -> str:
    """Scheduled entry point (task ``monthly_invoices``, CONTRACT v2 §6): for every client whose
    local date (its time zone) has reached the 1st of a month, build the previous month's
    invoices once (run ``monthly_invoices:client:<id>`` due at local midnight of that 1st,
    :mod:`partnernet.schedule.runs`), committed with the invoices. A month missed while nothing
    ran is built at the next look. A client whose build fails is logged, its run marked failed
    (tried again at the next look) and the others go on. Returns a summary."""
    import logging

    from ..schedule.rules import month_first_local, previous_month
    from ..schedule.runs import mark, run_once

    clients = db.session.execute(select(Client.id, Client.timezone).order_by(Client.id)).all()
    done = {(task, due) for task, due in db.session.execute(
        select(ScheduleRun.task, ScheduleRun.due_at).where(
            ScheduleRun.task.startswith("monthly_invoices:client:"), ScheduleRun.status == "ok",
            ScheduleRun.due_at >= now - timedelta(days=32)))}
    db.session.rollback()
    built, failed = 0, 0
    for client_id, tzname in clients:
        tz = _zone(tzname)
        due = month_first_local(now, tz)
        task = f"monthly_invoices:client:{client_id}"
        if (task, due) in done:
            continue
        year, month = previous_month(due.astimezone(tz).date())

        def work(run_id, client_id=client_id, year=year, month=month):
            mark(run_id, "ok", f"{year:04d}-{month:02d}")  # committed by build_invoice with the invoices
            return len(build_invoice(client_id, year, month))

        try:
            if run_once(task, due, work, now=now) is not None:
                built += 1
        except Exception:  # noqa: BLE001 - recorded on the client's run; the other clients go on
            logging.getLogger(__name__).exception("invoices of client %s for %04d-%02d failed", client_id, year, month)
            failed += 1
    return f"built the previous month's invoices of {built} client(s)" + (f"; {failed} failed" if failed else "")


def _lock_invoice(invoice_id: int, client_id: int | None) -> Invoice:
    stmt = select(Invoice).where(Invoice.id == invoice_id).execution_options(populate_existing=True)
    if db.session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    inv = db.session.scalar(stmt)
    if inv is None or (client_id is not None and inv.client_id != client_id):
        raise NotFound(f"no invoice {invoice_id}")
    return inv


def issue_invoice(invoice_id: int) -> Invoice:
    """Staff issues a draft invoice (draft → issued) and commits; from then on it never changes.
    Raises NotFound, InvalidState (409) when it is not a draft."""
    inv = _lock_invoice(invoice_id, None)
    if inv.status != "draft":
        raise InvalidState(f"invoice {inv.number} is {inv.status}, not draft")
    inv.status = "issued"
    inv.issued_at = utcnow()
    db.session.commit()
    return inv


def mark_invoice_paid(invoice_id: int) -> Invoice:
    """Staff marks an issued invoice paid (issued → paid) and commits. Raises NotFound, InvalidState."""
    inv = _lock_invoice(invoice_id, None)
    if inv.status != "issued":
        raise InvalidState(f"invoice {inv.number} is {inv.status}, not issued")
    inv.status = "paid"
    inv.paid_at = utcnow()
    db.session.commit()
    return inv


def get_invoice(invoice_id: int, *, client_id: int | None = None) -> Invoice:
    """The invoice; with ``client_id`` it must be that client's (NotFound otherwise)."""
    inv = db.session.get(Invoice, invoice_id)
    if inv is None or (client_id is not None and inv.client_id != client_id):
        raise NotFound(f"no invoice {invoice_id}")
    return inv


def invoices_of(client_id: int | None = None) -> list[Invoice]:
    """Invoices, newest period first (one client's, or every client's for staff)."""
    stmt = select(Invoice).order_by(Invoice.period_start.desc(), Invoice.client_id, Invoice.currency)
    if client_id is not None:
        stmt = stmt.where(Invoice.client_id == client_id)
    return list(db.session.scalars(stmt))


@dataclass
class CurrencyTotal:
    """Totals of some invoices in one currency, minor units."""

    currency: str
    total_minor: int
    open_minor: int  # issued, not paid yet


def totals_per_currency(invoices: list[Invoice]) -> list[CurrencyTotal]:
    """Sum of ``total_minor`` per currency, and what is issued but unpaid."""
    acc: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for inv in invoices:
        acc[inv.currency][0] += inv.total_minor
        if inv.status == "issued":
            acc[inv.currency][1] += inv.total_minor
    return [CurrencyTotal(cur, t, o) for cur, (t, o) in sorted(acc.items())]


CSV_HEADER = ["invoice", "period", "line", "kind", "date", "campaign_id", "campaign", "event", "txn_id",
              "conversion_id", "quantity", "unit", "amount", "currency"]


def invoice_csv(inv: Invoice) -> str:
    """The invoice as CSV text: :data:`CSV_HEADER`, one row per line, then a ``total`` row. Money as
    decimal strings with the currency's digits (CONTRACT §4), kept as numbers (a credit line is
    negative); text cells (campaign names, the advertiser's ``txn_id``) are neutralised against
    spreadsheet formulas (:mod:`partnernet.csvsafe`)."""
    from ..money import format_minor

    out = io.StringIO()
    numbers = csvsafe.numeric_columns(CSV_HEADER, ("unit", "amount"))
    w = csvsafe.writer(out, numeric=numbers, lineterminator="\n")
    w.writerow(CSV_HEADER)
    period = inv.period_start.strftime("%Y-%m")
    for i, ln in enumerate(inv.lines, 1):
        w.writerow([inv.number, period, i, ln.kind, ln.occurred_on.isoformat() if ln.occurred_on else "",
                    ln.campaign_id, ln.campaign_name, ln.event_key, ln.txn_id or "", ln.conversion_id or "",
                    ln.quantity, format_minor(ln.unit_minor, inv.currency), format_minor(ln.amount_minor, inv.currency),
                    inv.currency])
    w.writerow([inv.number, period, "", "total", "", "", "", "", "", "", "", "",
                format_minor(inv.total_minor, inv.currency), inv.currency])
    return out.getvalue()


