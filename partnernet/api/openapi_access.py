"""The OpenAPI description of the access calls (:mod:`.access_views`, CONTRACT §5 v2): added to
the document of :mod:`.openapi` when the views are imported."""

from __future__ import annotations

from .openapi import ID, PAGING, PATHS, SCHEMAS, TS, _json, _list_of, _nstr, _obj, _op, _p, _q, _str

SCHEMAS.update({
    "ApiKey": _obj({
        "id": _str(ID), "user_id": _str(ID),
        "prefix": _str("the key's first 10 characters, to tell keys apart"),
        "label": _str("free text given at creation"),
        "created_at": _str(TS), "revoked_at": _nstr(TS + "; null while the key works"),
        "active": {"type": "boolean", "description": "false once revoked"},
    }, ["id", "user_id", "prefix", "created_at", "revoked_at", "active"]),
    "ApiKeyCreated": _obj({
        "id": _str(ID), "user_id": _str(ID), "prefix": _str(), "label": _str(), "created_at": _str(TS),
        "revoked_at": _nstr(), "active": {"type": "boolean"},
        "key": _str("the key itself: shown this once, only its SHA-256 is stored"),
    }, ["id", "key", "prefix"]),
    "ApiKeyCreate": _obj({"label": _str("optional, at most 100 characters", maxLength=100)}),
    "User": _obj({
        "id": _str(ID), "email": _str("lower-case"), "role": _str(enum=["staff", "partner", "client"]),
        "active": {"type": "boolean", "description": "false: deactivated (no session, no key works)"},
        "partner_id": _str(ID + "; partner users only"), "client_id": _str(ID + "; client users only"),
        "name": _str(), "created_at": _str(TS),
    }, ["id", "email", "role", "active"]),
})
SCHEMAS["ApiKeyList"] = _list_of("ApiKey")
SCHEMAS["UserList"] = _list_of("User")

_ALL = "staff, partner, client (each its own keys)"

PATHS.update({
    "/api-keys": {
        "get": _op("List API keys (revoked ones too)", (200, _json("ApiKeyList")), (400, 401, 403), who=_ALL,
                   params=[_q("user_id", ID + "; staff only: another user's keys (403 for other keys)"), *PAGING]),
        "post": _op("Create an API key", (201, _json("ApiKeyCreated", "Created; the key is shown this once")),
                    (400, 401), body="ApiKeyCreate", who=_ALL,
                    desc="400 too_many_keys past 20 unrevoked keys, bad_label, unknown_field."),
    },
    "/api-keys/{key_id}": {
        "parameters": [_p("key_id")],
        "delete": _op("Revoke an API key", (200, _json("ApiKey", "Revoked (repeating it changes nothing)")),
                      (401, 404), who="staff (any key); partner and client (their own keys)",
                      desc="The key answers 401 from the next request on, in every process. Audited."),
    },
    "/users": {
        "get": _op("List users (logins)", (200, _json("UserList")), (400, 401, 403),
                   params=[_q("email", "exact email, any case"), _q("role", "staff, partner or client"),
                           *PAGING], desc="400 bad_role."),
    },
    "/users/{user_id}": {
        "parameters": [_p("user_id")],
        "get": _op("Read a user", (200, _json("User")), (401, 403, 404)),
    },
    "/users/{user_id}/deactivate": {
        "parameters": [_p("user_id")],
        "post": _op("Deactivate a user", (200, _json("User")), (401, 403, 404, 409),
                    desc="Every session, remember-me cookie and API key of the user stops working at once. "
                         "409 cannot_deactivate_self for the caller's own user. Repeating it changes nothing. "
                         "Audited."),
    },
    "/users/{user_id}/activate": {
        "parameters": [_p("user_id")],
        "post": _op("Activate a user again", (200, _json("User")), (401, 403, 404),
                    desc="The user may sign in again (its old sessions stay ended); its unrevoked API keys "
                         "work again. Audited."),
    },
})
