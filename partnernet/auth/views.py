"""Sign in and sign out (server-rendered)."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user, logout_user

from ..errors import TooManyAttempts, Unauthorized
from .forms import LoginForm
from .safe_next import safe_next
from .services import attempt_login
from .sessions import sign_out

bp = Blueprint("auth", __name__)


ROLE_HOME = {"staff": "/staff/", "partner": "/partner/", "client": "/client/"}


def home_for(user) -> str:
    """The landing path of a user's role (``/staff/``, ``/partner/``, ``/client/``)."""
    return ROLE_HOME.get(getattr(user, "role", None), "/")


@bp.route("/login", methods=["GET", "POST"])
def login():
    """The sign-in page. Follows ``next`` only to our own relative paths."""
    form = LoginForm()
    if request.method == "GET":
        form.next.data = request.args.get("next", "")
    if form.validate_on_submit():
        try:
            user = attempt_login(form.email.data, form.password.data, request.remote_addr or "")
        except (Unauthorized, TooManyAttempts) as err:
            form.password.errors.append(err.message)
            headers = {"Retry-After": str(getattr(err, "retry_after_s", 60))} if err.status == 429 else {}
            return render_template("auth/login.html", form=form), err.status, headers
        session.clear()  # a fresh session at login (no fixation)
        login_user(user, remember=bool(form.remember.data))
        return redirect(safe_next(form.next.data, home_for(user)))
    return render_template("auth/login.html", form=form), (400 if request.method == "POST" else 200)


@bp.post("/logout")
def logout():
    """Sign out: ends every session and remember-me cookie of the user (a copied cookie is
    refused from now on, on any device) and clears this browser's."""
    if current_user.is_authenticated:
        sign_out(current_user)
    session.clear()
    logout_user()  # after clear(): it flags the remember-me cookie for deletion in the session
    flash("You are signed out.")
    return redirect(url_for("auth.login"))


from . import account_views  # noqa: E402,F401  (the /account pages, on this blueprint)
