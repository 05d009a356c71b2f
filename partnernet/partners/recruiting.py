"""Recruiting sub-affiliates (issue 6 item 5; CONTRACT §4 recruiter override).

A partner invites recruits with a signup link that carries a signed ``recruiter`` token
(``/signup?recruiter=<token>``). The sign-up page reads the token with
:func:`recruiter_from_token` and records the recruiter on the new partner
(:func:`apply_recruiter`). Tokens are signed with ``SECRET_KEY`` (``SECRET_KEY_FALLBACKS``
still verify), with their own salt, and expire after ``PARTNERNET_INVITE_MAX_AGE_S`` seconds
(default 90 days).

The first-tier percent a new recruit's recruiter earns is ``PARTNERNET_RECRUITER_PERCENT``
(a decimal string, default ``"5"``); staff can change it per partner
(``Partner.recruiter_percent``; ``Partner.tier2_percent`` is the second tier).
"""

from __future__ import annotations

from decimal import Decimal

from flask import current_app
from itsdangerous import BadSignature, URLSafeTimedSerializer

from ..extensions import db
from ..models import Partner
from ..signing import is_canonical_token

INVITE_SALT = "partnernet.recruiter-invite"
DEFAULT_MAX_AGE_S = 90 * 86400


def _serializer() -> URLSafeTimedSerializer:
    cfg = current_app.config
    keys = [*reversed(cfg.get("SECRET_KEY_FALLBACKS") or []), cfg["SECRET_KEY"]]  # itsdangerous: newest last
    return URLSafeTimedSerializer(keys, salt=INVITE_SALT)


def make_invite_token(partner_id: int) -> str:
    """A URL-safe signed token naming ``partner_id`` as the recruiter (timestamped)."""
    return _serializer().dumps({"r": int(partner_id)})


def recruiter_from_token(token: str | None) -> int | None:
    """The recruiter's partner id in ``token``, or None when the token is missing, altered,
    expired (``PARTNERNET_INVITE_MAX_AGE_S``), or names a partner that does not exist or is not
    approved. Never raises."""
    if not isinstance(token, str) or not token or len(token) > 500:
        return None
    max_age = int(current_app.config.get("PARTNERNET_INVITE_MAX_AGE_S") or DEFAULT_MAX_AGE_S)
    if not is_canonical_token(token):  # another spelling of a valid token is not that token
        return None
    try:
        data = _serializer().loads(token, max_age=max_age)
    except BadSignature:  # SignatureExpired is a BadSignature
        return None
    rid = data.get("r") if isinstance(data, dict) else None
    if not isinstance(rid, int) or isinstance(rid, bool):
        return None
    partner = db.session.get(Partner, rid)
    if partner is None or partner.status != "approved":
        return None
    return rid


def invite_url(partner_id: int) -> str:
    """The full signup URL for recruits of ``partner_id``: ``PARTNERNET_BASE_URL`` +
    ``/signup?recruiter=<token>``."""
    base = (current_app.config.get("PARTNERNET_BASE_URL") or "").rstrip("/")
    return f"{base}/signup?recruiter={make_invite_token(partner_id)}"


def default_recruiter_percent() -> Decimal:
    """The first-tier override percent given to a recruit's recruiter at signup."""
    return Decimal(str(current_app.config.get("PARTNERNET_RECRUITER_PERCENT") or "5"))


def apply_recruiter(partner: Partner, token: str | None) -> bool:
    """Record the recruiter of ``token`` on a newly signed-up ``partner`` (``recruiter_id`` and
    the default ``recruiter_percent``). Returns False, changing nothing, when the token is not
    valid or names the partner itself. Does not commit (the sign-up service does)."""
    rid = recruiter_from_token(token)
    if rid is None or rid == partner.id:
        return False
    partner.recruiter_id = rid
    partner.recruiter_percent = default_recruiter_percent()
    return True
