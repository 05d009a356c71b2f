"""Access control for the server-rendered pages.

``@role_required("staff")`` on a view: anonymous users go to the sign-in page (with
``next``), signed-in users of another role get 404 (we never reveal what exists).
"""

from __future__ import annotations

from functools import wraps

from flask import abort
from flask_login import current_user, login_required


def role_required(*roles: str):
    """Decorator: the view needs a signed-in user whose role is one of ``roles``."""

    def deco(view):
        @wraps(view)
        @login_required
        def wrapped(*args, **kwargs):
            if current_user.role not in roles:
                abort(404)
            return view(*args, **kwargs)

        return wrapped

    return deco


def current_partner_id() -> int:
    """The partner id of the signed-in partner user (404 when there is none)."""
    pid = getattr(current_user, "partner_id", None)
    if pid is None:
        abort(404)
    return pid


def current_client_id() -> int:
    """The client id of the signed-in client user (404 when there is none)."""
    cid = getattr(current_user, "client_id", None)
    if cid is None:
        abort(404)
    return cid
