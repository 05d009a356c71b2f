"""Benchmark 4: reports and earnings at scale (issue 7.4).

Loads, into a live PartnerNet's PostgreSQL:

- 10 million clicks' worth of hourly traffic rollups (``traffic_rollups``: 1,000 links x
  720 hours of the last 30 days, summing to 10,000,000 clicks), with COPY. Reports read
  these, never raw clicks (ARCHITECTURE, the hot path);
- 200,000 conversions with their splits and ledger postings: ``BASE`` conversions go
  through the real postback endpoint and the real split job (so every row is what the code
  writes), then are cloned with ``INSERT ... SELECT`` (new ids, dedup keys and
  transaction sources; dates spread over the 30 days) up to 200,000;
- raw click rows with COPY (``PARTNERNET_BENCH_RAW_CLICKS``, default 1,000,000; the load
  rate is printed so that 10,000,000 can be extrapolated or loaded with the variable).

Rows loaded by COPY and ``INSERT ... SELECT`` bypass the code that keeps the report rollups
(money per hour/day/campaign, daily and per-campaign traffic), so the load ends with
``flask reports rebuild-rollup`` (timed) and ``ANALYZE``.

Then times, over HTTP with API keys, ``GET /api/v1/reports`` for 30 days (staff by day,
campaign, partner and channel, and by day in America/New_York; a partner's own report) and
``GET /api/v1/partners/<id>/earnings``:
``PARTNERNET_BENCH_REQUESTS`` (default 60) each, p50/p95; and the RSS of every gunicorn
worker afterwards.

    python bench/reports.py
"""

from __future__ import annotations

import datetime as dt
import os
import random
import statistics
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (app_for, children_pids, click_ids, insert_clicks, machine, new_stack, rss_mb,  # noqa: E402
                    run_wrk_sequence, save, seed_catalog)

BASE = int(os.environ.get("PARTNERNET_BENCH_BASE_CONVERSIONS", "2000"))
CONVERSIONS = int(os.environ.get("PARTNERNET_BENCH_CONVERSIONS", "200000"))
ROLLUP_CLICKS = 10_000_000
RAW_CLICKS = int(os.environ.get("PARTNERNET_BENCH_RAW_CLICKS", "1000000"))
REQUESTS = int(os.environ.get("PARTNERNET_BENCH_REQUESTS", "60"))


def load_rollups(stack, link_ids: list[int], total: int = ROLLUP_CLICKS) -> dict:
    """COPY hourly rollups for every link over the last 720 hours, summing to ``total`` clicks."""
    import psycopg

    rnd = random.Random(1)
    end = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    hours = [end - dt.timedelta(hours=h) for h in range(720)]
    cells = len(hours) * len(link_ids)
    base, extra = divmod(total, cells)
    t0 = time.monotonic()
    n = 0
    with psycopg.connect(stack.database_url) as conn:
        with conn.cursor().copy("COPY traffic_rollups (hour, link_id, sub1, clicks, unique_clicks, bot_clicks, "
                                "fallback_clicks, impressions, bot_impressions) FROM STDIN") as cp:
            for hi, hour in enumerate(hours):
                for li, link_id in enumerate(link_ids):
                    clicks = base + (1 if hi * len(link_ids) + li < extra else 0)
                    cp.write_row((hour, link_id, "", clicks, clicks * 7 // 10, clicks // 20, 0,
                                  rnd.randint(0, 50), 0))
                    n += 1
        conn.commit()
        conn.execute("ANALYZE traffic_rollups")
        got = conn.execute("SELECT sum(clicks), count(*) FROM traffic_rollups").fetchone()
    return {"rows": n, "clicks": int(got[0]), "seconds": time.monotonic() - t0}


def _columns(conn, table: str) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' AND table_name = %s "
        "ORDER BY ordinal_position", (table,)).fetchall()]


def _clone(conn, table: str, copies: int, overrides: dict[str, str]) -> int:
    """INSERT ... SELECT ``copies`` copies of every row of ``table`` (``k`` = 1..copies), with
    SQL expressions for some columns (``t`` is the source row). Returns rows inserted."""
    cols = _columns(conn, table)
    exprs = [overrides.get(c, f"t.{c}") for c in cols]
    sql = (f"INSERT INTO {table} ({', '.join(cols)}) SELECT {', '.join(exprs)} FROM {table} t "
           f"CROSS JOIN generate_series(1, {copies}) AS k")
    return conn.execute(sql).rowcount


def load_conversions(stack, seeded: dict, app) -> dict:
    """BASE real conversions (postback + split job), then clones up to CONVERSIONS."""
    import psycopg

    t0 = time.monotonic()
    clicks = click_ids(app, seeded["link_ids"], BASE, seed=21)
    insert_clicks(stack, clicks)
    paths = [f"/postback?{urlencode({'key': seeded['postback_key'], 'click_id': cid, 'txn_id': f'R-{i}', 'amount': '49.90'})}"
             for i, (_lid, cid) in enumerate(clicks)]
    w = run_wrk_sequence(stack.base_url, paths)
    d = stack.drain(timeout=1800)
    base_s = time.monotonic() - t0
    copies = max(0, CONVERSIONS // BASE - 1)
    t1 = time.monotonic()
    with psycopg.connect(stack.database_url) as conn:
        n_conv = conn.execute("SELECT count(*) FROM conversions").fetchone()[0]
        m = {t: conn.execute(f"SELECT coalesce(max(id), 0) + 1 FROM {t}").fetchone()[0]
             for t in ("conversions", "conversion_splits", "ledger_transactions", "ledger_postings")}
        spread = "(now() - (random() * interval '29 days'))"
        _clone(conn, "conversions", copies, {
            "id": f"t.id + k * {m['conversions']}",
            "dedup_key": "t.dedup_key || ':' || k",
            "txn_id": "CASE WHEN t.txn_id IS NULL THEN NULL ELSE t.txn_id || ':' || k END",
            "created_at": spread,
        })
        _clone(conn, "conversion_splits", copies, {
            "id": f"t.id + k * {m['conversion_splits']}",
            "conversion_id": f"t.conversion_id + k * {m['conversions']}",
        })
        _clone(conn, "ledger_transactions", copies, {
            "id": f"t.id + k * {m['ledger_transactions']}",
            "source": (f"CASE WHEN t.source LIKE 'conversion:%%' THEN 'conversion:' || "
                       f"(substr(t.source, 12)::bigint + k * {m['conversions']}) ELSE t.source || ':' || k END"),
        })
        _clone(conn, "ledger_postings", copies, {
            "id": f"t.id + k * {m['ledger_postings']}",
            "transaction_id": f"t.transaction_id + k * {m['ledger_transactions']}",
        })
        for t in m:
            conn.execute(f"SELECT setval(pg_get_serial_sequence('{t}', 'id'), (SELECT max(id) FROM {t}))")
        conn.commit()
        for t in ("conversions", "conversion_splits", "ledger_transactions", "ledger_postings", "clicks"):
            conn.execute(f"ANALYZE {t}")
        counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                  for t in ("conversions", "conversion_splits", "ledger_transactions", "ledger_postings")}
    return {"base": n_conv, "base_statuses": w["statuses"], "base_drain_rc": d.returncode, "base_seconds": base_s,
            "clone_seconds": time.monotonic() - t1, **counts}


def rebuild_report_rollups(stack) -> dict:
    """``flask reports rebuild-rollup`` (what an operator runs after a bulk load), then ANALYZE
    of the rollup tables. Returns the command's output and seconds, and the row counts."""
    import psycopg

    res = stack.flask("reports", "rebuild-rollup", timeout=1800)
    if res.returncode != 0:
        raise RuntimeError(f"reports rebuild-rollup failed:\n{res.stderr[-3000:]}")
    tables = ("money_rollups", "money_rollups_daily", "money_rollups_campaign", "traffic_rollups_daily",
              "traffic_rollups_campaign")
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        for t in tables:
            conn.execute(f"ANALYZE {t}")
        rows = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}
    return {"output": res.stdout.strip(), "seconds": res.seconds, "rows": rows}


def load_raw_clicks(stack, link_ids: list[int], n: int) -> dict:
    """COPY ``n`` raw click rows spread over the last 30 days (measures the load rate)."""
    import psycopg

    rnd = random.Random(2)
    now = dt.datetime.now(dt.UTC)
    links = {}
    with psycopg.connect(stack.database_url) as conn:
        for lid, cid, pid in conn.execute("SELECT id, campaign_id, partner_id FROM links").fetchall():
            links[lid] = (cid, pid)
        t0 = time.monotonic()
        with conn.cursor().copy("COPY clicks (click_id, link_id, campaign_id, partner_id, created_at, ip, "
                                "user_agent, visitor, sub1, method, is_bot, is_unique, destination) "
                                "FROM STDIN") as cp:
            for i in range(n):
                lid = link_ids[i % len(link_ids)]
                camp, partner = links[lid]
                cp.write_row((f"raw{i:029d}", lid, camp, partner,
                              now - dt.timedelta(seconds=rnd.randint(0, 30 * 86400)), "10.0.0.1",
                              "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X)", f"v{i % 500000:031d}",
                              "story1", "GET", False, i % 3 == 0, "https://shop.example/landing?utm_source=pn"))
        conn.commit()
        secs = time.monotonic() - t0
        size = conn.execute("SELECT pg_total_relation_size('clicks')").fetchone()[0]
    return {"rows": n, "seconds": secs, "rows_per_s": n / secs if secs else 0, "table_mb": size / 1e6}


def timed_get(url: str, key: str, n: int) -> dict:
    """``n`` sequential GETs of ``url`` with the API key: p50/p95/max ms and the status seen."""
    times, statuses = [], set()
    for _ in range(n):
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
        t0 = time.perf_counter()
        with urllib.request.urlopen(req, timeout=60) as resp:
            resp.read()
            statuses.add(resp.status)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return {"n": n, "p50_ms": statistics.median(times), "p95_ms": times[int(0.95 * (n - 1))], "max_ms": times[-1],
            "statuses": sorted(statuses)}


def main() -> dict:
    stack = new_stack()
    result: dict = {"machine": machine()}
    stack.start()
    try:
        app = app_for(stack)
        seeded = seed_catalog(app, links=1000, partners=100, campaigns=20)
        stack.create_user("staff@bench.example", role="staff")
        staff_key = stack.create_api_key("staff@bench.example")
        partner_id = seeded["partner_ids"][0]
        stack.flask("users", "create", "--email", "p0@bench.example", "--password", "bench-password-1",
                    "--role", "partner", "--partner-id", str(partner_id))
        partner_key = stack.create_api_key("p0@bench.example")

        result["rollups"] = load_rollups(stack, seeded["link_ids"])
        print(f"rollups: {result['rollups']}", flush=True)
        result["conversions"] = load_conversions(stack, seeded, app)
        print(f"conversions: {result['conversions']}", flush=True)
        result["rollup_rebuild"] = rebuild_report_rollups(stack)
        print(f"report rollups rebuilt: {result['rollup_rebuild']}", flush=True)
        if RAW_CLICKS:
            result["raw_clicks"] = load_raw_clicks(stack, seeded["link_ids"], RAW_CLICKS)
            print(f"raw clicks: {result['raw_clicks']}", flush=True)

        today = dt.date.today()
        frm = (today - dt.timedelta(days=29)).isoformat()
        api = stack.base_url + "/api/v1"
        cases = {
            "staff_report_by_day": (f"{api}/reports?group_by=day&from={frm}&to={today}", staff_key),
            "staff_report_by_campaign": (f"{api}/reports?group_by=campaign&from={frm}&to={today}", staff_key),
            "staff_report_by_partner": (f"{api}/reports?group_by=partner&from={frm}&to={today}", staff_key),
            "staff_report_by_channel": (f"{api}/reports?group_by=channel&from={frm}&to={today}", staff_key),
            "staff_report_by_day_new_york": (
                f"{api}/reports?group_by=day&from={frm}&to={today}&tz=America/New_York", staff_key),
            "partner_report_by_day": (f"{api}/reports?group_by=day&from={frm}&to={today}", partner_key),
            "partner_earnings": (f"{api}/partners/{partner_id}/earnings", partner_key),
            "staff_earnings_of_a_partner": (f"{api}/partners/{seeded['partner_ids'][1]}/earnings", staff_key),
        }
        result["timings"] = {}
        for name, (url, key) in cases.items():
            timed_get(url, key, 3)  # warm the worker processes' connections
            result["timings"][name] = t = timed_get(url, key, REQUESTS)
            print(f"{name}: p50 {t['p50_ms']:.0f} ms, p95 {t['p95_ms']:.0f} ms, max {t['max_ms']:.0f} ms "
                  f"(status {t['statuses']})", flush=True)
        master = stack._procs["gunicorn"].pid
        result["web_worker_rss_mb"] = {pid: round(rss_mb(pid), 1) for pid in children_pids(master)}
        print(f"web worker RSS (MB): {result['web_worker_rss_mb']}", flush=True)
    finally:
        stack.stop()
    worst = max(t["p95_ms"] for t in result["timings"].values())
    rss = max(result["web_worker_rss_mb"].values() or [0])
    print(f"RESULT reports: worst p95 {worst:.0f} ms (target < 200 ms); web worker RSS max {rss:.0f} MB "
          f"(target < 150 MB)", flush=True)
    save("reports", result)
    return result


if __name__ == "__main__":
    main()
