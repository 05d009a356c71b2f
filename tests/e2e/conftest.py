"""End-to-end fixtures: a live stack (gunicorn, RQ worker, PostgreSQL, Redis) and Chromium.

The live stack uses its own database, ``<PARTNERNET_TEST_PG_URL>_e2e`` (created when
missing; its ``public`` schema is dropped and recreated), and Redis db
``PARTNERNET_E2E_REDIS_DB`` (default 14), so it never disturbs the other tests' schema.
Browser tests drive Debian's Chromium (``/usr/bin/chromium``, or
``PARTNERNET_CHROMIUM``) through Playwright; a failing test saves a screenshot under
``test-artifacts/``.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

BASE_PG = os.environ.get("PARTNERNET_TEST_PG_URL", "postgresql://127.0.0.1/test")
E2E_PG_URL = BASE_PG + "_e2e"
E2E_REDIS_URL = os.environ.get("PARTNERNET_TEST_REDIS_URL", "redis://127.0.0.1:6379/15").rsplit("/", 1)[0] + "/" + \
    os.environ.get("PARTNERNET_E2E_REDIS_DB", "14")
CHROMIUM = os.environ.get("PARTNERNET_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"


def ensure_database(url: str) -> str:
    """Create the PostgreSQL database of ``url`` when it does not exist; returns ``url``."""
    base, name = url.rsplit("/", 1)
    admin = create_engine(base.replace("postgresql://", "postgresql+psycopg://", 1) + "/postgres",
                          isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first() is None:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return url


@pytest.fixture(scope="module")
def live():
    """A started :class:`live.LiveStack` for the module (fresh schema, empty Redis db)."""
    from live import LiveStack

    stack = LiveStack(ensure_database(E2E_PG_URL), E2E_REDIS_URL, web_workers=2, proxy_hops=0)
    stack.start()
    yield stack
    stack.stop()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture(scope="session")
def browser():
    """A headless Chromium (Playwright, system browser); skipped when Chromium is missing."""
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        yield b
        b.close()


def _page(browser, request, viewport):
    ctx = browser.new_context(viewport=viewport)
    pg = ctx.new_page()
    pg.set_default_timeout(15_000)
    yield pg
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        pg.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    ctx.close()


@pytest.fixture
def page(browser, request):
    """A fresh desktop-width page (1280x900); a screenshot is saved when the test fails."""
    yield from _page(browser, request, {"width": 1280, "height": 900})


@pytest.fixture
def phone_page(browser, request):
    """A fresh phone-width page (390x844); a screenshot is saved when the test fails."""
    yield from _page(browser, request, {"width": 390, "height": 844})
