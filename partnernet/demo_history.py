"""Thirty days of demo traffic (:func:`simulate_history`), sent through the real endpoints with the
clock set to each day, so the reports have a month to show: weekdays busier than weekends, a
slow upward trend, a few sales refunded, calls of every length.

Deterministic (a fixed random seed): the same demo every time. Used by :mod:`partnernet.demo`.
"""

from __future__ import annotations

import hashlib
import hmac
import random
from datetime import datetime, timedelta
from urllib.parse import parse_qs, urlsplit

from flask import Flask

from . import clock

BROWSER_AGENTS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
)
#: Clicks on a weekday per link family, before the trend; weekends get 55 % of it.
WEEKDAY_CLICKS = {"ava-shop": 9, "ben-shop": 6, "ava-game": 5, "mia-game": 7, "kai-look": 3}


def _signed(params: dict, secret: str) -> dict:
    base = "&".join(f"{k}={params[k]}" for k in sorted(params))
    return {**params, "sig": hmac.new(secret.encode(), base.encode(), hashlib.sha256).hexdigest()}


def simulate_history(app: Flask, rows: dict, *, days: int = 30, today: datetime | None = None) -> dict:
    """Send ``days`` days of traffic (the days before ``today``, default the clock's today) through
    ``/c/<token>`` and ``/postback`` with :func:`partnernet.clock.set_now` at each request's
    moment; the clock is unfrozen afterwards whatever happens. ``rows``: what
    :func:`partnernet.demo.seed` returned. Returns counts ``{"click 302": n, "postback 201": m, ...}``."""
    signer = app.extensions["partnernet_link_signer"]
    links = rows["links"]
    broker, shop, game = rows["clients"]
    rnd = random.Random(20261202)
    http = app.test_client()
    seen: dict[str, int] = {}
    today = (today or clock.utcnow()).replace(hour=0, minute=0, second=0, microsecond=0)

    def note(kind: str, status: int) -> None:
        seen[f"{kind} {status}"] = seen.get(f"{kind} {status}", 0) + 1

    def visit(name: str, at: datetime, ip: str) -> str | None:
        clock.set_now(at)
        r = http.get(f"/c/{signer.dumps(links[name].id)}",
                     query_string={"sub1": rnd.choice(("feed", "story", "newsletter", "search")),
                                   "sub2": rnd.choice(("a", "b"))},
                     headers={"User-Agent": rnd.choice(BROWSER_AGENTS)}, environ_base={"REMOTE_ADDR": ip})
        note("click", r.status_code)
        qs = parse_qs(urlsplit(r.headers.get("Location", "")).query)
        return (qs.get("click_id") or qs.get("cid") or [None])[0]

    def post(params: dict, at: datetime) -> None:
        clock.set_now(at)
        r = http.get("/postback", query_string=params)
        note("postback", r.status_code)

    try:
        for back in range(days, 0, -1):
            day = today - timedelta(days=back)
            weekend = day.weekday() >= 5
            trend = 1 + (days - back) / (2 * days)  # up to +50 % over the month
            for name, base in WEEKDAY_CLICKS.items():
                n = max(1, round(base * trend * (0.55 if weekend else 1.0) * rnd.uniform(0.8, 1.2)))
                for k in range(n):
                    at = day + timedelta(hours=rnd.randint(7, 22), minutes=rnd.randint(0, 59),
                                         seconds=rnd.randint(0, 59))
                    ip = f"10.{back}.{len(name)}.{k + 1}"
                    cid = visit(name, at, ip)
                    later = at + timedelta(minutes=rnd.randint(2, 50))
                    if cid and name.endswith("shop") and rnd.random() < 0.12:
                        txn = f"H-{back}-{name}-{k}"
                        amount = f"{rnd.randint(25, 180)}.{rnd.randint(0, 99):02d}"
                        post({"key": shop.postback_key, "click_id": cid, "txn_id": txn, "amount": amount}, later)
                        if rnd.random() < 0.1:  # a refund a few days later
                            post({"key": shop.postback_key, "click_id": cid, "txn_id": txn, "amount": amount,
                                  "status": "reversed"}, later + timedelta(days=2))
                    elif cid and name.endswith("game") and rnd.random() < 0.15:
                        post({"key": game.postback_key, "click_id": cid, "event": "install",
                              "txn_id": f"H-INST-{back}-{name}-{k}"}, later)
                    elif cid and name == "kai-look" and rnd.random() < 0.1:
                        post({"key": shop.postback_key, "click_id": cid, "txn_id": f"H-LOOK-{back}-{k}",
                              "amount": f"{rnd.randint(60, 240)}.00"}, later)
            if not weekend:  # calls on the tracking number, signed, of every length
                for k in range(rnd.randint(1, 3)):
                    at = day + timedelta(hours=rnd.randint(9, 17), minutes=rnd.randint(0, 59))
                    params = {"key": broker.postback_key, "number": "+14155550123", "txn_id": f"H-CALL-{back}-{k}",
                              "duration": str(rnd.choice((45, 120, 181, 240, 420, 900))),
                              "ts": str(int(at.timestamp()))}
                    post(_signed(params, broker.postback_secret), at)
            if rnd.random() < 0.5:  # the coupon sells without a click
                at = day + timedelta(hours=rnd.randint(10, 21))
                post({"key": shop.postback_key, "coupon": "KAI15", "txn_id": f"H-KAI-{back}",
                      "amount": f"{rnd.randint(30, 120)}.00"}, at)
    finally:
        clock.set_now(None)
    return seen
