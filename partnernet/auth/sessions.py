"""Signed-in sessions that can be ended at once (CONTRACT §5 v2: deactivation; logout and
password change end every session too).

The Flask-Login id kept in the session and in the remember-me cookie is
``"<user id>:<session token>"`` (:meth:`partnernet.models.User.get_id`). :func:`load_user`
accepts it only while the token equals the user's current ``session_token`` and the user is
active, so :func:`end_sessions`, which replaces the token, ends every session and every
remember-me cookie of that user in every process, with nothing cached anywhere.
"""

from __future__ import annotations

import hmac

from flask import current_app, request
from flask_login import login_user

from ..extensions import db
from ..ids import parse_id_text
from ..models import User
from ..models.users import new_session_token


def end_sessions(user: User) -> None:
    """Give ``user`` a new session token (no commit; the caller's use case commits): every
    session cookie and remember-me cookie issued before stops working once committed."""
    user.session_token = new_session_token()


def sign_out(user: User) -> None:
    """The sign-out use case: end every session and remember-me cookie of ``user`` on every
    device (:func:`end_sessions`) and commit."""
    end_sessions(user)
    db.session.commit()


def load_user(user_id: str) -> User | None:
    """The Flask-Login user loader: the active user named by ``"<id>:<token>"`` whose session
    token is ``token``, else None (old-style ids without a token, unknown ids, ended sessions,
    deactivated users). Never raises."""
    if not isinstance(user_id, str):
        return None
    raw_id, sep, token = user_id.partition(":")
    uid = parse_id_text(raw_id)
    if not sep or uid is None or not token:
        return None
    user = db.session.get(User, uid)
    if user is None or not user.active or not user.session_token:
        return None
    if not hmac.compare_digest(token.encode(), user.session_token.encode()):
        return None
    return user


def refresh_login(user: User) -> None:
    """After the signed-in user's own token changed (a password change), sign this browser in
    again with the new token, keeping its remember-me cookie when it had one; every other
    session of the user stays ended."""
    cookie = current_app.config.get("REMEMBER_COOKIE_NAME", "remember_token")
    user = getattr(user, "_get_current_object", lambda: user)()  # never the current_user proxy itself
    login_user(user, remember=request.cookies.get(cookie) is not None)
