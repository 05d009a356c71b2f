"""Benchmark 2: sustained postbacks per second, half of them duplicates (issue 7.2).

A live PartnerNet (production gunicorn settings, one worker, PostgreSQL, Redis) with
1,000 links over 20 campaigns. ``N`` distinct sale postbacks (signed click IDs made the
way the redirect makes them, distinct ``txn_id``), each sent twice, shuffled so that
some twins arrive at the same moment: 2N requests through wrk (``apt-get install -y
wrk``), each exactly once, over 32 keep-alive connections. Then drain and count: every
distinct postback is one conversion (none lost, none doubled), answers are 201 (new)
and 200 duplicate, and the ledger verifies.

    python bench/postback.py                # PARTNERNET_BENCH_POSTBACKS=3000 distinct by default
    python bench/postback.py --in-process   # only the in-process figures and profile (no gunicorn,
                                            # no worker, no wrk; quick to repeat)

After the HTTP run, the web process's own cost is measured in this process (Flask test
client on the same database and Redis, no HTTP server, every link's lookups cached first as in a
warm web process): CPU and wall milliseconds per new postback and per duplicate (best of 3 rounds
of ``PARTNERNET_BENCH_INPROC`` each, default 300), the database statements each one sends
(SQLAlchemy's and the fast path's own, :mod:`partnernet.postbacks.fastpath`), then a pyinstrument
profile of new and duplicate postbacks written to ``bench/results/postback_profile.txt``.
wrk's path list and script go to ``bench/results/postback/`` (not shared with other benchmarks).
"""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    RESULTS_DIR, app_for, click_ids, insert_clicks, machine, new_stack, run_wrk_sequence, save, seed_catalog)

DISTINCT = int(os.environ.get("PARTNERNET_BENCH_POSTBACKS", "3000"))
CONNECTIONS = int(os.environ.get("PARTNERNET_BENCH_CONNECTIONS", "32"))
INPROC = int(os.environ.get("PARTNERNET_BENCH_INPROC", "300"))
WRK_DIR = RESULTS_DIR / "postback"


def postback_path(key: str, click_id: str, txn_id: str) -> str:
    """A GET /postback path of one 49.90 sale."""
    return "/postback?" + urlencode({"key": key, "click_id": click_id, "txn_id": txn_id, "amount": "49.90"})


def postback_paths(key: str, clicks: list[tuple[int, str]], seed: int = 5) -> list[str]:
    """Two GET /postback paths per click (same txn_id: the second is a duplicate), shuffled."""
    rnd = random.Random(seed)
    paths = []
    for i, (_lid, cid) in enumerate(clicks):
        paths += [postback_path(key, cid, f"ORD-{i}")] * 2
    rnd.shuffle(paths)
    return paths


def analyze(stack) -> None:
    """``ANALYZE`` the bench database: the rows were just loaded in bulk (COPY), and a production
    database has planner statistics (autovacuum would gather them within a minute)."""
    import psycopg

    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        conn.execute("ANALYZE")


def in_process(stack, seeded: dict) -> dict:
    """CPU and wall ms per postback in this process, new and duplicate (best of 3 rounds of
    ``INPROC``), then a pyinstrument profile. Each round posts fresh click IDs (clicks
    inserted first, like the HTTP run), then the same postbacks again (duplicates)."""
    app = app_for(stack)
    client = app.test_client()
    rounds = [click_ids(app, seeded["link_ids"], INPROC, seed=1000 + r) for r in range(4)]
    insert_clicks(stack, [c for rnd in rounds for c in rnd])
    # warm-up: imports, statement caches, and every link in the per-process caches (a running
    # web process is warm: its lookups are cached after the first postback of each link)
    signer = app.extensions["partnernet_click_signer"]
    warm = [(lid, signer.make(lid, int(time.time()))) for lid in seeded["link_ids"]]
    insert_clicks(stack, warm)
    analyze(stack)
    for p in postback_paths(seeded["postback_key"], warm, seed=2):
        client.get(p.replace("ORD-", "INWARM-"))

    def timed(paths: list[str]) -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        for p in paths:
            r = client.get(p)
            if r.status_code not in (200, 201):
                raise RuntimeError(f"{p} answered {r.status_code}: {r.get_data(as_text=True)}")
        n = max(1, len(paths))
        return (time.perf_counter() - t0) / n * 1000, (time.process_time() - c0) / n * 1000

    new, dup = [], []
    for r, clicks in enumerate(rounds[:3]):
        paths = [postback_path(seeded["postback_key"], cid, f"IN{r}-{i}")
                 for i, (_lid, cid) in enumerate(clicks)]
        new.append(timed(paths))
        dup.append(timed(paths))
    out = {"n": INPROC,
           "new_ms": min(x[0] for x in new), "new_cpu_ms": min(x[1] for x in new),
           "duplicate_ms": min(x[0] for x in dup), "duplicate_cpu_ms": min(x[1] for x in dup)}
    out.update(statements_per_postback(app, client, seeded))
    try:
        from pyinstrument import Profiler
    except ImportError:
        out["profile"] = "pyinstrument not installed (pip install -e '.[bench]')"
        return out
    paths = [postback_path(seeded["postback_key"], cid, f"PR-{i}") for i, (_lid, cid) in enumerate(rounds[3])]
    prof = Profiler(interval=0.0001)
    prof.start()
    for p in paths + paths:
        client.get(p)
    prof.stop()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "postback_profile.txt").write_text(prof.output_text(unicode=False, color=False))
    out["profile"] = str(RESULTS_DIR / "postback_profile.txt")
    return out


def statements_per_postback(app, client, seeded: dict, n: int = 20) -> dict:
    """Database statements sent per new postback and per duplicate (mean of ``n`` each, caches
    warm): those through SQLAlchemy (``before_cursor_execute``) and those of the fast path's own
    connection (its ``execute`` calls), transaction control (BEGIN/COMMIT) not counted."""
    from sqlalchemy import event

    from partnernet.extensions import db
    from partnernet.postbacks import fastpath

    counts = {"sqlalchemy": 0, "fastpath": 0}

    def on_execute(*_args, **_kw):
        counts["sqlalchemy"] += 1

    real_connection = fastpath.fastdb.connection

    class Counting:
        def __init__(self, conn):
            self._conn = conn

        def execute(self, *args, **kw):
            counts["fastpath"] += 1
            return self._conn.execute(*args, **kw)

    clicks = click_ids(app, seeded["link_ids"], n, seed=4242)
    with app.app_context():
        engine = db.engine
    fastpath.fastdb.connection = lambda: Counting(real_connection())
    event.listen(engine, "before_cursor_execute", on_execute)
    out = {}
    try:
        paths = [postback_path(seeded["postback_key"], cid, f"ST-{i}") for i, (_lid, cid) in enumerate(clicks)]
        for label in ("new", "duplicate"):
            counts.update(sqlalchemy=0, fastpath=0)
            for p in paths:
                client.get(p)
            out[f"{label}_statements"] = (counts["sqlalchemy"] + counts["fastpath"]) / n
            out[f"{label}_statements_fastpath"] = counts["fastpath"] / n
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)
        fastpath.fastdb.connection = real_connection
    return out


def print_in_process(ip: dict) -> None:
    print(f"in-process per postback (best of 3 x {ip['n']}; wall / CPU): "
          f"new {ip['new_ms']:.2f} / {ip['new_cpu_ms']:.2f} ms, "
          f"duplicate {ip['duplicate_ms']:.2f} / {ip['duplicate_cpu_ms']:.2f} ms; statements per new "
          f"{ip['new_statements']:.1f} ({ip['new_statements_fastpath']:.1f} on the fast path's connection), "
          f"per duplicate {ip['duplicate_statements']:.1f} ({ip['duplicate_statements_fastpath']:.1f}); "
          f"profile: {ip['profile']}", flush=True)


def main_in_process() -> dict:
    """Only the in-process figures (:func:`in_process`) on a freshly seeded bench database and
    Redis db: no gunicorn, no worker (the split jobs queue up unrun), no wrk."""
    stack = new_stack()
    stack.reset()
    stack.create_schema()
    seeded = seed_catalog(app_for(stack), links=1000, partners=100, campaigns=20)
    ip = in_process(stack, seeded)
    print_in_process(ip)
    save("postback_in_process", {"machine": machine(), "in_process": ip})
    return ip


def main() -> dict:
    stack = new_stack()
    result: dict = {"machine": machine(), "distinct": DISTINCT, "requests": 2 * DISTINCT}
    stack.start()
    try:
        app = app_for(stack)
        seeded = seed_catalog(app, links=1000, partners=100, campaigns=20)
        clicks = click_ids(app, seeded["link_ids"], DISTINCT)
        insert_clicks(stack, clicks)
        paths = postback_paths(seeded["postback_key"], clicks)
        # warm-up: a few postbacks of their own (not counted below)
        warm = click_ids(app, seeded["link_ids"], 200, seed=99)
        insert_clicks(stack, warm)
        analyze(stack)
        run_wrk_sequence(stack.base_url, [p.replace("ORD-", "WARM-") for p in postback_paths(
            seeded["postback_key"], warm, seed=1)], connections=CONNECTIONS, workdir=WRK_DIR)
        stack.drain(timeout=600)
        before = stack.sql("SELECT count(*) FROM conversions")[0][0]

        w = run_wrk_sequence(stack.base_url, paths, connections=CONNECTIONS, workdir=WRK_DIR)
        result["wrk"] = w
        print(f"postbacks: {w['answered']} answered in {w['seconds']:.1f}s = {w['rate']:.0f}/s; "
              f"statuses {w['statuses']}, unanswered {w['unanswered']}",
              flush=True)
        t0 = time.monotonic()
        d = stack.drain(timeout=900)
        result["drain_s"] = time.monotonic() - t0
        rows = stack.sql("SELECT count(*), count(DISTINCT txn_id) FROM conversions WHERE txn_id LIKE 'ORD-%%'")[0]
        doubled = stack.sql("SELECT count(*) FROM (SELECT txn_id FROM conversions WHERE txn_id LIKE 'ORD-%%' "
                            "GROUP BY campaign_id, txn_id HAVING count(*) > 1) d")[0][0]
        result.update({
            "conversions": rows[0], "distinct_txn_ids": rows[1], "lost": DISTINCT - rows[1], "doubled": doubled,
            "new_201": w["statuses"].get(201, 0), "duplicate_200": w["statuses"].get(200, 0),
            "other_answers": {k: v for k, v in w["statuses"].items() if k not in (200, 201)},
            "drain_rc": d.returncode, "conversions_before": before,
        })
        logged, span = stack.sql("SELECT count(*), EXTRACT(EPOCH FROM max(received_at) - min(received_at)) "
                                 "FROM postback_log WHERE params->>'txn_id' LIKE 'ORD-%%'")[0]
        span = float(span or 0)
        result["server_side"] = {"logged": logged, "seconds": span, "rate": logged / span if span else 0.0}
        print(f"server side (postback log, first to last received_at): {logged} postbacks in {span:.1f}s = "
              f"{result['server_side']['rate']:.0f}/s (wrk's span includes its time-outs)", flush=True)
        v = stack.ledger_verify()
        result["ledger_verify_rc"] = v.returncode
        print(f"after drain ({result['drain_s']:.1f}s, rc {d.returncode}): conversions {rows[0]} for {DISTINCT} "
              f"distinct postbacks: lost {result['lost']}, doubled {doubled}; 201 x {result['new_201']}, "
              f"200 x {result['duplicate_200']}, other {result['other_answers']}; ledger verify rc {v.returncode}",
              flush=True)
        result["in_process"] = ip = in_process(stack, seeded)
        print_in_process(ip)
    finally:
        stack.stop()
    ip = result.get("in_process", {})
    nan = float("nan")
    print(f"RESULT postback: {result['wrk']['rate']:.0f} postbacks/s (target >= 1,000/s), lost {result['lost']}, "
          f"doubled {result['doubled']}; CPU per new {ip.get('new_cpu_ms', nan):.2f} ms, "
          f"per duplicate {ip.get('duplicate_cpu_ms', nan):.2f} ms", flush=True)
    save("postback", result)
    return result


if __name__ == "__main__":
    if "--in-process" in sys.argv[1:]:
        main_in_process()
    elif sys.argv[1:]:
        print(__doc__)
    else:
        main()
