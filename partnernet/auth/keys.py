"""API keys a user lists, creates and revokes (CONTRACT §5 v2 ``/api-keys``).

A user sees and revokes its own keys; staff may list and revoke any user's. A revoked key
answers 401 from the next request on, in every process: the bearer check reads the key's row
on each call (:func:`partnernet.auth.services.user_for_api_key`), nothing is cached.
Revocations (and creations) are written to the audit log with their actor.
"""

from __future__ import annotations

from sqlalchemy import Select, select

from .. import audit
from ..clock import utcnow
from ..errors import NotFound, ValidationError
from ..extensions import db
from ..models import ApiKey, User
from ..text import find_unclean

MAX_LABEL = 100
#: Unrevoked keys one user may hold.
MAX_ACTIVE_KEYS = 20


def _label(label: object) -> str:
    """A key's label: a string of at most :data:`MAX_LABEL` characters (400 ``bad_label``)."""
    if label is None:
        return ""
    if not isinstance(label, str) or len(label) > MAX_LABEL or find_unclean(label) is not None:
        raise ValidationError(f"label must be text of at most {MAX_LABEL} characters", code="bad_label",
                              field="label")
    return label.strip()


def keys_query(user_id: int, *, include_revoked: bool = True) -> Select:
    """The keys of user ``user_id`` ordered by id (for :func:`partnernet.api.params.page`);
    revoked ones included unless ``include_revoked`` is false."""
    stmt = select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.id)
    if not include_revoked:
        stmt = stmt.where(ApiKey.revoked_at.is_(None))
    return stmt


def active_keys(user_id: int) -> list[ApiKey]:
    """The unrevoked keys of user ``user_id``, oldest first (for the pages)."""
    return list(db.session.scalars(keys_query(user_id, include_revoked=False)))


def create_key(user_id: int, label: object = None) -> tuple[ApiKey, str]:
    """Create a key for user ``user_id`` and commit; returns (row, key). The key itself is
    returned this once: only its SHA-256 is stored. Raises NotFound (no such user),
    ValidationError ``bad_label``, ``too_many_keys`` (past :data:`MAX_ACTIVE_KEYS` unrevoked keys)."""
    from .services import new_api_key

    user = db.session.get(User, user_id)
    if user is None:
        raise NotFound(f"no user {user_id}")
    text = _label(label)
    if len(active_keys(user_id)) >= MAX_ACTIVE_KEYS:
        raise ValidationError(f"at most {MAX_ACTIVE_KEYS} keys at once: revoke one first", code="too_many_keys")
    key, key_hash, prefix = new_api_key()
    row = ApiKey(user_id=user.id, key_hash=key_hash, prefix=prefix, label=text)
    db.session.add(row)
    db.session.flush()
    audit.record(user_id, "api_key.create", "api_key", row.id, None, {"user_id": user.id, "prefix": prefix})
    db.session.commit()
    return row, key


def get_key(key_id: int, actor: User) -> ApiKey:
    """Key ``key_id`` when ``actor`` may see it (its own, or any for staff); raises NotFound
    otherwise, exactly as for a key that does not exist."""
    row = db.session.get(ApiKey, key_id)
    if row is None or (row.user_id != actor.id and actor.role != "staff"):
        raise NotFound(f"no API key {key_id}")
    return row


def revoke_key(key_id: int, actor: User) -> ApiKey:
    """Revoke key ``key_id`` and commit; returns the row. ``actor`` revokes its own keys; staff
    any key. Revoking a revoked key changes nothing (its first ``revoked_at`` stays). The key
    answers 401 from the next request on. Audited as ``api_key.revoke``. Raises NotFound."""
    row = get_key(key_id, actor)
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        audit.record(actor.id, "api_key.revoke", "api_key", row.id, {"revoked_at": None},
                     {"revoked_at": row.revoked_at, "user_id": row.user_id, "prefix": row.prefix})
        db.session.commit()
    return row
