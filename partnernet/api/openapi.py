"""The OpenAPI 3.0 document of the API: ``GET /api/v1/openapi.json`` (CONTRACT §5), public.

Built from the Python dict below (no extra dependency). Paths under ``/api/v1``
are relative to the first server (``<PARTNERNET_BASE_URL>/api/v1``); the
tracking link, the impression pixel and the postback (CONTRACT §1-3) are
described too, with their own server (the bare origin). A test checks that
every route of the blueprint appears here.
"""

from __future__ import annotations

import copy
from typing import Any

from flask import current_app, jsonify

from .views import bp

ERROR_CODES = {
    400: (
        "bad_json, unknown_field, missing_field, invalid, bad_id, bad_limit, bad_cursor, bad_url, "
        "bad_host, bad_amount, unknown_currency, currency_mismatch, bad_percent, bad_event_key, "
        "duplicate_event_key, bad_event_pricing, payout_above_fee, unknown_default_event, "
        "bad_attribution_model, bad_status, bad_kind, bad_email, bad_channel, unknown_client, "
        "unknown_partner, unknown_campaign, unknown_recruiter, deep_link_not_allowed, bad_coupon_code, "
        "bad_tracking_number, bad_group_by, bad_date, bad_range, unknown_timezone, "
        "bad_iban (IBAN country, length or check digits), bad_bic, bad_account_holder, bad_payout_method, "
        "bad_text (a string of the body or query with a NUL character or an unpaired UTF-16 surrogate), "
        "bad_ids, too_many_ids (bulk review: more than 1,000 ids)"
    ),
    401: "unauthorized: no key, an unknown or revoked key, a key of a deactivated user",
    403: (
        "forbidden: a call the key's role may never make (a staff call from a partner or client key, "
        "a client changing more than a campaign's status, the creator approving its own payout batch)"
    ),
    404: "not_found: no such object, or another tenant's (never revealed)",
    413: "too_large: a body above 1 MiB",
    409: (
        "invalid_state (a transition the state forbids), partner_not_approved, duplicate_email, "
        "cannot_deactivate_self, "
        "balance_changed (a payout batch item exceeds its partner's balance less other open items: nothing "
        "approved), batch_not_approved (a payout file of a draft or cancelled batch), sepa_eur_only, "
        "sepa_not_configured, no_sepa_items, "
        "duplicate_coupon_code, duplicate_tracking_number"
    ),
}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _str(desc: str = "", **kw) -> dict:
    return {"type": "string", **({"description": desc} if desc else {}), **kw}


def _nstr(desc: str = "", **kw) -> dict:
    return _str(desc, nullable=True, **kw)


MONEY = 'decimal string with exactly the currency\'s minor digits, e.g. "3.00" ("1000" for JPY)'
PERCENT = 'percent as a decimal string, e.g. "12.5"'
ID = "an id, as a string of digits"
TS = 'ISO 8601 UTC timestamp, e.g. "2025-03-11T10:00:00Z"'


def _obj(props: dict, required: list[str] | None = None, desc: str = "") -> dict:
    out: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        out["required"] = required
    if desc:
        out["description"] = desc
    return out


def _list_of(name: str) -> dict:
    return _obj(
        {
            "items": {"type": "array", "items": _ref(name)},
            "next": _nstr("cursor of the next page (pass it as ?cursor=), null on the last page"),
        },
        ["items", "next"],
    )


EVENT = _obj(
    {
        "key": _str(
            "event key, unique in the campaign, 1-64 of A-Z a-z 0-9 _ . - (click and impression are billed "
            "by the tracker)"
        ),
        "label": _str("display label (default: the key)"),
        "client_fee": _nstr(f"fixed client fee, {MONEY}; exactly one of client_fee and client_fee_percent"),
        "client_fee_percent": _nstr(f"client fee as a {PERCENT} of the sale amount"),
        "payout": _nstr(
            f"fixed payout, {MONEY}; not above a fixed client_fee; exactly one of payout and payout_percent"
        ),
        "payout_percent": _nstr(f"payout as a {PERCENT} of the client fee"),
        "min_duration_s": {
            "type": "integer",
            "minimum": 0,
            "nullable": True,
            "description": "call events: shortest qualifying call in seconds (equal qualifies)",
        },
        "min_amount": _nstr(f"smallest qualifying sale amount, {MONEY}"),
        "one_per_click": {"type": "boolean", "default": False},
        "recurring_months": {  # CONTRACT v2 §3
            "type": "integer", "minimum": 0, "maximum": 1200, "nullable": True, "default": 0,
            "description": ("recurring commissions: months during which postbacks naming only a bound "
                            "customer_id (with txn_id) are credited to the customer's link; 0 not recurring, "
                            "null for the customer's lifetime"),
        },
    },
    ["key"],
)

CAMPAIGN_FIELDS = {
    "name": _str(maxLength=200),
    "destination_url": _str(
        "http(s) URL or app-scheme URL (myapp://...); macros {click_id}, {sub1}..{sub5}, "
        "{partner_id}, {campaign_id}"
    ),
    "fallback_url": _nstr(
        "where visitors go when the offer is unavailable (paused, over budget, partner not approved)"
    ),
    "click_param": _str("query parameter that carries the click ID", default="click_id"),
    "deep_link_hosts": {
        "type": "array",
        "items": _str("host name"),
        "default": [],
        "description": "deep-link allow-list, stored lower-case; sub-domains are allowed",
    },
    "attribution_window_days": {"type": "integer", "minimum": 1, "maximum": 3650, "default": 30},
    "hold_days": {"type": "integer", "minimum": 0, "maximum": 3650, "default": 30},
    "attribution_model": _str(
        enum=["last_click", "first_click", "linear", "position_based"], default="last_click"
    ),
    "budget": _nstr(f"total budget, {MONEY}; null = none"),
    "default_event": _str("key of one of the events"),
    "events": {"type": "array", "items": _ref("Event"), "minItems": 1},
    "visibility": _str(
        "public: any approved partner may promote it at once; approval: partners apply, staff or "
        "auto_approve_partners decide; invite_only: hidden from partners without access (granted by "
        "POST /campaigns/{id}/partners). A rejected application keeps that partner off a public "
        "campaign too.",
        enum=["public", "approval", "invite_only"], default="public",
    ),
    "auto_approve_partners": {"type": "boolean", "default": False,
                              "description": "applications to an approval campaign are approved at once"},
}

SCHEMAS: dict[str, Any] = {
    "Error": _obj(
        {
            "error": _str("machine code"),
            "message": _str("explanation for humans"),
            "field": _str("the offending input, when there is one (e.g. events[0].payout)"),
        },
        ["error", "message"],
        "Every refusal of the API (CONTRACT §5).",
    ),
    "ClientCreate": _obj(
        {
            "name": _str(maxLength=200),
            "currency": _str("ISO 4217 code"),
            "website_url": _str('http(s) URL or ""'),
            "require_signature": {"type": "boolean", "default": False},
            "ip_allowlist": _str(
                "comma-separated IPs or CIDR networks allowed to post (empty: any)", default=""
            ),
            "timezone": _str("IANA time zone", default="UTC"),
        },
        ["name", "currency", "website_url"],
    ),
    "Client": _obj(
        {
            "id": _str(ID),
            "name": _str(),
            "currency": _str(),
            "website_url": _str(),
            "postback_key": _str("names the client on /postback"),
            "postback_secret": _str("HMAC key of postbacks"),
            "require_signature": {"type": "boolean"},
            "ip_allowlist": _str(),
            "timezone": _str(),
            "created_at": _str(TS),
        },
        ["id", "name", "currency", "website_url", "postback_key", "postback_secret", "require_signature"],
    ),
    "Event": EVENT,
    "CampaignCreate": _obj(
        {
            "client_id": _str(ID),
            **CAMPAIGN_FIELDS,
            "status": _str(enum=["active", "paused"], default="active"),
            "currency": _str("optional; must equal the client's currency"),
        },
        ["client_id", "name", "destination_url", "default_event", "events"],
    ),
    "CampaignPatch": _obj(
        {"status": _str(enum=["active", "paused"]), **CAMPAIGN_FIELDS},
        desc=(
            "Any of these fields. A client key may change status only. `events` replaces the "
            "event list (matched by key); conversions already recorded keep their fee. "
            "Effective on the next click."
        ),
    ),
    "Campaign": _obj(
        {
            "id": _str(ID),
            "client_id": _str(ID),
            "status": _str(enum=["active", "paused"]),
            "currency": _str(),
            **CAMPAIGN_FIELDS,
            "spent": _str(f"client fees of its conversions that are neither rejected nor reversed, {MONEY}"),
            "created_at": _str(TS),
            "updated_at": _str(TS),
        },
        [
            "id",
            "client_id",
            "status",
            "currency",
            "name",
            "destination_url",
            "default_event",
            "events",
            "budget",
            "spent",
        ],
    ),
    "PartnerCreate": _obj(
        {
            "email": _str(),
            "name": _str(),
            "kind": _str(enum=["affiliate", "influencer"]),
            "recruiter_id": _nstr(ID + " (sub-affiliate tier; with recruiter_percent)"),
            "recruiter_percent": _nstr(PERCENT),
            "payout_email": _nstr(),
            "payout_method": _str(
                'paypal (to payout_email, else email) or bank (a credit transfer to iban); without it: bank '
                "when an iban is given, else paypal", enum=["paypal", "bank"]),
            "iban": _nstr("ISO 13616 IBAN, spaces and case ignored, stored compact upper case; country, length "
                          "or check digits wrong: 400 bad_iban; required with payout_method bank"),
            "bic": _nstr("BIC (ISO 9362, 8 or 11 characters), stored upper case; 400 bad_bic"),
            "account_holder": _nstr("the bank account holder's name (at most 70 characters), else the name"),
        },
        ["email", "name", "kind"],
    ),
    "Partner": _obj(
        {
            "id": _str(ID),
            "email": _str(),
            "name": _str(),
            "kind": _str(enum=["affiliate", "influencer"]),
            "status": _str(enum=["pending", "approved", "rejected", "suspended"]),
            "recruiter_id": _nstr(ID),
            "recruiter_percent": _nstr(PERCENT),
            "payout_email": _nstr(),
            "payout_method": _str(  # the payout details: staff and the partner itself only

                'paypal (to payout_email, else email) or bank (a credit transfer to iban); without it: bank '
                "when an iban is given, else paypal", enum=["paypal", "bank"]),
            "iban": _nstr("ISO 13616 IBAN, spaces and case ignored, stored compact upper case; country, length "
                          "or check digits wrong: 400 bad_iban; required with payout_method bank"),
            "bic": _nstr("BIC (ISO 9362, 8 or 11 characters), stored upper case; 400 bad_bic"),
            "account_holder": _nstr("the bank account holder's name (at most 70 characters), else the name"),
            "created_at": _str(TS),
            "updated_at": _str(TS),
        },
        ["id", "email", "name", "kind", "status"],
    ),
    "CampaignAccessGrant": _obj({"partner_id": _str(ID)}, ["partner_id"]),
    "CampaignAccess": _obj(
        {
            "id": _str(ID + " (of the application)"),
            "campaign_id": _str(ID),
            "partner_id": _str(ID),
            "status": _str(enum=["approved"]),
            "created_at": _str(TS),
            "decided_at": _str(TS),
        },
        ["id", "campaign_id", "partner_id", "status"],
    ),
    "LinkCreate": _obj(
        {
            "partner_id": _str(ID + "; a partner key may leave it out (itself)"),
            "campaign_id": _str(ID),
            "channel": _nstr(
                enum=["search", "social", "influencer", "display", "native", "affiliate", "email", "content"]
            ),
            "deep_link": _nstr("http(s) URL on the campaign's deep_link_hosts"),
            "coupon_code": _nstr(
                "staff only (a partner key: 403 forbidden); 1-64 of A-Z a-z 0-9 _ -, unique "
                "case-insensitively, not one a partner's vanity-code request waits for",
                pattern="^[A-Za-z0-9_-]{1,64}$",
            ),
            "tracking_number": _nstr(
                "staff only (a partner key: 403 forbidden); E.164, unique; a free pool number is marked assigned",
                pattern="^\\+[1-9][0-9]{6,14}$",
            ),
        },
        ["campaign_id"],
    ),
    "Link": _obj(
        {
            "id": _str(ID),
            "token": _str("signed, opaque"),
            "url": _str("full tracking URL"),
            "impression_url": _str("impression pixel URL"),
            "partner_id": _str(ID),
            "campaign_id": _str(ID),
            "channel": _nstr(),
            "deep_link": _nstr(),
            "coupon_code": _nstr(),
            "tracking_number": _nstr(),
            "created_at": _str(TS),
        },
        ["id", "token", "url", "partner_id", "campaign_id"],
    ),
    "Earnings": _obj(
        {
            "currency": _str(),
            "pending": _str(MONEY),
            "approved": _str(MONEY),
            "paid": _str(MONEY),
            "balance": _str(MONEY + "; approved - paid, negative after a reversal of paid money"),
        },
        ["currency", "pending", "approved", "paid", "balance"],
    ),
    "Split": _obj(
        {
            "party": _str('"partner:<id>" or "agency"'),
            "role": _str(enum=["converter", "touch", "recruiter", "margin"]),
            "amount": _str(MONEY),
            "rule": _nstr(
                "the rule behind the line: for converter and touch lines the payout rule that applied "
                '(payout priority: event, then partner tier, then per-partner override, then performance bonus; '
                'e.g. "event: 50%", "tier Gold: 60%", "override: 1.50 USD", "override bonus +5 (10 approved): 75%"); '
                '"recruiter override", "recruiter override tier 2" for recruiter lines; '
                '"fee minus partner amounts" for the margin. A partner key sees on its own converter lines '
                'the rule\'s name without the percent of the client fee ("event", "tier Gold") and '
                '"multi-touch share" on its touch lines (CONTRACT v2 §5)'
            ),
        },
        ["party", "role", "amount"],
    ),
    "Conversion": _obj(
        {
            "id": _str(ID),
            "campaign_id": _str(ID),
            "partner_id": _str(ID + " (the converter)"),
            "link_id": _str(ID),
            "event": _str(),
            "txn_id": _nstr(),
            "click_id": _nstr(),
            "customer_id": _nstr("the advertiser's customer ID given with the postback (CONTRACT v2 §3)"),
            "status": _str(enum=["pending", "approved", "rejected", "reversed"]),
            "reason": _nstr(),
            "amount": _nstr(MONEY),
            "client_fee": _str(MONEY + "; absent for partner keys (CONTRACT v2 §5)"),
            "currency": _str(),
            "duration_s": {"type": "integer", "nullable": True},
            "created_at": _str(TS),
            "hold_until": _nstr(TS),
            "approved_at": _nstr(TS),
            "rejected_at": _nstr(TS),
            "reversed_at": _nstr(TS),
            "flags": {  # CONTRACT v2 §5 (partnernet.conversions.flags)
                "type": "array",
                "items": _str(enum=["self_referral", "ip_flood", "fast_conversion", "non_navigation"]),
                "description": (
                    "fraud flags, fixed when the conversion is recorded ([] for none; thresholds: README, "
                    "PARTNERNET_FLAG_*); a flagged conversion is never approved automatically when its hold "
                    "ends: it waits for staff. A client's status=approved postback is still honoured"
                ),
            },
            "splits": {
                "type": "array",
                "items": _ref("Split"),
                "description": (
                    "empty until the split job has run, and for rejected conversions; "
                    "a partner key sees its own lines only"
                ),
            },
        },
        [
            "id",
            "campaign_id",
            "partner_id",
            "event",
            "txn_id",
            "click_id",
            "status",
            "reason",
            "amount",
            "currency",
            "created_at",
            "splits",
        ],
    ),
    "ConversionReject": _obj(
        {
            "reason": _str(
                "at most 32 characters; blank or absent: rejected_by_staff",
                maxLength=32,
                default="rejected_by_staff",
            )
        }
    ),
    "ConversionBulkApprove": _obj(
        {"ids": {"type": "array", "items": _str(ID), "minItems": 1, "maxItems": 1000}}, ["ids"]
    ),
    "ConversionBulkReject": _obj(
        {
            "ids": {"type": "array", "items": _str(ID), "minItems": 1, "maxItems": 1000},
            "reason": _str("at most 32 characters, for every id; blank or absent: rejected_by_staff",
                           maxLength=32, default="rejected_by_staff"),
        },
        ["ids"],
    ),
    "ConversionBulkResult": _obj(
        {
            "items": {
                "type": "array",
                "description": "one per given id, in the given order",
                "items": _obj(
                    {
                        "id": _str("the id as given"),
                        "status": _nstr("the conversion's status after the call; null when not found"),
                        "error": _str(
                            "absent when done; not_found (unknown or malformed id), or the 409 code of "
                            "the single call (invalid_state: not pending; test_conversion)"
                        ),
                    },
                    ["id", "status"],
                ),
            }
        },
        ["items"],
    ),
    "PayoutBatchCreate": _obj(
        {"currency": _str("ISO 4217 code"), "min_amount": _str(MONEY + " (default 0)")}, ["currency"]
    ),
    "PayoutBatch": _obj(
        {
            "id": _str(ID),
            "status": _str(enum=["draft", "approved", "paid", "cancelled"]),
            "currency": _str(),
            "created_by": _str("user id"),
            "approved_by": _nstr("user id"),
            "items": {
                "type": "array",
                "items": _obj({"partner_id": _str(ID), "amount": _str(MONEY)}, ["partner_id", "amount"]),
            },
            "total": _str(MONEY),
            "min_amount": _str(MONEY),
            "created_at": _str(TS),
            "approved_at": _nstr(TS),
            "paid_at": _nstr(TS),
            "cancelled_at": _nstr(TS),
        },
        ["id", "status", "created_by", "items", "total", "currency", "created_at"],
    ),
    "ReportRow": _obj(
        {
            "key": _str('date YYYY-MM-DD, campaign id, partner id, channel, or sub1 ("" for none)'),
            "currency": _str(),
            "clicks": {"type": "integer", "description": "every recorded click, bots included"},
            "unique_clicks": {"type": "integer"},
            "impressions": {"type": "integer", "description": "non-bot"},
            "conversions": {
                "type": "integer",
                "description": "neither rejected nor reversed, less click/impression ones",
            },
            "revenue": _str(MONEY),
            "payout": _str(MONEY + " (partner amounts of every role)"),
            "margin": _str(MONEY),
            "cr": _str("conversions / unique clicks in percent, 2 decimals, half up"),
            "epc": _str("payout / clicks, " + MONEY + ", half up"),
        },
        [
            "key",
            "currency",
            "clicks",
            "unique_clicks",
            "impressions",
            "conversions",
            "revenue",
            "payout",
            "margin",
            "cr",
            "epc",
        ],
    ),
    "Report": _obj(
        {
            "items": {"type": "array", "items": _ref("ReportRow")},
            "next": _nstr("always null"),
            "group_by": _str(),
            "from": _str(),
            "to": _str(),
            "tz": _str(),
        },
        ["items"],
    ),
    "EarningsList": _obj(
        {"items": {"type": "array", "items": _ref("Earnings")}, "next": _nstr("always null")}, ["items"]
    ),
    "PostbackAnswer": _obj(
        {
            "ok": {"type": "boolean"},
            "conversion_id": _str(ID),
            "status": _str(enum=["pending", "approved", "rejected", "reversed"]),
            "reason": _str(),
            "duplicate": {"type": "boolean"},
            "error": _str(),
            "message": _str(),
        },
        ["ok"],
    ),
}

for _name in ("Client", "Campaign", "Partner", "Link", "Conversion", "PayoutBatch"):
    SCHEMAS[_name + "List"] = _list_of(_name)


def _err(status: int) -> dict:
    return {"description": ERROR_CODES[status], "content": {"application/json": {"schema": _ref("Error")}}}


def _json(schema: str, desc: str = "OK") -> dict:
    return {"description": desc, "content": {"application/json": {"schema": _ref(schema)}}}


def _file(mimetype: str, desc: str) -> dict:
    return {"description": desc, "content": {mimetype: {"schema": {"type": "string"}}}}


def _op(
    summary: str,
    ok: tuple[int, dict],
    errors=(400, 401, 403, 404),
    *,
    body: str | None = None,
    params: list | None = None,
    who: str = "staff",
    desc: str = "",
) -> dict:
    op: dict[str, Any] = {
        "summary": summary,
        "description": (desc + " " if desc else "") + f"Keys: {who}.",
        "responses": {str(ok[0]): ok[1], **{str(s): _err(s) for s in errors}},
    }
    if body:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
    if params:
        op["parameters"] = params
    return op


def _q(name: str, desc: str, required: bool = False, **schema) -> dict:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": desc,
        "schema": {"type": "string", **schema},
    }


def _p(name: str, desc: str = ID) -> dict:
    return {"name": name, "in": "path", "required": True, "description": desc, "schema": {"type": "string"}}


PAGING = [_q("cursor", "the `next` of the previous page"), _q("limit", "page size, 1-500 (default 50)")]

ACTIONS_409 = (400, 401, 403, 404, 409)

PATHS: dict[str, Any] = {
    "/openapi.json": {
        "get": {
            "summary": "This document",
            "security": [],
            "responses": {
                "200": {
                    "description": "OpenAPI 3.0 document",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        }
    },
    "/clients": {
        "post": _op("Create a client (advertiser)", (201, _json("Client", "Created")), body="ClientCreate"),
        "get": _op(
            "List clients",
            (200, _json("ClientList")),
            (400, 401, 403),
            who="staff; client (its own record)",
            params=[
                _q("name", "case-insensitive part of the name"),
                _q("email", "email of a user tied to the client"),
                *PAGING,
            ],
        ),
    },
    "/clients/{client_id}": {
        "get": _op("Read a client", (200, _json("Client")), (401, 403, 404), who="staff; client (its own)"),
        "parameters": [_p("client_id")],
    },
    "/campaigns": {
        "post": _op(
            "Create a campaign",
            (201, _json("Campaign", "Created")),
            body="CampaignCreate",
            desc='Takes the client\'s currency; status "active".',
        ),
        "get": _op(
            "List campaigns",
            (200, _json("CampaignList")),
            (400, 401, 403),
            who="staff; client (its campaigns)",
            params=[_q("client_id", ID), _q("status", "active or paused"), *PAGING],
        ),
    },
    "/campaigns/{campaign_id}": {
        "parameters": [_p("campaign_id")],
        "get": _op(
            "Read a campaign, with spent",
            (200, _json("Campaign")),
            (401, 403, 404),
            who="staff; client (its own)",
        ),
        "patch": _op(
            "Change a campaign",
            (200, _json("Campaign")),
            body="CampaignPatch",
            who="staff; client (its own, status only: pause and resume)",
        ),
    },
    "/campaigns/{campaign_id}/partners": {
        "parameters": [_p("campaign_id")],
        "post": _op(
            "Grant a partner access to a campaign (an approved application)",
            (201, _json("CampaignAccess", "Granted")),
            body="CampaignAccessGrant",
            desc="200 with the same body when the partner already had access; 400 unknown_partner.",
        ),
    },
    "/partners": {
        "post": _op(
            "Create a partner (status pending)",
            (201, _json("Partner", "Created")),
            (400, 401, 403, 409),
            body="PartnerCreate",
        ),
        "get": _op(
            "List partners",
            (200, _json("PartnerList")),
            (400, 401, 403),
            who="staff; partner (itself)",
            params=[
                _q("email", "exact email"),
                _q("status", "pending, approved, rejected, suspended"),
                _q("kind", "affiliate or influencer"),
                *PAGING,
            ],
        ),
    },
    "/partners/{partner_id}": {
        "parameters": [_p("partner_id")],
        "get": _op("Read a partner", (200, _json("Partner")), (401, 403, 404), who="staff; partner (itself)"),
    },
    "/partners/{partner_id}/approve": {
        "parameters": [_p("partner_id")],
        "post": _op(
            "Approve (pending → approved) or reinstate (suspended → approved)",
            (200, _json("Partner")),
            ACTIONS_409,
        ),
    },
    "/partners/{partner_id}/reject": {
        "parameters": [_p("partner_id")],
        "post": _op("Reject (pending → rejected)", (200, _json("Partner")), ACTIONS_409),
    },
    "/partners/{partner_id}/suspend": {
        "parameters": [_p("partner_id")],
        "post": _op("Suspend (approved → suspended)", (200, _json("Partner")), ACTIONS_409),
    },
    "/partners/{partner_id}/earnings": {
        "parameters": [_p("partner_id")],
        "get": _op(
            "A partner's earnings per currency",
            (200, _json("EarningsList")),
            (401, 403, 404),
            who="staff; partner (itself)",
        ),
    },
    "/links": {
        "post": _op(
            "Create a tracking link",
            (201, _json("Link", "Created")),
            (400, 401, 403, 409),
            body="LinkCreate",
            who="staff; partner (for itself, partner_id may be left out)",
            desc=(
                "The partner must be approved (409 partner_not_approved). A partner key: only on a "
                "campaign it may promote (a public one, or an approved application or invitation; "
                "otherwise, or for an unknown campaign, 403 campaign_not_available); coupon_code, "
                "tracking_number or another partner's partner_id answer 403 forbidden. A staff link "
                "on a campaign the partner has no access to grants that access."
            ),
        ),
        "get": _op(
            "List links",
            (200, _json("LinkList")),
            (400, 401, 403),
            who="staff; partner (its links)",
            params=[_q("partner_id", ID), _q("campaign_id", ID), *PAGING],
        ),
    },
    "/links/{link_id}": {
        "parameters": [_p("link_id")],
        "get": _op("Read a link", (200, _json("Link")), (401, 403, 404), who="staff; partner (its own)"),
    },
    "/conversions": {
        "get": _op(
            "List conversions",
            (200, _json("ConversionList")),
            (400, 401, 403),
            who=(
                "staff; partner (its conversions as converter, touch or recruiter, its own split lines); "
                "client (its campaigns')"
            ),
            params=[
                _q("campaign_id", ID),
                _q("partner_id", ID + " (the converter)"),
                _q("status", "pending, approved, rejected, reversed"),
                _q("reason", "rejection reason"),
                *PAGING,
            ],
        )
    },
    "/conversions/{conversion_id}": {
        "parameters": [_p("conversion_id")],
        "get": _op(
            "Read a conversion",
            (200, _json("Conversion")),
            (401, 403, 404),
            who="staff; partner (as converter, touch or recruiter); client (its campaigns')",
        ),
    },
    "/conversions/{conversion_id}/approve": {
        "parameters": [_p("conversion_id")],
        "post": _op(
            "Approve a pending conversion (also before its hold period ends)",
            (200, _json("Conversion")),
            ACTIONS_409,
        ),
    },
    "/conversions/{conversion_id}/reject": {
        "parameters": [_p("conversion_id")],
        "post": {
            **_op("Reject a pending conversion", (200, _json("Conversion")), ACTIONS_409),
            "requestBody": {
                "required": False,
                "content": {"application/json": {"schema": _ref("ConversionReject")}},
            },
        },
    },
    "/conversions/approve": {
        "post": _op(
            "Approve many pending conversions",
            (200, _json("ConversionBulkResult")),
            (400, 401, 403),
            body="ConversionBulkApprove",
            desc=("Each id as POST /conversions/{conversion_id}/approve, in its own transaction: one "
                  "refused id undoes no other."),
        ),
    },
    "/conversions/reject": {
        "post": _op(
            "Reject many pending conversions",
            (200, _json("ConversionBulkResult")),
            (400, 401, 403),
            body="ConversionBulkReject",
            desc=("Each id as POST /conversions/{conversion_id}/reject with the same reason, in its own "
                  "transaction: one refused id undoes no other."),
        ),
    },
    "/payout-batches": {
        "post": _op(
            "Create a draft payout batch",
            (201, _json("PayoutBatch", "Created")),
            (400, 401, 403),
            body="PayoutBatchCreate",
            desc=(
                "One item per partner whose balance, less its items in draft or approved batches, is "
                "positive and at least min_amount."
            ),
        ),
        "get": _op(
            "List payout batches",
            (200, _json("PayoutBatchList")),
            (400, 401, 403),
            params=[_q("status", "draft, approved, paid, cancelled"), _q("currency", "ISO 4217"), *PAGING],
        ),
    },
    "/payout-batches/{batch_id}": {
        "parameters": [_p("batch_id")],
        "get": _op("Read a payout batch", (200, _json("PayoutBatch")), (401, 403, 404)),
    },
    "/payout-batches/{batch_id}/approve": {
        "parameters": [_p("batch_id")],
        "post": _op(
            "Approve a draft batch (a staff user other than its creator: 403, checked first)",
            (200, _json("PayoutBatch")),
            ACTIONS_409,
            desc=("Re-checked first (CONTRACT v2 §5): an item larger than its partner's balance less the "
                  "partner's other open items (a reversal since the draft) answers 409 balance_changed, naming "
                  "the partners, and nothing is approved."),
        ),
    },
    "/payout-batches/{batch_id}/cancel": {
        "parameters": [_p("batch_id")],
        "post": _op(
            "Cancel a draft batch (its items are released)", (200, _json("PayoutBatch")), ACTIONS_409
        ),
    },
    "/payout-batches/{batch_id}/mark-paid": {
        "parameters": [_p("batch_id")],
        "post": _op("Mark an approved batch paid", (200, _json("PayoutBatch")), ACTIONS_409),
    },
    "/payout-batches/{batch_id}/export.csv": {
        "parameters": [_p("batch_id")],
        "get": _op(
            "The bank CSV of an approved or paid batch",
            (200, _file("text/csv", "header partner_id,name,payout_email,amount,currency,payout_method,iban,bic,"
                                    "account_holder; one row per item, every method")),
            (401, 403, 404, 409),
            desc="A draft or cancelled batch: 409 batch_not_approved.",
        ),
    },
    "/payout-batches/{batch_id}/paypal.csv": {
        "parameters": [_p("batch_id")],
        "get": _op(
            "PayPal Payouts CSV of an approved or paid batch",
            (200, _file("text/csv", "PayPal Payouts Web rows, no header: recipient email, amount, currency, "
                                    "customer ID partner-<id>, note, PAYPAL; the items paid by PayPal only")),
            (401, 403, 404, 409),
            desc="A draft or cancelled batch: 409 batch_not_approved.",
        ),
    },
    "/payout-batches/{batch_id}/sepa.xml": {
        "parameters": [_p("batch_id")],
        "get": _op(
            "SEPA credit-transfer file (ISO 20022 pain.001.001.03) of an approved or paid EUR batch",
            (200, _file("application/xml", "valid against the pain.001.001.03 XSD; one CdtTrfTxInf per item paid "
                                           "by bank transfer to a valid SEPA IBAN, EndToEndId PN-B<batch>-I<item>, "
                                           "MsgId PN-PAYOUT-<batch>")),
            (401, 403, 404, 409),
            desc=("409: batch_not_approved, sepa_eur_only (another currency), sepa_not_configured "
                  "(PARTNERNET_SEPA_NAME, _IBAN, _BIC unset), no_sepa_items."),
        ),
    },
    "/reports": {
        "get": _op(
            "Performance report",
            (200, _json("Report")),
            (400, 401),
            who=(
                "staff; partner (its own clicks and amounts: revenue = payout = its amounts, margin 0); "
                "client (its campaigns)"
            ),
            desc=(
                "One row per key and currency. Traffic comes from hourly UTC rollups: with a time zone "
                "whose offset is not a whole number of hours, the hour that straddles local midnight counts "
                "on the earlier day. A report covers at most 3660 days (400 bad_range)."
            ),
            params=[
                _q("group_by", "grouping (coupon: coupon conversions under the link's code, number: calls under "
                   "the link's tracking number, everything else under \"\")", True,
                   enum=["day", "campaign", "partner", "channel", "sub1", "coupon", "number"]),
                _q("from", "first local date, YYYY-MM-DD (inclusive)", True, format="date"),
                _q("to", "last local date, YYYY-MM-DD (inclusive)", True, format="date"),
                _q("tz", "IANA time zone (default UTC)"),
            ],
        )
    },
}

TRACKING_PATHS: dict[str, Any] = {
    "/c/{token}": {
        "get": {
            "summary": "Tracking link (CONTRACT §1)",
            "security": [],
            "parameters": [
                _p("token", "signed link token, verified as an exact string"),
                *[_q(f"sub{i}", "partner sub ID, cut to 255 characters") for i in range(1, 6)],
                _q("url", "deep link, followed only when the campaign's allow-list allows it"),
            ],
            "responses": {
                "302": {"description": "to the destination (or the fallback), Cache-Control: no-store"},
                "404": {"description": "unknown or altered token (HTML page)"},
            },
        }
    },
    "/i/{token}": {
        "get": {
            "summary": "Impression pixel (CONTRACT §2)",
            "security": [],
            "parameters": [_p("token", "signed link token")],
            "responses": {
                "200": {
                    "description": "1x1 transparent GIF, Cache-Control: no-store",
                    "content": {"image/gif": {"schema": {"type": "string", "format": "binary"}}},
                },
                "404": {"description": "unknown or altered token"},
            },
        }
    },
}
_POSTBACK_PARAMS = [
    _q("key", "the client's postback key", True),
    _q("sig", "hex HMAC-SHA256 of the other parameters"),
    _q("ts", "unix seconds, required with sig"),
    _q("click_id", "click ID from the landing URL"),
    _q("coupon", "coupon code (case-insensitive)"),
    _q("number", "tracking phone number called (E.164)"),
    _q("event", "campaign event key"),
    _q("txn_id", "advertiser's unique ID"),
    _q("amount", "sale amount (with status adjusted: the new sale amount)"),
    _q("currency", "ISO 4217"),
    _q("duration", "call length in seconds"),
    _q("status", "pending, approved, rejected, reversed, or (v2) adjusted: a new, not higher, amount for "
       "an existing percent-of-sale conversion (400 bad_adjustment otherwise)"),
]
_POSTBACK_RESPONSES = {
    "201": {"description": "created", "content": {"application/json": {"schema": _ref("PostbackAnswer")}}},
    "200": {
        "description": "existing (duplicate) or rejected by a business rule",
        "content": {"application/json": {"schema": _ref("PostbackAnswer")}},
    },
    **{
        s: {
            "description": f"refused ({'unauthorized' if s == '401' else 'see CONTRACT §3'})",
            "content": {"application/json": {"schema": _ref("PostbackAnswer")}},
        }
        for s in ("400", "401", "404")
    },
    "413": {
        "description": "too_large: a body above 1 MiB (or a multipart form of more than 1,000 parts); logged",
        "content": {"application/json": {"schema": _ref("PostbackAnswer")}},
    },
}
_POSTBACK_RESPONSES["400"]["description"] = (
    "refused (see CONTRACT §3). Step 2 starts with bad_encoding (a project choice): a parameter name "
    "or value holding a NUL character or an unpaired UTF-16 surrogate (JSON \"\\ud800\"); in key "
    "such text answers 401 unauthorized. The postback log keeps such characters as U+FFFD."
)
TRACKING_PATHS["/postback"] = {
    "get": {
        "summary": "Server-to-server conversion (CONTRACT §3)",
        "security": [],
        "parameters": _POSTBACK_PARAMS,
        "responses": _POSTBACK_RESPONSES,
    },
    "post": {
        "summary": "Server-to-server conversion, form-encoded or a JSON object of strings (CONTRACT §3)",
        "security": [],
        "requestBody": {
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {"type": "object", "additionalProperties": {"type": "string"}}
                },
                "application/json": {
                    "schema": {"type": "object", "additionalProperties": {"type": "string"}}
                },
            }
        },
        "responses": _POSTBACK_RESPONSES,
    },
}

SPEC: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "PartnerNet API",
        "version": "1",
        "description": (
            "JSON in and out, `Authorization: Bearer <api key>`. A key carries its user's role: staff "
            "sees everything; a partner key its own partner, links, conversions (as converter), earnings "
            "and report rows; a client key its own client record, campaigns (read; pause and resume), "
            "their conversions and reports. A call a role may never make answers 403; another tenant's "
            'object answers 404. Errors are `{"error": code, "message": ...}` (plus `field` when one input '
            'is at fault). Lists answer `{"items": [...], "next": cursor|null}` and take '
            "`?cursor=&limit=` (keyset on id, default 50, max 500). IDs are strings, timestamps ISO 8601 "
            "UTC, money decimal strings with the currency's minor digits, percents decimal strings."
        ),
    },
    "servers": [{"url": "/api/v1"}],
    "security": [{"bearer": []}],
    "paths": PATHS,
    "components": {
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "an API key from `flask --app wsgi api-keys create`",
            }
        },
        "schemas": SCHEMAS,
    },
}


# ---------------------------------------------------------------- commission rules (issue 6)

SCHEMAS.update({
    "PartnerTier": _obj({
        "id": _str(ID), "name": _str(),
        "payout_percent": _nstr(PERCENT + "; replaces the event's payout"),
        "bonus_points": _nstr(PERCENT + "; percentage points added to the payout percent (to a fixed payout: "
                              "that percent of the client fee)"),
        "created_at": _str(TS),
    }, ["id", "name"]),
    "PartnerTierCreate": _obj({"name": _str(), "payout_percent": _nstr(PERCENT), "bonus_points": _nstr(PERCENT)},
                              ["name"], "exactly one of payout_percent or bonus_points"),
    "PayoutOverride": _obj({
        "id": _str(ID), "campaign_id": _str(ID), "partner_id": _str(ID),
        "event": _nstr("event key; null: every event of the campaign (an exact event wins)"),
        "payout": _nstr(MONEY + "; fixed payout"), "payout_percent": _nstr(PERCENT + " of the client fee"),
        "currency": _str(),
    }, ["id", "campaign_id", "partner_id"]),
    "PayoutOverrideSet": _obj({
        "campaign_id": _str(ID), "partner_id": _str(ID), "event": _nstr(),
        "payout": _nstr(MONEY), "payout_percent": _nstr(PERCENT),
    }, ["campaign_id", "partner_id"], "exactly one of payout or payout_percent; replaces an existing override "
       "of the same campaign, partner and event"),
    "PerformanceBonus": _obj({
        "id": _str(ID), "campaign_id": _str(ID), "event": _nstr("event key; null: every event"),
        "threshold": {"type": "integer", "description": "approved conversions of the partner in a UTC calendar "
                      "month after which the bonus applies"},
        "bonus_points": _str(PERCENT + "; percentage points added"),
    }, ["id", "campaign_id", "threshold", "bonus_points"]),
    "PerformanceBonusSet": _obj({
        "campaign_id": _str(ID), "event": _nstr(), "threshold": {"type": "integer", "minimum": 1},
        "bonus_points": _str(PERCENT),
    }, ["campaign_id", "threshold", "bonus_points"]),
    "RecruiterSet": _obj({
        "recruiter_id": _nstr(ID + "; null: no recruiter"),
        "recruiter_percent": _nstr(PERCENT + "; what the recruiter earns on this partner's amounts"),
        "tier2_percent": _nstr(PERCENT + "; what this partner's recruiter earns on the amounts of the partners "
                               "this partner recruited (second tier)"),
    }),
    "Invite": _obj({"partner_id": _str(ID), "token": _str("signed recruiter token"),
                    "url": _str("signup URL: <base>/signup?recruiter=<token>")}, ["partner_id", "token", "url"]),
    "CouponRequest": _obj({
        "id": _str(ID), "link_id": _str(ID), "partner_id": _str(ID), "code": _str(),
        "status": _str(enum=["pending", "approved", "rejected"]), "note": _nstr(),
        "created_at": _str(TS), "decided_at": _nstr(TS),
    }, ["id", "link_id", "partner_id", "code", "status"]),
    "CouponRequestCreate": _obj({"code": _str("1-64 of A-Z a-z 0-9 _ -; unique across the network, "
                                              "compared case-insensitively")}, ["code"]),
    "TrackingNumber": _obj({
        "id": _str(ID), "number": _str("E.164"), "link_id": _nstr(ID), "assigned_at": _nstr(TS),
        "created_at": _str(TS),
    }, ["id", "number"]),
    "TrackingNumbersAdd": _obj({"numbers": {"type": "array", "items": _str("E.164"), "maxItems": 1000}},
                               ["numbers"]),
    "TrackingNumbersAssign": _obj({"link_ids": {"type": "array", "items": _str(ID), "maxItems": 1000}},
                                  ["link_ids"], "each link gets the next free pool number; all or nothing"),
    "TrackingNumberAssign": _obj({"number": _nstr("E.164 number of the pool; null: the next free one")}),
    "Note": _obj({"note": _nstr()}),
    "TierSet": _obj({"tier_id": _nstr(ID + "; null: no tier")}),
})
for _name in ("PartnerTier", "PayoutOverride", "PerformanceBonus", "CouponRequest", "TrackingNumber"):
    SCHEMAS[_name + "List"] = _list_of(_name)

PATHS.update({
    "/partner-tiers": {
        "get": _op("List partner tiers", (200, _json("PartnerTierList")), (401, 403)),
        "post": _op("Create a partner tier", (201, _json("PartnerTier", "Created")), (400, 401, 403, 409),
                    body="PartnerTierCreate", desc="409 duplicate_tier for a name in use."),
    },
    "/partners/{partner_id}/tier": {
        "parameters": [_p("partner_id")],
        "post": _op("Put a partner in a tier", (200, _json("Partner")), (400, 401, 403, 404), body="TierSet",
                    desc="Payout priority: event payout, then tier, then per-partner override, then performance bonus."),
    },
    "/partners/{partner_id}/recruiter": {
        "parameters": [_p("partner_id")],
        "post": _op("Set a partner's recruiter and override percents", (200, _json("Partner")),
                    (400, 401, 403, 404), body="RecruiterSet",
                    desc="400 unknown_recruiter, bad_recruiter (a loop), bad_percent. Overrides are paid out of the "
                         "margin, never more than what it has left (CONTRACT §4)."),
    },
    "/partners/{partner_id}/invite": {
        "parameters": [_p("partner_id")],
        "get": _op("The partner's recruit invite link", (200, _json("Invite")), (401, 403, 404),
                   who="staff; partner (itself)"),
    },
    "/payout-overrides": {
        "get": _op("List per-partner payout overrides", (200, _json("PayoutOverrideList")), (400, 401, 403),
                   params=[_q("campaign_id", ID), _q("partner_id", ID), *PAGING]),
        "post": _op("Set a per-partner payout override on a campaign", (201, _json("PayoutOverride", "Set")),
                    (400, 401, 403, 404), body="PayoutOverrideSet"),
    },
    "/payout-overrides/{override_id}": {
        "parameters": [_p("override_id")],
        "delete": _op("Remove an override", (204, {"description": "Removed"}), (401, 403, 404)),
    },
    "/performance-bonuses": {
        "get": _op("List performance bonuses", (200, _json("PerformanceBonusList")), (400, 401, 403),
                   params=[_q("campaign_id", ID), *PAGING]),
        "post": _op("Set a performance bonus", (201, _json("PerformanceBonus", "Set")), (400, 401, 403, 404),
                    body="PerformanceBonusSet"),
    },
    "/performance-bonuses/{bonus_id}": {
        "parameters": [_p("bonus_id")],
        "delete": _op("Remove a performance bonus", (204, {"description": "Removed"}), (401, 403, 404)),
    },
    "/links/{link_id}/coupon-requests": {
        "parameters": [_p("link_id")],
        "post": _op("Ask for a vanity coupon code on one's link", (201, _json("CouponRequest", "Created")),
                    (400, 401, 403, 404, 409), body="CouponRequestCreate", who="partner (its own links)",
                    desc="409 duplicate_coupon_code when a link or another pending request has the code; "
                         "409 invalid_state when the link has a pending request already."),
    },
    "/coupon-requests": {
        "get": _op("List vanity coupon requests", (200, _json("CouponRequestList")), (400, 401, 403),
                   who="staff; partner (its own)",
                   params=[_q("status", "pending, approved, rejected"), _q("partner_id", ID), *PAGING]),
    },
    "/coupon-requests/{request_id}/approve": {
        "parameters": [_p("request_id")],
        "post": _op("Approve: the link's coupon code becomes the requested code", (200, _json("CouponRequest")),
                    ACTIONS_409, body="Note"),
    },
    "/coupon-requests/{request_id}/reject": {
        "parameters": [_p("request_id")],
        "post": _op("Reject a vanity coupon request", (200, _json("CouponRequest")), ACTIONS_409, body="Note"),
    },
    "/tracking-numbers": {
        "get": _op("List the tracking-number pool", (200, _json("TrackingNumberList")), (400, 401, 403),
                   params=[_q("free", "true: unassigned only; false: assigned only"), *PAGING]),
        "post": _op("Add numbers to the pool", (201, _json("TrackingNumberList", "Added")), (400, 401, 403, 409),
                    body="TrackingNumbersAdd", desc="409 duplicate_tracking_number; 400 bad_tracking_number."),
    },
    "/tracking-numbers/assign": {
        "post": _op("Assign pool numbers to links in bulk", (200, _json("LinkList")), ACTIONS_409,
                    body="TrackingNumbersAssign", desc="409 pool_exhausted when the pool has too few free numbers."),
    },
    "/links/{link_id}/tracking-number": {
        "parameters": [_p("link_id")],
        "post": _op("Assign a pool number to a link", (200, _json("Link")), ACTIONS_409,
                    body="TrackingNumberAssign",
                    desc="404 unknown_number (not in the pool); 409 number_assigned, pool_exhausted, invalid_state "
                         "(the link has a number already)."),
    },
})


def document(base_url: str = "") -> dict[str, Any]:
    """The OpenAPI document, with servers on ``base_url`` (the public origin, PARTNERNET_BASE_URL)."""
    doc = copy.deepcopy(SPEC)
    base = (base_url or "").rstrip("/")
    doc["servers"] = [{"url": f"{base}/api/v1", "description": "the JSON API"}]
    for path, item in copy.deepcopy(TRACKING_PATHS).items():
        item["servers"] = [{"url": base or "/", "description": "the public origin (tracking and postbacks)"}]
        doc["paths"][path] = item
    return doc


@bp.get("/openapi.json")
def openapi_json():
    """The OpenAPI document (public: no key needed)."""
    return jsonify(document(current_app.config.get("PARTNERNET_BASE_URL") or ""))
