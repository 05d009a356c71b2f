#!/usr/bin/env python3
"""End-to-end replay of a generated day of traffic against a live PartnerNet.

The data directory holds ``scenario.json``, ``traffic.jsonl`` and ``expected.json``
as written by ``make_traffic.py`` (see its README). The driver

1. creates the staff users (CLI) and the scenario (JSON API, CONTRACT §5),
2. replays every event in ``seq`` order over HTTP, one request at a time: clicks
   (``GET``/``HEAD /c/<token>``, one cookie jar per visitor, ``X-Forwarded-For``,
   no redirects followed), postbacks (CONTRACT §3, key or HMAC auth), and staff
   actions (after a ``flask drain``),
3. drains, reads the results back (earnings, conversions, campaigns, reports,
   plus the click rows and postback log straight from the database), runs
   ``flask ledger verify``, and compares every figure with ``expected.json``, once the
   CONTRACT v2 rules that the generator predates are applied to it
   (:mod:`partner_suspended_rule`: a conversion posted after its partner's suspension is
   rejected ``partner_suspended``, click made before it or not).

Two ways to run it::

    # start a fresh stack itself (DROPS the schema of the database, FLUSHES the Redis db)
    python bench/replay.py --data ../shared/data/replay-1 --start \\
        --database-url postgresql://127.0.0.1/test_replay --redis-url redis://127.0.0.1:6379/5

    # against a server already running with that database and Redis, scenario not yet created
    python bench/replay.py --data DIR --base-url http://127.0.0.1:8000 \\
        --api-key-alice K --api-key-bob K --database-url ... --redis-url ... --secret-key ...

It prints each figure as expected vs got and ends with ``replay: N checks, M mismatches``;
the exit status is 0 only when M is 0.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import signal
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from http.cookiejar import DefaultCookiePolicy
from pathlib import Path
import re
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
import live  # noqa: E402
from partner_suspended_rule import apply_partner_suspended_rule  # noqa: E402

API = "/api/v1"
MINOR_DIGITS = {"USD": 2, "EUR": 2, "JPY": 0}
SUBS = ("sub1", "sub2", "sub3", "sub4", "sub5")

# Places where expected.json's rules and CONTRACT.md could be read differently. The
# contract wins; none of these changes a figure of the generated data (the generator
# never combines two failure classes in one postback), so the figures are compared as
# they are.
CONTRACT_NOTES = [
    "R09 lists 'unknown event key' and 'bad amount (too many minor digits)' among the 400s checked "
    "before the 404 lookup; CONTRACT §3 checks them after it (step 4, they need the campaign). "
    "The data never combines a 404 with these, so status counts agree either way.",
    "R03 names a fixed list of bot User-Agent tokens; CONTRACT §1 says 'known bot or link-preview agent' "
    "(open list). A product that flags more agents than R03 may differ on bot/unique/billable counts; "
    "the traffic uses only browser UAs besides the listed bots, so the figures should agree.",
    "R13 treats a postback 'rejected' on an existing pending conversion as out of scope; CONTRACT §3 "
    "allows pending -> rejected (client_rejected). The data never sends it.",
    "R19 counts converter and recruiter amounts in earnings; CONTRACT §5 adds touch amounts. With "
    "last_click attribution (the only model used) there are no touch amounts.",
]


# ----------------------------------------------------------------------------------------------- money

def to_minor(value: str, currency: str) -> int:
    """Decimal string -> int minor units of ``currency`` (exact)."""
    return int(Decimal(value).scaleb(MINOR_DIGITS.get(currency, 2)))


def fmt(minor: int, currency: str) -> str:
    """Int minor units -> decimal string with exactly the currency's minor digits (CONTRACT §4)."""
    digits = MINOR_DIGITS.get(currency, 2)
    if digits == 0:
        return str(minor)
    sign = "-" if minor < 0 else ""
    a = abs(minor)
    return f"{sign}{a // 10 ** digits}.{a % 10 ** digits:0{digits}d}"


def norm_money(value, currency: str):
    """A money string from the API re-formatted to the canonical form; other values as they are."""
    if isinstance(value, str):
        try:
            return fmt(to_minor(value, currency), currency)
        except Exception:  # noqa: BLE001 - report the raw value
            return value
    return value


# ----------------------------------------------------------------------------------------------- http

class ReplayError(RuntimeError):
    """The scenario could not be set up (an API call answered something unusable)."""


class _NoCookies(DefaultCookiePolicy):
    """Keeps the shared session's own jar empty: every visitor has its own cookie dict."""

    def set_ok(self, cookie, request):  # noqa: D102
        return False


def new_http() -> requests.Session:
    """One connection pool for the whole replay; cookies are handled per visitor."""
    http = requests.Session()
    http.cookies.set_policy(_NoCookies())
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=4, max_retries=0)
    http.mount("http://", adapter)
    return http


class Api:
    """The JSON API (CONTRACT §5) as one staff user: ``base_url`` + ``/api/v1``, bearer ``key``."""

    def __init__(self, http: requests.Session, base_url: str, key: str):
        self.http = http
        self.base = base_url.rstrip("/") + API
        self.headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}

    def call(self, method: str, path: str, body=None, params=None) -> tuple[int, object]:
        """Send one request; returns (status, parsed JSON or the raw text)."""
        r = self.http.request(method, self.base + path, json=body, params=params, headers=self.headers,
                              allow_redirects=False, timeout=60)
        try:
            return r.status_code, r.json()
        except ValueError:
            return r.status_code, r.text[:500]

    def expect(self, method: str, path: str, body=None, params=None, ok=(200, 201)) -> dict:
        """Like :meth:`call`, raising ReplayError unless the status is in ``ok``."""
        status, data = self.call(method, path, body, params)
        if status not in ok:
            raise ReplayError(f"{method} {path} -> {status}: {data!r:.500} (body {body!r:.300})")
        return data

    def list_all(self, path: str, params: dict | None = None, limit: int = 100) -> list[dict]:
        """Every item of a list endpoint, following ``next`` cursors."""
        items: list[dict] = []
        cursor = None
        for _ in range(100000):
            p = dict(params or {})
            p["limit"] = str(limit)
            if cursor:
                p["cursor"] = cursor
            data = self.expect("GET", path, params=p, ok=(200,))
            items.extend(data.get("items") or [])
            cursor = data.get("next")
            if not cursor:
                return items
        raise ReplayError(f"GET {path}: the cursor never ended")


def tamper(token: str) -> str:
    """README: the character at ``len(token)//2`` replaced by "A" ("B" when it already is "A")."""
    i = len(token) // 2
    return token[:i] + ("B" if token[i] == "A" else "A") + token[i + 1:]


def sign(params: dict, secret: str) -> str:
    """CONTRACT §3: hex HMAC-SHA256 over every parameter but ``sig``, sorted by name,
    joined ``name=value&...`` with the decoded values."""
    msg = "&".join(f"{k}={params[k]}" for k in sorted(params) if k != "sig")
    return hmac.new(secret.encode("utf-8"), msg.encode("utf-8"), hashlib.sha256).hexdigest()


def _split_url(url: str):
    """(scheme, host, path) of a URL, lower-cased scheme and host; None when unparsable."""
    try:
        p = urlsplit(url)
        return (p.scheme.lower(), (p.hostname or "").lower(), p.path)
    except ValueError:
        return None


CLICK_ID_RE = re.compile(r"[A-Za-z0-9_\-]{1,40}")
MACRO_RE = re.compile(r"\{(click_id|sub[1-5]|partner_id|campaign_id)\}")


def expected_destination(base: str, click_id: str, param: str, query: dict, partner_id: str,
                         campaign_id: str) -> tuple:
    """The redirect target CONTRACT §1 asks for, as (scheme, host, path, decoded query pairs, fragment).

    Macros are replaced by their values; without a ``{click_id}`` macro the click parameter is
    set in the query (replacing a value already there, appended otherwise). Compared decoded, so
    the product's choice of percent-encoding does not matter."""
    values = {"click_id": click_id, "partner_id": partner_id, "campaign_id": campaign_id}
    for k in SUBS:
        values[k] = (query.get(k) or "")[:255]
    has_macro = "{click_id}" in base
    p = urlsplit(base)
    pairs = [(k, MACRO_RE.sub(lambda m: values[m.group(1)], v))
             for k, v in parse_qsl(p.query, keep_blank_values=True)]
    if not has_macro:
        if any(k == param for k, _ in pairs):
            pairs = [(k, click_id if k == param else v) for k, v in pairs]
            seen = False
            out = []
            for k, v in pairs:
                if k == param:
                    if seen:
                        continue
                    seen = True
                out.append((k, v))
            pairs = out
        else:
            pairs.append((param, click_id))
    return (p.scheme.lower(), (p.hostname or "").lower(), p.path, pairs, p.fragment)


def actual_destination(location: str) -> tuple | None:
    """A Location header in the shape of :func:`expected_destination`."""
    try:
        p = urlsplit(location)
        return (p.scheme.lower(), (p.hostname or "").lower(), p.path,
                parse_qsl(p.query, keep_blank_values=True), p.fragment)
    except ValueError:
        return None


# ----------------------------------------------------------------------------------------------- report

@dataclass
class Check:
    """One compared figure."""

    name: str
    expected: object
    got: object
    note: str = ""

    @property
    def ok(self) -> bool:
        """True when got equals expected."""
        return self.expected == self.got


@dataclass
class Report:
    """Every check of one replay, plus timings and notes."""

    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    timings: dict = field(default_factory=dict)

    def add(self, name: str, expected, got, note: str = "") -> Check:
        """Record one check."""
        c = Check(name, expected, got, note)
        self.checks.append(c)
        return c

    @property
    def mismatches(self) -> list[Check]:
        """The checks that failed."""
        return [c for c in self.checks if not c.ok]

    def render(self, only_mismatches: bool = False, width: int = 300) -> str:
        """The report as text; the last line is ``replay: N checks, M mismatches``."""
        out = []
        for c in self.checks:
            if only_mismatches and c.ok:
                continue
            exp, got = json.dumps(c.expected, ensure_ascii=False), json.dumps(c.got, ensure_ascii=False)
            if len(exp) > width:
                exp = exp[:width] + "..."
            if len(got) > width:
                got = got[:width] + "..."
            line = f"{'ok  ' if c.ok else 'FAIL'} {c.name}: expected {exp}, got {got}"
            if c.note and not c.ok:
                line += f"\n       {c.note}"
            out.append(line)
        if self.notes:
            out.append("notes:")
            out.extend(f"  - {n}" for n in self.notes)
        if self.timings:
            out.append("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items()))
        out.append(f"replay: {len(self.checks)} checks, {len(self.mismatches)} mismatches")
        return "\n".join(out)


# ----------------------------------------------------------------------------------------------- replay

@dataclass
class ClickAnswer:
    """What the redirect answered for one click event."""

    status: int
    location: str | None
    click_id: str | None
    click_id_count: int
    no_store: bool
    state: str | None = None  # the driver's view at the time: "paused", "partner_suspended" or None
    content_type: str = ""


class Replay:
    """One replay of ``data_dir`` against the live server at ``base_url``.

    ``keys``: staff API keys by scenario ref (``{"staff:alice": key, "staff:bob": key}``).
    ``stack``: a :class:`live.LiveStack` whose CLI (drain, ledger verify) and database this
    replay may use (it need not have been started by us).
    """

    def __init__(self, data_dir: str | Path, base_url: str, keys: dict[str, str], stack: live.LiveStack,
                 log=print):
        self.dir = Path(data_dir)
        self.scenario = json.loads((self.dir / "scenario.json").read_text())
        self.expected = json.loads((self.dir / "expected.json").read_text())
        # The generator's R15 predates CONTRACT v2 §3 rule 6; the contract wins (see the module).
        with open(self.dir / "traffic.jsonl", encoding="utf-8") as fh:
            self.v2_notes = apply_partner_suspended_rule(self.expected, self.scenario, map(json.loads, fh))
        self.base_url = base_url.rstrip("/")
        self.stack = stack
        self.log = log
        self.http = new_http()
        self.api = {ref: Api(self.http, base_url, k) for ref, k in keys.items()}
        self.staff = self.api[self.scenario["staff_users"][0]["ref"]]
        self.ids: dict[str, str] = {}       # logical ref -> API id
        self.refs: dict[str, str] = {}      # "campaign:<id>" / "partner:<id>" -> logical ref
        self.clients: dict[str, dict] = {}  # client ref -> API answer (postback_key, postback_secret)
        self.tokens: dict[str, str] = {}    # link ref -> token
        self.camp_client = {c["ref"]: c["client_id"] for c in self.scenario["campaigns"]}
        self.camp_currency: dict[str, str] = {}
        self.links = {ln["ref"]: ln for ln in self.scenario["links"]}
        self.campaigns = {c["ref"]: c for c in self.scenario["campaigns"]}
        self.jars: dict[str, dict] = defaultdict(dict)
        self.clicks: dict[int, ClickAnswer] = {}
        self.click_events: dict[int, dict] = {}
        self.postbacks: dict[int, tuple[int, object]] = {}
        self.drains: list[tuple[str, int, str]] = []
        self.action_failures: list[str] = []
        self.driver_problems: list[str] = []
        self.batches: dict[str, dict] = {}
        self.conv_status: dict[str, str] = {}   # conversion id -> status as last seen by the driver
        self.paid_ids: set[str] = set()
        self.approved_by_staff = 0
        self.approved_by_postback = 0
        self.reversed_after_payout = 0
        self.paused: set[str] = set()
        self.suspended: set[str] = set()
        self.report = Report()
        self.started_day = datetime.now(timezone.utc).date()

    # -------------------------------------------------------------- setup
    def setup(self) -> None:
        """Create clients, campaigns, partners (approved) and links through the API (CONTRACT §5)."""
        sc = self.scenario
        for body in sc["clients"]:
            b = {k: v for k, v in body.items() if k != "ref"}
            data = self.staff.expect("POST", "/clients", b, ok=(201,))
            self.ids[body["ref"]] = str(data["id"])
            self.clients[body["ref"]] = data
        cur_of_client = {c["ref"]: c["currency"] for c in sc["clients"]}
        for body in sc["campaigns"]:
            b = {k: v for k, v in body.items() if k != "ref"}
            b["client_id"] = self.ids[body["client_id"]]
            data = self.staff.expect("POST", "/campaigns", b, ok=(201,))
            self.ids[body["ref"]] = str(data["id"])
            self.refs["campaign:" + str(data["id"])] = body["ref"]
            self.camp_currency[body["ref"]] = cur_of_client[body["client_id"]]
        for body in sc["partners"]:
            b = {k: v for k, v in body.items() if k != "ref"}
            if "recruiter_id" in b:
                b["recruiter_id"] = self.ids[b["recruiter_id"]]
            data = self.staff.expect("POST", "/partners", b, ok=(201,))
            pid = str(data["id"])
            self.ids[body["ref"]] = pid
            self.refs["partner:" + pid] = body["ref"]
            self.staff.expect("POST", f"/partners/{pid}/approve", ok=(200,))
        for body in sc["links"]:
            b = {k: v for k, v in body.items() if k != "ref"}
            b["partner_id"] = self.ids[b["partner_id"]]
            b["campaign_id"] = self.ids[b["campaign_id"]]
            data = self.staff.expect("POST", "/links", b, ok=(201,))
            self.ids[body["ref"]] = str(data["id"])
            self.tokens[body["ref"]] = data["token"]

    # -------------------------------------------------------------- events
    def click(self, ev: dict) -> None:
        """One click event: GET/HEAD /c/<token>?<query>, no redirect followed (CONTRACT §1)."""
        ref = ev["link"]
        tampered = ref.startswith("tampered:")
        link_ref = ref[len("tampered:"):] if tampered else ref
        token = self.tokens[link_ref]
        if tampered:
            token = tamper(token)
        url = f"{self.base_url}/c/{token}"
        if ev.get("query"):
            url += "?" + urlencode(ev["query"])
        headers = {"X-Forwarded-For": ev["ip"], "User-Agent": ev.get("ua"), "Referer": ev.get("referer"),
                   "Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
        jar = self.jars[ev["visitor"]]
        r = self.http.request(ev["method"], url, headers=headers, cookies=jar, allow_redirects=False, timeout=30)
        for c in r.cookies:
            jar[c.name] = c.value
        loc = r.headers.get("Location")
        cid, n = None, 0
        if loc:
            camp = self.links[link_ref]["campaign_id"]
            param = self.scenario["replay"]["click_id_param"][camp]
            try:
                vals = parse_qs(urlsplit(loc).query, keep_blank_values=True).get(param) or []
            except ValueError:
                vals = []
            n = len(vals)
            cid = vals[0] if vals else None
        no_store = "no-store" in (r.headers.get("Cache-Control") or "").lower()
        link = self.links[link_ref]
        state = ("paused" if link["campaign_id"] in self.paused
                 else "partner_suspended" if link["partner_id"] in self.suspended else None)
        self.clicks[ev["seq"]] = ClickAnswer(r.status_code, loc, cid, n, no_store, state,
                                             r.headers.get("Content-Type") or "")
        self.click_events[ev["seq"]] = ev

    def postback(self, ev: dict) -> None:
        """One postback (CONTRACT §3): GET query, POST form or POST JSON; key / sig auth."""
        seq = ev["seq"]
        params: dict[str, str] = {}
        if ev.get("click_id_literal") is not None:
            params["click_id"] = ev["click_id_literal"]
        if ev.get("click_seq") is not None:
            ans = self.clicks.get(ev["click_seq"])
            if ans is None or not ans.click_id:
                self.driver_problems.append(f"postback seq {seq}: no click ID recorded for click seq "
                                            f"{ev['click_seq']} (answer {ans})")
                params["click_id"] = f"missing-click-{ev['click_seq']}"
            else:
                params["click_id"] = ans.click_id
        if ev.get("coupon") is not None:
            params["coupon"] = ev["coupon"]
        for f in ("event", "txn_id", "amount", "currency", "status"):
            if ev.get(f) is not None:
                params[f] = str(ev[f])
        if ev.get("duration") is not None:
            params["duration"] = str(int(ev["duration"]))
        client = self.clients[self.camp_client[ev["campaign"]]]
        key, secret = client["postback_key"], client["postback_secret"]
        auth = ev["auth"]
        now = int(time.time())
        if auth == "bad_key":
            params["key"] = "wrong-" + hashlib.sha256(key.encode()).hexdigest()[:20]
        else:
            params["key"] = key
        if auth in ("sig", "bad_sig", "stale_sig"):
            params["ts"] = str(now - 3600 if auth == "stale_sig" else now)
            params["sig"] = sign(params, secret) if auth != "bad_sig" else sign(params, secret + "-wrong")
        url = self.base_url + "/postback"
        if ev["http"] == "GET":
            r = self.http.get(url, params=params, allow_redirects=False, timeout=30)
        elif ev["http"] == "POST_FORM":
            r = self.http.post(url, data=params, allow_redirects=False, timeout=30)
        elif ev["http"] == "POST_JSON":
            r = self.http.post(url, json=params, allow_redirects=False, timeout=30)
        else:
            raise ReplayError(f"seq {seq}: unknown http {ev['http']!r}")
        try:
            body = r.json()
        except ValueError:
            body = r.text[:300]
        self.postbacks[seq] = (r.status_code, body)
        self._track_status(ev, r.status_code, body)

    def _track_status(self, ev: dict, status: int, body) -> None:
        """Follow conversion statuses as the answers tell them (approved/reversed by postback)."""
        if not isinstance(body, dict) or status not in (200, 201):
            return
        cid = body.get("conversion_id")
        if cid is None:
            return
        cid = str(cid)
        before = self.conv_status.get(cid)
        now = body.get("status")
        if body.get("duplicate"):
            if ev.get("status") == "approved" and before == "pending" and now == "approved":
                self.approved_by_postback += 1
            if ev.get("status") == "reversed" and before in ("pending", "approved") and now == "reversed":
                if cid in self.paid_ids:
                    self.reversed_after_payout += 1
        if now:
            self.conv_status[cid] = now

    def drain(self, why: str) -> None:
        """``flask drain`` so what follows sees every earlier event (README step 3)."""
        res = self.stack.drain()
        self.drains.append((why, res.returncode, (res.stdout + res.stderr).strip()[-500:]))
        if res.returncode != 0:
            self.log(f"drain before {why}: exit {res.returncode}: {(res.stdout + res.stderr).strip()[-300:]}")

    def action(self, ev: dict) -> None:
        """A staff action, after a drain."""
        a = ev["action"]
        self.drain(f"action {a} (seq {ev['seq']})")
        try:
            if a in ("pause", "resume"):
                cid = self.ids[ev["campaign"]]
                want = "paused" if a == "pause" else "active"
                data = self.staff.expect("PATCH", f"/campaigns/{cid}", {"status": want}, ok=(200,))
                if data.get("status") != want:
                    self.action_failures.append(f"seq {ev['seq']} {a}: status {data.get('status')!r}")
                (self.paused.add if a == "pause" else self.paused.discard)(ev["campaign"])
            elif a == "suspend":
                pid = self.ids[ev["partner"]]
                data = self.staff.expect("POST", f"/partners/{pid}/suspend", ok=(200,))
                if data.get("status") != "suspended":
                    self.action_failures.append(f"seq {ev['seq']} suspend: status {data.get('status')!r}")
                self.suspended.add(ev["partner"])
            elif a == "approve_all":
                pending = self.staff.list_all("/conversions", {"status": "pending"})
                for conv in pending:
                    cid = str(conv["id"])
                    status, data = self.staff.call("POST", f"/conversions/{cid}/approve")
                    if status == 200:
                        self.approved_by_staff += 1
                        self.conv_status[cid] = "approved"
                    else:
                        self.action_failures.append(f"seq {ev['seq']} approve {cid}: {status} {data!r:.200}")
            elif a == "payout":
                creator = self.api[ev["created_by"]]
                approver = self.api[ev["approved_by"]]
                for b in ev["batches"]:
                    batch = creator.expect("POST", "/payout-batches",
                                           {"currency": b["currency"], "min_amount": b["min_amount"]}, ok=(201,))
                    bid = str(batch["id"])
                    approved = approver.expect("POST", f"/payout-batches/{bid}/approve", ok=(200,))
                    paid = creator.expect("POST", f"/payout-batches/{bid}/mark-paid", ok=(200,))
                    self.batches[b["currency"]] = {"created": batch, "approved": approved, "paid": paid}
                self.paid_ids = {cid for cid, st in self.conv_status.items() if st == "approved"}
            else:
                self.action_failures.append(f"seq {ev['seq']}: unknown action {a!r}")
        except ReplayError as exc:
            self.action_failures.append(f"seq {ev['seq']} {a}: {exc}")

    def run_traffic(self, progress_every: int = 2000) -> None:
        """Replay every line of traffic.jsonl in order."""
        t0 = time.monotonic()
        with open(self.dir / "traffic.jsonl", encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                ev = json.loads(line)
                getattr(self, ev["type"])(ev)
                if progress_every and n % progress_every == 0:
                    self.log(f"  {n} events, {time.monotonic() - t0:.0f}s")

    # -------------------------------------------------------------- results
    def collect(self) -> dict:
        """Drain, then read everything the comparison needs."""
        self.drain("final read")
        got: dict = {}
        st = self.staff
        got["conversions"] = st.list_all("/conversions")
        got["earnings"] = {}
        for p in self.scenario["partners"]:
            got["earnings"][p["ref"]] = st.expect("GET", f"/partners/{self.ids[p['ref']]}/earnings", ok=(200,))
        got["campaigns"] = {c["ref"]: st.expect("GET", f"/campaigns/{self.ids[c['ref']]}", ok=(200,))
                            for c in self.scenario["campaigns"]}
        today = datetime.now(timezone.utc).date()
        got["report"] = st.expect("GET", "/reports", params={"group_by": "campaign",
                                                             "from": self.started_day.isoformat(),
                                                             "to": today.isoformat()}, ok=(200,))
        got["ledger"] = self.stack.ledger_verify()
        return got

    # -------------------------------------------------------------- comparison
    def compare(self, got: dict) -> Report:  # noqa: C901 - one long list of figures
        """Compare what was read with expected.json; returns the report."""
        rep = self.report
        exp = self.expected
        rep.notes.extend(CONTRACT_NOTES)
        rep.notes.extend(self.v2_notes)

        # ---- harness
        bad_drains = [(w, rc, msg) for w, rc, msg in self.drains if rc != 0]
        rep.add("harness: every drain exited 0", [], [f"{w}: exit {rc}: {m[-200:]}" for w, rc, m in bad_drains])
        rep.add("harness: staff actions answered as the contract says", [], self.action_failures[:20],
                note=f"{len(self.action_failures)} failure(s)")
        rep.add("harness: every postback had its click ID", [], self.driver_problems[:20],
                note=f"{len(self.driver_problems)} problem(s)")
        led = got["ledger"]
        rep.add("ledger verify exit code", 0, led.returncode, note=(led.stdout + led.stderr).strip()[-600:])

        # ---- clicks, as observed on the wire
        ec = exp["clicks"]
        answers = list(self.clicks.items())
        status_counts = Counter(a.status for _, a in answers)
        rep.add("clicks.events sent", ec["events"], len(answers))
        rep.add("clicks.gross (non-404 answers)", ec["gross"], sum(1 for _, a in answers if a.status != 404))
        rep.add("clicks.tampered_404 (404 answers)", ec["tampered_404"], status_counts.get(404, 0))
        tampered_not_404 = [s for s, a in answers if self.click_events[s]["link"].startswith("tampered:")
                            and a.status != 404]
        rep.add("clicks: tampered tokens answered 404", [], tampered_not_404[:20])
        not_html = [s for s, a in answers if a.status == 404 and "text/html" not in a.content_type.lower()]
        rep.add("clicks: 404 answers are HTML pages (browser Accept)", [], not_html[:20])
        rep.add("clicks: answers other than 302/404", {}, {str(k): v for k, v in status_counts.items()
                                                           if k not in (302, 404)})
        rep.add("clicks: 302 answers with Cache-Control no-store", ec["gross"],
                sum(1 for _, a in answers if a.status == 302 and a.no_store))
        fb_seen = Counter()
        fb_total = 0
        honoured, ignored_seqs, unclear_deep = 0, [], []
        cid_once = 0
        for seq, a in answers:
            ev = self.click_events[seq]
            if a.status == 404:
                continue
            link = self.links[ev["link"]]
            camp = self.campaigns[link["campaign_id"]]
            is_fb = a.location == camp.get("fallback_url")
            if is_fb:
                fb_total += 1
                fb_seen[a.state or "over_budget"] += 1
                continue
            if a.click_id_count == 1:
                cid_once += 1
            q = ev.get("query") or {}
            if "url" in q:
                where = _split_url(a.location or "")
                default = _split_url(link.get("deep_link") or camp["destination_url"])
                if where is not None and where == _split_url(q["url"]) and where != default:
                    honoured += 1
                elif where == default:
                    ignored_seqs.append(seq)
                else:
                    unclear_deep.append(seq)
        rep.add("clicks.fallback.total (Location = fallback_url)", ec["fallback"]["total"], fb_total)
        for k in ("paused", "over_budget", "partner_suspended"):
            rep.add(f"clicks.fallback.{k}", ec["fallback"][k], fb_seen.get(k, 0),
                    note="reason inferred from the driver's own pause/suspend state")
        rep.add("clicks: click ID exactly once in every non-fallback redirect", ec["gross"] - ec["fallback"]["total"],
                cid_once)
        rep.add("clicks.deep_link_honoured", ec["deep_link_honoured"], honoured)
        rep.add("clicks.deep_link_ignored", ec["deep_link_ignored"], len(ignored_seqs))
        rep.add("clicks.deep_link_ignored_seqs", ec["deep_link_ignored_seqs"], ignored_seqs)
        rep.add("clicks: deep-link redirects to neither the url nor the default", [], unclear_deep[:20])
        self._compare_destinations(rep)

        # ---- clicks as stored (database)
        self._compare_click_rows(rep, ec)

        # ---- postbacks
        ep = exp["postbacks"]
        codes = Counter(str(s) for s, _ in self.postbacks.values())
        rep.add("postbacks.total", ep["total"], len(self.postbacks))
        for k in sorted(set(ep["by_http_status"]) | set(codes)):
            rep.add(f"postbacks.by_http_status.{k}", ep["by_http_status"].get(k, 0), codes.get(k, 0))
        outcomes = Counter(self._outcome(s, b) for s, b in self.postbacks.values())
        for k in sorted(set(ep["by_outcome"]) | set(outcomes)):
            rep.add(f"postbacks.by_outcome.{k}", ep["by_outcome"].get(k, 0), outcomes.get(k, 0))
        self._compare_postback_log(rep)
        self._compare_answer_shapes(rep)

        # ---- conversions
        convs = got["conversions"]
        ecv = exp["conversions"]
        rep.add("conversions.total", ecv["total"], len(convs))
        by_status = Counter(c.get("status") for c in convs)
        for k in sorted(set(ecv["by_status"]) | set(by_status)):
            rep.add(f"conversions.by_status.{k}", ecv["by_status"].get(k, 0), by_status.get(k, 0))
        by_reason = Counter(c.get("reason") for c in convs if c.get("status") == "rejected")
        for k in sorted(set(ecv["by_rejection_reason"]) | set(by_reason), key=str):
            rep.add(f"conversions.by_rejection_reason.{k}", ecv["by_rejection_reason"].get(k, 0), by_reason.get(k, 0))
        by_ce = Counter(f"{self.refs.get('campaign:' + str(c.get('campaign_id')), c.get('campaign_id'))}/{c.get('event')}"
                        for c in convs)
        for k in sorted(set(ecv["by_campaign_event"]) | set(by_ce)):
            rep.add(f"conversions.by_campaign_event.{k}", ecv["by_campaign_event"].get(k, 0), by_ce.get(k, 0))
        rep.add("conversions.approved_by_staff (approve answers 200)", ecv["approved_by_staff"], self.approved_by_staff)
        rep.add("conversions.approved_by_postback (answers pending->approved)", ecv["approved_by_postback"],
                self.approved_by_postback)
        rep.add("conversions.reversed_after_payout (answers approved->reversed of paid)",
                ecv["reversed_after_payout"], self.reversed_after_payout)
        self._compare_conversion_shapes(rep, convs)

        # ---- totals per currency (pending + approved)
        tot: dict = defaultdict(lambda: Counter())
        for c in convs:
            if c.get("status") not in ("pending", "approved"):
                continue
            cur = c.get("currency")
            t = tot[cur]
            t["conversions"] += 1
            t["client_fee"] += to_minor(c["client_fee"], cur)
            for s in c.get("splits") or []:
                role = s.get("role")
                key = {"converter": "partner_amount", "touch": "partner_amount", "recruiter": "recruiter_override",
                       "margin": "margin"}.get(role, "other:" + str(role))
                t[key] += to_minor(s["amount"], cur)
        for cur in sorted(set(exp["totals"]) | set(tot)):
            e = exp["totals"].get(cur, {})
            t = tot.get(cur, Counter())
            rep.add(f"totals.{cur}.conversions", e.get("conversions", 0), t["conversions"])
            for k in ("client_fee", "partner_amount", "recruiter_override", "margin"):
                rep.add(f"totals.{cur}.{k}", e.get(k, fmt(0, cur)), fmt(t[k], cur))
            others = {k: v for k, v in t.items() if k.startswith("other:")}
            if others:
                rep.add(f"totals.{cur}: split roles outside the contract", {}, dict(others))

        # ---- campaigns: reports + spent
        rows = defaultdict(list)
        for row in (got["report"] or {}).get("items", []):
            rows[self.refs.get("campaign:" + str(row.get("key")), str(row.get("key")))].append(row)
        for ref, e in sorted(exp["campaigns"].items()):
            cur = self.camp_currency[ref]
            rs = rows.get(ref, [])
            if len(rs) != 1:
                rep.add(f"campaigns.{ref}: report rows", 1, len(rs))
            r = rs[0] if rs else {}
            for k in ("clicks", "unique_clicks", "conversions"):
                rep.add(f"campaigns.{ref}.{k}", e[k], r.get(k))
            for k in ("revenue", "payout", "margin"):
                rep.add(f"campaigns.{ref}.{k}", e[k], norm_money(r.get(k), cur))
            # CONTRACT §5: cr = conversions / unique clicks in percent, 2 decimals, half up;
            # epc = payout / clicks as money, half up
            cr = (Decimal(e["conversions"]) * 100 / Decimal(e["unique_clicks"])).quantize(
                Decimal("0.01"), rounding=ROUND_HALF_UP) if e["unique_clicks"] else Decimal("0.00")
            rep.add(f"campaigns.{ref}.cr", str(cr), r.get("cr"))
            epc = (Decimal(to_minor(e["payout"], cur)) / e["clicks"]).quantize(
                Decimal(1), rounding=ROUND_HALF_UP) if e["clicks"] else 0
            rep.add(f"campaigns.{ref}.epc", fmt(int(epc), cur), norm_money(r.get("epc"), cur))
            camp = got["campaigns"][ref]
            if "budget" in e:
                rep.add(f"campaigns.{ref}.budget", e["budget"], norm_money(camp.get("budget"), cur))
                rep.add(f"campaigns.{ref}.spent", e["spent"], norm_money(camp.get("spent"), cur))
            else:
                # spent = client fees of conversions neither rejected nor reversed (CONTRACT §5) = revenue
                rep.add(f"campaigns.{ref}.spent (= revenue)", e["revenue"], norm_money(camp.get("spent"), cur))
        extra = sorted(set(rows) - set(exp["campaigns"]))
        if extra:
            rep.add("campaigns: report rows for unknown keys", [], extra)

        # ---- over budget
        eo = exp["over_budget"]
        got_txn = [c.get("txn_id") for c in convs if c.get("reason") == "over_budget"]
        rep.add("over_budget.rejected_txn_ids", sorted(eo["rejected_txn_ids"]), sorted(got_txn, key=str))
        got_seqs = sorted(s for s, (st, b) in self.postbacks.items()
                          if isinstance(b, dict) and b.get("reason") == "over_budget")
        rep.add("over_budget.rejected_postback_seqs", eo["rejected_postback_seqs"], got_seqs)

        # ---- payout batches
        for cur, e in sorted(exp["payout_batches"].items()):
            b = self.batches.get(cur)
            if b is None:
                rep.add(f"payout_batches.{cur}", "created, approved, paid", "missing")
                continue
            created = b["created"]
            items = {self.refs.get("partner:" + str(i.get("partner_id")), str(i.get("partner_id"))):
                     norm_money(i.get("amount"), cur) for i in created.get("items") or []}
            rep.add(f"payout_batches.{cur}.total", e["total"], norm_money(created.get("total"), cur))
            rep.add(f"payout_batches.{cur}.items", e["items"], items,
                    note=self._dict_diff(e["items"], items))
            rep.add(f"payout_batches.{cur}.status after mark-paid", "paid", b["paid"].get("status"))
            rep.add(f"payout_batches.{cur}.created_by", True, bool(created.get("created_by")))

        # ---- earnings
        negative = []
        for p in self.scenario["partners"]:
            ref = p["ref"]
            e_items = {i["currency"]: i for i in exp["earnings"].get(ref, [])}
            g_items = {i.get("currency"): i for i in (got["earnings"][ref] or {}).get("items", [])}
            for cur in sorted(set(e_items) | set(g_items), key=str):
                zero = fmt(0, cur)
                ei = e_items.get(cur, {})
                gi = g_items.get(cur, {})
                ev = {k: ei.get(k, zero) for k in ("pending", "approved", "paid", "balance")}
                gv = {k: norm_money(gi.get(k, zero), cur) for k in ("pending", "approved", "paid", "balance")}
                rep.add(f"earnings.{ref}.{cur}", ev, gv)
                if isinstance(gv["balance"], str) and gv["balance"].startswith("-"):
                    negative.append({"partner": ref, "currency": cur, "balance": gv["balance"]})
        rep.add("negative_balances", exp["negative_balances"], negative)

        # ---- sub IDs
        self._compare_subs(rep)
        return rep

    def _compare_destinations(self, rep: Report) -> None:
        """Every non-fallback redirect goes exactly where CONTRACT §1 says (macros, click parameter,
        query order, fragment), and every click ID is URL-safe, at most 40 characters and unique."""
        wrong = []
        ids = Counter()
        bad_ids = []
        for seq, a in self.clicks.items():
            ev = self.click_events[seq]
            if a.status == 404 or ev["link"].startswith("tampered:"):
                continue
            link = self.links[ev["link"]]
            camp = self.campaigns[link["campaign_id"]]
            if a.location == camp.get("fallback_url"):
                continue
            if not a.click_id:
                wrong.append({"seq": seq, "location": a.location, "why": "no click ID"})
                continue
            ids[a.click_id] += 1
            if not CLICK_ID_RE.fullmatch(a.click_id):
                bad_ids.append(a.click_id)
            q = ev.get("query") or {}
            url = q.get("url")
            from_url = url is not None and _split_url(url) is not None and _split_url(a.location) == _split_url(url)
            base = url if from_url else (link.get("deep_link") or camp["destination_url"])
            param = camp.get("click_param") or "click_id"
            want = expected_destination(base, a.click_id, param, q, self.ids[link["partner_id"]],
                                        self.ids[link["campaign_id"]])
            got = actual_destination(a.location or "")
            if got != want:
                wrong.append({"seq": seq, "location": (a.location or "")[:200], "want": str(want)[:200]})
        rep.add("clicks: redirects go exactly to the contract's destination", [], wrong[:5],
                note=f"{len(wrong)} wrong")
        rep.add("clicks: click IDs URL-safe and at most 40 characters", [], bad_ids[:10])
        rep.add("clicks: click IDs unique", [], [k for k, n in ids.items() if n > 1][:10])

    def _compare_answer_shapes(self, rep: Report) -> None:
        """Postback answers have the JSON shapes of CONTRACT §3."""
        bad = []
        for seq, (status, body) in sorted(self.postbacks.items()):
            if not isinstance(body, dict):
                bad.append((seq, status, "not JSON"))
            elif status in (200, 201):
                if body.get("ok") is not True or not body.get("conversion_id") or not isinstance(
                        body.get("duplicate"), bool) or body.get("status") not in (
                        "pending", "approved", "rejected", "reversed"):
                    bad.append((seq, status, str(body)[:120]))
                elif status == 201 and (body["duplicate"] or body["status"] not in ("pending", "approved")):
                    bad.append((seq, status, str(body)[:120]))
                elif status == 200 and not body["duplicate"] and not body.get("reason"):
                    bad.append((seq, status, str(body)[:120]))
            elif body.get("ok") is not False or not body.get("error") or "message" not in body:
                bad.append((seq, status, str(body)[:120]))
        rep.add("postbacks: answers have the CONTRACT §3 JSON shape", [], bad[:10], note=f"{len(bad)} wrong")

    @staticmethod
    def _dict_diff(e: dict, g: dict) -> str:
        keys = sorted(set(e) | set(g))
        diffs = [f"{k}: expected {e.get(k)} got {g.get(k)}" for k in keys if e.get(k) != g.get(k)]
        return "; ".join(diffs[:15])

    @staticmethod
    def _outcome(status: int, body) -> str:
        """The outcome name expected.json uses for one postback answer."""
        if not isinstance(body, dict):
            return f"http_{status}_not_json"
        if status == 201:
            return "created"
        if status == 200:
            if body.get("duplicate"):
                return "existing"
            if body.get("status") == "rejected":
                return "rejected"
            return "200_other"
        return str(body.get("error") or f"http_{status}_no_error_code")

    def _compare_conversion_shapes(self, rep: Report, convs: list[dict]) -> None:
        """Every conversion: splits add up to the client fee (CONTRACT §4), and the fields of §5 exist."""
        fields = ("id", "campaign_id", "partner_id", "event", "txn_id", "click_id", "status", "reason", "amount",
                  "client_fee", "currency", "created_at", "splits")
        missing = Counter()
        unbalanced = []
        for c in convs:
            for f in fields:
                if f not in c:
                    missing[f] += 1
            if c.get("status") in ("pending", "approved") and c.get("splits"):
                cur = c.get("currency")
                total = sum(to_minor(s["amount"], cur) for s in c["splits"])
                if total != to_minor(c["client_fee"], cur):
                    unbalanced.append(c.get("id"))
        rep.add("conversions: items carry every CONTRACT §5 field", {}, dict(missing))
        rep.add("conversions: splits add up to the client fee", [], unbalanced[:20],
                note=f"{len(unbalanced)} unbalanced")
        no_split = [c.get("id") for c in convs if c.get("status") in ("pending", "approved") and not c.get("splits")]
        rep.add("conversions: pending/approved conversions have splits", [], no_split[:20],
                note=f"{len(no_split)} without splits")

    def _compare_click_rows(self, rep: Report, ec: dict) -> None:
        """Bot, unique, billable and fallback figures from the stored clicks (not visible on the wire)."""
        try:
            rows = self.stack.sql(
                "SELECT count(*), count(*) FILTER (WHERE is_bot), count(*) FILTER (WHERE is_unique), "
                "count(*) FILTER (WHERE NOT is_bot AND fallback_reason IS NULL), "
                "count(*) FILTER (WHERE is_bot AND method = 'HEAD') FROM clicks")
            by_reason = dict(self.stack.sql(
                "SELECT fallback_reason, count(*) FROM clicks WHERE fallback_reason IS NOT NULL "
                "GROUP BY fallback_reason"))
        except Exception as exc:  # noqa: BLE001 - schema may differ; say so
            rep.notes.append(f"stored click figures skipped: {exc}")
            return
        total, bots, uniq, billable, head = rows[0]
        rep.add("db: clicks stored (gross)", ec["gross"], total)
        rep.add("db: clicks.bot", ec["bot"], bots)
        rep.add("db: clicks.bot_head_requests", ec["bot_head_requests"], head)
        rep.add("db: clicks.unique", ec["unique"], uniq)
        rep.add("db: clicks.billable", ec["billable"], billable)
        rep.add("db: clicks.fallback by reason", {k: v for k, v in ec["fallback"].items() if k != "total" and v},
                by_reason)

    def _compare_postback_log(self, rep: Report) -> None:
        """Every postback, answered or refused, is in the postback log (CONTRACT §3)."""
        try:
            rows = dict(self.stack.sql("SELECT http_status, count(*) FROM postback_log GROUP BY http_status"))
        except Exception as exc:  # noqa: BLE001
            rep.notes.append(f"postback log check skipped: {exc}")
            return
        codes = Counter(s for s, _ in self.postbacks.values())
        rep.add("db: postback log rows by http status", {str(k): v for k, v in sorted(codes.items())},
                {str(k): v for k, v in sorted(rows.items())})

    def _compare_subs(self, rep: Report) -> None:
        """sub_id_samples: the stored value (first 255 code points) of every awkward sub ID."""
        samples = self.expected.get("sub_id_samples") or []
        bad = []
        try:
            for s in samples:
                param = s["param"]
                if param not in SUBS:
                    continue
                ans = self.clicks.get(s["seq"])
                if ans is not None and ans.click_id:
                    rows = self.stack.sql(f"SELECT {param} FROM clicks WHERE click_id = %s", (ans.click_id,))
                    stored = rows[0][0] if rows else "<no click row>"
                    if stored != s["stored"]:
                        bad.append({"seq": s["seq"], "param": param, "stored": stored})
                else:
                    rows = self.stack.sql(f"SELECT count(*) FROM clicks WHERE {param} = %s", (s["stored"],))
                    if rows[0][0] == 0:
                        bad.append({"seq": s["seq"], "param": param, "stored": "<no row with that value>"})
        except Exception as exc:  # noqa: BLE001
            rep.notes.append(f"sub ID check skipped: {exc}")
            return
        rep.add("sub_id_samples stored as expected", len(samples), len(samples) - len(bad),
                note="; ".join(f"seq {b['seq']} {b['param']}: {str(b['stored'])[:60]!r}" for b in bad[:8]))


# ----------------------------------------------------------------------------------------------- entry points

def run(data_dir: str | Path, stack: live.LiveStack, keys: dict[str, str] | None = None, log=print) -> Report:
    """Replay ``data_dir`` against ``stack`` (already started) and return the report.

    ``keys``: staff API keys by scenario ref; when None the staff users are created with the
    CLI (``users create``, ``api-keys create``) first.
    """
    scenario = json.loads((Path(data_dir) / "scenario.json").read_text())
    timings = {}
    t = time.monotonic()
    if keys is None:
        keys = {}
        for u in scenario["staff_users"]:
            stack.create_user(u["email"], role=u["role"])
            keys[u["ref"]] = stack.create_api_key(u["email"])
    rp = Replay(data_dir, stack.base_url, keys, stack, log=log)
    rp.setup()
    timings["setup"] = time.monotonic() - t
    t = time.monotonic()
    rp.run_traffic()
    timings["traffic"] = time.monotonic() - t
    t = time.monotonic()
    got = rp.collect()
    timings["read back"] = time.monotonic() - t
    rep = rp.compare(got)
    rep.timings.update(timings)
    return rep


def run_fresh(data_dir: str | Path, database_url: str = live.DEFAULT_DATABASE_URL,
              redis_url: str = live.DEFAULT_REDIS_URL, log=print, **stack_kwargs) -> tuple[Report, live.LiveStack]:
    """Start a fresh :class:`live.LiveStack` (schema dropped, Redis db flushed), replay, stop.

    Returns (report, the stopped stack: its ``log_dir`` keeps the server and worker logs)."""
    stack = live.LiveStack(live.ensure_database(database_url), redis_url, **stack_kwargs)
    t = time.monotonic()
    stack.start()
    try:
        log(f"stack up in {time.monotonic() - t:.1f}s at {stack.base_url} (schema: {stack.schema_method}, "
            f"logs: {stack.log_dir})")
        rep = run(data_dir, stack, log=log)
        if stack.schema_method == "create_all":
            rep.notes.append("schema made with db.create_all() (forced, or `flask db upgrade` made no tables): "
                             "the migrations were not exercised")
    finally:
        stack.stop()
    return rep, stack


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring. Exit 0 when every check passed."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="directory with scenario.json, traffic.jsonl, expected.json")
    ap.add_argument("--start", action="store_true", help="start a fresh stack (drops the schema, flushes Redis)")
    ap.add_argument("--base-url", help="a running server (without --start)")
    ap.add_argument("--api-key-alice", help="API key of staff:alice (running server)")
    ap.add_argument("--api-key-bob", help="API key of staff:bob (running server)")
    ap.add_argument("--database-url", default=live.DEFAULT_DATABASE_URL)
    ap.add_argument("--redis-url", default=live.DEFAULT_REDIS_URL)
    ap.add_argument("--secret-key", default="replay-secret-key-0123456789abcdef")
    ap.add_argument("--web-workers", type=int, default=2)
    ap.add_argument("--gunicorn-args", default="", help='extra gunicorn arguments, e.g. "-k gthread --threads 4"')
    ap.add_argument("--schema", default="auto", choices=("auto", "migrations", "create_all"),
                    help="how --start makes the tables (auto: db upgrade, else create_all)")
    ap.add_argument("--only-mismatches", action="store_true", help="print only the failed checks")
    ap.add_argument("--json", help="also write the checks as JSON to this file")
    args = ap.parse_args(argv)

    def _terminate(signum, _frame):
        raise SystemExit(128 + signum)  # unwinds through run_fresh's finally: the stack is stopped

    signal.signal(signal.SIGTERM, _terminate)

    if args.start:
        rep, stack = run_fresh(args.data, args.database_url, args.redis_url, secret_key=args.secret_key,
                               web_workers=args.web_workers, gunicorn_args=args.gunicorn_args.split(),
                               schema=args.schema)
    else:
        if not (args.base_url and args.api_key_alice and args.api_key_bob):
            ap.error("give --start, or --base-url with --api-key-alice and --api-key-bob")
        stack = live.LiveStack(args.database_url, args.redis_url, secret_key=args.secret_key)
        stack.base_url = args.base_url.rstrip("/")
        rep = run(args.data, stack, keys={"staff:alice": args.api_key_alice, "staff:bob": args.api_key_bob})
    print(rep.render(only_mismatches=args.only_mismatches))
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"checks": [{"name": c.name, "ok": c.ok, "expected": c.expected, "got": c.got, "note": c.note}
                        for c in rep.checks], "notes": rep.notes, "timings": rep.timings},
            ensure_ascii=False, indent=1))
    if not rep.mismatches:
        return 0
    print(f"logs: {stack.log_dir}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
