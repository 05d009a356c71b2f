"""Start and stop a live PartnerNet stack for end-to-end runs (replay, load tests).

A :class:`LiveStack` is: a fresh PostgreSQL schema (``DATABASE_URL``), an emptied
Redis db (``REDIS_URL``), the schema created (``flask --app wsgi db upgrade``, or
``db.create_all()`` when the migrations do not create the tables yet), gunicorn
serving ``wsgi:app`` on 127.0.0.1, and one ``flask --app wsgi worker``. Staff users
and API keys are created through the operator CLI (CONTRACT §6), exactly as an
operator would.

Usage::

    with LiveStack("postgresql://127.0.0.1/test_replay", "redis://127.0.0.1:6379/5") as stack:
        stack.create_user("alice@example.com", role="staff")
        key = stack.create_api_key("alice@example.com")
        requests.get(stack.base_url + "/healthz")
        stack.drain()

Every process is started in its own session and stopped by its process group id
(SIGTERM, then SIGKILL after a grace period); nothing else is touched.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

DEFAULT_DATABASE_URL = "postgresql://127.0.0.1/test_replay"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/5"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class CommandResult:
    """What a CLI command did: ``returncode``, ``stdout`` and ``stderr`` as text, ``seconds`` taken."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        """True when the command exited 0."""
        return self.returncode == 0


def ensure_database(url: str) -> str:
    """Create the PostgreSQL database named by ``url`` when it does not exist; returns ``url``."""
    import psycopg

    url = _libpq_url(url)
    base, name = url.rsplit("/", 1)
    with psycopg.connect(base + "/postgres", autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{name}"')
    return url


class StackError(RuntimeError):
    """The live stack could not be prepared or started (message says which step, with its output)."""


def _libpq_url(url: str) -> str:
    """``postgresql+psycopg://`` (SQLAlchemy spelling) -> ``postgresql://`` (libpq spelling)."""
    for prefix in ("postgresql+psycopg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix):]
    return url


class LiveStack:
    """A live PartnerNet: gunicorn + one RQ worker on PostgreSQL and Redis.

    ``database_url``: a PostgreSQL URL whose ``public`` schema is DROPPED and recreated by
    :meth:`reset` (use a database of your own). ``redis_url``: its db is FLUSHED by
    :meth:`reset`. ``port``: 0 picks a free one. ``web_workers``: gunicorn ``-w``.
    ``gunicorn_args``: extra arguments (e.g. ``["-k", "gthread", "--threads", "4"]``).
    ``log_dir``: where the server and worker logs go (a temporary directory by default).
    ``schema``: "auto" (``flask db upgrade``, ``db.create_all()`` when that leaves no tables),
    "migrations" (upgrade only) or "create_all" (models only, e.g. while a migration is missing).

    Raises :class:`StackError` from :meth:`start` when a step fails.
    """

    def __init__(self, database_url: str = DEFAULT_DATABASE_URL, redis_url: str = DEFAULT_REDIS_URL, *,
                 port: int = 0, secret_key: str = "replay-secret-key-0123456789abcdef", proxy_hops: int = 1,
                 web_workers: int = 2, gunicorn_args: list[str] | None = None, log_dir: str | None = None,
                 extra_env: dict | None = None, schema: str = "auto"):
        self.database_url = _libpq_url(database_url)
        self.redis_url = redis_url
        self.port = port or free_port()
        self.secret_key = secret_key
        self.proxy_hops = proxy_hops
        self.web_workers = web_workers
        self.gunicorn_args = list(gunicorn_args or [])
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="partnernet-live-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.extra_env = dict(extra_env or {})
        if schema not in ("auto", "migrations", "create_all"):
            raise ValueError(f"schema must be auto, migrations or create_all, not {schema!r}")
        self.schema = schema
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.schema_method: str | None = None  # "migrations" or "create_all"
        self._procs: dict[str, subprocess.Popen] = {}
        self._logs: dict[str, object] = {}

    # ------------------------------------------------------------------ environment and CLI

    def env(self) -> dict:
        """The environment every process of the stack runs with (CONTRACT §6 settings)."""
        env = dict(os.environ)
        env.update({
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "SECRET_KEY": self.secret_key,
            "PARTNERNET_BASE_URL": self.base_url,
            "PARTNERNET_PROXY_HOPS": str(self.proxy_hops),
            "PYTHONUNBUFFERED": "1",
        })
        env.update(self.extra_env)
        return env

    def flask(self, *args: str, timeout: float = 300.0) -> CommandResult:
        """Run ``flask --app wsgi <args>`` in the repository with the stack's environment."""
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", *args], cwd=ROOT, env=self.env(),
                              capture_output=True, text=True, timeout=timeout)
        return CommandResult(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - t0)

    def python(self, code: str, timeout: float = 300.0) -> CommandResult:
        """Run ``python -c <code>`` in the repository with the stack's environment."""
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=self.env(), capture_output=True,
                              text=True, timeout=timeout)
        return CommandResult(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - t0)

    # ------------------------------------------------------------------ database and redis

    def reset(self) -> None:
        """Drop and recreate the ``public`` schema of the database, and flush the Redis db."""
        import psycopg
        import redis

        with psycopg.connect(self.database_url, autocommit=True) as conn:
            conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
            conn.execute("CREATE SCHEMA public")
        redis.Redis.from_url(self.redis_url).flushdb()

    def _has_tables(self) -> bool:
        import psycopg

        with psycopg.connect(self.database_url, autocommit=True) as conn:
            row = conn.execute("SELECT to_regclass('public.clients'), to_regclass('public.conversions')").fetchone()
        return row[0] is not None and row[1] is not None

    def create_schema(self) -> str:
        """Create the tables: ``flask db upgrade`` first; when it fails or leaves the tables
        missing (no migration yet), ``db.create_all()``. Returns the method used
        ("migrations" or "create_all"); raises StackError when neither works."""
        res = CommandResult(1, "", "(skipped: schema='create_all')", 0.0)
        if self.schema != "create_all":
            res = self.flask("db", "upgrade")
            if res.ok and self._has_tables():
                self.schema_method = "migrations"
                return self.schema_method
            if self.schema == "migrations":
                raise StackError(f"flask db upgrade failed or made no tables:\n{res.stderr[-3000:]}")
        fallback = self.python(
            "from partnernet import create_app\n"
            "from partnernet.extensions import db\n"
            "app = create_app()\n"
            "with app.app_context():\n"
            "    db.create_all()\n"
        )
        if not fallback.ok or not self._has_tables():
            raise StackError("schema creation failed:\n--- db upgrade ---\n" + res.stderr[-3000:]
                             + "\n--- create_all ---\n" + fallback.stderr[-3000:])
        self.schema_method = "create_all"
        return self.schema_method

    def sql(self, query: str, params: tuple | dict | None = None) -> list[tuple]:
        """Run one read query on the stack's database and return its rows."""
        import psycopg

        with psycopg.connect(self.database_url, autocommit=True) as conn:
            return conn.execute(query, params).fetchall()

    # ------------------------------------------------------------------ users and keys (CONTRACT §6)

    def create_user(self, email: str, role: str = "staff", password: str = "replay-password-1") -> None:
        """``flask users create``; raises StackError with its output when it fails."""
        res = self.flask("users", "create", "--email", email, "--password", password, "--role", role)
        if not res.ok:
            raise StackError(f"users create {email} failed ({res.returncode}): {res.stdout}{res.stderr}")

    def create_api_key(self, email: str) -> str:
        """``flask api-keys create``: the key printed alone on its line; raises StackError."""
        res = self.flask("api-keys", "create", "--email", email)
        lines = [ln.strip() for ln in res.stdout.splitlines() if ln.strip()]
        if not res.ok or not lines:
            raise StackError(f"api-keys create {email} failed ({res.returncode}): {res.stdout}{res.stderr}")
        return lines[-1]

    # ------------------------------------------------------------------ processes

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        self._logs[name] = log
        proc = subprocess.Popen(argv, cwd=ROOT, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self._procs[name] = proc
        return proc

    def start_web(self) -> None:
        """Start gunicorn (``-w web_workers``) on 127.0.0.1:port serving ``wsgi:app``."""
        self._spawn("gunicorn", [sys.executable, "-m", "gunicorn", "-w", str(self.web_workers),
                                 "-b", f"127.0.0.1:{self.port}", "--access-logfile", "-", *self.gunicorn_args,
                                 "wsgi:app"])

    def start_worker(self) -> None:
        """Start one ``flask --app wsgi worker``."""
        self._spawn("worker", [sys.executable, "-m", "flask", "--app", "wsgi", "worker"])

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Poll ``GET /healthz`` until it answers 200; raises StackError with the log tail otherwise."""
        end = time.monotonic() + timeout
        last = ""
        while time.monotonic() < end:
            proc = self._procs.get("gunicorn")
            if proc is not None and proc.poll() is not None:
                raise StackError(f"gunicorn exited with {proc.returncode}:\n{self.log_tail('gunicorn')}")
            try:
                with urllib.request.urlopen(self.base_url + "/healthz", timeout=2) as resp:
                    if resp.status == 200:
                        return
                    last = f"status {resp.status}"
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            time.sleep(0.1)
        raise StackError(f"/healthz not ready after {timeout}s ({last}):\n{self.log_tail('gunicorn')}")

    def worker_alive(self) -> bool:
        """True while the RQ worker process runs."""
        proc = self._procs.get("worker")
        return proc is not None and proc.poll() is None

    def start(self, reset: bool = True) -> "LiveStack":
        """Reset (unless ``reset=False``), create the schema, start gunicorn and the worker,
        wait for /healthz. Returns self. Raises StackError (everything started is stopped)."""
        try:
            (self.log_dir / "stack.json").write_text(json.dumps(
                {"database_url": self.database_url, "redis_url": self.redis_url, "base_url": self.base_url,
                 "pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=1))
            if reset:
                self.reset()
            self.create_schema()
            self.start_web()
            self.start_worker()
            self.wait_healthy()
            time.sleep(0.2)
            if not self.worker_alive():
                raise StackError(f"worker exited:\n{self.log_tail('worker')}")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, grace: float = 10.0) -> None:
        """Stop every process this stack started (SIGTERM to its group, SIGKILL after ``grace`` s)."""
        for proc in self._procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        end = time.monotonic() + grace
        for proc in self._procs.values():
            try:
                proc.wait(timeout=max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=5)
        self._procs.clear()
        for log in self._logs.values():
            log.close()
        self._logs.clear()

    def log_tail(self, name: str, chars: int = 4000) -> str:
        """The last ``chars`` characters of a process log ("gunicorn" or "worker")."""
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return ""
        data = path.read_bytes()[-chars:]
        return data.decode("utf-8", "replace")

    # ------------------------------------------------------------------ operator commands

    def drain(self, timeout: float = 300.0) -> CommandResult:
        """``flask drain --timeout``: 0 drained, 1 timed out, 2 a job failed (CONTRACT §6).

        When this stack started a worker that has died, answers at once with return code 3
        and the worker log's tail instead of waiting for a queue nobody empties."""
        if "worker" in self._procs and not self.worker_alive():
            return CommandResult(3, "", "the worker process died:\n" + self.log_tail("worker", 2000), 0.0)
        return self.flask("drain", "--timeout", str(timeout), timeout=timeout + 60)

    def ledger_verify(self) -> CommandResult:
        """``flask ledger verify``: 0 when every posting balances (CONTRACT §4/§6)."""
        return self.flask("ledger", "verify")

    def __enter__(self) -> "LiveStack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
