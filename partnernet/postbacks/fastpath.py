"""The postback's fast path on PostgreSQL: CONTRACT §3 steps 5-7 and the log in one or two
statements, no ORM object, no transaction round trips.

:func:`partnernet.postbacks.services.process_postback` runs steps 1-4 as always, then, when
:func:`usable` says so, hands steps 5-7 to :func:`handle`:

1. **One statement for the existing conversion, or for what a new one needs** (:data:`_S1`,
   autocommit). It reads the conversion with the postback's (campaign, event, dedup key) through
   the unique index. When there is one and the posted status changes nothing (CONTRACT §3 step 5:
   a repeat, ``pending`` after ``approved`` ...), the same statement writes the postback log row
   (200 ``existing``) and the answer is complete: the duplicate is answered by the database's own
   unique index in one round trip. When there is none, the same statement returns the payout terms
   in force (:data:`partnernet.ledger.payout_rules._TERMS`, the partner's status with them) and the
   fraud-flag facts (:func:`partnernet.conversions.flags.facts_statement`), both run only then.
2. **One statement that records a new live conversion** (:data:`_S3`, autocommit, so atomic): it
   locks the campaign row (``FOR NO KEY UPDATE``, the house lock order: campaign before
   conversion) where the budget allows the fee and the campaign has no spend caps, inserts the
   conversion (``ON CONFLICT DO NOTHING``), moves ``spent_minor`` only when the row was inserted,
   and writes the log row (201 ``created``); the hold period and currency come from the locked row.

Everything else goes the plain way (:func:`handle` returns None having written nothing, and the
caller carries on with the ORM code of ``services`` from step 5): a status change or an
adjustment, a test postback, a customer ID, a one-per-click event, any business-rule rejection
(including ``partner_suspended``, ``over_budget``, spend caps and ``client_rejected``), a concurrent
twin that committed first, and any database error on this path (the plain path then answers,
503 included). Both paths apply the same rules in the same order; the tests compare them
(``tests/services/test_postback_fastpath.py``).

Connection (:mod:`partnernet.postbacks.fastdb`). Each thread keeps one psycopg connection of its
own in autocommit mode: no pool checkout, no pre-ping, no ``BEGIN``/``COMMIT`` round trips. The
postback's lookups (:mod:`partnernet.postbacks.lookups`, on a cache miss) read through it too
(:func:`reader`). Reads are READ COMMITTED like the plain path, so reading the terms in the
statement before the insert sees what the plain path's transaction would have seen at that
moment. Neither is used when the session already holds uncommitted work (:func:`session_is_clean`),
which that connection could not see.

Setting: ``PARTNERNET_POSTBACK_FASTPATH`` (app config, else the environment variable of that
name; default **off**): True, ``1``, ``true`` or ``yes`` turns it on. Off by default because a
full day's replay showed its first statement taking seconds once the clicks table had grown
(a plan problem of the fraud-flag facts inside it, not yet understood); until that is measured
and fixed, the plain path answers.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from datetime import UTC, datetime

from flask import current_app

from ..clock import utcnow
from ..conversions import flags
from ..conversions.services import POSTBACK_TRANSITIONS, client_fee_for, queue_ledger_sync, spent_moved
from ..extensions import db
from ..ledger import payout_rules
from ..ledger.payout_rules import terms_from_rows
from . import fastdb
from .fastdb import renamed

log = logging.getLogger(__name__)

SETTING = "PARTNERNET_POSTBACK_FASTPATH"


def enabled(app) -> bool:
    """The setting (module docstring): the app's config when it has the key, else the environment."""
    value = app.config.get(SETTING)
    if value is None:
        value = os.environ.get(SETTING, "0")
    if isinstance(value, str):
        return value.strip().lower() not in ("0", "false", "no", "off")
    return bool(value)

#: The statuses from which a posted status changes an existing conversion (CONTRACT §3 step 5),
#: per posted status: an existing conversion in one of them goes the plain way.
_CHANGES_FROM = {posted: sorted(old for old, new in POSTBACK_TRANSITIONS if new == posted)
                 for posted in ("pending", "approved", "rejected", "reversed")}

_LOG_COLUMNS = ("received_at, method, remote_ip, client_id, campaign_id, params, http_status, outcome, "
                "conversion_id, message, is_test")

_CONVERSION_COLUMNS = (
    "campaign_id", "event_key", "link_id", "partner_id", "click_id", "txn_id", "dedup_key", "amount_minor",
    "client_fee_minor", "client_fee_percent", "payout_minor", "payout_percent", "duration_s", "created_at",
    "click_at", "is_test", "customer_id", "payout_rule", "terms_payout_minor", "terms_payout_percent",
    "terms_recruiter_id", "terms_recruiter_percent", "terms_recruiter2_id", "terms_recruiter2_percent",
    "flags", "flag_evidence", "status", "reason", "approved_at", "approved_by", "rejected_at", "reversed_at",
    "ledger_status",
)
_JSON_COLUMNS = ("flags", "flag_evidence")


def _insert_values() -> str:
    out = []
    for name in _CONVERSION_COLUMNS:
        out.append(f"CAST(%(v_{name})s AS json)" if name in _JSON_COLUMNS else f"%(v_{name})s")
    return ", ".join(out)


# Step 2: lock the campaign where the fee fits and no cap applies, insert, move the spend only when
# inserted, log. Returns one row (id, spent, budget) when recorded, none when the plain path decides.
_S3 = f"""
WITH c AS (
    SELECT currency, hold_days FROM campaigns
    WHERE id = %(v_campaign_id)s AND daily_cap_minor IS NULL AND monthly_cap_minor IS NULL
      AND (budget_minor IS NULL OR spent_minor + %(fee)s <= budget_minor)
    FOR NO KEY UPDATE
), ins AS (
    INSERT INTO conversions ({", ".join(_CONVERSION_COLUMNS)}, currency, hold_until)
    SELECT {_insert_values()}, c.currency,
           CAST(%(v_created_at)s AS timestamptz) + COALESCE(c.hold_days, 0) * INTERVAL '86400 seconds'
    FROM c
    ON CONFLICT (campaign_id, event_key, dedup_key) DO NOTHING
    RETURNING id
), up AS (
    UPDATE campaigns SET spent_minor = spent_minor + %(fee)s, updated_at = %(updated_at)s
    WHERE id = %(v_campaign_id)s AND EXISTS (SELECT 1 FROM ins)
    RETURNING spent_minor, budget_minor
), lg AS (
    INSERT INTO postback_log ({_LOG_COLUMNS})
    SELECT %(received_at)s, %(method)s, %(remote_ip)s, %(client_id)s, %(v_campaign_id)s, CAST(%(params)s AS json),
           201, 'created', ins.id, %(message)s, false
    FROM ins
)
SELECT ins.id, up.spent_minor, up.budget_minor FROM ins CROSS JOIN up
"""


@dataclass(frozen=True)
class _Statements:
    """Step 1's statement for one shape of facts (click ID or not), with its constants."""

    sql: str
    constants: dict
    terms_columns: int
    facts_columns: int


_compiled: dict = {}
_compile_lock = threading.Lock()


def _s1(with_click: bool) -> _Statements:
    """Step 1's statement (module docstring), built once per process from the terms and facts
    statements themselves (they are the very SQL the plain path runs)."""
    found = _compiled.get(with_click)
    if found is not None:
        return found
    with _compile_lock:
        from sqlalchemy.dialects import postgresql

        dialect = postgresql.dialect(paramstyle="pyformat")
        terms_sql, constants = renamed(payout_rules._TERMS, "t_", dialect)
        terms_n = len(payout_rules._TERMS.selected_columns)
        if with_click:
            facts_stmt = flags.facts_statement({"click_id": "x"})
            facts_sql, facts_constants = renamed(facts_stmt, "f_", dialect)
            constants.update(facts_constants)
            facts_n = len(facts_stmt.selected_columns)
            facts_from = f" CROSS JOIN ({facts_sql}) AS f"
            facts_cols = ", f.*"
        else:
            facts_n, facts_from, facts_cols = 0, "", ""
        nulls = ", ".join(["NULL"] * (terms_n + facts_n))
        sql = f"""
WITH e AS (
    SELECT id, status FROM conversions
    WHERE campaign_id = %(campaign_id)s AND event_key = %(event_key)s AND dedup_key = %(dedup_key)s
), lg AS (
    INSERT INTO postback_log ({_LOG_COLUMNS})
    SELECT %(received_at)s, %(method)s, %(remote_ip)s, %(client_id)s, %(campaign_id)s, CAST(%(params)s AS json),
           200, 'existing', e.id, 'existing: ' || e.status || ', unchanged', false
    FROM e WHERE NOT (e.status = ANY(%(changes_from)s))
)
SELECT e.id, e.status, {nulls} FROM e
UNION ALL
SELECT NULL, NULL, t.*{facts_cols} FROM ({terms_sql}) AS t{facts_from}
WHERE NOT EXISTS (SELECT 1 FROM e)
"""
        found = _compiled[with_click] = _Statements(sql, constants, terms_n, facts_n)
    return found


def reader(*, is_test: bool, session_was_clean: bool):
    """:func:`partnernet.postbacks.fastdb.read` when a postback's lookups may read through the fast path's connection (the
    conditions of :func:`usable` that are known before the lookups), else None (the session)."""
    if is_test or not session_was_clean or not enabled(current_app):
        return None
    return fastdb.read if db.engine.dialect.name == "postgresql" else None


# -- when it applies ---------------------------------------------------------------------------

def usable(*, is_test: bool, status: str, customer_id: str | None, session_was_clean: bool) -> bool:
    """True when a postback may take the fast path: PostgreSQL, the setting on, not a test
    postback, not ``status=adjusted``, no ``customer_id`` (binding and recurring go the plain
    way), and nothing uncommitted in the session that the plain path's transaction would see
    (``session_was_clean``: the session held no transaction when the postback began, or one that
    wrote nothing)."""
    if is_test or status == "adjusted" or customer_id is not None:
        return False
    app = current_app
    if not enabled(app) or not session_was_clean:
        return False
    return db.engine.dialect.name == "postgresql"


def session_is_clean() -> bool:
    """True when the current session has nothing the fast path's own connection could miss: no
    pending objects, and no transaction or one that has written nothing (PostgreSQL asked only
    when a transaction is open). Only meaningful on PostgreSQL."""
    session = db.session()
    if session.new or session.dirty or session.deleted:
        return False
    if not session.in_transaction():
        return True
    if db.engine.dialect.name != "postgresql":
        return False
    from sqlalchemy import text

    return bool(session.execute(text("SELECT pg_current_xact_id_if_assigned() IS NULL")).scalar())


# -- steps 5-7 ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Recorded:
    """What :func:`queue_ledger_sync` needs of a conversion recorded here."""

    id: int
    campaign_id: int
    partner_id: int
    status: str
    is_test: bool = False


def handle(ctx, *, target, campaign, event, fields, amount_minor: int | None, key: str, reason_of):
    """CONTRACT §3 steps 5-7 and the log row for one postback, or None (nothing written) when the
    plain path must decide (module docstring). ``ctx``: the postback's log context
    (``services._Log``; its ``conversion_id`` and ``logged`` are set here); ``target``,
    ``campaign``, ``event``, ``fields``, ``amount_minor``: what steps 1-4 found; ``key``: the dedup
    key; ``reason_of()``: the first business-rule rejection of ``services._business_reason`` for a
    postback whose event is not one-per-click. Returns ``(http_status, body, outcome, message)``.
    Raises nothing: a database error is logged and answered None."""
    try:
        return _handle(ctx, target=target, campaign=campaign, event=event, fields=fields,
                       amount_minor=amount_minor, key=key, reason_of=reason_of)
    except Exception:  # noqa: BLE001 - the plain path answers (503 included)
        if ctx.logged:  # pragma: no cover - nothing after the commit raises (see _handle)
            raise
        log.warning("postback fast path failed; the plain path answers", exc_info=True)
        fastdb.discard_connections()
        return None


def _handle(ctx, *, target, campaign, event, fields, amount_minor, key, reason_of):
    link = target.link
    ref = target.ref
    status = fields.status
    now = utcnow()
    fee = client_fee_for(event, amount_minor)
    values = {
        "campaign_id": campaign.id, "event_key": event.key, "link_id": link.id, "partner_id": link.partner_id,
        "click_id": fields.click_id, "txn_id": fields.txn_id, "dedup_key": key, "amount_minor": amount_minor,
        "client_fee_minor": fee, "client_fee_percent": event.client_fee_percent,
        "payout_minor": event.payout_minor, "payout_percent": event.payout_percent,
        "duration_s": fields.duration_s, "created_at": now,
        "click_at": datetime.fromtimestamp(ref.ts, UTC) if ref is not None else None, "is_test": False, "customer_id": None,
    }
    settings = flags.FlagSettings.from_config(current_app.config)
    with_click = fields.click_id is not None
    stmts = _s1(with_click)
    m0, m1 = payout_rules.month_bounds(now)
    log_params = json.dumps(ctx.params)
    params = {
        **stmts.constants,
        "campaign_id": campaign.id, "event_key": event.key, "dedup_key": key,
        "changes_from": _CHANGES_FROM[status],
        "received_at": now, "method": (ctx.method or "")[:8],
        "remote_ip": (ctx.remote_ip or None) and ctx.remote_ip[:64], "client_id": ctx.client_id,
        "params": log_params,
        "pid": link.partner_id, "cid": campaign.id, "ev": event.key, "m0": m0, "m1": m1,
    }
    if with_click:
        params.update(flags.facts_params(values, settings))
    conn = fastdb.connection()
    rows = conn.execute(stmts.sql, params).fetchall()
    if not rows:
        return None  # the partner or the campaign is gone: the plain path decides
    first = rows[0]
    if first[0] is not None:  # step 5: an existing conversion
        if first[1] in _CHANGES_FROM[status]:
            return None  # a status change: the plain path locks and applies it (nothing was written)
        ctx.conversion_id = first[0]
        ctx.logged = True
        body = {"ok": True, "conversion_id": str(first[0]), "status": first[1], "duplicate": True}
        return 200, body, "existing", f"existing: {first[1]}, unchanged"

    # Step 6: any rejection, and a live conversion the fast statement cannot take, go the plain way.
    if status not in ("pending", "approved"):
        return None  # client_rejected
    if event.one_per_click and fields.click_id is not None:
        return None  # duplicate_click is judged under the campaign lock
    if reason_of() is not None:
        return None
    n = stmts.terms_columns
    terms = terms_from_rows([r[2:2 + n] for r in rows], partner_id=link.partner_id,
                                       event_key=event.key, payout_minor=event.payout_minor,
                                       payout_percent=event.payout_percent, fee_minor=fee)
    if terms.partner_status != "approved":
        return None  # partner_suspended
    values.update(terms.columns())
    facts_row = first[2 + n:2 + n + stmts.facts_columns] if with_click else None
    found = flags.evaluate(flags.facts_from_row(values, event, facts_row), settings)
    approved = status == "approved"
    values.update({
        "flags": json.dumps(list(found)), "flag_evidence": json.dumps(found),
        "status": status, "reason": None, "approved_at": now if approved else None,
        "approved_by": "postback" if approved else None, "rejected_at": None, "reversed_at": None,
        "ledger_status": None,
    })
    message = f"created {status}"
    written = conn.execute(_S3, {
        **{f"v_{k}": v for k, v in values.items()}, "fee": fee,
        "updated_at": utcnow(),  # Campaign.updated_at's onupdate, as the plain path's Core UPDATE sets it
        "received_at": utcnow(), "method": params["method"], "remote_ip": params["remote_ip"],
        "client_id": ctx.client_id, "params": log_params, "message": message,
    }).fetchone()
    if written is None:
        return None  # over the budget, spend caps, or a twin committed first: the plain path decides
    new_id, spent, budget = written
    ctx.conversion_id = new_id
    ctx.logged = True  # committed: from here on this is the answer, whatever fails below
    try:
        spent_moved(campaign.id, spent, budget, fee)  # crossing the budget bumps the state version
        queue_ledger_sync(_Recorded(new_id, campaign.id, link.partner_id, status))
    except Exception:  # noqa: BLE001 - the ledger sweeper finds a conversion whose ledger lags
        log.exception("could not queue the ledger sync of conversion %s", new_id)
    ctx.logged = True
    body = {"ok": True, "conversion_id": str(new_id), "status": status, "duplicate": False}
    return 201, body, "created", message
