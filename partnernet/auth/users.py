"""Staff managing logins: list users, deactivate and activate them (CONTRACT §5 v2
``GET /users``, ``POST /users/<id>/deactivate``, ``/activate``).

Deactivating a user ends at once every session and remember-me cookie it has (its session
token is replaced: :func:`partnernet.auth.sessions.end_sessions`) and stops its API keys
(the bearer check refuses keys of inactive users). Activating it again lets it sign in anew
and makes its unrevoked keys work again (a deactivation is a suspension: keys to be dropped
for good are revoked). Both are audited (``user.deactivate``, ``user.activate``).
"""

from __future__ import annotations

from sqlalchemy import Select, select

from .. import audit
from ..errors import InvalidState, NotFound, ValidationError
from ..extensions import db
from ..models import ROLES, User
from .services import normalize_email
from .sessions import end_sessions


def users_query(*, email: str | None = None, role: str | None = None) -> Select:
    """Users ordered by id; filters ``email`` (exact, compared lower-case) and ``role``
    (400 ``bad_role`` for a role that does not exist)."""
    stmt = select(User).order_by(User.id)
    if email:
        stmt = stmt.where(User.email == normalize_email(email))
    if role is not None:
        if role not in ROLES:
            raise ValidationError(f"role must be one of {', '.join(ROLES)}", code="bad_role", field="role")
        stmt = stmt.where(User.role == role)
    return stmt


def get_user(user_id: int) -> User:
    """User ``user_id``; raises NotFound."""
    user = db.session.get(User, user_id)
    if user is None:
        raise NotFound(f"no user {user_id}")
    return user


def deactivate_user(user_id: int, actor_id: int) -> User:
    """Deactivate user ``user_id`` (staff ``actor_id``) and commit: its sessions, remember-me
    cookies and API keys stop working at once. Deactivating an inactive user changes nothing.
    Raises NotFound, InvalidState ``cannot_deactivate_self`` (409) when staff names itself."""
    user = get_user(user_id)
    if user.id == actor_id:
        raise InvalidState("you cannot deactivate your own account", code="cannot_deactivate_self")
    if user.active:
        user.active = False
        end_sessions(user)
        audit.record(actor_id, "user.deactivate", "user", user.id, {"active": True}, {"active": False})
        db.session.commit()
    return user


def activate_user(user_id: int, actor_id: int) -> User:
    """Activate user ``user_id`` again (staff ``actor_id``) and commit; it signs in anew (its
    old sessions stay ended). Activating an active user changes nothing. Raises NotFound."""
    user = get_user(user_id)
    if not user.active:
        user.active = True
        audit.record(actor_id, "user.activate", "user", user.id, {"active": False}, {"active": True})
        db.session.commit()
    return user
