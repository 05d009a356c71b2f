"""Alembic migrations build the whole schema on SQLite and PostgreSQL, and match the models."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import PG_URL

ROOT = Path(__file__).resolve().parents[2]
MIGRATION_DB = PG_URL + "_migrations"  # beside the test database: runs with other PARTNERNET_TEST_PG_URLs never collide


def _flask(args, database_url):
    env = dict(os.environ, DATABASE_URL=database_url, SECRET_KEY="migration-test")
    env.pop("REDIS_URL", None)
    return subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def _fresh_pg():
    admin = create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT")
    name = MIGRATION_DB.rsplit("/", 1)[1]
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return MIGRATION_DB


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_upgrade_then_check_matches_models(backend, tmp_path):
    url = f"sqlite:///{tmp_path}/m.db" if backend == "sqlite" else _fresh_pg()
    up = _flask(["db", "upgrade"], url)
    assert up.returncode == 0, up.stderr
    check = _flask(["db", "check"], url)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "No new upgrade operations detected" in check.stdout + check.stderr
    down = _flask(["db", "downgrade", "base"], url)
    assert down.returncode == 0, down.stderr
