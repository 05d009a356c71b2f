"""Benchmark 2: sustained postbacks per second, half of them duplicates (issue 7.2).

A live PartnerNet (production gunicorn settings, one worker, PostgreSQL, Redis) with
1,000 links over 20 campaigns. ``N`` distinct sale postbacks (signed click IDs made the
way the redirect makes them, distinct ``txn_id``), each sent twice, shuffled so that
some twins arrive at the same moment: 2N requests through wrk (``apt-get install -y
wrk``), each exactly once, over 32 keep-alive connections. Then drain and count: every
distinct postback is one conversion (none lost, none doubled), answers are 201 (new)
and 200 duplicate, and the ledger verifies.

    python bench/postback.py            # PARTNERNET_BENCH_POSTBACKS=3000 distinct by default
"""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import insert_clicks, app_for, click_ids, machine, new_stack, run_wrk_sequence, save, seed_catalog  # noqa: E402

DISTINCT = int(os.environ.get("PARTNERNET_BENCH_POSTBACKS", "3000"))
CONNECTIONS = int(os.environ.get("PARTNERNET_BENCH_CONNECTIONS", "32"))


def postback_paths(key: str, clicks: list[tuple[int, str]], seed: int = 5) -> list[str]:
    """Two GET /postback paths per click (same txn_id: the second is a duplicate), shuffled."""
    rnd = random.Random(seed)
    paths = []
    for i, (_lid, cid) in enumerate(clicks):
        q = urlencode({"key": key, "click_id": cid, "txn_id": f"ORD-{i}", "amount": "49.90"})
        paths += [f"/postback?{q}"] * 2
    rnd.shuffle(paths)
    return paths


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
        run_wrk_sequence(stack.base_url, [p.replace("ORD-", "WARM-") for p in postback_paths(
            seeded["postback_key"], warm, seed=1)], connections=CONNECTIONS)
        stack.drain(timeout=600)
        before = stack.sql("SELECT count(*) FROM conversions")[0][0]

        w = run_wrk_sequence(stack.base_url, paths, connections=CONNECTIONS)
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
        v = stack.ledger_verify()
        result["ledger_verify_rc"] = v.returncode
        print(f"after drain ({result['drain_s']:.1f}s, rc {d.returncode}): conversions {rows[0]} for {DISTINCT} "
              f"distinct postbacks: lost {result['lost']}, doubled {doubled}; 201 x {result['new_201']}, "
              f"200 x {result['duplicate_200']}, other {result['other_answers']}; ledger verify rc {v.returncode}",
              flush=True)
    finally:
        stack.stop()
    print(f"RESULT postback: {result['wrk']['rate']:.0f} postbacks/s (target >= 1,000/s), lost {result['lost']}, "
          f"doubled {result['doubled']}", flush=True)
    save("postback", result)
    return result


if __name__ == "__main__":
    main()
