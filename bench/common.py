"""Shared pieces of the benchmarks: where they run, the catalog they seed, wrk, machine facts.

Settings (environment):

- ``PARTNERNET_BENCH_PG_URL``: the PostgreSQL database the benchmarks DROP and recreate
  (``public`` schema), created when missing. Default ``postgresql://127.0.0.1/test_perf_bench``.
- ``PARTNERNET_BENCH_REDIS_URL``: the Redis db they FLUSH. Default ``redis://127.0.0.1:6379/11``.
- ``PARTNERNET_BENCH_SECONDS``: seconds per measured wrk round (default 10).

wrk must be installed (``apt-get install -y wrk``). Every figure is printed, never asserted.
"""

from __future__ import annotations

import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from live import LiveStack, StackError  # noqa: E402

PG_URL = os.environ.get("PARTNERNET_BENCH_PG_URL", "postgresql://127.0.0.1/test_perf_bench")
REDIS_URL = os.environ.get("PARTNERNET_BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")
SECONDS = float(os.environ.get("PARTNERNET_BENCH_SECONDS", "10"))
RESULTS_DIR = HERE / "results"

# The production web settings documented in the README (Production): on this 2-core box,
# 2 x cores = 4 processes of 4 threads; no access log (the reverse proxy keeps one).
CORES = os.cpu_count() or 1
GUNICORN_PRODUCTION_ARGS = ["-w", str(2 * CORES), "-k", "gthread", "--threads", "4",
                            "--access-logfile", "/dev/null", "--error-logfile", "-"]

USER_AGENTS = [
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
    "Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
    "Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Mobile/15E148 Instagram 330.0.0.40.92 (iPhone15,2; iOS 17_4; en_US; en; scale=3.00; 1179x2556)",
    "Mozilla/5.0 (Linux; Android 13; SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.0.0 "
    "Mobile Safari/537.36 [FB_IAB/FB4A;FBAV/455.0.0.40.108;]",
    "Mozilla/5.0 (Linux; Android 12; moto g(60)) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/122.0.0.0 Mobile Safari/537.36 musical_ly_2023405030",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (iPad; CPU OS 16_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/16.6 Mobile/15E148 Safari/604.1",
]


def ensure_database(url: str) -> str:
    """Create the PostgreSQL database named by ``url`` when missing; returns ``url``."""
    import psycopg

    base, name = url.rsplit("/", 1)
    with psycopg.connect(base + "/postgres", autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{name}"')
    return url


class BenchStack(LiveStack):
    """A :class:`LiveStack` whose gunicorn runs with the production settings (no access log)."""

    def start_web(self) -> None:
        """gunicorn with :data:`GUNICORN_PRODUCTION_ARGS` (``-w web_workers``) on 127.0.0.1:port."""
        args = list(GUNICORN_PRODUCTION_ARGS)
        args[1] = str(self.web_workers)
        self._spawn("gunicorn", [sys.executable, "-m", "gunicorn", *args,
                                 "-b", f"127.0.0.1:{self.port}", *self.gunicorn_args, "wsgi:app"])

    def create_schema(self) -> str:
        """``db.create_all()`` from the models (the benchmarks measure the current models, which
        may be ahead of the migrations while features land)."""
        res = self.python(
            "from partnernet import create_app\n"
            "from partnernet.extensions import db\n"
            "app = create_app()\n"
            "with app.app_context():\n"
            "    db.create_all()\n"
        )
        if not res.ok:
            raise StackError("create_all failed:\n" + res.stderr[-3000:])
        self.schema_method = "create_all"
        return self.schema_method


def new_stack(**kw) -> BenchStack:
    """A :class:`BenchStack` on the bench database and Redis db (not started)."""
    kw.setdefault("proxy_hops", 1)
    kw.setdefault("web_workers", 2 * CORES)
    return BenchStack(ensure_database(PG_URL), REDIS_URL, **kw)


def app_for(stack: LiveStack, **config):
    """A PartnerNet app in this process on the stack's database and Redis (for seeding and
    in-process measurements)."""
    from partnernet import create_app

    url = stack.database_url.replace("postgresql://", "postgresql+psycopg://", 1)
    return create_app({"SQLALCHEMY_DATABASE_URI": url, "REDIS_URL": stack.redis_url,
                       "SECRET_KEY": stack.secret_key, **config})


def seed_catalog(app, *, links: int = 1000, partners: int = 100, campaigns: int = 4,
                 click_fee_minor: int | None = None) -> dict:
    """Create one client (USD), ``campaigns`` active campaigns (a ``sale`` event paying a
    10.00 fee, 50% to the partner; plus a ``click`` event of ``click_fee_minor`` when given),
    ``partners`` approved partners and ``links`` links spread over them.

    Returns ``{"client_id", "postback_key", "campaign_ids", "partner_ids", "link_ids", "tokens"}``."""
    from decimal import Decimal

    from partnernet.extensions import db
    from partnernet.models import Campaign, CampaignEvent, Client, Link, Partner

    with app.app_context():
        client = Client(name="Bench Client", currency="USD", website_url="https://shop.example/",
                        postback_key="pk_bench", postback_secret="bench-secret", require_signature=False)
        db.session.add(client)
        db.session.flush()
        camps = []
        for i in range(campaigns):
            camp = Campaign(client_id=client.id, name=f"Bench campaign {i}", currency="USD",
                            destination_url="https://shop.example/landing?utm_source=pn",
                            fallback_url="https://shop.example/", click_param="click_id", deep_link_hosts=[],
                            attribution_window_days=30, hold_days=30, attribution_model="last_click",
                            budget_minor=None, status="active", default_event="sale")
            camp.events.append(CampaignEvent(key="sale", label="sale", client_fee_minor=1000,
                                             payout_percent=Decimal("50")))
            if click_fee_minor is not None:
                camp.events.append(CampaignEvent(key="click", label="click", client_fee_minor=click_fee_minor,
                                                 payout_percent=Decimal("50")))
            db.session.add(camp)
            camps.append(camp)
        db.session.flush()
        parts = [Partner(email=f"bench{i}@example.com", name=f"Bench partner {i}", kind="affiliate",
                         status="approved") for i in range(partners)]
        db.session.add_all(parts)
        db.session.flush()
        link_rows = [Link(partner_id=parts[i % partners].id, campaign_id=camps[i % campaigns].id,
                          channel="affiliate") for i in range(links)]
        db.session.add_all(link_rows)
        db.session.commit()
        signer = app.extensions["partnernet_link_signer"]
        out = {
            "client_id": client.id,
            "postback_key": client.postback_key,
            "campaign_ids": [c.id for c in camps],
            "partner_ids": [p.id for p in parts],
            "link_ids": [lk.id for lk in link_rows],
            "tokens": [signer.dumps(lk.id) for lk in link_rows],
        }
        db.session.remove()
    return out


WRK_LUA = r"""
-- Generated by bench/common.py: random paths from PATHS_FILE, random realistic user agents.
local paths, agents = {}, {}
for line in io.lines(os.getenv("PATHS_FILE")) do paths[#paths + 1] = line end
for line in io.lines(os.getenv("AGENTS_FILE")) do agents[#agents + 1] = line end
local counter = 0
function setup(thread) counter = counter + 1; thread:set("id", counter) end
function init(args) math.randomseed(os.time() * 1000 + id) end
function request()
  local p = paths[math.random(#paths)]
  local ip = string.format("10.%d.%d.%d", math.random(0, 255), math.random(0, 255), math.random(1, 254))
  return wrk.format("GET", p, {["User-Agent"] = agents[math.random(#agents)], ["X-Forwarded-For"] = ip})
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "non2xx3xx": %d, "connect": %d, "read": %d, '
    .. '"write": %d, "timeout": %d, "status": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean))
end
"""


def run_wrk(base_url: str, paths: list[str], *, seconds: float = SECONDS, connections: int = 32,
            threads: int = 1, workdir: Path | None = None, prefix: list[str] | None = None) -> dict:
    """Run wrk for ``seconds`` against ``base_url`` picking a random path of ``paths`` and a
    random :data:`USER_AGENTS` entry per request. ``prefix``: words put before ``wrk`` (e.g.
    ``["taskset", "-c", "0"]`` to pin it). Returns the summary dict (requests, rps, p50_ms,
    p90_ms, p99_ms, errors...). Raises RuntimeError when wrk fails."""
    workdir = workdir or RESULTS_DIR
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "paths.txt").write_text("\n".join(paths) + "\n")
    (workdir / "agents.txt").write_text("\n".join(USER_AGENTS) + "\n")
    (workdir / "random_links.lua").write_text(WRK_LUA)
    env = dict(os.environ, PATHS_FILE=str(workdir / "paths.txt"), AGENTS_FILE=str(workdir / "agents.txt"))
    cmd = [*(prefix or []), "wrk", "-t", str(threads), "-c", str(connections), "-d", f"{int(seconds)}s",
           "--timeout", "10s", "-s", str(workdir / "random_links.lua"), base_url]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + 60)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stdout}\n{proc.stderr}")
    s = json.loads(line[len("WRKJSON "):])
    s["rps"] = s["requests"] / (s["duration_us"] / 1e6)
    for k in ("p50", "p90", "p99"):
        s[f"{k}_ms"] = s[f"{k}_us"] / 1000
    s["cmd"] = " ".join(cmd)
    return s


def random_paths(tokens: list[str], n: int = 1000, seed: int = 7) -> list[str]:
    """``n`` tracking paths over ``tokens``, some with sub IDs, as wrk will request them."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        tok = tokens[i % len(tokens)]
        if rnd.random() < 0.5:
            out.append(f"/c/{tok}?sub1=story{rnd.randint(1, 40)}&sub2=ig")
        else:
            out.append(f"/c/{tok}")
    rnd.shuffle(out)
    return out


def machine() -> dict:
    """Facts about this machine and moment (for RESULTS.md)."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_mb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_mb = int(line.split()[1]) // 1024
    except OSError:
        pass
    def _ver(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
        except Exception:  # noqa: BLE001
            return "?"
    return {
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": cpu, "cores": os.cpu_count(), "mem_mb": mem_mb,
        "loadavg": os.getloadavg(),
        "python": platform.python_version(),
        "postgresql": _ver(["psql", "--version"]),
        "redis": _ver(["redis-server", "--version"]),
        "wrk": _ver(["wrk", "-v"]),
    }


def save(name: str, data: dict) -> Path:
    """Write ``data`` as JSON to bench/results/<name>.json (and return the path)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(data, indent=1, default=str))
    return path


def rss_mb(pid: int) -> float:
    """Resident set size of process ``pid`` in MB (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def children_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (gunicorn's workers under its master)."""
    try:
        out = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [int(x) for x in out]


def free_port_bare() -> int:
    """A free TCP port on 127.0.0.1 (for a second server next to the stack)."""
    from live import free_port

    return free_port()


WRK_SEQ_LUA = r"""
-- Generated by bench/common.py: send every path of PATHS_FILE exactly once, in order. Once all
-- are sent, each connection sends fillers (DELETE /healthz, answered 405, not counted); a
-- keep-alive connection is sequential, so when every path is answered, or when 2 x CONNECTIONS
-- fillers have been answered (every connection is past its last path: a request lost to a
-- socket error cannot hang the run), print the answer counts and the wall-clock span and
-- exit (wrk would otherwise idle until -d ends).
local paths = {}
for line in io.lines(os.getenv("PATHS_FILE")) do paths[#paths + 1] = line end
local conns = tonumber(os.getenv("CONNECTIONS"))
local idx, answered, fillers, counts, started = 0, 0, 0, {}, nil
local function now()
  local f = io.popen("date +%s.%N")
  local t = tonumber(f:read("*l"))
  f:close()
  return t
end
local function finish()
  local ended = now()
  local parts = {}
  for s, n in pairs(counts) do parts[#parts + 1] = string.format('"%d": %d', s, n) end
  io.write(string.format('WRKJSON {"requests": %d, "sent": %d, "duration_us": %d, "statuses": {%s}}\n', answered,
                         math.min(idx, #paths), math.floor((ended - started) * 1e6), table.concat(parts, ", ")))
  io.flush()
  os.exit(0)
end
function request()
  if not started then started = now() end
  idx = idx + 1
  if idx <= #paths then return wrk.format("GET", paths[idx]) end
  return wrk.format("DELETE", "/healthz")
end
function response(status, headers, body)
  if status == 405 then
    fillers = fillers + 1
    if fillers >= 2 * conns then finish() end
    return
  end
  answered = answered + 1
  counts[status] = (counts[status] or 0) + 1
  if answered == #paths then finish() end
end
"""


def run_wrk_sequence(base_url: str, paths: list[str], *, connections: int = 32, max_seconds: float = 300,
                     workdir: Path | None = None) -> dict:
    """Send each of ``paths`` exactly once, in order, over ``connections`` keep-alive
    connections (one wrk thread), stopping when the last is answered. Returns requests,
    seconds, rate (answers per second) and ``statuses`` {code: count} of those answers
    (no latency percentiles: wrk exits from the script before its summary). Raises RuntimeError when wrk fails."""
    workdir = workdir or RESULTS_DIR
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "seq_paths.txt").write_text("\n".join(paths) + "\n")
    (workdir / "sequence.lua").write_text(WRK_SEQ_LUA)
    env = dict(os.environ, PATHS_FILE=str(workdir / "seq_paths.txt"), CONNECTIONS=str(connections))
    cmd = ["wrk", "-t", "1", "-c", str(connections), "-d", f"{int(max_seconds)}s", "--timeout", "30s",
           "-s", str(workdir / "sequence.lua"), base_url]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=max_seconds + 60)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stdout}\n{proc.stderr}")
    s = json.loads(line[len("WRKJSON "):])
    s["statuses"] = {int(k): v for k, v in s["statuses"].items()}
    s["seconds"] = s["duration_us"] / 1e6
    s["answered"] = sum(s["statuses"].values())
    s["unanswered"] = len(paths) - s["answered"]  # lost to socket errors or timeouts on wrk's side
    s["rate"] = s["answered"] / s["seconds"] if s["seconds"] else 0.0
    s["cmd"] = " ".join(cmd)
    return s


def click_ids(app, link_ids: list[int], n: int, seed: int = 11) -> list[tuple[int, str]]:
    """``n`` fresh signed click IDs (made now) over random links: [(link_id, click_id)]."""
    rnd = random.Random(seed)
    signer = app.extensions["partnernet_click_signer"]
    now = int(time.time())
    out = []
    for _ in range(n):
        lid = rnd.choice(link_ids)
        out.append((lid, signer.make(lid, now)))
    return out


def insert_clicks(stack: LiveStack, clicks: list[tuple[int, str]]) -> None:
    """Write click rows for ``clicks`` [(link_id, click_id)] with COPY (as the buffer flush
    would have), so postbacks and splits find their click like in production."""
    import datetime as dt

    import psycopg

    with psycopg.connect(stack.database_url) as conn:
        links = dict(((lid, (cid, pid)) for lid, cid, pid in
                      conn.execute("SELECT id, campaign_id, partner_id FROM links").fetchall()))
        now = dt.datetime.now(dt.UTC)
        with conn.cursor().copy("COPY clicks (click_id, link_id, campaign_id, partner_id, created_at, visitor, "
                                "method, is_bot, is_unique) FROM STDIN") as cp:
            for i, (lid, click_id) in enumerate(clicks):
                camp, partner = links[lid]
                cp.write_row((click_id, lid, camp, partner, now, f"v{i:020d}", "GET", False, True))
        conn.commit()
