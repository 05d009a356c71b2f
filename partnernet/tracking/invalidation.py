"""Invalidation of the in-process link state cache by Redis pub/sub (ARCHITECTURE, the hot path).

Every change the redirect must see (pause, budget reached, cap reached, partner suspended,
link edits) calls :func:`partnernet.tracking.state.bump_state_version` inside its transaction;
after commit the state version in Redis rises and the new value is published on
:func:`channel_for` (:data:`CHANNEL` and the Redis database number). Each web process runs one :class:`StateSubscriber` thread per app: every
message raises the cache's ``generation`` (:class:`partnernet.tracking.linkstate.StateCache`),
so every entry loaded before it is stale and the next click reloads it from the database.
A change is therefore seen by every process as soon as the message arrives (a millisecond or
so on one Redis), not after a TTL, and the redirect itself sends nothing to Redis to learn it.

Trust. The cache is trusted only while the subscription is known to be live
(:attr:`StateSubscriber.healthy`). A message can be missed only while the connection is
down; so the cache generation is raised again on every (re)subscription, and while the
connection is down the redirect reads state from the database on every click (the
behaviour without Redis). A silently dead connection (no RST) is found by a PING every
:data:`PING_EVERY_S` seconds: no answer within :data:`DEAD_AFTER_S` marks the subscription
unhealthy and it is made again.
"""

from __future__ import annotations

import logging
import os
import threading
import time

log = logging.getLogger(__name__)

CHANNEL = "partnernet:state_changed"


def channel_for(client) -> str:
    """The channel of ``client``'s Redis database: :data:`CHANNEL` with the database number
    (pub/sub is server-wide, so installations on other databases of one Redis stay apart)."""
    return f"{CHANNEL}:{int(client.connection_pool.connection_kwargs.get('db') or 0)}"
PING_EVERY_S = 2.0
DEAD_AFTER_S = 6.0
RETRY_MAX_S = 2.0


class StateSubscriber:
    """The pub/sub thread of one app in one process.

    ``url``: the Redis URL; ``on_change``: called (no arguments) on every message and on every
    (re)subscription, from the subscriber thread. :meth:`start` is idempotent per process (a
    forked child starts its own); :meth:`stop` ends the thread. Never raises from the thread:
    errors are logged and the subscription is made again with a growing pause (at most
    :data:`RETRY_MAX_S`)."""

    def __init__(self, url: str, on_change):
        self.url = url
        self.on_change = on_change
        self.healthy = False
        self._pid: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> bool:
        """Start the thread in this process; False when it runs already."""
        pid = os.getpid()
        if self._pid == pid and self._thread is not None and self._thread.is_alive():
            return False
        with self._lock:
            if self._pid == pid and self._thread is not None and self._thread.is_alive():
                return False
            self.healthy = False
            self._stop = threading.Event()
            self._pid = pid
            self._thread = threading.Thread(target=self._run, name="partnernet-state-subscriber", daemon=True)
            self._thread.start()
            return True

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread and wait for it (at most ``timeout`` seconds)."""
        self._stop.set()
        self.healthy = False
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def wait_healthy(self, timeout: float) -> bool:
        """Wait until the subscription is live (tests, start-up); returns :attr:`healthy`."""
        end = time.monotonic() + timeout
        while not self.healthy and time.monotonic() < end and not self._stop.is_set():
            time.sleep(0.005)
        return self.healthy

    def _run(self) -> None:
        import redis

        pause = 0.05
        while not self._stop.is_set():
            client = None
            pubsub = None
            try:
                client = redis.Redis.from_url(self.url, socket_timeout=DEAD_AFTER_S, socket_connect_timeout=1.0)
                pubsub = client.pubsub()
                pubsub.subscribe(channel_for(client))
                self._listen(pubsub)
                pause = 0.05
            except Exception as exc:  # noqa: BLE001 - Redis down: retry; the redirect reads the database meanwhile
                if self.healthy:
                    log.warning("state subscription lost (%s); reading link state from the database", exc)
                self.healthy = False
                self.on_change()
                self._stop.wait(pause)
                pause = min(RETRY_MAX_S, pause * 2)
            finally:
                self.healthy = False
                for thing in (pubsub, client):
                    try:
                        if thing is not None:
                            thing.close()
                    except Exception:  # noqa: BLE001
                        pass

    def _listen(self, pubsub) -> None:
        last_heard = time.monotonic()
        last_ping = last_heard
        while not self._stop.is_set():
            msg = pubsub.get_message(timeout=0.5)
            now = time.monotonic()
            if msg is not None:
                last_heard = now
                kind = msg.get("type")
                if kind == "subscribe":
                    self.on_change()  # messages may have been missed before this subscription
                    self.healthy = True
                elif kind == "message":
                    self.on_change()
            if now - last_ping >= PING_EVERY_S:
                pubsub.ping()
                last_ping = now
            if now - last_heard > DEAD_AFTER_S:
                raise ConnectionError(f"no answer from Redis for {DEAD_AFTER_S} s")
