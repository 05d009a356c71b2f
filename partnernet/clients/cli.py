"""``flask --app wsgi invoices ...``: build, list, issue and mark paid client invoices (issue 5)."""

from __future__ import annotations

import sys

import click
from flask import current_app
from flask.cli import AppGroup

from ..errors import DomainError

invoices_cli = AppGroup("invoices", help="Client invoices.")


def _fail(err: DomainError) -> None:
    click.echo(f"error: {err.message}", err=True)
    sys.exit(2)


@invoices_cli.command("build")
@click.option("--month", required=True, help="The calendar month, YYYY-MM, in each client's time zone.")
def build_cmd(month):
    """Queue a build job per client for MONTH (drafts are rebuilt, issued invoices never change).
    Without REDIS_URL the jobs run here at once and the invoices are listed."""
    from ..queue import run_pending
    from . import invoices

    try:
        ids = invoices.enqueue_builds(month)
    except DomainError as err:
        _fail(err)
    if current_app.config.get("REDIS_URL"):
        click.echo(f"queued {len(ids)} invoice build job(s) for {month}; `flask drain` waits for them")
        return
    run_pending()
    _print(inv for inv in invoices.invoices_of() if inv.period_start.strftime("%Y-%m") == month)


@invoices_cli.command("list")
def list_cmd():
    """List every invoice: number, client, period, status, lines, total."""
    from . import invoices

    _print(invoices.invoices_of())


@invoices_cli.command("issue")
@click.option("--number", required=True)
def issue_cmd(number):
    """Issue the draft invoice NUMBER (it never changes afterwards)."""
    from . import invoices

    try:
        inv = invoices.issue_invoice(_by_number(number))
    except DomainError as err:
        _fail(err)
    _print([inv])


@invoices_cli.command("mark-paid")
@click.option("--number", required=True)
def paid_cmd(number):
    """Mark the issued invoice NUMBER paid."""
    from . import invoices

    try:
        inv = invoices.mark_invoice_paid(_by_number(number))
    except DomainError as err:
        _fail(err)
    _print([inv])


def _by_number(number: str) -> int:
    from sqlalchemy import select

    from ..errors import NotFound
    from ..extensions import db
    from ..models import Invoice

    inv_id = db.session.scalar(select(Invoice.id).where(Invoice.number == number))
    if inv_id is None:
        _fail(NotFound(f"no invoice {number}"))
    return inv_id


def _print(invs) -> None:
    from ..money import format_minor

    for inv in invs:
        click.echo(f"{inv.number}  client {inv.client_id}  {inv.period_start:%Y-%m}  {inv.status:<6}  "
                   f"{len(inv.lines):>5} line(s)  total {format_minor(inv.total_minor, inv.currency)} {inv.currency}")
