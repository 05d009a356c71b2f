"""Access calls (CONTRACT §5 v2 "More calls"): API keys a user lists, creates and revokes, and
the logins staff list, deactivate and activate.

==================================  =====================  ======================  ==================
call                                staff                  partner key             client key
==================================  =====================  ======================  ==================
GET /api-keys                       own; ``?user_id=`` any own                     own
POST /api-keys                      own (key shown once)   own                     own
DELETE /api-keys/<id>               any key                own (404 otherwise)     own (404 otherwise)
GET /users                          all                    403                     403
POST /users/<id>/deactivate         any but itself (409)   403                     403
POST /users/<id>/activate           any                    403                     403
==================================  =====================  ======================  ==================

A revoked key, and every key of a deactivated user, answers 401 from the next request on, in
every process: the bearer check reads the key and its user from the database on each call.
"""

from __future__ import annotations

from typing import Any

from flask import jsonify

from ..auth import keys as auth_keys
from ..auth import users as auth_users
from ..catalog.services import check_unknown_fields
from ..errors import Forbidden, NotFound
from ..extensions import db
from ..models import ApiKey, User
from . import openapi_access  # noqa: F401  (documents these calls)
from .auth import current, require
from .params import arg, id_arg, json_body, page, path_id
from .serialize import sid, ts
from .views import bp


def _key(row: ApiKey) -> dict[str, Any]:
    """``{id, user_id, prefix, label, created_at, revoked_at, active}`` (never the key itself)."""
    return {"id": sid(row.id), "user_id": sid(row.user_id), "prefix": row.prefix, "label": row.label or "",
            "created_at": ts(row.created_at), "revoked_at": ts(row.revoked_at), "active": row.revoked_at is None}


def _user(u: User) -> dict[str, Any]:
    """``{id, email, role, active, name, created_at}``, plus ``partner_id`` for a partner user and
    ``client_id`` for a client user."""
    out: dict[str, Any] = {"id": sid(u.id), "email": u.email, "role": u.role, "active": bool(u.active),
                           "name": u.name or "", "created_at": ts(u.created_at)}
    if u.role == "partner":
        out["partner_id"] = sid(u.partner_id)
    elif u.role == "client":
        out["client_id"] = sid(u.client_id)
    return out


def _actor() -> User:
    user = db.session.get(User, current().user_id)
    if user is None:  # the key's user vanished mid-request
        raise NotFound("no such user")
    return user


# ---------------------------------------------------------------- API keys


@bp.get("/api-keys")
def list_api_keys():
    """The caller's keys (revoked ones included, with ``revoked_at``); staff: ``?user_id=``."""
    who = current()
    user_id = id_arg("user_id")
    if user_id is None or user_id == who.user_id:
        user_id = who.user_id
    elif not who.is_staff:
        raise Forbidden("only staff keys list other users' keys")
    return jsonify(page(auth_keys.keys_query(user_id), ApiKey.id, _key))


@bp.post("/api-keys")
def create_api_key():
    """A new key of the caller: 201 with ``key``, shown this once."""
    data = json_body()
    check_unknown_fields(data, ("label",))
    row, key = auth_keys.create_key(current().user_id, data.get("label"))
    return jsonify({**_key(row), "key": key}), 201


@bp.delete("/api-keys/<key_id>")
def revoke_api_key(key_id: str):
    """Revoke a key: the caller's own, or any for staff (404 otherwise). Repeating it is harmless."""
    kid = path_id(key_id)
    if kid is None:
        raise NotFound(f"no API key {key_id}")
    return jsonify(_key(auth_keys.revoke_key(kid, _actor())))


# ---------------------------------------------------------------- users


@bp.get("/users")
def list_users():
    require("staff")
    return jsonify(page(auth_users.users_query(email=arg("email"), role=arg("role")), User.id, _user))


@bp.get("/users/<user_id>")
def get_user(user_id: str):
    require("staff")
    return jsonify(_user(auth_users.get_user(_user_id(user_id))))


def _user_id(user_id: str) -> int:
    uid = path_id(user_id)
    if uid is None:
        raise NotFound(f"no user {user_id}")
    return uid


@bp.post("/users/<user_id>/deactivate")
def deactivate_user(user_id: str):
    """Staff: the user's sessions, remember-me cookies and keys stop at once; 409
    ``cannot_deactivate_self`` for the caller's own user."""
    who = require("staff")
    return jsonify(_user(auth_users.deactivate_user(_user_id(user_id), who.user_id)))


@bp.post("/users/<user_id>/activate")
def activate_user(user_id: str):
    """Staff: the user may sign in again and its unrevoked keys work again."""
    who = require("staff")
    return jsonify(_user(auth_users.activate_user(_user_id(user_id), who.user_id)))
