"""Bearer-key authentication and the caller's role and scope (CONTRACT §5).

``Authorization: Bearer <api key>`` names a user through
:func:`partnernet.auth.services.user_for_api_key`; the key carries that user's
role. Access rules of the API (documented in the OpenAPI document too):

- a call the role can never make (a staff call from a partner or client key, a
  partner call from a client key ...) answers **403** ``forbidden``;
- an object outside the key's scope, on a call the role may make, answers
  **404** ``not_found``, exactly like an object that does not exist, so another
  tenant's ids reveal nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import g, request

from ..errors import Forbidden, Unauthorized


@dataclass(frozen=True)
class Principal:
    """The caller: its user id, role (``staff``, ``partner``, ``client``) and, for partner and
    client keys, the partner or client record it is tied to (0 when, abnormally, none is)."""

    user_id: int
    role: str
    partner_id: int | None = None
    client_id: int | None = None

    @property
    def is_staff(self) -> bool:
        return self.role == "staff"

    @property
    def is_partner(self) -> bool:
        return self.role == "partner"

    @property
    def is_client(self) -> bool:
        return self.role == "client"


def bearer_key(header: str | None) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header (scheme case-insensitive), else None."""
    if not header:
        return None
    scheme, _, key = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return None
    return key.strip()


def authenticate() -> Principal:
    """Resolve the request's bearer key into a :class:`Principal` kept in ``flask.g``.

    Raises Unauthorized (401 ``unauthorized``) with no key, an unknown or revoked key, or an
    inactive user.
    """
    from ..auth.services import user_for_api_key

    key = bearer_key(request.headers.get("Authorization"))
    if key is None:
        raise Unauthorized("send Authorization: Bearer <api key>", code="unauthorized")
    user = user_for_api_key(key)
    if user is None:
        raise Unauthorized("unknown or revoked API key", code="unauthorized")
    principal = Principal(
        user_id=user.id,
        role=user.role,
        partner_id=(user.partner_id or 0) if user.role == "partner" else None,
        client_id=(user.client_id or 0) if user.role == "client" else None,
    )
    g.api_principal = principal
    return principal


def current() -> Principal:
    """The authenticated caller of this request."""
    return g.api_principal


def require(*roles: str) -> Principal:
    """The caller, when its role is one of ``roles``; raises Forbidden (403) otherwise."""
    principal = current()
    if principal.role not in roles:
        raise Forbidden(f"this call is not open to {principal.role} keys")
    return principal
