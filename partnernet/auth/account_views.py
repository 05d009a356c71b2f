"""Every signed-in user's account page (``/account``): its API keys (create, shown once;
revoke) and its password. Staff revoke other users' keys from the staff user page, which
posts to the same revoke route (CONTRACT §5 v2). Every form is a CSRF-protected POST."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from ..errors import DomainError
from ..extensions import db
from . import keys
from .forms import AccountPasswordForm, ButtonForm, KeyForm
from .safe_next import safe_next
from .sessions import refresh_login
from .views import bp


@bp.route("/account", methods=["GET", "POST"])
@login_required
def account():
    """The API keys and the password of the signed-in user."""
    kform = KeyForm(prefix="k")
    wform = AccountPasswordForm(prefix="w")
    new_key = None
    status = 200
    action = request.form.get("action")
    if request.method == "POST":
        if action == "api_key" and kform.validate_on_submit():
            try:
                new_key = keys.create_key(current_user.id, kform.label.data or "")[1]
            except DomainError as err:
                db.session.rollback()
                kform.label.errors = [err.message]
                status = err.status
        elif action == "password" and wform.validate_on_submit():
            from .passwords import change_password

            try:
                change_password(current_user.id, wform.current_password.data, wform.new_password.data)
            except DomainError as err:
                db.session.rollback()
                field = wform.current_password if err.field == "current_password" else wform.new_password
                field.errors = [err.message]
                status = 400
            else:
                refresh_login(current_user)
                flash("Your password is changed; your other sessions are signed out.")
                return redirect(url_for("auth.account"))
        else:
            status = 400
    return render_template("auth/account.html", kform=kform, wform=wform,
                           new_key=new_key, keys=keys.active_keys(current_user.id)), status


@bp.post("/account/keys/<int:key_id>/revoke")
@login_required
def revoke_key(key_id: int):
    """Revoke an API key: one's own, or any for staff (404 otherwise). Goes back to ``next``
    (a path of this site) or the account page."""
    if not ButtonForm().validate_on_submit():
        return render_template("errors/400.html"), 400
    try:
        row = keys.revoke_key(key_id, current_user)
    except DomainError:
        db.session.rollback()
        return render_template("errors/404.html"), 404
    flash(f"The key {row.prefix}… is revoked.")
    return redirect(safe_next(request.form.get("next"), url_for("auth.account")), code=303)
