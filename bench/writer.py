"""The click writer's own rate (issue 14): how fast :func:`partnernet.tracking.buffer.flush_clicks`
empties the Redis stream into PostgreSQL.

For each ``size:count`` of ``PARTNERNET_BENCH_WRITER_RUNS`` (default ``32:100000,1:5000``): a fresh
schema with 1,000 seeded links; ``count`` click records made by the real redirect code
(``hotpath.record_click`` on each link's real state, random agents, IPs and sub IDs; the records
captured instead of sent), then put into the stream by the real ``ClickBatcher`` in batches of
``size`` records (one ``XADD`` per batch, the entry format the web processes write: ``size`` 32 is
a busy site with 32 concurrent clicks per group commit, 1 a quiet one). Then ``flush_clicks`` is
timed until the stream is empty, in this process (no worker running): clicks/s, CPU of this
process and of the machine's PostgreSQL processes. A pyinstrument profile of a further 20,000-record
flush goes to bench/results/writer_profile.txt. Prints figures; writes bench/results/writer.json.

    python bench/writer.py
    PARTNERNET_BENCH_WRITER_RUNS=64:200000 python bench/writer.py
"""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procs  # noqa: E402
from common import (PG_URL, REDIS_URL, RESULTS_DIR, USER_AGENTS, app_for, ensure_database, machine,  # noqa: E402
                    new_stack, save, seed_catalog)

RUNS = [tuple(int(x) for x in part.split(":")) for part in
        os.environ.get("PARTNERNET_BENCH_WRITER_RUNS", "32:100000,1:5000").split(",") if part]
PROFILE_RECORDS = int(os.environ.get("PARTNERNET_BENCH_WRITER_PROFILE", "20000"))


class _Capture:
    """Stands in for the process's ClickBatcher while the records are made: keeps them."""

    def __init__(self):
        self.records: list[dict] = []

    def submit(self, record: dict) -> None:
        self.records.append(record)


def make_records(app, link_ids: list[int], n: int, seed: int = 5) -> list[dict]:
    """``n`` click records from ``hotpath.record_click`` over ``link_ids`` (as the redirect makes them)."""
    from partnernet.tracking.hotpath import record_click
    from partnernet.tracking.linkstate import load_state

    rnd = random.Random(seed)
    with app.app_context():
        states = {lid: load_state(lid) for lid in link_ids}
    cap = _Capture()
    saved = app.extensions.get("partnernet_click_batcher")
    app.extensions["partnernet_click_batcher"] = cap
    try:
        for _ in range(n):
            lid = rnd.choice(link_ids)
            args = {"sub1": f"story{rnd.randint(1, 40)}", "sub2": "ig"} if rnd.random() < 0.5 else {}
            record_click(app, lid, states[lid], method="GET", user_agent=rnd.choice(USER_AGENTS),
                         ip=f"10.{rnd.randint(0, 255)}.{rnd.randint(0, 255)}.{rnd.randint(1, 254)}",
                         referer=None, cookie=None, args=args, unavailable_url="/offer-unavailable")
    finally:
        if saved is None:
            app.extensions.pop("partnernet_click_batcher", None)
        else:
            app.extensions["partnernet_click_batcher"] = saved
    return cap.records


def fill_stream(app, records: list[dict], size: int) -> float:
    """Send ``records`` through a real ClickBatcher, ``size`` per stream entry; seconds taken."""
    from partnernet.tracking.batcher import ACK_REDIS, ClickBatcher

    batcher = ClickBatcher(app, ACK_REDIS)
    t0 = time.perf_counter()
    for i in range(0, len(records), size):
        with batcher._cond:  # one group commit of exactly these records (what submit() does under load)
            batcher._pending = list(records[i:i + size])
            batch = batcher._take()
        batcher._send_and_release(batch)
    return time.perf_counter() - t0


def timed_flush(app) -> dict:
    """Run ``flush_clicks`` until the stream is empty; wall and CPU seconds, records written."""
    from partnernet.extensions import db
    from partnernet.tracking.buffer import flush_clicks, has_buffered

    pg = procs.pids_named("postgres")
    pg0, c0, t0 = procs.cpu_seconds(pg), time.process_time(), time.perf_counter()
    written = 0
    with app.app_context():
        while True:
            written += flush_clicks(time_budget_s=3600)
            if not has_buffered():
                break
        db.session.remove()
    wall = time.perf_counter() - t0
    return {"written": written, "seconds": wall, "cpu_s": time.process_time() - c0,
            "postgres_cpu_s": procs.cpu_seconds(pg) - pg0, "clicks_per_s": written / wall if wall else 0.0}


def one_run(size: int, count: int) -> dict:
    stack = new_stack()
    stack.reset()
    stack.create_schema()
    app = app_for(stack)
    seeded = seed_catalog(app, links=1000, partners=100)
    t0 = time.perf_counter()
    records = make_records(app, seeded["link_ids"], count)
    made_s = time.perf_counter() - t0
    fill_s = fill_stream(app, records, size)
    out = {"batch_size": size, "records": count, "entries": -(-count // size), "make_s": made_s,
           "fill_s": fill_s, **timed_flush(app)}
    out["stored"] = stack.sql("SELECT count(*) FROM clicks")[0][0]
    out["unique"] = stack.sql("SELECT count(*) FROM clicks WHERE is_unique")[0][0]
    print(f"writer: {count} records in {out['entries']} entries of {size}: flushed in {out['seconds']:.2f} s = "
          f"{out['clicks_per_s']:.0f} clicks/s; CPU this process {out['cpu_s']:.2f} s "
          f"({1e6 * out['cpu_s'] / max(count, 1):.0f} us/click), PostgreSQL {out['postgres_cpu_s']:.2f} s; "
          f"stored {out['stored']} (unique {out['unique']}); fill {fill_s:.2f} s", flush=True)
    return out


def profile_run(size: int = 32) -> str:
    stack = new_stack()
    stack.reset()
    stack.create_schema()
    app = app_for(stack)
    seeded = seed_catalog(app, links=1000, partners=100)
    fill_stream(app, make_records(app, seeded["link_ids"], PROFILE_RECORDS), size)
    try:
        from pyinstrument import Profiler
    except ImportError:
        return "pyinstrument not installed (pip install -e '.[bench]')"
    prof = Profiler(interval=0.0005)
    prof.start()
    timed_flush(app)
    prof.stop()
    path = RESULTS_DIR / "writer_profile.txt"
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path.write_text(prof.output_text(unicode=False, color=False, show_all=False))
    return str(path)


def main() -> dict:
    ensure_database(PG_URL)
    result = {"machine": machine(), "redis_url": REDIS_URL, "runs": []}
    print(f"load average at start: {os.getloadavg()}", flush=True)
    for size, count in RUNS:
        result["runs"].append(one_run(size, count))
    result["profile"] = profile_run()
    result["load_end"] = os.getloadavg()
    for run in result["runs"]:
        print(f"RESULT writer: batches of {run['batch_size']}: {run['clicks_per_s']:.0f} clicks/s into PostgreSQL "
              f"({run['records']} records, {run['seconds']:.2f} s; target >= 5,000/s); profile {result['profile']}",
              flush=True)
    save("writer", result)
    return result


if __name__ == "__main__":
    main()
