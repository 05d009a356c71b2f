"""Operator commands (CONTRACT §6): ``flask --app wsgi <command>``."""

from __future__ import annotations

import sys
import time

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from .errors import DomainError


def _fail(err: DomainError) -> None:
    click.echo(f"error: {err.message}", err=True)
    sys.exit(2)


users_cli = AppGroup("users", help="Manage users.")
keys_cli = AppGroup("api-keys", help="Manage API keys.")
ledger_cli = AppGroup("ledger", help="Ledger checks.")
conversions_cli = AppGroup("conversions", help="Conversion jobs.")
reports_cli = AppGroup("reports", help="Report rollups.")


@reports_cli.command("rebuild-rollup")
def reports_rebuild_rollup():
    """Recompute the report rollups (money from conversions and split lines; daily and
    per-campaign traffic from the hourly traffic rollups): for an existing database or after a
    bulk load. Safe while the application runs (writers wait for it). Prints the rows written."""
    from .reporting.rollup import rebuild_rollups

    counts = rebuild_rollups()
    click.echo(f"rebuilt the report rollups: {counts['money_rows']} hourly money row(s), "
               f"{counts['traffic_daily_rows']} daily traffic row(s)")


@conversions_cli.command("approve-matured")
def conversions_approve_matured():
    """Approve every pending conversion whose hold period has ended, now (the schedule does this
    every minute by itself: `flask schedule`). Idempotent, each conversion its own transaction.
    Prints how many it approved."""
    from .conversions.review import approve_matured

    n = approve_matured()
    click.echo(f"approved {n} matured conversion(s)")


@users_cli.command("create")
@click.option("--email", required=True)
@click.option("--password", required=True)
@click.option("--role", required=True, type=click.Choice(["staff", "partner", "client"]))
@click.option("--partner-id", type=int, default=None)
@click.option("--client-id", type=int, default=None)
@click.option("--name", default="")
def users_create(email, password, role, partner_id, client_id, name):
    """Create a user; a partner or client user is tied to that record or to a new one."""
    from .auth.services import create_user

    try:
        user = create_user(email, password, role, partner_id=partner_id, client_id=client_id, name=name)
    except DomainError as err:
        _fail(err)
    click.echo(f"created {user.role} user {user.email} (id {user.id})")


@keys_cli.command("create")
@click.option("--email", required=True)
def api_keys_create(email):
    """Print a new API key for the user with EMAIL, alone on one line."""
    from .auth.services import create_api_key

    try:
        key = create_api_key(email)
    except DomainError as err:
        _fail(err)
    click.echo(key)


@ledger_cli.command("verify")
def ledger_verify():
    """Exit 0 when every posting balances and every balance matches its postings."""
    from .ledger.services import verify_ledger

    problems = verify_ledger()
    if problems:
        for p in problems[:50]:
            click.echo(p, err=True)
        click.echo(f"ledger verify: {len(problems)} problem(s)", err=True)
        sys.exit(1)
    click.echo("ledger verify: ok")


@click.command("worker")
@click.option("--burst", is_flag=True, help="Stop once the queues are empty.")
def worker_cmd(burst):
    """Run an RQ worker on all of PartnerNet's queues (REDIS_URL required)."""
    from .worker import run_worker

    if not current_app.config.get("REDIS_URL"):
        click.echo("error: REDIS_URL is not set; without it jobs run in-process", err=True)
        sys.exit(2)
    run_worker(current_app._get_current_object(), burst=burst)


@click.command("drain")
@click.option("--timeout", type=float, default=120.0, show_default=True, help="Seconds to wait at most.")
def drain_cmd(timeout):
    """Write every buffered click and wait until every queue is empty and no job runs.

    Exit 0 when drained, 1 on timeout, 2 when a job ended failed since the last drain, 3 when
    clicks or impressions were lost since the last drain (a gap in the click stream, or Redis
    lost its data)."""
    from .worker import drain

    code, message = drain(timeout)
    click.echo(message, err=code != 0)
    sys.exit(code)


@click.command("requeue-stuck")
def requeue_stuck_cmd():
    """Queue the split job again when conversions' ledger lags their status (a lost job)."""
    from .ledger.services import requeue_stuck

    n = requeue_stuck()
    click.echo(f"{n} conversion(s) lag their ledger; split job queued" if n else "nothing lags; nothing queued")


@click.command("demo")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, type=int, show_default=True)
@click.option("--no-serve", is_flag=True, help="Seed only; do not start the server.")
def demo_cmd(host, port, no_serve):
    """Seed a realistic demo agency and start the server, printing its URL, a staff login
    and sample tracking links."""
    from .demo import run_demo

    run_demo(current_app._get_current_object(), host=host, port=port, serve=not no_serve)


def register_cli(app: Flask) -> None:
    """Attach every command to ``app``."""
    for cmd in (users_cli, keys_cli, ledger_cli, conversions_cli, reports_cli, worker_cmd, drain_cmd,
                requeue_stuck_cmd, demo_cmd):
        app.cli.add_command(cmd)
    from .clients.cli import invoices_cli  # issue 5: client invoices
    from .schedule.cli import schedule_cli  # periodic work (CONTRACT v2 §6)

    app.cli.add_command(invoices_cli)
    app.cli.add_command(schedule_cli)


def wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; returns its last value."""
    end = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(interval)
