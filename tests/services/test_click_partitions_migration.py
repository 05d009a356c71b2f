"""The migration that partitions ``clicks`` by month (PostgreSQL) keeps every row, its id and the
id sequence, up and down; on SQLite it only changes the unique click ID index."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import PG_URL
from tests.services.test_migrations import _flask

BEFORE, REVISION = "81b82bf475fc", "c4d1a7e5f203"
# (click_id, created_at): an old month, two recent ones, and one far ahead (the default partition)
ROWS = [("a" * 32, "2024-01-05 10:00:00+00"), ("b" * 32, "2024-01-31 23:59:59.999999+00"),
        ("c" * 32, "2024-02-01 00:00:00+00"), ("d" * 32, "2025-07-14 08:00:00+00"),
        ("e" * 32, "2040-03-01 00:00:00+00")]


def _database(backend, tmp_path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path}/p.db"
    name = PG_URL.rsplit("/", 1)[1] + "_partitions"
    admin = create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return PG_URL.rsplit("/", 1)[0] + "/" + name


def _engine(url):
    return create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))


def _rows(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(map(str, r)) for r in conn.execute(text(
            "SELECT id, click_id, created_at, visitor FROM clicks ORDER BY id"))]


def _parents(engine) -> None:
    """Client, partner, campaign and link 1 (every NOT NULL column with a plain value), which the
    clicks refer to: the SQLite migration copies the table with foreign keys checked."""
    from sqlalchemy import inspect

    values = {"INTEGER": 1, "BIGINT": 1, "BOOLEAN": False, "JSON": "[]", "DATETIME": "2024-01-01 00:00:00",
              "TIMESTAMP": "2024-01-01 00:00:00+00"}
    inspector = inspect(engine)
    with engine.begin() as conn:
        for table in ("clients", "partners", "campaigns", "links"):
            cols = {c["name"]: values.get(str(c["type"]).split("(")[0].split(" ")[0], "x")
                    for c in inspector.get_columns(table) if not c["nullable"]}
            conn.execute(text(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)})"),
                         cols)


def _insert(engine, click_id: str, at: str) -> None:
    """A click of link 1 created at ``at``."""
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            at = at.removesuffix("+00")
        conn.execute(text(
            "INSERT INTO clicks (click_id, link_id, campaign_id, partner_id, created_at, visitor, method, "
            "is_bot, is_unique) VALUES (:c, 1, 1, 1, :at, 'v', 'GET', false, true)"), {"c": click_id, "at": at})


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_partitioning_keeps_every_row_up_and_down(backend, tmp_path):
    url = _database(backend, tmp_path)
    assert _flask(["db", "upgrade", BEFORE], url).returncode == 0
    engine = _engine(url)
    _parents(engine)
    for click_id, at in ROWS:
        _insert(engine, click_id, at)
    before = _rows(engine)
    assert len(before) == len(ROWS)

    up = _flask(["db", "upgrade", REVISION], url)
    assert up.returncode == 0, up.stderr
    assert _rows(engine) == before
    _insert(engine, "f" * 32, "2024-01-06 00:00:00+00")
    with engine.connect() as conn:
        newest = conn.execute(text("SELECT id FROM clicks WHERE click_id = :c"), {"c": "f" * 32}).scalar()
        assert newest == len(ROWS) + 1  # the id sequence goes on
        if backend == "postgresql":
            where = dict(conn.execute(text("SELECT click_id, tableoid::regclass::text FROM clicks")).all())
            assert where["a" * 32] == where["b" * 32] == where["f" * 32] == "clicks_y2024m01"
            assert (where["c" * 32], where["d" * 32]) == ("clicks_y2024m02", "clicks_y2025m07")
            assert where["e" * 32] == "clicks_default"
    after_up = _rows(engine)

    down = _flask(["db", "downgrade", BEFORE], url)
    assert down.returncode == 0, down.stderr
    assert _rows(engine) == after_up
    with engine.connect() as conn:
        if backend == "postgresql":
            assert conn.execute(text("SELECT count(*) FROM pg_partitioned_table")).scalar() == 0
            assert conn.execute(text("SELECT pg_get_serial_sequence('clicks', 'id')")).scalar() == "public.clicks_id_seq"
    _insert(engine, "g" * 32, "2024-01-07 00:00:00+00")
    assert _rows(engine)[-1][0] == str(len(ROWS) + 2)
    engine.dispose()
