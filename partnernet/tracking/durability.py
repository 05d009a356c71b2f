"""Can the Redis we are given keep clicks? (README, Production: Redis persistence.)

Between the redirect and the database a click lives in Redis (:mod:`.batcher`, :mod:`.buffer`).
A Redis without the append-only file (AOF) loses everything since its last snapshot when it
restarts; with ``appendonly yes`` it loses at most:

- ``appendfsync always``: nothing that it acknowledged (each write is on disk before the reply);
- ``appendfsync everysec`` (Redis's default with AOF): about the last second of writes on a
  power loss or kernel crash (a killed Redis process loses nothing: the data is in the OS);
- ``appendfsync no``: what the OS had not flushed yet (typically up to 30 s) on a power loss.

:func:`check` reads ``CONFIG GET appendonly appendfsync``; :func:`check_at_start` warns, or
with ``PARTNERNET_ENV=production`` refuses to start, when Redis cannot keep clicks. A managed
Redis that refuses ``CONFIG`` cannot be checked: a warning says so (the operator must know).
Losses that still happen are found and reported by :mod:`.producers`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)


class RedisNotDurable(RuntimeError):
    """Raised at start in production mode when Redis would lose buffered clicks on a restart."""


@dataclass
class Durability:
    """What :func:`check` found: ``ok`` Redis keeps acknowledged clicks across a restart of its
    process; ``known`` the settings could be read; ``message`` one line for the operator."""

    ok: bool
    known: bool
    message: str


def check(client) -> Durability:
    """Read Redis's persistence settings through ``client`` (a redis-py client). Never raises:
    an unreachable Redis or a refused ``CONFIG`` gives ``known=False``."""
    try:
        conf = client.config_get("appendonly")
        conf.update(client.config_get("appendfsync"))
    except Exception as exc:  # noqa: BLE001 - managed Redis (CONFIG disabled) or Redis down
        return Durability(False, False, f"could not read Redis's persistence settings ({exc}); make sure it runs "
                                        "with appendonly yes (README, Production)")
    def text(v):
        return v.decode() if isinstance(v, bytes) else str(v)
    aof = text(conf.get("appendonly", conf.get(b"appendonly", "no")))
    fsync = text(conf.get("appendfsync", conf.get(b"appendfsync", "everysec")))
    if aof != "yes":
        return Durability(False, True, "Redis runs without the append-only file (appendonly no): a restart loses "
                                       "every click waiting in it; set appendonly yes (README, Production)")
    bound = {"always": "nothing it acknowledged", "everysec": "at most about one second of clicks on a power loss",
             "no": "what the OS had not written yet on a power loss"}.get(fsync, f"appendfsync {fsync}")
    return Durability(True, True, f"Redis keeps clicks (appendonly yes, appendfsync {fsync}: a crash loses {bound})")


def check_at_start(app) -> Durability | None:
    """The start-up check of ``app`` (with ``REDIS_URL``; None without): log the result; raise
    :class:`RedisNotDurable` in production mode (``PARTNERNET_ENV=production``) when Redis is
    known not to keep clicks. A Redis that cannot be read only warns (it may be down now)."""
    if not app.config.get("REDIS_URL"):
        return None
    from ..queue import redis_client_for

    result = check(redis_client_for(app))
    if result.ok:
        log.info("%s", result.message)
        return result
    if result.known and str(app.config.get("PARTNERNET_ENV") or "").lower() == "production":
        raise RedisNotDurable(result.message)
    log.warning("%s", result.message)
    return result
