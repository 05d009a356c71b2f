"""The postback fast path's database access (:mod:`partnernet.postbacks.fastpath`): one psycopg
connection per thread in autocommit mode, made with the engine's own connect arguments (no pool
checkout, no pre-ping, no ``BEGIN``/``COMMIT`` round trips), remade after an error or a fork; and
SQLAlchemy Core statements compiled once to PostgreSQL text and run on it (:func:`read`, the
lookups of :mod:`partnernet.postbacks.lookups`). PostgreSQL only.
"""

from __future__ import annotations

import os
import threading

from ..extensions import db

_local = threading.local()


def renamed(stmt, prefix: str, dialect) -> tuple[str, dict]:
    """``stmt`` compiled for PostgreSQL, its constant parameters renamed ``<prefix><name>`` (so two
    compiled statements can share one parameter set) and returned with their values; the
    parameters the caller binds (``bindparam("pid")``...) keep their names."""
    compiled = stmt.compile(dialect=dialect)
    sql = compiled.string
    if "POSTCOMPILE" in sql:  # pragma: no cover - the statements used here expand nothing
        raise RuntimeError("a statement with expanding parameters cannot be embedded")
    constants = {}
    for bind, name in compiled.bind_names.items():
        if not bind.required:
            new = prefix + name
            sql = sql.replace(f"%({name})s", f"%({new})s")
            constants[new] = compiled.params[name]
    return sql, constants


def connection():
    """This thread's autocommit psycopg connection to the app's database (made on first use,
    and again after a fork or an error)."""
    engine = db.engine
    key = (os.getpid(), str(engine.url))
    conns = getattr(_local, "conns", None)
    if conns is None or getattr(_local, "pid", None) != key[0]:
        conns = _local.conns = {}  # after a fork: the parent's connections are left alone
        _local.pid = key[0]
    conn = conns.get(key)
    if conn is not None and not conn.closed:
        return conn
    import psycopg

    cargs, cparams = engine.dialect.create_connect_args(engine.url)
    # prepare_threshold=None: no server-side prepared statements, so each statement is planned
    # with its values (a generic plan cannot prune the clicks' monthly partitions).
    conn = psycopg.connect(*cargs, **{**cparams, "autocommit": True, "prepare_threshold": None})
    conns[key] = conn
    return conn


def discard_connections() -> None:
    """Close this thread's connections (after an error; tests). The next use makes a new one."""
    conns = getattr(_local, "conns", None) or {}
    for key, conn in list(conns.items()):
        try:
            conn.close()
        except Exception:  # noqa: BLE001
            pass
        conns.pop(key, None)


_read_sql: dict = {}


def read(stmt, params: dict) -> list:
    """Run the read-only statement ``stmt`` (SQLAlchemy Core, bound parameters) with ``params``
    on this thread's connection; returns its rows (tuples). Compiled once per statement. A read
    that fails on a broken connection is tried once more on a new one (it changed nothing).
    Raises psycopg errors."""
    compiled = _read_sql.get(stmt)
    if compiled is None:
        from sqlalchemy.dialects import postgresql

        compiled = _read_sql[stmt] = renamed(stmt, "k_", postgresql.dialect(paramstyle="pyformat"))
    sql, constants = compiled
    if constants:
        params = {**constants, **params}
    try:
        return connection().execute(sql, params).fetchall()
    except Exception as exc:  # noqa: BLE001
        import psycopg

        if not isinstance(exc, psycopg.OperationalError):
            raise
        discard_connections()
        return connection().execute(sql, params).fetchall()
