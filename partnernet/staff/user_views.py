"""Staff pages for logins (on the ``staff`` blueprint): the user list with filters, and a
user's page with its API keys (each revocable) and deactivate / activate (CONTRACT §5 v2).
Views parse, call one service of :mod:`partnernet.auth.users` / :mod:`partnernet.auth.keys`,
then flash and redirect (303) or render ``staff/refused.html`` with the error's status."""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import current_user

from ..auth import keys as auth_keys
from ..auth import users as auth_users
from ..errors import DomainError
from ..extensions import db
from ..models import ROLES
from .forms import ActionForm
from .views import bp, refused


@bp.get("/users")
def users():
    """Every login, filtered by ``email`` (exact, any case) and ``role``; 300 at most."""
    role = request.args.get("role") or None
    if role is not None and role not in ROLES:
        abort(400)
    stmt = auth_users.users_query(email=(request.args.get("email") or "").strip()[:254] or None, role=role)
    rows = db.session.scalars(stmt.limit(300)).all()
    return render_template("staff/users.html", rows=rows, roles=ROLES, args=request.args)


@bp.get("/users/<int:user_id>")
def user(user_id: int):
    """One login: role, record, state, its active API keys with Revoke, deactivate/activate."""
    try:
        u = auth_users.get_user(user_id)
    except DomainError:
        abort(404)
    return render_template("staff/user.html", u=u, keys=auth_keys.active_keys(u.id), form=ActionForm(),
                           me=current_user.id)


@bp.post("/users/<int:user_id>/<action>")
def user_action(user_id: int, action: str):
    """``deactivate`` (its sessions, remember-me cookies and keys stop at once) or ``activate``."""
    fn = {"deactivate": auth_users.deactivate_user, "activate": auth_users.activate_user}.get(action)
    if fn is None:
        abort(404)
    if not ActionForm().validate_on_submit():
        abort(400)
    back = url_for(".user", user_id=user_id)
    try:
        u = fn(user_id, current_user.id)
    except DomainError as err:
        db.session.rollback()
        return refused(err, back)
    flash(f"{u.email} is {'active' if u.active else 'deactivated'}.")
    return redirect(back, code=303)
