"""The lean postback path: per-process lookups cached under the state version (with Redis), read
fresh without Redis, invalidated at once by every change they depend on; the statements a warm
repeat and a warm new postback make; and the fast path of record_conversion (spend moved and
budget checked in one statement, the conversion inserted once)."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import event, select, text

from partnernet.catalog import services as catalog
from partnernet.conversions.services import record_conversion
from partnernet.extensions import db
from partnernet.models import Campaign, Conversion, PostbackLog, User
from partnernet.partners import postbacks as partner_postbacks
from partnernet.postbacks import lookups
from partnernet.postbacks import params as P
from partnernet.queue import get_redis
from partnernet.staff import services as staff
from partnernet.tracking import state
from tests.factories import make_campaign, make_client, make_link, make_partner


@pytest.fixture
def cached(redis_app):
    """PostgreSQL + Redis (lookups cached), an empty cache, a client, a campaign, a link."""
    lookups.clear_cache(redis_app)
    adv = make_client()
    camp = make_campaign(adv, events=[{"key": "sale", "client_fee_minor": 1000, "payout_percent": "50"},
                                      {"key": "lead", "client_fee_minor": 200, "payout_minor": 100}])
    link = make_link(make_partner(), camp, coupon_code="Cached10")
    staff_user = User(email="staff@example.com", password_hash="x", role="staff")
    db.session.add(staff_user)
    db.session.commit()
    return redis_app, adv, camp, link, staff_user.id


def _click(app, link) -> str:
    return app.extensions["partnernet_click_signer"].make(link.id, int(time.time()))


def _post(app, **params) -> tuple[int, dict]:
    resp = app.test_client().get("/postback", query_string=params)
    return resp.status_code, resp.get_json()


def _post_signed(app, key: str, secret: str, link, txn_id: str) -> tuple[int, dict]:
    pairs = [("key", key), ("ts", str(int(time.time()))), ("click_id", _click(app, link)), ("txn_id", txn_id)]
    return _post(app, **dict(pairs + [("sig", P.sign(secret, pairs))]))


class _Statements:
    """Records the SQL statements the engine runs while active."""

    def __init__(self, engine):
        self.engine, self.seen = engine, []

    def _on(self, conn, cursor, statement, *a):
        self.seen.append(" ".join(statement.split()))

    def __enter__(self):
        event.listen(self.engine, "before_cursor_execute", self._on)
        return self

    def __exit__(self, *exc):
        event.remove(self.engine, "before_cursor_execute", self._on)

    def kinds(self) -> list[str]:
        """``"SELECT conversions"``, ``"UPDATE campaigns"``, ``"INSERT postback_log"``... in order."""
        out = []
        for s in self.seen:
            verb = s.split(" ", 1)[0].upper()
            if verb == "SELECT" and " FROM partners JOIN campaigns " in s:
                table = "terms"  # partnernet.ledger.payout_rules.recording_terms
            elif verb == "SELECT":
                table = s.split(" FROM ", 1)[1].split(" ", 1)[0] if " FROM " in s else "?"
            elif verb == "INSERT":
                table = s.split(" INTO ", 1)[1].split(" ", 1)[0]
            elif verb == "UPDATE":
                table = s.split(" ", 2)[1]
            else:
                table = ""
            out.append(f"{verb} {table}".strip())
        return out


@pytest.fixture
def plain_path(cached):
    """The plain (ORM) path of the postback: the fast path (partnernet.postbacks.fastpath, whose
    statements tests/services/test_postback_fastpath.py counts) turned off."""
    app = cached[0]
    app.config["PARTNERNET_POSTBACK_FASTPATH"] = False
    yield cached
    app.config.pop("PARTNERNET_POSTBACK_FASTPATH", None)


def test_warm_new_and_repeat_postbacks_make_the_fewest_statements(plain_path):
    app, adv, camp, link, _ = plain_path
    key, cid = adv.postback_key, _click(app, link)
    _post(app, key=key, click_id=_click(app, link), txn_id="WARM-1", amount="10.00")
    with _Statements(db.engine) as new:
        status, body = _post(app, key=key, click_id=cid, txn_id="NEW-1")
    assert status == 201 and body["duplicate"] is False
    # the repeat check, the terms in force (partner status, tier, recruiters, overrides, bonuses:
    # one query, never cached), the fraud-flag facts of the click, the budget check, the insert,
    # the log row
    assert new.kinds() == ["SELECT conversions", "SELECT terms", "SELECT clicks", "UPDATE campaigns",
                           "INSERT conversions", "INSERT postback_log"]
    with _Statements(db.engine) as repeat:
        status, again = _post(app, key=key, click_id=cid, txn_id="NEW-1")
    assert (status, again["duplicate"], again["conversion_id"]) == (200, True, body["conversion_id"])
    assert repeat.kinds() == ["SELECT conversions", "INSERT postback_log"]
    db.session.expire_all()
    assert db.session.get(Campaign, camp.id).spent_minor == 2000
    assert db.session.scalar(select(db.func.count()).select_from(PostbackLog)) == 3


def test_rotated_secret_is_refused_at_once(cached):
    app, adv, camp, link, staff_id = cached
    key, old = adv.postback_key, adv.postback_secret
    assert _post_signed(app, key, old, link, "R-1")[0] == 201
    new = staff.rotate_client_secret(adv.id, staff_id).postback_secret
    status, body = _post_signed(app, key, old, link, "R-2")
    assert (status, body["error"]) == (401, "unauthorized")
    assert _post_signed(app, key, new, link, "R-3")[0] == 201


def test_signature_requirement_and_ip_allowlist_apply_at_once(cached):
    app, adv, camp, link, staff_id = cached
    assert _post(app, key=adv.postback_key, click_id=_click(app, link), txn_id="S-1")[0] == 201
    staff.update_client(adv.id, {"require_signature": True}, staff_id)
    assert _post(app, key=adv.postback_key, click_id=_click(app, link), txn_id="S-2")[0] == 401
    staff.update_client(adv.id, {"require_signature": False, "ip_allowlist": "203.0.113.0/24"}, staff_id)
    assert _post(app, key=adv.postback_key, click_id=_click(app, link), txn_id="S-3")[0] == 401
    staff.update_client(adv.id, {"ip_allowlist": ""}, staff_id)
    assert _post(app, key=adv.postback_key, click_id=_click(app, link), txn_id="S-4")[0] == 201


def test_event_changes_and_partner_suspension_apply_at_once(cached):
    app, adv, camp, link, staff_id = cached
    status, body = _post(app, key=adv.postback_key, coupon="cached10", txn_id="E-1", event="lead")
    assert status == 201
    catalog.update_campaign(camp.id, {"events": [
        {"key": "sale", "client_fee": "10.00", "payout_percent": "50"},
        {"key": "lead", "client_fee": "3.00", "payout": "1.00"}]})
    status, body = _post(app, key=adv.postback_key, coupon="cached10", txn_id="E-2", event="lead")
    assert status == 201
    assert db.session.get(Conversion, int(body["conversion_id"])).client_fee_minor == 300
    catalog.update_campaign(camp.id, {"events": [
        {"key": "sale", "client_fee": "10.00", "payout_percent": "50"}]})
    status, body = _post(app, key=adv.postback_key, coupon="cached10", txn_id="E-3", event="lead")
    assert (status, body["error"]) == (400, "unknown_event")
    catalog.set_partner_status(link.partner_id, "suspend", staff_id)
    status, body = _post(app, key=adv.postback_key, coupon="cached10", txn_id="E-4")
    assert (status, body["status"], body["reason"]) == (200, "rejected", "partner_suspended")


def test_a_new_partner_postback_url_is_seen_by_the_next_conversion(cached):
    app, adv, camp, link, _ = cached
    r = get_redis()
    status, body = _post(app, key=adv.postback_key, click_id=_click(app, link), txn_id="U-1")
    assert status == 201 and not r.exists(f"rq:job:partner-postback-{body['conversion_id']}-pending")
    partner_postbacks.set_postback(link.partner_id, "https://8.8.8.8/pb?t={txn_id}")
    status, body = _post(app, key=adv.postback_key, click_id=_click(app, link), txn_id="U-2")
    assert status == 201 and r.exists(f"rq:job:partner-postback-{body['conversion_id']}-pending")


def test_changes_by_plain_sql_need_a_version_bump_to_be_seen(cached):
    """The cache follows the state version: a change that bypasses the ORM (here plain SQL) is
    seen once the version moves (or after MAX_ENTRY_AGE_S)."""
    app, adv, camp, link, _ = cached
    assert _post(app, key=adv.postback_key, click_id=_click(app, link), txn_id="P-1")[0] == 201
    db.session.execute(text("UPDATE clients SET require_signature = true WHERE id = :id"), {"id": adv.id})
    db.session.commit()
    assert _post(app, key=adv.postback_key, click_id=_click(app, link), txn_id="P-2")[0] == 201  # cached
    state.bump_state_version()
    db.session.commit()
    assert _post(app, key=adv.postback_key, click_id=_click(app, link), txn_id="P-3")[0] == 401


def test_state_ttl_trusts_the_last_version_read_for_that_long(cached, monkeypatch):
    app, adv, camp, link, staff_id = cached
    monkeypatch.setitem(app.config, "PARTNERNET_STATE_TTL_S", 3600)
    assert _post(app, key=adv.postback_key, click_id=_click(app, link), txn_id="L-1")[0] == 201
    staff.update_client(adv.id, {"require_signature": True}, staff_id)
    assert _post(app, key=adv.postback_key, click_id=_click(app, link), txn_id="L-2")[0] == 201  # trusted
    monkeypatch.setitem(app.config, "PARTNERNET_STATE_TTL_S", 0)
    assert _post(app, key=adv.postback_key, click_id=_click(app, link), txn_id="L-3")[0] == 401


def test_without_redis_every_postback_reads_the_database(app):
    """Embedded mode (no Redis; several processes may share one SQLite file): nothing is cached,
    so a change written by another process is seen at once."""
    adv = make_client()
    link = make_link(make_partner(), make_campaign(adv))
    signer = app.extensions["partnernet_click_signer"]
    http = app.test_client()
    for n, expect in ((1, 201), (2, 401)):
        resp = http.get("/postback", query_string={"key": adv.postback_key, "txn_id": f"N-{n}",
                                                   "click_id": signer.make(link.id, int(time.time()))})
        assert resp.status_code == expect
        db.session.execute(text("UPDATE clients SET require_signature = :t WHERE id = :id"),
                           {"t": True, "id": adv.id})
        db.session.commit()


def test_redis_down_reads_the_database(cached, monkeypatch):
    app, adv, camp, link, _ = cached
    monkeypatch.setitem(app.config, "REDIS_URL", "redis://127.0.0.1:1/0")
    app.extensions.pop("partnernet_redis", None)
    try:
        assert lookups.Lookups(lookups._current_version()).version is None
        status, body = _post(app, key=adv.postback_key, click_id=_click(app, link), txn_id="D-1")
        assert (status, body["duplicate"]) == (201, False)  # the jobs wait for the sweeper
    finally:
        app.extensions.pop("partnernet_redis", None)


# --- record_conversion's fast path ------------------------------------------------------------

def _record(camp, link, txn_id: str, *, event_key: str = "sale", amount_minor=None):
    return record_conversion(campaign_id=camp.id, event=camp.event(event_key), link_id=link.id,
                             partner_id=link.partner_id, click_id=None, click_at=None, txn_id=txn_id,
                             amount_minor=amount_minor, duration_s=None, status="pending", reason=None)


def test_fast_path_keeps_a_loaded_campaign_in_step_and_returns_a_persistent_row(app):
    camp = make_campaign(make_client(), budget_minor=2500)
    link = make_link(make_partner(), camp)
    rec = _record(camp, link, "F-1")
    assert rec.created and rec.conversion.id is not None
    assert camp.spent_minor == 1000  # no re-read needed
    assert rec.conversion in db.session and rec.conversion.ledger_status is None
    db.session.commit()
    assert db.session.get(Conversion, rec.conversion.id).status == "pending"


def test_an_existing_key_gives_the_fee_back(app):
    camp = make_campaign(make_client())
    link = make_link(make_partner(), camp)
    first = _record(camp, link, "T-1")
    db.session.commit()
    again = _record(camp, link, "T-1")
    assert (again.created, again.conversion.id) == (False, first.conversion.id)
    db.session.commit()
    db.session.expire_all()
    assert db.session.get(Campaign, camp.id).spent_minor == 1000
    assert db.session.scalar(select(db.func.count()).select_from(Conversion)) == 1


def test_reaching_the_budget_bumps_the_state_version_and_passing_it_is_over_budget(app):
    camp = make_campaign(make_client(), budget_minor=2000)
    link = make_link(make_partner(), camp)
    assert _record(camp, link, "B-1").conversion.status == "pending"
    db.session.commit()
    before = state.local_version()
    assert _record(camp, link, "B-2").conversion.status == "pending"  # spend reaches the budget exactly
    db.session.commit()
    assert state.local_version() != before
    third = _record(camp, link, "B-3").conversion
    assert (third.status, third.reason) == ("rejected", "over_budget")
    db.session.commit()
    db.session.expire_all()
    assert db.session.get(Campaign, camp.id).spent_minor == 2000
