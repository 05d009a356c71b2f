"""Password rules and the password change of any signed-in user (staff, partner, client).

A change ends every session and remember-me cookie of the user
(:func:`partnernet.auth.sessions.end_sessions`, CONTRACT §5 v2).
"""

from __future__ import annotations

import re

from werkzeug.security import check_password_hash, generate_password_hash

from ..errors import NotFound, Unauthorized, ValidationError
from ..extensions import db
from ..models import User
from .services import normalize_email
from .sessions import end_sessions

MIN_PASSWORD = 10
_COMMON = {"password", "password1", "123456789", "1234567890", "qwertyuiop", "iloveyou", "letmein123",
           "partnernet", "welcome123", "password123", "qwerty123", "abc1234567"}


def password_problem(password: str, email: str = "") -> str | None:
    """Why ``password`` is too weak, or None. Rules: at least :data:`MIN_PASSWORD` characters;
    at least three of lower case, upper case, digits, other characters, unless it has 16 or more
    characters (a passphrase); not a common password; not containing the email's local part."""
    pw = password or ""
    if len(pw) < MIN_PASSWORD:
        return f"use at least {MIN_PASSWORD} characters"
    if len(pw) > 200:
        return "use at most 200 characters"
    if pw.lower() in _COMMON:
        return "this password is too common"
    local = normalize_email(email).partition("@")[0]
    if len(local) >= 4 and local in pw.lower():
        return "the password must not contain your email name"
    kinds = sum(bool(re.search(p, pw)) for p in (r"[a-z]", r"[A-Z]", r"[0-9]", r"[^a-zA-Z0-9]"))
    if len(pw) < 16 and kinds < 3:
        return "mix upper case, lower case, digits or symbols (or use a passphrase of 16+ characters)"
    if len(set(pw)) < 5:
        return "the password repeats too few characters"
    return None


def change_password(user_id: int, current: str, new: str) -> None:
    """Change a user's password after checking the current one; commit. Every session and
    remember-me cookie of the user ends (the caller signs the current browser in again:
    :func:`partnernet.auth.sessions.refresh_login`). Raises Unauthorized (``current_password``
    wrong) and ValidationError (weak ``new_password``)."""
    user = db.session.get(User, user_id)
    if user is None:
        raise NotFound("no such user")
    if not check_password_hash(user.password_hash, current or ""):
        raise Unauthorized("the current password is wrong", field="current_password")
    problem = password_problem(new, user.email)
    if problem:
        raise ValidationError(problem, code="weak_password", field="new_password")
    user.password_hash = generate_password_hash(new)
    end_sessions(user)
    db.session.commit()
