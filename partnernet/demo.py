"""The demo agency: ``flask --app wsgi demo`` seeds it and starts the server.

Three clients (a car-insurance broker paying $3.00 per phone call of at least
180 s, a shop paying 8% of each sale, a mobile game paying per install and per
unique click), affiliates and influencers with links, coupon codes and a
tracking number, a recruiter of a recruiter (two override tiers), a position-based
multi-touch campaign with shoppers who meet several partners, 30 days of traffic (weekdays busier
than weekends) and a morning of today's, all sent through the real endpoints (clicks on
/c/<token>, postbacks on /postback) with the clock set to each day, so that every page and report
has figures. Seeding runs once; later runs only print and serve. Every login is printed, and a
port that is taken is refused before anything is seeded.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import socket
import time
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import click
from flask import Flask
from sqlalchemy import select

from .extensions import db
from .models import Campaign, CampaignEvent, Client, Link, Partner, User

STAFF_EMAIL = "staff@demo.partnernet.example"
STAFF_PASSWORD = "demo-staff-password"
CHECKER_EMAIL = "finance@demo.partnernet.example"
PARTNER_PASSWORD = "demo-partner-password"
CLIENT_PASSWORD = "demo-client-password"
#: Every demo login: (role, who, email, password).
LOGINS = (
    ("staff", "Demo Staff", STAFF_EMAIL, STAFF_PASSWORD),
    ("staff", "Demo Finance (second approver)", CHECKER_EMAIL, STAFF_PASSWORD),
    ("partner", "Ava's Deal Blog (affiliate, recruiter)", "ava.content@demo.example", PARTNER_PASSWORD),
    ("partner", "Kai Styles (influencer, coupon KAI15)", "kai.styles@demo.example", PARTNER_PASSWORD),
    ("client", "AutoCover Insurance Brokers", "ads@autocover.example", CLIENT_PASSWORD),
)
HISTORY_DAYS = 30

BROWSER_UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
              "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1")


def _client(name, currency, website, key):
    c = Client(name=name, currency=currency, website_url=website, postback_key=key,
               postback_secret=hashlib.sha256(key.encode()).hexdigest())
    db.session.add(c)
    db.session.flush()
    return c


def _campaign(client, name, dest, fallback, default_event, events, **kw):
    camp = Campaign(client_id=client.id, name=name, currency=client.currency, destination_url=dest,
                    fallback_url=fallback, default_event=default_event, **kw)
    for e in events:
        camp.events.append(CampaignEvent(**e))
    db.session.add(camp)
    db.session.flush()
    return camp


def _partner(email, name, kind, recruiter=None, percent=None):
    p = Partner(email=email, name=name, kind=kind, status="approved", payout_email=email,
                recruiter_id=recruiter.id if recruiter else None,
                recruiter_percent=Decimal(percent) if percent else None)
    db.session.add(p)
    db.session.flush()
    return p


def _link(partner, campaign, channel, coupon=None, number=None):
    link = Link(partner_id=partner.id, campaign_id=campaign.id, channel=channel, coupon_code=coupon,
                coupon_code_lower=coupon.lower() if coupon else None, tracking_number=number)
    db.session.add(link)
    db.session.flush()
    return link


def seed() -> dict:
    """Create the demo agency (commits). Returns the created rows by name. Idempotent: does nothing
    and returns {} when the demo staff user exists."""
    from .auth.services import create_user

    if db.session.scalar(select(User.id).where(User.email == STAFF_EMAIL)) is not None:
        return {}
    broker = _client("AutoCover Insurance Brokers", "USD", "https://autocover.example/", "pk_demo_broker")
    shop = _client("Kaufhaus Lindenblatt Online", "EUR", "https://www.shop.example/", "pk_demo_shop")
    game = _client("Hanabi Puzzle Games", "JPY", "https://hanabi.example/", "pk_demo_game")
    calls = _campaign(
        broker, "Car insurance quotes by phone", "https://quotes.autocover.example/car?utm_source=partnernet",
        "https://autocover.example/", "call",
        [dict(key="call", label="Qualified call (3+ minutes)", client_fee_minor=300, payout_percent=Decimal("70"),
              min_duration_s=180),
         dict(key="lead", label="Online quote request", client_fee_minor=1250, payout_minor=900)],
        budget_minor=500_00,
    )
    sale = _campaign(
        shop, "Spring sale", "https://www.shop.example/", "https://www.shop.example/sale", "sale",
        [dict(key="sale", label="Sale", client_fee_percent=Decimal("8"), payout_percent=Decimal("75"),
              min_amount_minor=500)],
        deep_link_hosts=["shop.example"],
    )
    app_camp = _campaign(
        game, "Hanabi Match installs (JP)", "https://track.hanabi.example/i/partnernet?cid={click_id}&adgroup={sub1}",
        "https://hanabi.example/", "install",
        [dict(key="install", label="App install", client_fee_minor=450, payout_minor=300),
         dict(key="click", label="Unique click (CPC)", client_fee_minor=12, payout_minor=8)],
    )
    # Recruiter of a recruiter (issue 6): Zoe recruited Ava (8% of Ava's amounts), Ava recruited Ben
    # (10% of Ben's); Ava's tier2_percent gives Zoe 4% of what Ben earns as the second tier.
    zoe = _partner("zoe.network@demo.example", "Zoe Creator Network", "affiliate")
    ava = _partner("ava.content@demo.example", "Ava's Deal Blog", "affiliate", recruiter=zoe, percent="8")
    ava.tier2_percent = Decimal("4")
    ben = _partner("ben.search@demo.example", "Ben Search Media", "affiliate", recruiter=ava, percent="10")
    kai = _partner("kai.styles@demo.example", "Kai Styles", "influencer")
    mia = _partner("mia.games@demo.example", "Mia Plays", "influencer")
    # Multi-touch (issue 6): a position-based campaign; one visitor meets Kai, then Ava, then Ben.
    lookbook = _campaign(
        shop, "Summer lookbook (multi-touch)", "https://www.shop.example/lookbook", "https://www.shop.example/",
        "sale",
        [dict(key="sale", label="Sale", client_fee_percent=Decimal("10"), payout_percent=Decimal("60"))],
        attribution_model="position_based",
    )
    links = {
        "kai-look": _link(kai, lookbook, "influencer"),
        "ava-look": _link(ava, lookbook, "content"),
        "ben-look": _link(ben, lookbook, "search"),
        "ava-shop": _link(ava, sale, "content"),
        "ben-calls": _link(ben, calls, "search", number="+14155550123"),
        "ben-shop": _link(ben, sale, "search"),
        "kai-shop": _link(kai, sale, "influencer", coupon="KAI15"),
        "mia-game": _link(mia, app_camp, "influencer", coupon="MIAPLAYS"),
        "ava-game": _link(ava, app_camp, "native"),
    }
    db.session.commit()
    create_user(STAFF_EMAIL, STAFF_PASSWORD, "staff", name="Demo Staff")
    create_user(CHECKER_EMAIL, STAFF_PASSWORD, "staff", name="Demo Finance")
    create_user("ava.content@demo.example", PARTNER_PASSWORD, "partner", partner_id=ava.id)
    create_user("kai.styles@demo.example", PARTNER_PASSWORD, "partner", partner_id=kai.id)
    create_user("ads@autocover.example", CLIENT_PASSWORD, "client", client_id=broker.id)
    return {"clients": [broker, shop, game], "campaigns": [calls, sale, app_camp, lookbook], "links": links}


def _sign(params: dict, secret: str) -> dict:
    base = "&".join(f"{k}={params[k]}" for k in sorted(params))
    return {**params, "sig": hmac.new(secret.encode(), base.encode(), hashlib.sha256).hexdigest()}


def simulate_traffic(app: Flask, rows: dict) -> dict:
    """Send a morning of traffic through the real endpoints with the test client.
    Returns counts by what was sent and the HTTP statuses seen."""
    signer = app.extensions["partnernet_link_signer"]
    links = rows["links"]
    broker, shop, game = rows["clients"]
    client = app.test_client()
    seen: dict = {}

    def note(kind, status):
        seen[f"{kind} {status}"] = seen.get(f"{kind} {status}", 0) + 1

    def visit(link, n, ip, extra=""):
        r = client.get(f"/c/{signer.dumps(link.id)}?sub1=demo{extra}",
                       headers={"User-Agent": BROWSER_UA, "X-Forwarded-For": ip}, environ_base={"REMOTE_ADDR": ip})
        note("click", r.status_code)
        qs = parse_qs(urlsplit(r.headers.get("Location", "")).query)
        return (qs.get("click_id") or qs.get("cid") or [None])[0]

    click_ids = {}
    for i in range(40):
        ip = f"198.51.100.{i + 1}"
        for name in ("ava-shop", "ben-shop", "ava-game", "mia-game"):
            click_ids[(name, i)] = visit(links[name], i, ip)
    for i in range(0, 40, 4):  # shop sales, 8% of the amount
        cid = click_ids[("ava-shop", i)]
        r = client.post("/postback", data={"key": shop.postback_key, "click_id": cid, "txn_id": f"ORD-{1000 + i}",
                                           "amount": f"{59 + i}.90", "currency": "EUR"})
        note("postback", r.status_code)
    for i in range(0, 40, 8):
        cid = click_ids[("ben-shop", i)]
        r = client.get("/postback", query_string={"key": shop.postback_key, "click_id": cid,
                                                  "txn_id": f"ORD-{2000 + i}", "amount": "129.00"})
        note("postback", r.status_code)
    for i in range(6):  # influencer coupon sales
        r = client.get("/postback", query_string={"key": shop.postback_key, "coupon": "kai15",
                                                  "txn_id": f"ORD-{3000 + i}", "amount": f"{40 + 10 * i}.00"})
        note("postback", r.status_code)
    for i in range(0, 40, 5):  # game installs
        cid = click_ids[("mia-game", i)]
        r = client.get("/postback", query_string={"key": game.postback_key, "click_id": cid, "event": "install",
                                                  "txn_id": f"INST-{i}"})
        note("postback", r.status_code)
    for i, secs in enumerate((95, 181, 240, 180, 600, 30)):  # calls on the tracking number, signed
        params = {"key": broker.postback_key, "number": "+14155550123", "txn_id": f"CALL-{i}",
                  "duration": str(secs), "ts": str(int(time.time()))}
        r = client.get("/postback", query_string=_sign(params, broker.postback_secret))
        note("postback", r.status_code)
    r = client.get("/postback", query_string={"key": shop.postback_key, "click_id": click_ids[("ava-shop", 0)],
                                              "txn_id": "ORD-1000", "amount": "59.90", "status": "approved"})
    note("postback", r.status_code)
    # multi-touch journeys: each shopper (own browser, own cookie) meets two or three partners, then buys
    for j, path in enumerate((("kai-look", "ava-look", "ben-look"), ("ava-look", "kai-look"), ("ben-look",))):
        shopper = app.test_client()
        ip = f"203.0.113.{100 + j}"
        last = None
        for name in path:
            r = shopper.get(f"/c/{signer.dumps(links[name].id)}",
                            headers={"User-Agent": BROWSER_UA, "X-Forwarded-For": ip}, environ_base={"REMOTE_ADDR": ip})
            note("click", r.status_code)
            last = (parse_qs(urlsplit(r.headers.get("Location", "")).query).get("click_id") or [None])[0]
        r = client.get("/postback", query_string={"key": shop.postback_key, "click_id": last,
                                                  "txn_id": f"LOOK-{j}", "amount": f"{150 + 50 * j}.00"})
        note("postback", r.status_code)
    return seen


def port_taken(host: str, port: int) -> bool:
    """True when something already listens on ``host:port`` (or it cannot be bound)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def run_demo(app: Flask, *, host: str, port: int, serve: bool = True) -> None:
    """Seed (once), simulate 30 days and a morning of traffic (once), print the URL, every login,
    sample links and what to try, then serve. Raises :class:`click.ClickException` (exit 1, a
    one-line message) when ``serve`` and the port is taken, before anything is seeded."""
    from .demo_history import simulate_history
    from .queue import run_pending

    if serve and port_taken(host, port):
        raise click.ClickException(
            f"port {port} on {host} is already in use (another demo or server?); stop it, or pick another "
            f"port: flask --app wsgi demo --port {port + 1}")
    base = app.config["PARTNERNET_BASE_URL"]
    if base == "http://127.0.0.1:5000" and (host, port) != ("127.0.0.1", 5000):
        base = f"http://{host}:{port}"
        app.config["PARTNERNET_BASE_URL"] = base
    rows = seed()
    if rows:
        quiet = logging.getLogger("partnernet")
        level = quiet.level
        quiet.setLevel(logging.WARNING)  # the seeding's per-job log lines are noise here
        try:
            click.echo(f"seeding the demo agency and {HISTORY_DAYS} days of traffic (about a minute)...")
            history = simulate_history(app, rows, days=HISTORY_DAYS)
            run_pending()
            seen = simulate_traffic(app, rows)
            run_pending()
        finally:
            quiet.setLevel(level)
        merged = {k: history.get(k, 0) + seen.get(k, 0) for k in {*history, *seen}}
        click.echo("seeded; traffic sent through the real endpoints: "
                   + ", ".join(f"{k}: {v}" for k, v in sorted(merged.items())))
    signer = app.extensions["partnernet_link_signer"]
    click.echo("")
    click.echo(f"PartnerNet demo at {base}/")
    click.echo("  logins (sign in at /login):")
    for role, who, email, password in LOGINS:
        click.echo(f"    {role:<8} {email:<34} {password:<22} {who}")
    click.echo("  sample tracking links:")
    for link in db.session.scalars(select(Link).order_by(Link.id)).all():
        extra = []
        if link.coupon_code:
            extra.append(f"coupon {link.coupon_code}")
        if link.tracking_number:
            extra.append(f"number {link.tracking_number}")
        click.echo(f"    {link.partner.name:<20} {link.campaign.name:<32} {base}/c/{signer.dumps(link.id)}"
                   + (f"  ({', '.join(extra)})" if extra else ""))
    click.echo("  postback credentials (client: key / secret for signatures):")
    for c in db.session.scalars(select(Client).order_by(Client.id)).all():
        click.echo(f"    {c.name}: {c.postback_key} / {c.postback_secret}")
    click.echo("  things to try:")
    for line in (
        "as staff: Reports (30 days by day, partner or channel), Conversions (review the flagged ones), "
        "Payouts (build a batch, download the CSV or SEPA file)",
        "as Ava: Links (make a tracking link, see its QR code), Earnings (recruiter overrides from Ben), Postbacks",
        "as Kai: the coupon KAI15 sells without a click; Earnings shows those sales",
        "as the client: pause the campaign and click its tracking link: it goes to the fallback page",
        f"a click: curl -si -A 'Mozilla/5.0 (X11; Linux x86_64) Chrome/124' '{base}/c/<token>?sub1=test'",
        f"a postback: curl -s '{base}/postback?key=<key>&click_id=<click_id>&txn_id=T1&amount=10.00'",
    ):
        click.echo(f"    - {line}")
    if serve:
        from werkzeug.serving import run_simple

        click.echo(f"serving on {base}/ (Ctrl+C stops)")
        run_simple(host, port, app, threaded=True, use_reloader=False, use_debugger=False)
