"""The per-process click batch: group commit of clicks and impressions into the Redis stream
(CONTRACT §1 "the redirect does not wait on the database"; ARCHITECTURE, the hot path).

A redirect hands its record to :meth:`ClickBatcher.submit`. Records of concurrent requests
of one process are sent to Redis together, as one stream entry (``XADD`` of
:data:`STREAM_KEY`) per batch, over a connection of the batcher's own. There is no timer:
the first request that finds no send in flight sends everything waiting (itself included);
requests arriving meanwhile wait for the next send, which one of them makes. Under low load
a batch is one click and adds one round trip; under load a send carries every click that
arrived during the previous one.

Acknowledgement (``PARTNERNET_CLICK_ACK``):

- ``memory`` (the default): the redirect answers at once; a background thread of the process
  sends what is waiting, back to back (each batch within one Redis round trip of the previous,
  well under 5 ms at any load Redis keeps up with), and the rest at exit (``atexit``, which
  gunicorn's graceful stop runs). A hard crash of the web process (SIGKILL, OOM, power) loses
  the clicks it answered since its last send: a few milliseconds of its traffic. They were
  never sent, so no batch number shows them; they are only ever missing (never billed twice):
  a postback on such a click still attributes by its signed click ID, only the click row, its
  unique-click count and a CPC conversion are missing.
- ``redis``: the redirect answers after the batch holding its click is in Redis (or, when
  Redis fails, in the database). A crash of the web process loses no answered click; Redis's
  own persistence decides the rest (README, Production). Measured on one core: about 40 % of
  ``memory``'s redirects per second (bench/RESULTS.md).

Loss is visible. Each process is a producer with an id of its own and numbers its batches
1, 2, 3, ... (``s``) with the running count of its records (``c``). A batch that Redis
refused is written straight to the database and its number listed in the next entry
(``k``, their records ``kn``); the writer (:mod:`.producers`) keeps each producer's last number in the database and
reports a number that never arrived as lost batches and records (``flask drain`` exits
non-zero). Records whose direct write failed too are counted in ``l`` and reported the
same way.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import secrets
import socket
import threading

log = logging.getLogger(__name__)

STREAM_KEY = "partnernet:{clicks}:stream"
ACK_REDIS = "redis"
ACK_MEMORY = "memory"
ACK_MODES = (ACK_REDIS, ACK_MEMORY)
# json.dumps(record, separators=(",", ":")) without building an encoder per batch: same text.
_JSON = json.JSONEncoder(separators=(",", ":"))


def batch_id(producer: str, seq: int) -> str:
    """The id of batch ``seq`` of ``producer`` as the writer marks it (40 hex characters; the
    :class:`~partnernet.models.BufferBatch` key that counts a batch's impressions once)."""
    return hashlib.sha1(f"{producer}:{seq}".encode()).hexdigest()


class ClickBatcher:
    """Group commit of records into :data:`STREAM_KEY` for one app in one process.

    ``app``: the Flask app (its ``REDIS_URL``; its context for direct writes); ``ack``: one of
    :data:`ACK_MODES`. :meth:`submit` never raises. Fork-safe: a child process gets a new
    producer id, lock and connection on first use."""

    def __init__(self, app, ack: str = ACK_MEMORY):
        if ack not in ACK_MODES:
            raise ValueError(f"PARTNERNET_CLICK_ACK must be one of {', '.join(ACK_MODES)}, not {ack!r}")
        self.app = app
        self.ack = ack
        self._pid = -1
        self._init_process()

    def _init_process(self) -> None:
        self._pid = os.getpid()
        host = socket.gethostname()[:24]
        self.producer = f"{host}:{self._pid}:{secrets.token_hex(4)}"
        self.seq = 0          # the last batch number used
        self.count = 0        # records handled so far (sent, written directly or lost)
        self.skipped: list[int] = []   # batch numbers written directly since the last entry Redis took
        self.skipped_records = 0       # the records of those batches (written directly or lost)
        self.lost = 0         # records neither Redis nor the database took since the last entry
        self._cond = threading.Condition()
        self._pending: list[dict] = []
        self._filling = 1     # the number of the batch now collecting records
        self._done = 0        # every batch up to this number is sent
        self._sending = False
        self._conn = None
        self._thread: threading.Thread | None = None
        if self.ack == ACK_MEMORY:
            atexit.register(self.close)

    # -- the redirect's side ----------------------------------------------------------------------

    def submit(self, record: dict) -> None:
        """Queue ``record`` (a click or impression dict) for the stream. With ``ack="redis"``
        returns once the batch holding it is in Redis or the database; with ``"memory"`` at once."""
        if self._pid != os.getpid():
            self._init_process()
        cond = self._cond
        with cond:
            self._pending.append(record)
            if self.ack == ACK_MEMORY:
                self._ensure_thread()
                cond.notify_all()
                return
            mine = self._filling
            while self._done < mine:
                if not self._sending:
                    batch = self._take()
                    break
                cond.wait()
            else:
                return
        self._send_and_release(batch)

    def _take(self) -> list[dict]:
        """Take the waiting records as the next batch (call holding the lock)."""
        batch, self._pending = self._pending, []
        self._sending = True
        self._filling += 1
        return batch

    def _send_and_release(self, batch: list[dict]) -> None:
        try:
            self._send(batch)
        finally:
            with self._cond:
                self._sending = False
                self._done = self._filling - 1
                self._cond.notify_all()

    # -- memory mode --------------------------------------------------------------------------------

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="partnernet-click-batcher", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    self._cond.wait()
                batch = self._take()
            self._send_and_release(batch)

    def close(self) -> None:
        """Send what is waiting (``memory`` mode at exit; harmless otherwise)."""
        if self._pid != os.getpid():
            return
        with self._cond:
            while self._sending:
                self._cond.wait(1.0)
            if not self._pending:
                return
            batch = self._take()
        self._send_and_release(batch)

    # -- sending ------------------------------------------------------------------------------------

    def _connection(self):
        """The batcher's own Redis connection (made with the app client's settings, no pool
        bookkeeping per send). One closed by the server (idle timeout, restart: EOF waiting on
        it) is made again before use, as redis-py's pool does."""
        conn = self._conn
        if conn is not None:
            try:
                stale = conn.can_read(timeout=0)
            except Exception:  # noqa: BLE001 - EOF or a broken socket
                stale = True
            if stale:
                conn.disconnect()  # connects again when the command is sent
        if conn is None:
            from ..queue import redis_client_for

            pool = redis_client_for(self.app).connection_pool
            conn = self._conn = pool.connection_class(**pool.connection_kwargs)
        return conn

    def _entry(self, batch: list[dict]) -> list:
        self.seq += 1
        self.count += len(batch)
        fields = ["p", self.producer, "s", self.seq, "c", self.count, "n", len(batch),
                  "d", "[" + ",".join(_JSON.encode(rec) for rec in batch) + "]"]
        if self.skipped:
            fields += ["k", ",".join(map(str, self.skipped[-1000:])), "kn", self.skipped_records]
        if self.lost:
            fields += ["l", self.lost]
        return fields

    def _send(self, batch: list[dict]) -> None:
        """One ``XADD`` of ``batch``; when Redis fails, the batch is written to the database and
        its number remembered for the next entry. Never raises."""
        fields = self._entry(batch)
        conn = self._connection()
        try:
            conn.send_packed_command(conn.pack_command("XADD", STREAM_KEY, "*", *fields), check_health=False)
            conn.read_response()
        except Exception as exc:  # noqa: BLE001 - Redis failed: write the batch directly
            conn.disconnect()
            self._conn = None
            log.warning("click stream unavailable (%s); writing %d record(s) directly", exc, len(batch))
            self.skipped.append(self.seq)
            self.skipped_records += len(batch)
            self._write_directly(batch, self.seq)
            return
        self.skipped = []
        self.skipped_records = 0
        self.lost = 0

    def _write_directly(self, batch: list[dict], seq: int) -> None:
        from ..extensions import db
        from .writer import write_records

        try:
            with self.app.app_context():
                try:
                    write_records(batch, batch_id=batch_id(self.producer, seq))
                finally:
                    db.session.remove()
        except Exception:  # noqa: BLE001 - both down: counted, reported by the writer later
            self.lost += len(batch)
            log.exception("could not record %d click(s) or impression(s): Redis and the database both failed",
                          len(batch))


def get_batcher(app) -> ClickBatcher:
    """The :class:`ClickBatcher` of ``app`` in this process (made on first use, with
    ``PARTNERNET_CLICK_ACK``)."""
    batcher = app.extensions.get("partnernet_click_batcher")
    if batcher is None:
        batcher = app.extensions.setdefault(
            "partnernet_click_batcher",
            ClickBatcher(app, str(app.config.get("PARTNERNET_CLICK_ACK") or ACK_MEMORY)))
    return batcher
