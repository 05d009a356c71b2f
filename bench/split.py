"""Benchmark 3: conversions split per second by one worker (issue 7.3).

A live PartnerNet with its worker stopped receives ``N`` distinct sale postbacks (each
asks for the coalesced split job: one job, which posts every lagging conversion in
batches of 500, set-based: the split of the client fee into the partner's payout and the
agency margin, CONTRACT §4). Then one ``flask --app wsgi worker`` (a non-forking
``rq.SimpleWorker``, partnernet/worker.py) is started and timed until the queues are
empty (``flask drain``). Prints splits per second two ways: from the worker's start to
drained (process start-up and drain polling included) and over the split jobs' own run time
(RQ's started/ended times of each job), checks every conversion reached the ledger and that
``flask ledger verify`` passes, and profiles the batch posting in-process.

    python bench/split.py            # PARTNERNET_BENCH_SPLITS=2000 by default
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import insert_clicks, RESULTS_DIR, app_for, click_ids, machine, new_stack, run_wrk_sequence, save, seed_catalog  # noqa: E402

SPLITS = int(os.environ.get("PARTNERNET_BENCH_SPLITS", "5000"))


def stop_worker(stack) -> None:
    """Stop the stack's own worker process (its process group) and wait for it."""
    proc = stack._procs.pop("worker")
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


def queued_jobs(stack) -> int:
    import redis

    r = redis.Redis.from_url(stack.redis_url)
    return sum(r.llen(k) for k in r.keys("rq:queue:*"))


def job_seconds(stack) -> float:
    """Seconds from the first split job's start to the last one's end (RQ's own job times)."""
    import redis
    from rq import Queue
    from rq.registry import FinishedJobRegistry

    r = redis.Redis.from_url(stack.redis_url)
    q = Queue("partnernet-default", connection=r)
    jobs = [q.fetch_job(j) for j in FinishedJobRegistry(queue=q).get_job_ids()]
    jobs = [j for j in jobs if j is not None and j.func_name.endswith("sync_lagging_job")]
    start = min(j.started_at for j in jobs)
    end = max(j.ended_at for j in jobs)
    return (end - start).total_seconds()


def profile_split(stack, n: int = 1000) -> dict:
    """Time and profile ``sync_conversions`` (batches of 500) in this process on ``n`` pending
    conversions whose ledger has not been written (made by extra postbacks sent with the worker
    stopped): half timed, half profiled."""
    from partnernet.extensions import db
    from partnernet.ledger.services import BATCH_SIZE, sync_conversions
    from partnernet.models import Conversion

    def run(batch):
        for i in range(0, len(batch), BATCH_SIZE):
            sync_conversions(batch[i:i + BATCH_SIZE])

    app = app_for(stack)
    with app.app_context():
        ids = list(db.session.scalars(db.select(Conversion.id).where(Conversion.ledger_status.is_(None))
                                      .order_by(Conversion.id).limit(n)))
        db.session.rollback()
        half = len(ids) // 2
        t0, c0 = time.perf_counter(), time.process_time()
        run(ids[:half])
        out = {"n": half, "ms_per_split": (time.perf_counter() - t0) / max(1, half) * 1000,
               "cpu_ms_per_split": (time.process_time() - c0) / max(1, half) * 1000}
        try:
            from pyinstrument import Profiler
        except ImportError:
            return out
        prof = Profiler(interval=0.0002)
        prof.start()
        run(ids[half:])
        prof.stop()
        (RESULTS_DIR / "split_profile.txt").write_text(prof.output_text(unicode=False, color=False))
        out["profile"] = str(RESULTS_DIR / "split_profile.txt")
        db.session.remove()
    return out


def main() -> dict:
    stack = new_stack()
    result: dict = {"machine": machine(), "splits": SPLITS}
    stack.start()
    try:
        app = app_for(stack)
        seeded = seed_catalog(app, links=1000, partners=100, campaigns=20)
        stop_worker(stack)
        clicks = click_ids(app, seeded["link_ids"], SPLITS + 1000)
        insert_clicks(stack, clicks)
        paths = [f"/postback?{urlencode({'key': seeded['postback_key'], 'click_id': cid, 'txn_id': f'S-{i}'})}"
                 for i, (_lid, cid) in enumerate(clicks)]
        w = run_wrk_sequence(stack.base_url, paths[:SPLITS])
        result["postbacks"] = w["statuses"]
        result["queued_jobs"] = queued_jobs(stack)
        print(f"{SPLITS} postbacks {w['statuses']}; {result['queued_jobs']} job(s) queued", flush=True)

        t0 = time.monotonic()
        stack.start_worker()
        d = stack.drain(timeout=1800)
        result["seconds"] = time.monotonic() - t0
        synced = stack.sql("SELECT count(*) FROM conversions WHERE ledger_status = status")[0][0]
        result["synced"] = synced
        result["splits_per_s"] = synced / result["seconds"]
        result["job_seconds"] = job_seconds(stack)
        result["splits_per_job_s"] = synced / result["job_seconds"]
        result["drain_rc"] = d.returncode
        v = stack.ledger_verify()
        result["ledger_verify_rc"] = v.returncode
        print(f"one worker: {synced} splits in {result['seconds']:.1f}s = {result['splits_per_s']:.0f}/s "
              f"(worker start and drain polling included); in the split jobs' own run time "
              f"{result['job_seconds']:.2f}s = {result['splits_per_job_s']:.0f}/s; "
              f"ledger up to date on {synced}; "
              f"drain rc {d.returncode}; ledger verify rc {v.returncode}", flush=True)

        stop_worker(stack)
        run_wrk_sequence(stack.base_url, paths[SPLITS:])
        result["in_process"] = profile_split(stack)
        ip = result["in_process"]
        print(f"in-process sync_conversions: {ip['ms_per_split']:.2f} ms wall, {ip['cpu_ms_per_split']:.2f} ms CPU "
              f"per split; profile {ip.get('profile')}", flush=True)
    finally:
        stack.stop()
    print(f"RESULT split: {result['splits_per_job_s']:.0f} splits/s per worker in the jobs' run time, "
          f"{result['splits_per_s']:.0f}/s from worker start (target >= 1,000/s)", flush=True)
    save("split", result)
    return result


if __name__ == "__main__":
    main()
