"""Shared fixtures.

Databases: service and web tests run on SQLite and on PostgreSQL (``backend``
parameter). PostgreSQL comes from ``PARTNERNET_TEST_PG_URL`` (default
``postgresql://127.0.0.1/test``), Redis from ``PARTNERNET_TEST_REDIS_URL``
(default ``redis://127.0.0.1:6379/15``). The schema is created once per
session and every table is emptied before each test.
"""

from __future__ import annotations

import os

import pytest
from sqlalchemy import text

from partnernet import create_app
from partnernet.extensions import db

PG_URL = os.environ.get("PARTNERNET_TEST_PG_URL", "postgresql://127.0.0.1/test")
REDIS_URL = os.environ.get("PARTNERNET_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

_apps: dict = {}


def make_app(backend: str, tmp_root: str, **extra):
    """A testing app on ``backend`` ("sqlite" or "postgresql"), schema created, no Redis."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_root}/test.db"
    else:
        url = PG_URL.replace("postgresql://", "postgresql+psycopg://", 1)
    config = {
        "TESTING": True,
        "SQLALCHEMY_DATABASE_URI": url,
        "SECRET_KEY": "test-secret-key",
        "WTF_CSRF_ENABLED": False,
        "PARTNERNET_BASE_URL": "http://testserver",
        "REDIS_URL": None,
        # Tests read the stream right after a click: answer once the click is in Redis.
        "PARTNERNET_CLICK_ACK": "redis",
    }
    config.update(extra)
    app = create_app(config)
    with app.app_context():
        if backend == "postgresql":
            with db.engine.begin() as conn:
                conn.execute(text("DROP SCHEMA public CASCADE"))
                conn.execute(text("CREATE SCHEMA public"))
        db.create_all()
    return app


def empty_tables(app) -> None:
    """Delete every row of every table (fast reset between tests), and forget the in-memory
    counts of refused postbacks (partnernet.postbacks.flood)."""
    app.extensions.pop("partnernet_postback_flood", None)
    with app.app_context():
        names = [t.name for t in db.metadata.sorted_tables]
        with db.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("TRUNCATE " + ", ".join(f'"{n}"' for n in names) + " RESTART IDENTITY CASCADE"))
            else:
                for n in reversed(names):
                    conn.execute(text(f'DELETE FROM "{n}"'))


@pytest.fixture(scope="session")
def _session_tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("pn")


def _get_app(backend, tmp_root):
    if backend not in _apps:
        _apps[backend] = make_app(backend, str(tmp_root))
    return _apps[backend]


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request):
    """Runs the test once on SQLite and once on PostgreSQL."""
    return request.param


@pytest.fixture
def app(backend, _session_tmp):
    """A testing app on ``backend`` with empty tables, inside an app context."""
    from partnernet import clock, queue

    application = _get_app(backend, _session_tmp)
    empty_tables(application)
    queue.discard_pending()
    with application.app_context():
        yield application
        db.session.remove()
    clock.set_now(None)


@pytest.fixture
def pg_app(_session_tmp):
    """A testing app on PostgreSQL only (concurrency tests), inside an app context."""
    from partnernet import queue

    application = _get_app("postgresql", _session_tmp)
    empty_tables(application)
    queue.discard_pending()
    with application.app_context():
        yield application
        db.session.remove()


@pytest.fixture
def client(app):
    """Flask test client of ``app``."""
    return app.test_client()


@pytest.fixture
def redis_app(_session_tmp):
    """A testing app on PostgreSQL with REDIS_URL set (jobs go to RQ), empty tables and an
    empty Redis db, inside an app context. Pair it with ``worker`` to run the jobs."""
    import redis as redis_lib

    key = "postgresql+redis"
    if key not in _apps:
        _apps[key] = make_app("postgresql", str(_session_tmp), REDIS_URL=REDIS_URL)
    application = _apps[key]
    empty_tables(application)
    redis_lib.Redis.from_url(REDIS_URL).flushdb()
    reset_tracking(application)
    with application.app_context():
        yield application
        db.session.remove()


def reset_tracking(application) -> None:
    """Forget what the app's process knows of earlier tests: cached link state (ids restart
    with the emptied tables) and its click batch (a new producer, numbered from 1, since the
    writer's bookkeeping tables were emptied too)."""
    cache = application.extensions.get("partnernet_state_cache")
    if cache is not None:
        cache.clear()
    application.extensions.pop("partnernet_click_batcher", None)


@pytest.fixture
def worker(redis_app):
    """A real ``flask --app wsgi worker`` process on the test database and Redis db.
    Yields the Popen; stopped (SIGTERM, then SIGKILL) after the test."""
    import signal
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ)
    env.update({
        "DATABASE_URL": PG_URL,
        "REDIS_URL": REDIS_URL,
        "SECRET_KEY": redis_app.config["SECRET_KEY"],
        "PARTNERNET_BASE_URL": redis_app.config["PARTNERNET_BASE_URL"],
    })
    proc = subprocess.Popen([sys.executable, "-m", "flask", "--app", "wsgi", "worker"], cwd=root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    yield proc
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def drain_jobs(timeout: float = 60.0) -> None:
    """Wait (inside an app context) until the worker has emptied every queue; fail the test
    when it times out or a job failed."""
    from partnernet.worker import drain

    code, message = drain(timeout)
    assert code == 0, message
