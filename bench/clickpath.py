"""The click path against bare Flask, both acknowledgement modes, gunicorn and granian, in one
alternated run (issue 14; ``python bench/redirect.py --one-core`` or ``--two-core-matrix``).

One PartnerNet database and worker (the click writer), one Redis; one web server per
configuration, all started at once and warmed, then measured in turn, round after round:

- ``bare/<server>``: bench/bare_app.py (the same 302, no tracking);
- ``ours-<ack>/<server>``: PartnerNet ``/c/<token>`` (served by ``tracking/lean.py`` on cached
  state) with ``PARTNERNET_CLICK_ACK=<ack>`` (``redis``: answer once the batch is in Redis;
  ``memory``: answer at once, a thread sends).

Before each PartnerNet round its server is warmed again (every path clicked 6 times: a process
reloads a link's state after 60 s, ``linkstate.MAX_ENTRY_AGE_S``, and a server waits longer than
that between its rounds). After each PartnerNet round the writer is waited for (the stream empty), and the clicks stored
during the round are counted against the 302s wrk received (wrk stops with up to one request
per connection in flight, which the server still answers and records: stored - received is
expected in 0..connections). CPU seconds of the web server, the worker, Redis and the machine's
PostgreSQL processes are read from /proc around each round.

``--one-core``: web servers, the worker and a redis-server of the benchmark's own
(``appendonly yes``, ``appendfsync everysec``) pinned to core 1 with ``taskset``, wrk to core 0;
PostgreSQL is the machine's and cannot be pinned (it runs on either core). Servers: 2 processes
x 4 threads. Without it: nothing pinned, the shared Redis (``PARTNERNET_BENCH_REDIS_URL``), the
README's 2 x cores processes x 4 threads.

Settings: ``PARTNERNET_BENCH_SECONDS`` (per round, 10), ``PARTNERNET_BENCH_ROUNDS`` (2),
``PARTNERNET_BENCH_SERVERS`` (``gunicorn,granian``), ``PARTNERNET_BENCH_ACKS`` (``redis,memory``).
Prints figures, asserts nothing; writes bench/results/<name>.json.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procs  # noqa: E402
from common import (CORES, HERE, PG_URL, REDIS_URL, ROOT, SECONDS, BenchStack, app_for,  # noqa: E402
                    ensure_database, free_port_bare, machine, random_paths, run_wrk, save, seed_catalog)

ROUNDS = int(os.environ.get("PARTNERNET_BENCH_ROUNDS", "2"))
CONNECTIONS = int(os.environ.get("PARTNERNET_BENCH_CONNECTIONS", "32"))
SERVERS = [s for s in os.environ.get("PARTNERNET_BENCH_SERVERS", "gunicorn,granian").split(",") if s]
ACKS = [a for a in os.environ.get("PARTNERNET_BENCH_ACKS", "redis,memory").split(",") if a]
WARM_REPEATS = 6
STREAM_KEY = "partnernet:{clicks}:stream"


class Server:
    """One web server of the run: ``name`` (e.g. ``ours-redis/gunicorn``), its process and URL."""

    def __init__(self, name: str, kind: str, server: str, ack: str | None, port: int):
        self.name, self.kind, self.server, self.ack, self.port = name, kind, server, ack, port
        self.url = f"http://127.0.0.1:{port}"
        self.proc = None
        self.rounds: list[dict] = []

    def start(self, stack: BenchStack, core: int | None, workers: int, threads: int) -> None:
        target, cwd = ("bare_app:app", HERE) if self.kind == "bare" else ("wsgi:app", ROOT)
        if self.server == "gunicorn":
            argv = procs.gunicorn_cmd(target, self.port, workers, threads)
        else:
            argv = procs.granian_cmd(target, self.port, workers, threads, cwd)
        env = dict(os.environ) if self.kind == "bare" else dict(stack.env(), PARTNERNET_CLICK_ACK=self.ack)
        log = stack.log_dir / (self.name.replace("/", "-") + ".log")
        self.proc = procs.spawn([*procs.pin(core), *argv], cwd=cwd, env=env, log_path=log)


def warm(s: Server, paths: list[str]) -> int:
    """Click every path WARM_REPEATS times on server ``s`` (each of its processes then has every
    link's state cached); returns the 302s (clicks the writer will store)."""
    from redirect import warm_up

    counts = warm_up(s.url, paths, WARM_REPEATS)
    if set(counts) != {302}:
        print(f"WARNING warm-up of {s.name}: answers {counts}", flush=True)
    return counts.get(302, 0)


def ensure_worker(stack: BenchStack, core: int | None) -> None:
    """Start the worker again when it is gone (on a shared machine another user's clean-up may
    stop it); logged, and counted in the results as ``worker_restarts``."""
    if stack.worker_alive():
        return
    print(f"WARNING the worker exited ({stack._procs['worker'].poll()}); starting it again", flush=True)
    RESTARTS.append(time.strftime("%H:%M:%S"))
    stack._spawn("worker", [*procs.pin(core), sys.executable, "-m", "flask", "--app", "wsgi", "worker"])


RESTARTS: list[str] = []


def wait_written(r, timeout: float = 300, stack: BenchStack | None = None, core: int | None = None) -> float:
    """Seconds until the click stream is empty (every entry written and committed: the writer
    deletes an entry only after its commit), seen twice 100 ms apart."""
    t0 = time.monotonic()
    time.sleep(0.3)  # wrk's last in-flight requests, and memory mode's last send
    zeros = 0
    while time.monotonic() - t0 < timeout:
        if stack is not None:
            ensure_worker(stack, core)
        zeros = zeros + 1 if r.xlen(STREAM_KEY) == 0 else 0
        if zeros >= 2:
            return time.monotonic() - t0
        time.sleep(0.1)
    raise RuntimeError(f"the click stream was not empty after {timeout}s")


def cpu_snapshot(server: Server, worker_pid: int, redis_pids: list[int]) -> dict:
    return {"web": procs.cpu_seconds(procs.tree(server.proc.pid)), "worker": procs.cpu_seconds([worker_pid]),
            "redis": procs.cpu_seconds(redis_pids), "postgres": procs.cpu_seconds(procs.pids_named("postgres"))}


def summarise(servers: list[Server]) -> dict:
    out = {}
    bare = {s.server: s for s in servers if s.kind == "bare"}
    for s in servers:
        rps = statistics.median(r["rps"] for r in s.rounds)
        row = {"rps": rps, "p50_ms": statistics.median(r["p50_ms"] for r in s.rounds),
               "p99_ms": statistics.median(r["p99_ms"] for r in s.rounds),
               "rps_rounds": [round(r["rps"]) for r in s.rounds],
               "errors": sum(r["non2xx3xx"] + r["read"] + r["write"] + r["timeout"] + r["connect"]
                             for r in s.rounds)}
        if s.kind == "ours":
            row["ratio_to_bare"] = rps / statistics.median(r["rps"] for r in bare[s.server].rounds)
            row["received_302"] = sum(r["received_302"] for r in s.rounds)
            row["stored"] = sum(r["stored"] for r in s.rounds)
            row["stored_minus_received"] = [r["stored"] - r["received_302"] for r in s.rounds]
            row["writer_lag_s"] = [round(r["writer_lag_s"], 2) for r in s.rounds]
        n = sum(r["requests"] for r in s.rounds)
        row["cpu_ms_per_request"] = {k: 1000 * sum(r["cpu"][k] for r in s.rounds) / n
                                     for k in ("web", "worker", "redis", "postgres")}
        out[s.name] = row
    return out


def main(one_core: bool) -> dict:
    """Run every configuration, alternated; print and save the figures (see the module notes)."""
    name = "redirect_one_core" if one_core else "redirect_two_core_matrix"
    web_core, wrk_prefix = (1, procs.pin(0)) if one_core else (None, [])
    workers, threads = (2, 4) if one_core else (2 * CORES, 4)
    print(f"load average at start: {os.getloadavg()}", flush=True)
    result: dict = {"machine": machine(), "one_core": one_core, "workers": workers, "threads": threads,
                    "connections": CONNECTIONS, "seconds": SECONDS, "rounds": ROUNDS}
    stack = BenchStack(ensure_database(PG_URL), REDIS_URL, proxy_hops=1, web_workers=workers)
    redis_proc = None
    servers: list[Server] = []
    try:
        if one_core:
            rport = free_port_bare()
            redis_proc = procs.start_redis(rport, web_core, stack.log_dir)
            stack.redis_url = f"redis://127.0.0.1:{rport}/0"
            redis_pids = [redis_proc.pid]
        else:
            redis_pids = procs.pids_named("redis-server")  # the shared one: others' load included
        import redis

        r = redis.Redis.from_url(stack.redis_url)
        stack.reset()
        stack.create_schema()
        seeded = seed_catalog(app_for(stack), links=1000, partners=100)
        paths = random_paths(seeded["tokens"], 1000)
        stack._spawn("worker", [*procs.pin(web_core), sys.executable, "-m", "flask", "--app", "wsgi", "worker"])
        for srv in SERVERS:
            servers.append(Server(f"bare/{srv}", "bare", srv, None, free_port_bare()))
            for ack in ACKS:
                servers.append(Server(f"ours-{ack}/{srv}", "ours", srv, ack, free_port_bare()))
        for s in servers:
            s.start(stack, web_core, workers, threads)
        for s in servers:
            procs.wait_up(s.url + "/healthz")
        print(f"servers up: {', '.join(s.name + ' ' + s.url for s in servers)}; logs {stack.log_dir}", flush=True)

        for s in servers:  # every process caches a link's state on its first click of it
            if s.kind == "ours":
                warm(s, paths)
            run_wrk(s.url, paths, seconds=3, connections=CONNECTIONS, prefix=wrk_prefix)
        wait_written(r, stack=stack, core=web_core)
        stored = stack.sql("SELECT count(*) FROM clicks")[0][0]
        worker_pid = stack._procs["worker"].pid
        print(f"warm: {stored} clicks stored; load average {os.getloadavg()}", flush=True)

        for i in range(ROUNDS):
            for s in servers:
                if s.kind == "ours":
                    # A process reloads a link's state after MAX_ENTRY_AGE_S (60 s) even when nothing
                    # changed; the other servers' rounds take longer than that, so warm it again.
                    warm(s, paths)
                    wait_written(r, stack=stack, core=web_core)
                    stored = stack.sql("SELECT count(*) FROM clicks")[0][0]
                worker_pid = stack._procs["worker"].pid
                c0 = cpu_snapshot(s, worker_pid, redis_pids)
                w = run_wrk(s.url, paths, seconds=SECONDS, connections=CONNECTIONS, prefix=wrk_prefix)
                line = (f"round {i + 1} {s.name:22s} {w['rps']:7.0f} req/s  p50 {w['p50_ms']:6.2f} ms  "
                        f"p99 {w['p99_ms']:6.2f} ms  non-3xx {w['non2xx3xx']} errors "
                        f"c{w['connect']}/r{w['read']}/w{w['write']}/t{w['timeout']}")
                if s.kind == "ours":
                    w["writer_lag_s"] = wait_written(r, stack=stack, core=web_core)
                    now = stack.sql("SELECT count(*) FROM clicks")[0][0]
                    w["stored"], stored = now - stored, now
                    w["received_302"] = w["requests"] - w["non2xx3xx"]
                    line += (f"  | 302s {w['received_302']} stored {w['stored']} "
                             f"(+{w['stored'] - w['received_302']}), writer done {w['writer_lag_s']:.1f}s after")
                c1 = cpu_snapshot(s, worker_pid, redis_pids)
                w["cpu"] = {k: c1[k] - c0[k] for k in c0}
                s.rounds.append(w)
                print(line, flush=True)
        result["rss_mb"] = {s.name: procs.worker_rss(s.proc.pid) for s in servers}
        result["summary"] = summarise(servers)
        result["rounds_raw"] = {s.name: s.rounds for s in servers}
        result["load_end"] = os.getloadavg()
        result["worker_restarts"] = RESTARTS
        dead = stack.sql("SELECT count(*) FROM (SELECT click_id FROM clicks GROUP BY click_id "
                         "HAVING count(*) > 1) d")[0][0]
        result["duplicate_click_ids"] = dead
    finally:
        for s in servers:
            procs.stop(s.proc)
        stack.stop()
        procs.stop(redis_proc)
    print(f"== summary ({'one core: servers, worker, Redis on core 1, wrk on core 0' if one_core else 'two cores'};"
          f" {workers} x {threads} threads; median of {ROUNDS} rounds of {SECONDS:.0f} s; "
          f"duplicate click ids {result['duplicate_click_ids']})")
    for nm, row in result["summary"].items():
        cpu = row["cpu_ms_per_request"]
        extra = ""
        if "ratio_to_bare" in row:
            extra = (f" = {row['ratio_to_bare']:.2f}x bare; 302s {row['received_302']} stored {row['stored']} "
                     f"(per round +{row['stored_minus_received']}); writer lag {row['writer_lag_s']} s")
        print(f"RESULT {name} {nm}: {row['rps']:.0f} req/s {row['rps_rounds']}, p50 {row['p50_ms']:.2f} ms, "
              f"p99 {row['p99_ms']:.2f} ms, errors {row['errors']}{extra}; CPU ms/request web "
              f"{cpu['web']:.3f} worker {cpu['worker']:.3f} redis {cpu['redis']:.3f} postgres {cpu['postgres']:.3f}; "
              f"RSS MB {result['rss_mb'][nm]}", flush=True)
    save(name, result)
    return result
