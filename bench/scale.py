"""Scaling by simulation (issue 14, docs/scaling.md): 1, 2 and 4 web processes against one Redis
and one PostgreSQL; how throughput grows.

One database, one worker (the click writer), one redis-server of the benchmark's own (the
README's persistence: ``appendonly yes``, ``appendfsync everysec``). For each ``-w N`` of
``PARTNERNET_BENCH_SCALE_WORKERS`` (default ``1,2,4``): gunicorn ``-w N -k gthread --threads 4``
serving PartnerNet (``PARTNERNET_CLICK_ACK`` as set, default ``redis``) and the bare Flask app of
bench/bare_app.py with the same settings; each warmed, then wrk (1 thread, 32 connections, the
1,000 random paths) against bare and PartnerNet in turn, ``PARTNERNET_BENCH_ROUNDS`` times. Prints
req/s, the growth factor against ``-w 1``, and the CPU each part used per second of the round
(web processes, worker, Redis, the machine's PostgreSQL; on a 2-core box 2.0 CPU-s/s is
everything). Nothing pinned. Asserts nothing; writes bench/results/scale.json.

    python bench/scale.py
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procs  # noqa: E402
from common import (HERE, PG_URL, ROOT, SECONDS, BenchStack, app_for, ensure_database, free_port_bare,  # noqa: E402
                    machine, random_paths, run_wrk, save, seed_catalog)

WORKERS = [int(x) for x in os.environ.get("PARTNERNET_BENCH_SCALE_WORKERS", "1,2,4").split(",") if x]
ROUNDS = int(os.environ.get("PARTNERNET_BENCH_ROUNDS", "2"))
CONNECTIONS = int(os.environ.get("PARTNERNET_BENCH_CONNECTIONS", "32"))
THREADS = 4


def measure(url: str, paths: list[str], parts: dict) -> dict:
    """One wrk round against ``url``; CPU seconds per wall second of each part (``parts``: name ->
    callable giving its pids)."""
    c0 = {k: procs.cpu_seconds(f()) for k, f in parts.items()}
    t0 = time.monotonic()
    w = run_wrk(url, paths, seconds=SECONDS, connections=CONNECTIONS)
    wall = time.monotonic() - t0
    w["cpu_per_s"] = {k: (procs.cpu_seconds(f()) - c0[k]) / wall for k, f in parts.items()}
    return w


def main() -> dict:
    print(f"load average at start: {os.getloadavg()}", flush=True)
    stack = BenchStack(ensure_database(PG_URL), "redis://unused", proxy_hops=1)
    rport = free_port_bare()
    redis_proc = procs.start_redis(rport, None, stack.log_dir)
    stack.redis_url = f"redis://127.0.0.1:{rport}/0"
    result: dict = {"machine": machine(), "threads": THREADS, "connections": CONNECTIONS, "seconds": SECONDS,
                    "ack": os.environ.get("PARTNERNET_CLICK_ACK", "redis"), "by_workers": {}}
    try:
        stack.reset()
        stack.create_schema()
        seeded = seed_catalog(app_for(stack), links=1000, partners=100)
        paths = random_paths(seeded["tokens"], 1000)
        stack._spawn("worker", [sys.executable, "-m", "flask", "--app", "wsgi", "worker"])
        worker_pid = stack._procs["worker"].pid
        from redirect import warm_up

        for n in WORKERS:
            bare_port, ours_port = free_port_bare(), free_port_bare()
            bare = procs.spawn(procs.gunicorn_cmd("bare_app:app", bare_port, n, THREADS), cwd=HERE, env=None,
                               log_path=stack.log_dir / f"bare-w{n}.log")
            ours = procs.spawn(procs.gunicorn_cmd("wsgi:app", ours_port, n, THREADS), cwd=ROOT, env=stack.env(),
                               log_path=stack.log_dir / f"ours-w{n}.log")
            try:
                bare_url, ours_url = f"http://127.0.0.1:{bare_port}", f"http://127.0.0.1:{ours_port}"
                procs.wait_up(bare_url + "/healthz")
                procs.wait_up(ours_url + "/healthz")
                warm_up(ours_url, paths, 2 * n + 4)
                run_wrk(bare_url, paths, seconds=3, connections=CONNECTIONS)
                run_wrk(ours_url, paths, seconds=3, connections=CONNECTIONS)
                common_parts = {"worker": lambda: [worker_pid], "redis": lambda: [redis_proc.pid],
                                "postgres": lambda: procs.pids_named("postgres")}
                rows = {"bare": [], "ours": []}
                for _ in range(ROUNDS):
                    rows["bare"].append(measure(bare_url, paths, {"web": lambda: procs.tree(bare.pid), **common_parts}))
                    rows["ours"].append(measure(ours_url, paths, {"web": lambda: procs.tree(ours.pid), **common_parts}))
                entry = {}
                for kind, ws in rows.items():
                    entry[kind] = {"rps": statistics.median(w["rps"] for w in ws),
                                   "p99_ms": statistics.median(w["p99_ms"] for w in ws),
                                   "rps_rounds": [round(w["rps"]) for w in ws],
                                   "cpu_per_s": {k: round(statistics.mean(w["cpu_per_s"][k] for w in ws), 2)
                                                 for k in ws[0]["cpu_per_s"]}}
                result["by_workers"][n] = entry
                print(f"-w {n}: bare {entry['bare']['rps']:.0f} req/s {entry['bare']['rps_rounds']} | ours "
                      f"{entry['ours']['rps']:.0f} req/s {entry['ours']['rps_rounds']} p99 "
                      f"{entry['ours']['p99_ms']:.1f} ms; CPU-s per s during ours: {entry['ours']['cpu_per_s']}; "
                      f"load {os.getloadavg()[0]:.2f}", flush=True)
            finally:
                procs.stop(bare)
                procs.stop(ours)
    finally:
        stack.stop()
        procs.stop(redis_proc)
    base = result["by_workers"][WORKERS[0]]
    for n, entry in result["by_workers"].items():
        for kind in ("bare", "ours"):
            entry[kind]["growth"] = entry[kind]["rps"] / base[kind]["rps"]
        cpu = entry["ours"]["cpu_per_s"]
        print(f"RESULT scale -w {n}: ours {entry['ours']['rps']:.0f} req/s (x{entry['ours']['growth']:.2f}), bare "
              f"{entry['bare']['rps']:.0f} req/s (x{entry['bare']['growth']:.2f}); CPU-s/s web {cpu['web']}, "
              f"worker {cpu['worker']}, redis {cpu['redis']}, postgres {cpu['postgres']} "
              f"(box: {os.cpu_count()} cores)", flush=True)
    result["load_end"] = os.getloadavg()
    save("scale", result)
    return result


if __name__ == "__main__":
    main()
