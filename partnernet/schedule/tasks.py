"""Every periodic task, as data (CONTRACT v2 §6 "Periodic work runs by itself").

Each :class:`Task` names a function (dotted path, called as ``func(now, **kwargs)`` with the
aware UTC instant of the run, returning a short summary) and when it is due: every ``every``
seconds, ``offset`` seconds after each UTC interval boundary (:mod:`partnernet.schedule.rules`).
``flask --app wsgi worker`` (with Redis) and the web process (without Redis) run them
(:mod:`partnernet.schedule.runner`); ``flask --app wsgi schedule`` lists them with their last
and next run. Tasks whose work is per client or per currency (invoices, payout batches) run
often and record one run per client month or currency day themselves, so each of those is due
at its own moment (a client's time zone, a currency's payout day) and is done once.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Task:
    """One periodic task: ``name`` (unique, no ``:``), ``func`` (dotted path), ``every`` and
    ``offset`` (seconds), ``kwargs`` passed on, ``summary`` (what it does, for the listing)."""

    name: str
    func: str
    every: int
    summary: str
    offset: int = 0
    kwargs: dict = field(default_factory=dict)


TASKS: tuple[Task, ...] = (
    Task("approve_matured", "partnernet.schedule.jobs.approve_matured", every=60,
         summary="approve pending conversions whose hold period has ended (flagged ones wait for staff)"),
    Task("requeue_stuck", "partnernet.schedule.jobs.requeue_stuck", every=60,
         summary="queue the split job again when conversions' ledger lags their status"),
    Task("partner_postback_retries", "partnernet.schedule.jobs.retry_partner_postbacks", every=60,
         summary="send partner postbacks whose next try (backoff) is overdue"),
    Task("email_retries", "partnernet.schedule.jobs.retry_unsent_email", every=1800,
         summary="queue unsent email of the last 3 days again (when SMTP is configured)"),
    Task("monthly_invoices", "partnernet.clients.invoices.build_due_invoices", every=900,
         summary="on the 1st in each client's time zone, build the previous month's invoices"),
    Task("payout_batches", "partnernet.payouts.scheduled.create_due_batches", every=900,
         summary="on each payout schedule's day (UTC), create its draft payout batch"),
    Task("retention", "partnernet.schedule.retention.prune", every=86400, offset=3 * 3600 + 30 * 60,
         summary="delete old postback log rows, deliveries, sent email, buffer markers, throttles, runs"),
    Task("click_partitions", "partnernet.tracking.partitions.partitions_task", every=86400,
         offset=2 * 3600 + 30 * 60,
         summary="make this month's and the next two months' click partitions (PostgreSQL)"),
    Task("click_retention", "partnernet.tracking.partitions.retention_task", every=86400, offset=4 * 3600,
         summary="drop raw clicks older than PARTNERNET_CLICK_RETENTION_DAYS (whole months on PostgreSQL)"),
)

BY_NAME: dict[str, Task] = {t.name: t for t in TASKS}


def get_task(name: str) -> Task:
    """The task called ``name``; raises KeyError (with the known names) for an unknown one."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"no task {name!r}; tasks: {', '.join(BY_NAME)}") from None
