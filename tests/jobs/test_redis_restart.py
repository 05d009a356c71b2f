"""Redis killed with ``kill -9`` under load (issue: Redis is where a click lives between the
redirect and the database). A Redis server of the test's own, on a free port and a temporary
directory: with the append-only file (``appendfsync always``) no answered click is lost and none
is doubled; without persistence the loss is found and ``flask drain`` exits non-zero."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest
import redis as redis_lib
from sqlalchemy import func, select

from partnernet import create_app
from partnernet.extensions import db
from partnernet.models import Click, ClickLoss
from partnernet.tracking import buffer
from partnernet.worker import drain
from tests.services.test_redirect import get, setup_link, token_of

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OwnRedis:
    """A redis-server process: ``start()``, ``kill9()``, ``url``."""

    def __init__(self, directory, *args: str):
        self.port = _free_port()
        self.dir = str(directory)
        self.args = args
        self.proc: subprocess.Popen | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                      "--dir", self.dir, "--save", "", *self.args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis_lib.Redis.from_url(self.url)
        end = time.monotonic() + 10
        while True:
            try:
                if client.ping():
                    return
            except redis_lib.exceptions.RedisError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.02)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.kill9()


@pytest.fixture
def own_redis(tmp_path):
    made = []

    def make(*args):
        server = OwnRedis(tmp_path / f"r{len(made)}", *args)
        (tmp_path / f"r{len(made)}").mkdir()
        made.append(server)
        server.start()
        return server

    yield make
    for server in made:
        server.stop()


def _web(redis_app, url):
    cfg = {key: redis_app.config[key] for key in ("TESTING", "SQLALCHEMY_DATABASE_URI", "SECRET_KEY",
                                                   "PARTNERNET_BASE_URL", "PARTNERNET_CLICK_ACK")}
    return create_app({**cfg, "REDIS_URL": url})


def _count() -> int:
    db.session.expire_all()
    return db.session.scalar(select(func.count()).select_from(Click))


def test_kill_9_with_aof_loses_no_answered_click(redis_app, own_redis):
    server = own_redis("--appendonly", "yes", "--appendfsync", "always")
    web = _web(redis_app, server.url)
    *_, link = setup_link()
    tok = token_of(redis_app, link)
    handed_out: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def visitor(n):
        http = web.test_client()
        i = 0
        while not stop.is_set() and i < 200:
            with web.app_context():
                resp = get(http, f"/c/{tok}", ip=f"10.{n}.{i // 250}.{i % 250}")
                db.session.remove()
            assert resp.status_code == 302
            with lock:
                handed_out.append(resp.headers["Location"].split("click_id=")[1])
            i += 1

    threads = [threading.Thread(target=visitor, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    while len(handed_out) < 150:
        time.sleep(0.01)
    server.kill9()  # under load: batches in flight, the subscription dropped
    time.sleep(0.3)  # clicks meanwhile: written directly to the database
    server.start()  # the same directory: Redis replays its append-only file
    for t in threads:
        t.join(120)
    with web.app_context():
        while buffer.flush_clicks():
            pass
        stored = set(db.session.scalars(select(Click.click_id)))
        losses = list(db.session.scalars(select(ClickLoss)))
        db.session.remove()
    assert len(handed_out) == 800 and len(set(handed_out)) == 800
    assert stored == set(handed_out)  # every answered click once, none lost, none doubled
    assert losses == []


def test_a_restart_without_persistence_is_reported_not_silent(redis_app, own_redis):
    """The issue's case: the writer is stopped, 300 clicks are answered, Redis restarts with no
    AOF. ``flask drain`` must not exit 0."""
    server = own_redis("--appendonly", "no")
    web = _web(redis_app, server.url)
    *_, link = setup_link()
    tok = token_of(redis_app, link)
    with web.app_context():
        assert buffer.flush_clicks() == 0  # the writer's epoch: Redis and the database agree
        http = web.test_client()
        for i in range(300):
            assert get(http, f"/c/{tok}", ip=f"10.9.{i // 250}.{i % 250}").status_code == 302
        db.session.remove()
    server.kill9()
    server.start()
    with web.app_context():
        code, message = drain(20)
        db.session.remove()
    assert code == 3 and "Redis lost its data" in message
    assert _count() == 0


_WEB_SCRIPT = """
import os, signal, sys
from partnernet import create_app
app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": sys.argv[1], "REDIS_URL": sys.argv[2],
                  "SECRET_KEY": sys.argv[3], "PARTNERNET_CLICK_ACK": sys.argv[4]})
http = app.test_client()
answered = 0
for i in range(int(sys.argv[6])):
    resp = http.get("/c/" + sys.argv[5], headers={"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/125.0"},
                    environ_base={"REMOTE_ADDR": "10.7.%d.%d" % (i // 250, i % 250)})
    answered += resp.status_code == 302
print(answered, flush=True)
if sys.argv[7] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)  # no atexit, no clean-up: a crashed web process
"""


@pytest.mark.parametrize("ack, end", [("redis", "kill"), ("memory", "exit")])
def test_a_web_process_that_dies_loses_no_answered_click(redis_app, ack, end):
    """``PARTNERNET_CLICK_ACK=redis`` (the default): a web process killed with SIGKILL right after
    its last answer loses none of them. ``memory``: a process that exits normally sends what
    waits at exit (a SIGKILL there may lose the last send's clicks: README, Configuration)."""
    import sys
    from pathlib import Path

    *_, link = setup_link()
    tok = token_of(redis_app, link)
    out = subprocess.run(
        [sys.executable, "-c", _WEB_SCRIPT, redis_app.config["SQLALCHEMY_DATABASE_URI"], redis_app.config["REDIS_URL"],
         redis_app.config["SECRET_KEY"], ack, tok, "200", end],
        cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=120)
    answered = int(out.stdout.split()[0])
    assert answered == 200
    assert buffer.flush_clicks() == 200
    assert _count() == 200
