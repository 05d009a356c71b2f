"""The state version: how web processes learn that link, campaign or partner state changed.

The redirect keeps link/campaign/partner state in a short-lived in-process cache
(ARCHITECTURE, the hot path). Every change the redirect must see (pause, resume,
budget, spend reaching the budget, partner status, link edits) calls
:func:`bump_state_version` inside its transaction; after commit the version in
Redis (``partnernet:state_version``) rises and is published on
:func:`partnernet.tracking.invalidation.channel_for`, and every web process reloads
the entries of its cache on their next click. The postback's lookups
(:mod:`partnernet.postbacks.lookups`) read the version itself. Without Redis the version is process-local, and the
redirect reads state fresh from the database anyway (several processes may share
one SQLite file).

A missing version key (a new or flushed Redis) is created at a random 62-bit value,
never at 0 or 1, so a web process that cached state under an old version cannot mistake a
restarted counter for the version it knew.
"""

from __future__ import annotations

import itertools
import logging
import secrets

from flask import current_app, has_app_context
from sqlalchemy import event
from sqlalchemy.orm import Session

from ..extensions import db
from .invalidation import channel_for

log = logging.getLogger(__name__)

STATE_KEY = "partnernet:state_version"
_FLAG = "partnernet_bump_state"
_local_version = itertools.count(1)
_local_current = [0]


def bump_state_version() -> None:
    """Mark the current transaction as changing redirect state; the version rises after commit."""
    db.session.info[_FLAG] = True


def start_value() -> int:
    """A random starting value for a missing version key (see the module docstring)."""
    return secrets.randbits(62) + 2


def ensure_version(client) -> bytes:
    """The current version in Redis (``client``: a redis client), creating the key at a
    random start value when it is missing. Raises redis errors."""
    pipe = client.pipeline(transaction=True)
    pipe.set(STATE_KEY, start_value(), nx=True)
    pipe.get(STATE_KEY)
    return pipe.execute()[1]


def local_version() -> int:
    """The process-local version (no-Redis mode)."""
    return _local_current[0]


def _bump_now() -> None:
    _local_current[0] = next(_local_version)
    from .linkstate import invalidate_local

    invalidate_local()
    if has_app_context() and current_app.config.get("REDIS_URL"):
        from ..queue import get_redis

        try:
            r = get_redis()
            pipe = r.pipeline(transaction=True)
            pipe.set(STATE_KEY, start_value(), nx=True)
            pipe.incr(STATE_KEY)
            version = pipe.execute()[1]
            r.publish(channel_for(r), version)  # every web process's cache: stale now (.invalidation)
        except Exception:  # noqa: BLE001 - caches expire on their own TTL
            log.exception("could not bump the state version in Redis")


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    # Fired for SAVEPOINTs too: bump only when the outermost transaction commits, so no
    # process reloads (and caches) state that is not committed yet.
    if session.in_nested_transaction():
        return
    if session.info.pop(_FLAG, False):
        _bump_now()


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    if session.in_nested_transaction():
        return
    session.info.pop(_FLAG, None)
