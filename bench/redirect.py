"""Benchmark 1: the tracking redirect against its ceiling (issue 7.1).

Starts a live PartnerNet (gunicorn with the README's production settings, one worker,
PostgreSQL, Redis) and, with the same gunicorn settings, the bare Flask app of
``bench/bare_app.py``. wrk (``apt-get install -y wrk``) hits 1,000 random tracking paths
over 1,000 links with realistic user agents and random client IPs (X-Forwarded-For, one
trusted proxy hop), alternating (a) bare and (b) PartnerNet rounds in the same run.

Then: drain the buffer and count clicks stored against 302s received; an exact check
with a fixed number of requests from a Python client; and an in-process measurement and
pyinstrument profile of our own work per redirect. Prints figures; writes
bench/results/redirect.json and bench/results/redirect_profile.txt.

    python bench/redirect.py            # PARTNERNET_BENCH_SECONDS=10 per round by default
    python bench/redirect.py --in-process   # only the in-process CPU figures and profile (no wrk,
                                            # no gunicorn): a fresh schema, 1,000 seeded links
    PARTNERNET_BENCH_GUNICORN="-w 4 -k sync" python bench/redirect.py
                                            # other gunicorn worker settings, for both apps
    python bench/redirect.py --one-core     # issue 14: servers, worker and a Redis of its own pinned
                                            # to core 1, wrk to core 0; bare vs ours with
                                            # PARTNERNET_CLICK_ACK=redis and memory, under gunicorn
                                            # and granian, alternated; clicks stored vs 302s per round
                                            # (bench/clickpath.py)
    python bench/redirect.py --two-core-matrix   # the same matrix on both cores, nothing pinned
"""

from __future__ import annotations

import os
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from procs import wait_up  # noqa: E402
from common import (GUNICORN_PRODUCTION_ARGS, HERE, RESULTS_DIR, SECONDS, USER_AGENTS, app_for,  # noqa: E402
                    free_port_bare, machine, new_stack, random_paths, run_wrk, save, seed_catalog)

ROUNDS = int(os.environ.get("PARTNERNET_BENCH_ROUNDS", "2"))
CONNECTIONS = int(os.environ.get("PARTNERNET_BENCH_CONNECTIONS", "32"))
EXACT_REQUESTS = int(os.environ.get("PARTNERNET_BENCH_EXACT", "3000"))
INPROC_CALLS = 1000
INPROC_RUNS = int(os.environ.get("PARTNERNET_BENCH_INPROC_RUNS", "5"))


def use_gunicorn_settings(spec: str | None) -> int | None:
    """Replace the worker settings of :data:`common.GUNICORN_PRODUCTION_ARGS` (in place, so the
    PartnerNet stack and the bare app both get them) with ``spec``, e.g. ``"-w 4 -k sync"``
    (must start with ``-w N``); the log settings stay. Returns N, or None when ``spec`` is
    empty (the README's settings are kept). Raises ValueError for a spec without ``-w N``."""
    if not spec:
        return None
    words = shlex.split(spec)
    if len(words) < 2 or words[0] != "-w" or not words[1].isdigit():
        raise ValueError(f"PARTNERNET_BENCH_GUNICORN must start with -w N: {spec!r}")
    logs = GUNICORN_PRODUCTION_ARGS[GUNICORN_PRODUCTION_ARGS.index("--access-logfile"):]
    GUNICORN_PRODUCTION_ARGS[:] = [*words, *logs]
    return int(words[1])


def start_bare(port: int, log_path: Path) -> subprocess.Popen:
    """gunicorn serving bench/bare_app.py with the production settings on 127.0.0.1:port."""
    log = open(log_path, "ab")  # noqa: SIM115 - lives as long as the process
    return subprocess.Popen([sys.executable, "-m", "gunicorn", *GUNICORN_PRODUCTION_ARGS,
                             "-b", f"127.0.0.1:{port}", "bare_app:app"], cwd=HERE, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **kw):
        return None


def exact_count(base_url: str, paths: list[str], n: int, threads: int = 8, ordered: bool = False,
                close: bool = False) -> dict:
    """Send exactly ``n`` requests (``threads`` at a time) and count the answers by status:
    random ``paths``, or with ``ordered`` each of them in turn; ``close``: a new connection per
    request (``Connection: close``)."""
    import http.client
    import random

    counts: dict[int, int] = {}
    lock = threading.Lock()
    host, port = base_url.split("//")[1].split(":")
    per = [n // threads + (1 if i < n % threads else 0) for i in range(threads)]

    def run(k: int, seed: int) -> None:
        rnd = random.Random(seed)
        mine = iter(paths[seed::threads])
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        local: dict[int, int] = {}
        for _ in range(k):
            path = next(mine) if ordered else rnd.choice(paths)
            headers = {"User-Agent": rnd.choice(USER_AGENTS),
                       "X-Forwarded-For": f"10.{rnd.randint(0, 255)}.{rnd.randint(0, 255)}.{rnd.randint(1, 254)}"}
            if close:
                headers["Connection"] = "close"
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            resp.read()
            local[resp.status] = local.get(resp.status, 0) + 1
        conn.close()
        with lock:
            for s, c in local.items():
                counts[s] = counts.get(s, 0) + c

    ts = [threading.Thread(target=run, args=(k, i)) for i, k in enumerate(per)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return counts


def warm_paths(paths: list[str], repeats: int) -> list[str]:
    """``paths`` ``repeats`` times, each copy rotated by one: sent in order over several keep-alive
    connections (connection i takes every n-th request), a plain repetition would send each path
    over the same connection every time, so to the same server process only."""
    return [p for k in range(repeats) for p in paths[k:] + paths[:k]]


def warm_up(base_url: str, paths: list[str], repeats: int, threads: int = 8) -> dict:
    """Click every path ``repeats`` times, each request on a new connection (so spread over the
    server's processes), each path over different client threads (:func:`warm_paths`): every
    process of the server then has (almost surely) every link's state cached. Returns the answers
    by status."""
    return exact_count(base_url, warm_paths(paths, repeats), len(paths) * repeats, threads=threads,
                       ordered=True, close=True)


def in_process(stack, paths: list[str]) -> dict:
    """Time our own work per redirect in this process (no HTTP server, no network to the
    client): the hot path alone (``handle_click`` inside an already pushed request context),
    the whole Flask request, and the bare app's Flask request, each the best of
    INPROC_RUNS runs of INPROC_CALLS calls; then a pyinstrument profile of the whole
    request. Seconds -> milliseconds per call."""
    import random

    import bare_app

    app = app_for(stack, PARTNERNET_PROXY_HOPS=1)
    client = app.test_client()
    bare = bare_app.app.test_client()
    rnd = random.Random(3)

    def hdrs():
        return {"User-Agent": rnd.choice(USER_AGENTS),
                "X-Forwarded-For": f"10.{rnd.randint(0, 255)}.{rnd.randint(0, 255)}.{rnd.randint(1, 254)}"}

    for p in paths:  # warm the token and state caches like a running worker
        client.get(p, headers=hdrs())

    def timed(fn) -> tuple[float, float]:
        """(wall ms, CPU ms of this process) per call, over INPROC_CALLS calls."""
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(INPROC_CALLS):
            fn()
        return ((time.perf_counter() - t0) / INPROC_CALLS * 1000, (time.process_time() - c0) / INPROC_CALLS * 1000)

    from partnernet.tracking import hotpath

    tokens = [p.split("/c/")[1].split("?")[0] for p in paths]

    def hot():
        hotpath.handle_click(rnd.choice(tokens), method="GET", user_agent=rnd.choice(USER_AGENTS),
                             ip=f"10.0.{rnd.randint(0, 255)}.{rnd.randint(1, 254)}", referer=None,
                             cookie=None, args={"sub1": "story1"}, unavailable_url="/offer-unavailable")

    def best(fn, context: bool = False) -> tuple[float, float]:
        """Best of INPROC_RUNS timed runs; ``context``: inside one request context per run (the
        hot path alone, without building a request)."""
        runs = []
        for _ in range(INPROC_RUNS):
            if context:
                with app.test_request_context(paths[0]):
                    runs.append(timed(fn))
            else:
                runs.append(timed(fn))
        return min(r[0] for r in runs), min(r[1] for r in runs)

    out = {}
    for name, fn in (("hotpath", hot),
                     ("flask_request", lambda: client.get(rnd.choice(paths), headers=hdrs())),
                     ("bare_flask_request", lambda: bare.get(rnd.choice(paths), headers=hdrs()))):
        out[f"{name}_ms"], out[f"{name}_cpu_ms"] = best(fn, context=name == "hotpath")
    # Our own work: what PartnerNet's request costs above the bare app's identical 302.
    out["own_work_ms"] = out["flask_request_ms"] - out["bare_flask_request_ms"]
    out["own_work_cpu_ms"] = out["flask_request_cpu_ms"] - out["bare_flask_request_cpu_ms"]
    try:
        from pyinstrument import Profiler
    except ImportError:
        out["profile"] = "pyinstrument not installed (pip install -e '.[bench]')"
        return out
    prof = Profiler(interval=0.0001)
    prof.start()
    for _ in range(INPROC_CALLS):
        client.get(rnd.choice(paths), headers=hdrs())
    prof.stop()
    text = prof.output_text(unicode=False, color=False, show_all=False)
    (RESULTS_DIR / "redirect_profile.txt").write_text(text)
    out["profile"] = str(RESULTS_DIR / "redirect_profile.txt")
    return out


def main() -> dict:
    workers = use_gunicorn_settings(os.environ.get("PARTNERNET_BENCH_GUNICORN"))
    stack = new_stack(**({"web_workers": workers} if workers else {}))
    bare_port = free_port_bare()
    bare_url = f"http://127.0.0.1:{bare_port}"
    bare_proc = None
    result: dict = {"machine": machine(), "gunicorn": " ".join(GUNICORN_PRODUCTION_ARGS), "rounds": []}
    stack.start()
    try:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        bare_proc = start_bare(bare_port, stack.log_dir / "bare.log")
        wait_up(bare_url + "/healthz")
        seeded = seed_catalog(app_for(stack), links=1000, partners=100)
        paths = random_paths(seeded["tokens"], 1000)
        print(f"stack {stack.base_url}  bare {bare_url}  logs {stack.log_dir}", flush=True)

        # Warm-up: every web process caches each link's state on its first click of that link
        # (one database read, then again after MAX_ENTRY_AGE_S); a running site is warm, so
        # request every path often enough that each of the gunicorn processes has seen it.
        t0 = time.monotonic()
        warm = warm_up(stack.base_url, paths, 12)
        sent_302 = warm.get(302, 0)
        result["warmup"] = {"requests": len(paths) * 12, "seconds": time.monotonic() - t0}
        run_wrk(bare_url, paths, seconds=3, connections=CONNECTIONS)
        w = run_wrk(stack.base_url, paths, seconds=3, connections=CONNECTIONS)
        sent_302 += w["requests"] - w["non2xx3xx"]
        for i in range(ROUNDS):
            a = run_wrk(bare_url, paths, seconds=SECONDS, connections=CONNECTIONS)
            b = run_wrk(stack.base_url, paths, seconds=SECONDS, connections=CONNECTIONS)
            sent_302 += b["requests"] - b["non2xx3xx"]
            result["rounds"].append({"bare": a, "partnernet": b})
            print(f"round {i + 1}: bare {a['rps']:.0f} req/s p50 {a['p50_ms']:.2f} ms p99 {a['p99_ms']:.2f} ms | "
                  f"partnernet {b['rps']:.0f} req/s p50 {b['p50_ms']:.2f} ms p99 {b['p99_ms']:.2f} ms "
                  f"(non-3xx {b['non2xx3xx']}, errors r{b['read']}/w{b['write']}/t{b['timeout']})", flush=True)

        bare_rps = statistics.median(r["bare"]["rps"] for r in result["rounds"])
        pn_rps = statistics.median(r["partnernet"]["rps"] for r in result["rounds"])
        result["bare_rps"], result["partnernet_rps"] = bare_rps, pn_rps
        result["ratio"] = pn_rps / bare_rps
        result["bare_p50_ms"] = statistics.median(r["bare"]["p50_ms"] for r in result["rounds"])
        result["bare_p99_ms"] = statistics.median(r["bare"]["p99_ms"] for r in result["rounds"])
        result["partnernet_p50_ms"] = statistics.median(r["partnernet"]["p50_ms"] for r in result["rounds"])
        result["partnernet_p99_ms"] = statistics.median(r["partnernet"]["p99_ms"] for r in result["rounds"])

        t0 = time.monotonic()
        d = stack.drain(timeout=600)
        result["drain_s"] = time.monotonic() - t0
        stored = stack.sql("SELECT count(*) FROM clicks")[0][0]
        result["wrk_302_received"] = sent_302
        result["clicks_stored_after_wrk"] = stored
        # wrk stops with up to one request in flight per connection: the server answers and
        # records those after wrk stopped listening, so stored may exceed received by <= connections
        # per wrk run. Fewer stored than received would be a lost click.
        result["wrk_inflight_bound"] = CONNECTIONS * (ROUNDS + 1)
        print(f"drain rc={d.returncode} in {result['drain_s']:.1f}s: clicks stored {stored}, "
              f"302s received by wrk {sent_302} (stored - received = {stored - sent_302}; "
              f"allowed in-flight <= {result['wrk_inflight_bound']})", flush=True)

        before = stored
        counts = exact_count(stack.base_url, paths, EXACT_REQUESTS)
        d = stack.drain(timeout=600)
        after = stack.sql("SELECT count(*) FROM clicks")[0][0]
        result["exact"] = {"requests": EXACT_REQUESTS, "answers": counts, "clicks_added": after - before,
                           "lost": counts.get(302, 0) - (after - before)}
        dead = stack.sql("SELECT count(*) FROM clicks GROUP BY click_id HAVING count(*) > 1")
        result["exact"]["duplicate_click_ids"] = len(dead)
        print(f"exact check: {EXACT_REQUESTS} requests -> {counts}; clicks added {after - before}; "
              f"lost {result['exact']['lost']}", flush=True)

        result["in_process"] = in_process(stack, paths)
        ip = result["in_process"]
        print(f"in-process per redirect (best of {INPROC_RUNS} x {INPROC_CALLS}; wall / CPU): hot path "
              f"{ip['hotpath_ms']:.3f} / {ip['hotpath_cpu_ms']:.3f} ms, Flask request {ip['flask_request_ms']:.3f} / "
              f"{ip['flask_request_cpu_ms']:.3f} ms, bare Flask request {ip['bare_flask_request_ms']:.3f} / "
              f"{ip['bare_flask_request_cpu_ms']:.3f} ms, own work {ip['own_work_ms']:.3f} / "
              f"{ip['own_work_cpu_ms']:.3f} ms; profile: {ip['profile']}", flush=True)
        stack.drain(timeout=600)
    finally:
        if bare_proc is not None and bare_proc.poll() is None:
            os.killpg(bare_proc.pid, signal.SIGTERM)
            try:
                bare_proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(bare_proc.pid, signal.SIGKILL)
        stack.stop()
    print(f"RESULT redirect: bare {result['bare_rps']:.0f} req/s, partnernet {result['partnernet_rps']:.0f} req/s "
          f"= {100 * result['ratio']:.0f}% of the ceiling (target >= 70%); own work "
          f"{result['in_process']['own_work_ms']:.3f} ms wall, {result['in_process']['own_work_cpu_ms']:.3f} ms CPU "
          f"(target < 0.5 ms)", flush=True)
    save("redirect", result)
    return result


def main_in_process() -> dict:
    """Only the in-process figures (:func:`in_process`) on a freshly seeded bench database:
    no gunicorn, no worker, no wrk. Quick to repeat while changing the hot path."""
    stack = new_stack()
    stack.reset()
    stack.create_schema()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    seeded = seed_catalog(app_for(stack), links=1000, partners=100)
    paths = random_paths(seeded["tokens"], 1000)
    ip = in_process(stack, paths)
    print(f"RESULT redirect in-process (best of {INPROC_RUNS} x {INPROC_CALLS}; wall / CPU ms): hot path "
          f"{ip['hotpath_ms']:.3f} / {ip['hotpath_cpu_ms']:.3f}, Flask request {ip['flask_request_ms']:.3f} / "
          f"{ip['flask_request_cpu_ms']:.3f}, bare Flask request {ip['bare_flask_request_ms']:.3f} / "
          f"{ip['bare_flask_request_cpu_ms']:.3f}, own work {ip['own_work_ms']:.3f} / {ip['own_work_cpu_ms']:.3f}; "
          f"profile: {ip['profile']}", flush=True)
    save("redirect_in_process", {"machine": machine(), "in_process": ip})
    return ip


if __name__ == "__main__":
    if "--in-process" in sys.argv[1:]:
        main_in_process()
    elif "--one-core" in sys.argv[1:] or "--two-core-matrix" in sys.argv[1:]:
        import clickpath

        clickpath.main(one_core="--one-core" in sys.argv[1:])
    else:
        main()
