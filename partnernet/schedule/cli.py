"""``flask --app wsgi schedule``: list the periodic tasks with their last and next run, run one
now, and set the payout schedules (CONTRACT v2 §6)."""

from __future__ import annotations

import sys

import click
from flask.cli import AppGroup, with_appcontext

from ..errors import DomainError


@click.group("schedule", cls=AppGroup, invoke_without_command=True)
@click.pass_context
@with_appcontext
def schedule_cli(ctx):
    """Periodic work: list it (no command), run a task now, payout schedules."""
    if ctx.invoked_subcommand is None:
        for line in schedule_lines():
            click.echo(line)


def _every(every: int, offset: int) -> str:
    if every % 86400 == 0:
        hh, mm = divmod(offset // 60, 60)
        return ("daily" if every == 86400 else f"every {every // 86400} days") + f" at {hh:02d}:{mm:02d} UTC"
    if every % 3600 == 0:
        return f"every {every // 3600} h"
    if every % 60 == 0:
        return f"every {every // 60} min"
    return f"every {every} s"


def _when(dt) -> str:
    return dt.strftime("%Y-%m-%d %H:%M:%S UTC") if dt else "-"


def schedule_lines(now=None) -> list[str]:
    """The listing of ``flask schedule``: one line per task (name, rule, last run with its
    status and result, next run), then the payout schedules."""
    from ..clock import utcnow
    from ..money import format_minor
    from ..payouts.scheduled import schedules
    from .rules import next_slot, slot_at
    from .runs import latest_runs
    from .tasks import TASKS

    now = now or utcnow()
    last = latest_runs()
    lines = [f"{'task':<25} {'when':<22} {'last run':<24} {'status':<8} {'next run':<24} result"]
    for task in TASKS:
        run = last.get(task.name)
        slot = slot_at(now, task.every, task.offset)
        nxt = "now (due)" if run is None or run.due_at < slot else _when(next_slot(now, task.every, task.offset))
        lines.append(f"{task.name:<25} {_every(task.every, task.offset):<22} {_when(run.due_at if run else None):<24} "
                     f"{(run.status if run else 'never'):<8} {nxt:<24} {(run.result or '') if run else ''}")
    pays = schedules()
    lines.append("")
    if not pays:
        lines.append("payout schedules: none (flask schedule payouts set --currency EUR --day 5 --min 50.00)")
    for s in pays:
        lines.append(f"payout schedule {s.currency}: day {s.day_of_month} of each month (UTC), minimum "
                     f"{format_minor(s.min_amount_minor, s.currency)}, NET {s.net_days} day(s)"
                     + ("" if s.active else ", paused"))
    return lines


@schedule_cli.command("list")
def list_cmd():
    """List every periodic task: when it runs, its last run (due time, status, result), its next run."""
    for line in schedule_lines():
        click.echo(line)


@schedule_cli.command("run")
@click.argument("name")
def run_cmd(name):
    """Run task NAME now (whatever its schedule) and print its result."""
    from .runner import run_task
    from .tasks import BY_NAME

    if name not in BY_NAME:
        click.echo(f"error: no task {name!r}; tasks: {', '.join(BY_NAME)}", err=True)
        sys.exit(2)
    result = run_task(name, manual=True)
    if result is None:
        click.echo(f"error: task {name} failed; see the log and `flask schedule`", err=True)
        sys.exit(1)
    click.echo(f"{name}: {result}")


@schedule_cli.group("payouts", cls=AppGroup, invoke_without_command=True)
@click.pass_context
@with_appcontext
def payouts_cli(ctx):
    """Scheduled payout batches, one schedule per currency (no command: list them)."""
    if ctx.invoked_subcommand is None:
        for line in schedule_lines()[len(_tasks()) + 2:]:
            click.echo(line)


def _tasks():
    from .tasks import TASKS

    return TASKS


@payouts_cli.command("set")
@click.option("--currency", required=True, help="ISO 4217 code, e.g. EUR.")
@click.option("--day", "day", required=True, type=int, help="Day of the month, 1-31 (the last day of a shorter month).")
@click.option("--min", "minimum", default="0", show_default=True, help="Minimum item, a decimal amount, e.g. 50.00.")
@click.option("--net-days", default=0, type=int, show_default=True, help="NET terms: days earnings wait.")
@click.option("--paused", is_flag=True, help="Keep the schedule but create no batch.")
def payouts_set(currency, day, minimum, net_days, paused):
    """Create or replace the payout schedule of CURRENCY."""
    from ..money import MoneyError, parse_amount
    from ..payouts.scheduled import set_schedule

    currency = currency.strip().upper()
    try:
        min_minor = parse_amount(minimum, currency, allow_zero=True)
    except MoneyError as err:
        click.echo(f"error: {err.message}", err=True)
        sys.exit(2)
    try:
        set_schedule(currency, day, min_minor, net_days, active=not paused)
    except DomainError as err:
        click.echo(f"error: {err.message}", err=True)
        sys.exit(2)
    click.echo(f"payout schedule {currency}: day {day}, minimum {minimum}, NET {net_days}" + (" (paused)" if paused else ""))


@payouts_cli.command("delete")
@click.option("--currency", required=True)
def payouts_delete(currency):
    """Remove the payout schedule of CURRENCY."""
    from ..payouts.scheduled import delete_schedule

    try:
        delete_schedule(currency.strip().upper())
    except DomainError as err:
        click.echo(f"error: {err.message}", err=True)
        sys.exit(2)
    click.echo(f"payout schedule {currency.strip().upper()} removed")
