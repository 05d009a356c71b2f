"""Sign-in throttling that holds under concurrent tries and never locks an account for good.

Two counters of fixed :data:`WINDOW_S`-second windows, kept in the database (table
``login_throttles``), so every web process, with or without Redis, sees the same counts:

- per IP: at most :data:`MAX_PER_IP` tries from one client IP;
- per account *from one IP*: at most :data:`MAX_PER_ACCOUNT_IP` tries at one email from one
  IP. A stranger's failures therefore never block the owner, who signs in from another IP;
  and an account is never locked for longer than what is left of the window.

Race-free by construction: a try is *reserved* (the counters are incremented by one atomic
``INSERT .. ON CONFLICT DO UPDATE .. RETURNING``, committed) before the password is checked,
and refused when a counter then exceeds its limit. Twenty concurrent wrong tries can thus
never all get a password check: only the first :data:`MAX_PER_ACCOUNT_IP` reserve a slot. A
successful sign-in gives its slots back (the account counter is dropped, the IP counter
decremented), so the counters count failures and tries still running.

The client IP is ``request.remote_addr`` after the trusted proxy hops
(``PARTNERNET_PROXY_HOPS``); emails are counted by a SHA-256 of their normalised form, so the
table holds no address that was merely tried.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, delete, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite

from ..clock import utcnow
from ..extensions import db
from ..models import LoginThrottle
from ..models.base import UTCDateTime

WINDOW_S = 15 * 60
MAX_PER_ACCOUNT_IP = 5
MAX_PER_IP = 20
#: Share of tries that also delete rows of past windows (at most PRUNE_BATCH at a time).
PRUNE_RATE = 0.02
PRUNE_BATCH = 1000


@dataclass(frozen=True)
class Verdict:
    """The outcome of :func:`reserve`: ``allowed``, and when refused, ``retry_after_s``
    (whole seconds until the fullest counter's window ends)."""

    allowed: bool
    retry_after_s: int = 0


def _ip_key(ip: str) -> str:
    return "ip:" + (ip or "-")[:64]


def _account_key(email: str, ip: str) -> str:
    digest = hashlib.sha256(email.encode("utf-8")).hexdigest()[:40]
    return f"acct:{digest}|{(ip or '-')[:64]}"


def _insert(dialect: str):
    return (postgresql if dialect == "postgresql" else sqlite).insert(LoginThrottle)


def _hit(key: str, now: datetime) -> tuple[int, datetime]:
    """Add one try to counter ``key`` (a new window when the old one is over); returns
    (count now, window start). One atomic statement."""
    cutoff = now - timedelta(seconds=WINDOW_S)
    expired = LoginThrottle.window_start < literal(cutoff, UTCDateTime)
    stmt = _insert(db.session.get_bind().dialect.name).values(key=key, window_start=now, count=1)
    stmt = stmt.on_conflict_do_update(
        index_elements=[LoginThrottle.key],
        set_={
            "count": case((expired, 1), else_=LoginThrottle.count + 1),
            "window_start": case((expired, literal(now, UTCDateTime)), else_=LoginThrottle.window_start),
        },
    ).returning(LoginThrottle.count, LoginThrottle.window_start)
    count, start = db.session.execute(stmt).one()
    return count, start


def prune(now: datetime) -> None:
    """Delete up to :data:`PRUNE_BATCH` rows whose window is over, in a transaction of its own.
    On PostgreSQL rows that a sign-in holds are skipped (``SKIP LOCKED``), so pruning never waits
    on, or deadlocks with, a try."""
    stale = select(LoginThrottle.key).where(LoginThrottle.window_start < now - timedelta(seconds=WINDOW_S))
    if db.session.get_bind().dialect.name == "postgresql":
        stale = stale.with_for_update(skip_locked=True)
    db.session.execute(delete(LoginThrottle).where(LoginThrottle.key.in_(stale.limit(PRUNE_BATCH))))
    db.session.commit()


def _retry_after(start: datetime, now: datetime) -> int:
    return max(1, int((start + timedelta(seconds=WINDOW_S) - now).total_seconds()) + 1)


def reserve(email: str, ip: str) -> Verdict:
    """Count one sign-in try at normalised ``email`` from ``ip`` and commit. Refused
    (``allowed=False``) when the IP had more than :data:`MAX_PER_IP` or the (account, IP) pair
    more than :data:`MAX_PER_ACCOUNT_IP` tries in the current window; the password must then
    not be checked. A try refused by the IP limit does not touch the account counter."""
    now = utcnow()
    if random.random() < PRUNE_RATE:
        prune(now)
    ip_count, ip_start = _hit(_ip_key(ip), now)  # always IP first: one lock order for everyone
    if ip_count > MAX_PER_IP:
        db.session.commit()
        return Verdict(False, _retry_after(ip_start, now))
    acct_count, acct_start = _hit(_account_key(email, ip), now)
    db.session.commit()
    if acct_count > MAX_PER_ACCOUNT_IP:
        return Verdict(False, _retry_after(acct_start, now))
    return Verdict(True)


def succeeded(email: str, ip: str) -> None:
    """Give back the slots of a successful sign-in (no commit: the caller commits): the
    (account, IP) counter is dropped, the IP counter decremented."""
    db.session.execute(delete(LoginThrottle).where(LoginThrottle.key == _account_key(email, ip)))
    db.session.execute(update(LoginThrottle).where(LoginThrottle.key == _ip_key(ip), LoginThrottle.count > 0)
                       .values(count=LoginThrottle.count - 1))
