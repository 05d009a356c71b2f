"""Refused postbacks, throttled per client IP (a flood of garbage must not fill the postback log).

``/postback`` is unauthenticated, and CONTRACT §3 keeps every postback in a log staff read, so a
stranger could write to that log as fast as they can send. Only **refusals** count (400, 401,
404, 413 answers): a postback that records or finds a conversion is never limited, and is never
slowed by the refusals of its neighbours behind the same address (a shared platform's IPs).
So the rule is applied after the postback's checks have run, to its answer: a refusal past the
limit answers **429** ``too_many_refusals`` with ``Retry-After`` instead of its 4xx, and is not
written to the postback log; it is counted instead (:func:`throttled_count`, one warning in the
application log when the count reaches 1, 10, 100, ... in the window).

Limits (``PARTNERNET_POSTBACK_REFUSAL_LIMITS``, the ``limits`` library's notation, default
:data:`DEFAULT_LIMITS`): 60 refusals per 10 seconds per IP (a burst) and 600 per 10 minutes. A
real integration's mistakes stay far below: a day's replay from one address sends about a
hundred refusals among a thousand postbacks over a few minutes (a few per 10 s). Hundreds of
refusals in a few seconds are a flood. An empty setting turns the throttle off.

Counting uses the ``limits`` library (the engine under Flask-Limiter; Flask-Limiter's own
decorators decide before the view runs, which would block an address's good postbacks too):
a moving window in Redis when ``REDIS_URL`` is set, so every web process shares the counts,
else in this process's memory. When Redis fails, refusals are let through (and logged as
usual): the throttle must never turn a postback into an error.
"""

from __future__ import annotations

import logging
import math
import time

from flask import current_app
from limits import parse_many
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

log = logging.getLogger(__name__)

DEFAULT_LIMITS = "60 per 10 seconds; 600 per 10 minutes"
COUNTER_WINDOW_S = 600
_EXT = "partnernet_postback_flood"


def _limiter():
    """``(strategy, [limits], storage)`` for the current app, built once per app and setting."""
    spec = current_app.config.get("PARTNERNET_POSTBACK_REFUSAL_LIMITS", DEFAULT_LIMITS)
    url = current_app.config.get("REDIS_URL") or "memory://"
    cached = current_app.extensions.get(_EXT)
    if cached is not None and cached[0] == (spec, url):
        return cached[1]
    items = parse_many(spec) if spec and spec.strip() else []
    if url.startswith("redis"):  # short timeouts: a hung Redis must not hold a postback
        storage = storage_from_string(url, socket_timeout=1.0, socket_connect_timeout=1.0)
    else:
        storage = storage_from_string(url)
    built = (MovingWindowRateLimiter(storage), items, storage)
    current_app.extensions[_EXT] = ((spec, url), built)
    return built


def _key(remote_ip: str | None) -> str:
    return (remote_ip or "unknown")[:64]


def admit_refusal(remote_ip: str | None) -> int | None:
    """Count one refused postback from ``remote_ip``. Returns None when it is within the limits
    (answer and log it as usual), else the seconds after which this address may be refused
    again (``Retry-After``, at least 1): answer 429 and do not log it. Never raises."""
    try:
        strategy, items, _storage = _limiter()
        key = _key(remote_ip)
        for item in items:
            if not strategy.hit(item, "postback-refusals", key):
                stats = strategy.get_window_stats(item, "postback-refusals", key)
                return max(1, math.ceil(stats.reset_time - time.time()))
    except Exception as exc:  # noqa: BLE001 - Redis down: let the refusal through, never a 500
        log.warning("postback refusal throttle unavailable (%s); not throttling", type(exc).__name__)
    return None


def record_throttled(remote_ip: str | None) -> int:
    """Count one postback answered 429 (kept in place of a log row) and return the count for
    this address in the current window (0 when the counter is unavailable). Logs a warning when
    the count reaches 1, 10, 100, ... so a flood is seen without a line per request."""
    try:
        _strategy, _items, storage = _limiter()
        n = int(storage.incr(f"pn-postback-throttled/{_key(remote_ip)}", COUNTER_WINDOW_S))
    except Exception as exc:  # noqa: BLE001
        log.warning("postback throttle counter unavailable (%s)", type(exc).__name__)
        return 0
    if n >= 1 and 10 ** int(math.log10(n)) == n:
        log.warning("postback flood: %s refused postback(s) from %s answered 429 in the last %s minutes",
                    n, _key(remote_ip), COUNTER_WINDOW_S // 60)
    return n


def throttled_count(remote_ip: str | None) -> int:
    """Postbacks from ``remote_ip`` answered 429 in the current counter window (0 if none or
    the counter is unavailable)."""
    try:
        _strategy, _items, storage = _limiter()
        return int(storage.get(f"pn-postback-throttled/{_key(remote_ip)}") or 0)
    except Exception:  # noqa: BLE001
        return 0
