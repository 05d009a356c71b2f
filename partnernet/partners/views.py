"""Partner pages: sign-up, confirmation and password reset (blueprint ``signup``) and the
partner portal at /partner/ (blueprint ``partner``). Views parse, call one service, render."""

from __future__ import annotations

import io

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user

from .. import csvsafe
from ..errors import DomainError, NotFound, TooManyAttempts
from ..extensions import db
from ..models import Campaign, Partner
from ..web_auth import current_partner_id, role_required
from . import accounts, applications, portal
from .forms import (
    ApplyForm,
    EmptyForm,
    LinkForm,
    PasswordForm,
    ProfileForm,
    ResetForm,
    ResetRequestForm,
    SignupForm,
    VanityCodeForm,
)

public_bp = Blueprint("signup", __name__)
bp = Blueprint("partner", __name__, url_prefix="/partner")


def _field_error(form, err: DomainError, default: str) -> None:
    name = err.field if err.field and hasattr(form, err.field) else default
    getattr(form, name).errors = list(getattr(form, name).errors or []) + [err.message]


# --------------------------------------------------------------------------- sign-up


@public_bp.route("/signup", methods=["GET", "POST"])
def signup():
    """The partner sign-up form; ``?recruiter=<invite token>`` records the recruiting partner."""
    form = SignupForm()
    if request.method == "GET":
        form.recruiter.data = request.args.get("recruiter", "")
    if form.validate_on_submit():
        data = accounts.SignupData(
            email=form.email.data, password=form.password.data, name=form.name.data, kind=form.kind.data,
            website=form.website.data or "", social_handles=form.social_handles.data or "",
            audience_size=form.audience_size.data, channels=list(form.channels.data or []),
            payout_method=form.payout_method.data, paypal_email=form.paypal_email.data,
            payout_iban=form.payout_iban.data, payout_bic=form.payout_bic.data,
            account_holder=form.account_holder.data, timezone=form.timezone.data,
            accept_terms=bool(form.accept_terms.data), recruiter_token=form.recruiter.data or None)
        try:
            accounts.signup_partner(data)
        except DomainError as err:
            _field_error(form, err, "email")
            return render_template("partner/signup.html", form=form), err.status
        return render_template("partner/signup_done.html", email=accounts.normalize_email(data.email))
    return render_template("partner/signup.html", form=form), (400 if request.method == "POST" else 200)


@public_bp.get("/signup/confirm/<token>")
def confirm(token: str):
    """The link of the confirmation email."""
    try:
        accounts.confirm_email(token)
    except DomainError as err:
        return render_template("partner/message.html", title="Email confirmation", message=err.message), 400
    return render_template("partner/message.html", title="Email confirmed",
                           message="Thank you: your email is confirmed. Our team reviews new partners "
                                   "within a few days; sign in to see where your application stands.",
                           sign_in=True)


@public_bp.post("/signup/resend")
@role_required("partner")
def resend():
    """Send the confirmation email again."""
    EmptyForm().validate_on_submit() or abort(400)
    accounts.resend_confirmation(current_user.id)
    flash("We sent you a new confirmation email.")
    return redirect(url_for("partner.home"))


@public_bp.route("/password-reset", methods=["GET", "POST"])
def reset_request():
    """Ask for a password-reset email (the answer is the same whether the account exists)."""
    form = ResetRequestForm()
    if form.validate_on_submit():
        accounts.request_password_reset(form.email.data)
        return render_template("partner/message.html", title="Check your email",
                               message="If an account uses this address, we sent it a link to set a new "
                                       "password. The link works once, for one hour.")
    return render_template("partner/reset_request.html", form=form), (400 if request.method == "POST" else 200)


@public_bp.route("/password-reset/<token>", methods=["GET", "POST"])
def reset(token: str):
    """Set a new password from the emailed link."""
    form = ResetForm()
    try:
        if request.method == "GET":
            accounts.check_reset_token(token)
        elif form.validate_on_submit():
            accounts.reset_password(token, form.password.data)
            flash("Your password is changed. Sign in with it.")
            return redirect(url_for("auth.login"))
        else:
            return render_template("partner/reset.html", form=form), 400
    except DomainError as err:
        if err.field == "password":
            form.password.errors = [err.message]
            return render_template("partner/reset.html", form=form), 400
        return render_template("partner/message.html", title="Password reset", message=err.message), 400
    return render_template("partner/reset.html", form=form)


# --------------------------------------------------------------------------- portal


def _partner() -> Partner:
    partner = db.session.get(Partner, current_partner_id())
    if partner is None:
        abort(404)
    return partner


def _need_approved():
    """Redirect to the home page (where the status is explained) unless the partner is approved."""
    if _partner().status != "approved":
        flash("This page opens once your account is approved.")
        return redirect(url_for("partner.home"))
    return None


@bp.get("/")
@role_required("partner")
def home():
    """Where the account stands, the balances and the next steps."""
    pid = current_partner_id()
    state = accounts.account_state(pid)
    return render_template("partner/home.html", partner=_partner(), state=state, balances=portal.balances(pid),
                           form=EmptyForm())


@bp.get("/campaigns")
@role_required("partner")
def campaigns():
    """The campaign marketplace with each campaign's terms in plain words."""
    if (r := _need_approved()):
        return r
    return render_template("partner/campaigns.html", campaigns=applications.marketplace(current_partner_id()),
                           form=ApplyForm())


@bp.post("/campaigns/<int:campaign_id>/apply")
@role_required("partner")
def apply(campaign_id: int):
    """Apply to a campaign."""
    form = ApplyForm()
    if not form.validate_on_submit():
        abort(400)
    try:
        app = applications.apply_to_campaign(current_partner_id(), campaign_id, form.message.data or "")
    except NotFound:
        abort(404)
    except DomainError as err:
        db.session.rollback()
        flash(err.message)
        return redirect(url_for("partner.campaigns")), 303
    flash("You are approved for this campaign: build your link." if app.status == "approved"
          else "Thank you: your application waits for our team's review.")
    return redirect(url_for("partner.campaigns"))


@bp.route("/links/new", methods=["GET", "POST"])
@role_required("partner")
def link_new():
    """The link builder: campaigns the partner may promote only (CONTRACT §5 (v2), the rule of
    :mod:`partnernet.catalog.access`, checked again by the link use case). An influencer's
    coupon code is a vanity-code request that staff review, filed with the link in one
    transaction; the link never gets a code here."""
    if (r := _need_approved()):
        return r
    pid = current_partner_id()
    partner = _partner()
    camps = applications.approved_campaigns(pid)
    form = LinkForm()
    form.campaign_id.choices = [(c.id, c.name) for c in camps]
    if request.method == "GET" and request.args.get("campaign", "").isdigit():
        form.campaign_id.data = int(request.args["campaign"])
    if request.method == "GET" and form.channel.data is None:
        form.channel.data = "influencer" if partner.kind == "influencer" else "affiliate"
    if form.validate_on_submit():
        from ..catalog.links import create_link

        data = {"campaign_id": form.campaign_id.data, "channel": form.channel.data}
        if form.deep_link.data:
            data["deep_link"] = form.deep_link.data.strip()
        code = (form.coupon_code.data or "").strip() if partner.kind == "influencer" else ""
        try:
            link = create_link(data, as_partner_id=pid, commit=not code, actor_user_id=current_user.id)
            if code:
                portal.request_vanity_code(pid, link.id, code)  # commits the link and the request
        except DomainError as err:
            db.session.rollback()
            if err.code == "deep_link_not_allowed":
                hosts = db.session.get(Campaign, form.campaign_id.data).deep_link_hosts or []
                err.message = ("this deep link is not on the campaign's allowed hosts: "
                               + (", ".join(hosts) if hosts else "this campaign allows no deep links"))
            if err.field == "code":
                err.field = "coupon_code"
            _field_error(form, err, "campaign_id")
            return render_template("partner/link_new.html", form=form, partner=partner, camps=camps), err.status
        if code:
            flash(f"Your link is ready. Your request for the code {code} is sent: our team reviews it.")
        subs = {k: getattr(form, k).data for k in ("sub1", "sub2", "sub3") if getattr(form, k).data}
        return redirect(url_for("partner.link_detail", link_id=link.id, **subs))
    status = 400 if request.method == "POST" else 200
    return render_template("partner/link_new.html", form=form, partner=partner, camps=camps), status


@bp.get("/links")
@role_required("partner")
def links():
    """The partner's links with clicks, conversions and earnings."""
    return render_template("partner/links.html", rows=portal.links_with_figures(current_partner_id()))


def _link_qr(link_id: int, url: str) -> tuple:
    """(the QR code of ``url``, False); when ``url`` is too long for any QR code (long sub IDs:
    segno's DataOverflowError), (the QR code of the link without sub IDs, True) so the page never
    fails on its QR code."""
    from segno import DataOverflowError

    try:
        return portal.qr_svg(url), False
    except DataOverflowError:
        return portal.qr_svg(portal.tracking_url(link_id)), True


def _link_page(link, form: VanityCodeForm, status: int = 200):
    subs = {k: request.args.get(k, "")[:255] for k in portal.SUB_KEYS if request.args.get(k)}
    url = portal.tracking_url(link.id, subs)
    pid = current_partner_id()
    qr, qr_short = _link_qr(link.id, url)
    return render_template("partner/link_detail.html", link=link, url=url, qr=qr, qr_short=qr_short, subs=subs,
                           partner=_partner(), vform=form, requests=portal.coupon_requests(pid, link.id),
                           tz=accounts.partner_timezone(pid)), status


@bp.get("/links/<int:link_id>")
@role_required("partner")
def link_detail(link_id: int):
    """One link: its tracking URL (with the sub IDs of the query), a copy button, a QR code, its
    tracking phone number and coupon code, and (influencers) the vanity-code requests and form."""
    try:
        link = portal.get_own_link(current_partner_id(), link_id)
    except NotFound:
        abort(404)
    return _link_page(link, VanityCodeForm())


@bp.post("/links/<int:link_id>/vanity-code")
@role_required("partner")
def vanity_code(link_id: int):
    """Ask for a vanity coupon code on one's link (issue 6 item 3; staff approve it)."""
    pid = current_partner_id()
    try:
        link = portal.get_own_link(pid, link_id)
    except NotFound:
        abort(404)
    form = VanityCodeForm()
    if not form.validate_on_submit():
        return _link_page(link, form, 400)
    try:
        req = portal.request_vanity_code(pid, link_id, form.code.data)
    except NotFound:
        abort(404)
    except DomainError as err:
        db.session.rollback()
        _field_error(form, err, "code")
        return _link_page(link, form, err.status)
    flash(f"Your request for the code {req.code} is sent: our team reviews it.")
    return redirect(url_for("partner.link_detail", link_id=link_id))


@bp.get("/earnings")
@role_required("partner")
def earnings():
    """Balances, the 30-day chart, the table by link and sub ID, conversions and payouts."""
    pid = current_partner_id()
    bal = portal.balances(pid)
    points, tz = portal.daily_series(pid)
    main_cur = max(bal, key=lambda b: b.approved + b.pending).currency if bal else None
    return render_template(
        "partner/earnings.html", balances=bal, chart=portal.chart_svg(points, main_cur), tz=tz, main_cur=main_cur,
        first_day=points[0].day.isoformat() if points else None, last_day=points[-1].day.isoformat() if points else None,
        subs=portal.by_link_and_sub(pid), conversions=portal.conversions_for(pid, 100),
        payouts=portal.payout_history(pid))


@bp.get("/conversions/<int:conversion_id>")
@role_required("partner")
def conversion_detail(conversion_id: int):
    """One conversion of the partner with its split."""
    pid = current_partner_id()
    try:
        view = portal.get_own_conversion(pid, conversion_id)
    except NotFound:
        abort(404)
    return render_template("partner/conversion.html", c=view, tz=accounts.partner_timezone(pid), pid=pid)


#: The money and rate columns of the earnings CSVs (kept as numbers; every other cell is text).
_CSV_NUMBERS = ("pending", "approved", "paid", "balance", "earnings", "cr", "epc", "sale_amount", "your_share",
                "recruiter_override", "your_total", "amount")


def _csv(name: str, header: list[str], rows: list[list]) -> Response:
    """A CSV download through :mod:`partnernet.csvsafe`: text cells a spreadsheet would run as a
    formula get a leading quote; the money and rate columns (:data:`_CSV_NUMBERS`) stay numbers."""
    buf = io.StringIO()
    w = csvsafe.writer(buf, numeric=csvsafe.numeric_columns(header, [h for h in header if h in _CSV_NUMBERS]))
    w.writerow(header)
    w.writerows(rows)
    return Response(buf.getvalue(), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})


@bp.get("/earnings/<table>.csv")
@role_required("partner")
def export(table: str):
    """CSV of one earnings table: ``balances``, ``daily``, ``links``, ``conversions``, ``payouts``.
    Amounts are decimal strings of the currency (CONTRACT §4); only the caller's rows."""
    from ..money import format_minor as f

    pid = current_partner_id()
    if table == "balances":
        return _csv("balances", ["currency", "pending", "approved", "paid", "balance"],
                    [[b.currency, f(b.pending, b.currency), f(b.approved, b.currency), f(b.paid, b.currency),
                      f(b.balance, b.currency)] for b in portal.balances(pid)])
    if table == "daily":
        points, _ = portal.daily_series(pid)
        return _csv("daily", ["date", "clicks", "conversions", "currency", "earnings"],
                    [[p.day.isoformat(), p.clicks, p.conversions, cur, f(v, cur) if cur else ""]
                     for p in points for cur, v in (sorted(p.earnings.items()) or [("", 0)])])
    if table == "links":
        return _csv("links", ["link_id", "campaign", "sub1", "clicks", "unique_clicks", "conversions", "cr",
                              "currency", "epc", "earnings"],
                    [[r.link_id, r.campaign, r.sub1, r.clicks, r.unique_clicks, r.conversions, r.cr, r.currency,
                      f(r.epc_minor, r.currency), f(r.earnings_minor, r.currency)] for r in portal.by_link_and_sub(pid)])
    if table == "conversions":
        return _csv("conversions", ["conversion_id", "created_at", "campaign", "event", "sub1", "status", "reason",
                                    "currency", "sale_amount", "your_share", "recruiter_override", "your_roles",
                                    "your_total"],
                    [[v.conversion.id, v.conversion.created_at.isoformat(), v.campaign, v.conversion.event_key,
                      v.sub1, v.conversion.status, v.conversion.reason or "", v.conversion.currency,
                      f(v.sale_minor, v.conversion.currency) if v.sale_minor is not None else "",
                      f(v.share_minor, v.conversion.currency),
                      f(v.recruiter_minor, v.conversion.currency), " ".join(v.roles),
                      f(v.mine_minor, v.conversion.currency)] for v in portal.conversions_for(pid, None)])
    if table == "payouts":
        return _csv("payouts", ["batch_id", "status", "currency", "amount", "paid_at"],
                    [[b.id, b.status, b.currency, f(i.amount_minor, b.currency),
                      b.paid_at.isoformat() if b.paid_at else ""] for i, b in portal.payout_history(pid)])
    abort(404)


@bp.route("/profile", methods=["GET", "POST"])
@role_required("partner")
def profile():
    """Payout method, time zone, password change and API keys (shown once)."""
    pid = current_partner_id()
    partner = _partner()
    prof = accounts.get_profile(pid)
    pform = ProfileForm(prefix="p")
    wform = PasswordForm(prefix="w")
    kform = EmptyForm(prefix="k")
    new_key = None
    status = 200
    action = request.form.get("action")
    if request.method == "GET":
        pform.payout_method.data = partner.payout_method or "paypal"
        pform.paypal_email.data = partner.payout_email
        pform.payout_iban.data, pform.payout_bic.data = partner.iban, partner.bic
        pform.account_holder.data = partner.account_holder
        pform.timezone.data = prof.timezone or "UTC"
    elif action == "payout":
        if pform.validate_on_submit():
            try:
                accounts.update_payout_and_timezone(
                    pid, payout_method=pform.payout_method.data, paypal_email=pform.paypal_email.data,
                    payout_iban=pform.payout_iban.data, timezone=pform.timezone.data,
                    user_id=current_user.id, current_password=pform.current_password.data,
                    payout_bic=pform.payout_bic.data, account_holder=pform.account_holder.data)
                flash("Your payout details and time zone are saved.")
                return redirect(url_for("partner.profile"))
            except DomainError as err:
                db.session.rollback()
                _field_error(pform, err, "payout_method")
                status = err.status
        else:
            status = 400
    elif action == "password":
        if wform.validate_on_submit():
            try:
                accounts.change_password(current_user.id, wform.current_password.data, wform.new_password.data)
                from ..auth.sessions import refresh_login

                refresh_login(current_user)  # the change ended every session; keep this one
                flash("Your password is changed.")
                return redirect(url_for("partner.profile"))
            except DomainError as err:
                _field_error(wform, err, "new_password")
                status = 400
        else:
            status = 400
    elif action == "api_key":
        if not kform.validate_on_submit():
            abort(400)
        from ..auth.services import create_api_key

        new_key = create_api_key(current_user.email)
    else:
        abort(400)
    return render_template("partner/profile.html", partner=partner, pform=pform, wform=wform, kform=kform,
                           new_key=new_key, keys=_keys()), status


def _keys():
    from sqlalchemy import select

    from ..models import ApiKey

    return list(db.session.scalars(select(ApiKey).where(ApiKey.user_id == current_user.id,
                                                        ApiKey.revoked_at.is_(None)).order_by(ApiKey.id)))



@bp.get("/recruits")
@role_required("partner")
def recruits():
    """Recruit partners: the invite link (approved partners) and the recruits with their status."""
    from flask import current_app

    from .recruiting import DEFAULT_MAX_AGE_S, default_recruiter_percent, invite_url

    pid = current_partner_id()
    partner = _partner()
    url = invite_url(pid) if partner.status == "approved" else None
    return render_template("partner/recruits.html", partner=partner, invite=url,
                           qr=portal.qr_svg(url) if url else None, rows=portal.recruits_of(pid),
                           percent=default_recruiter_percent(), tz=accounts.partner_timezone(pid),
                           days=int(current_app.config.get("PARTNERNET_INVITE_MAX_AGE_S") or DEFAULT_MAX_AGE_S) // 86400)


# --------------------------------------------------------------------------- partner postbacks


@bp.route("/postbacks", methods=["GET", "POST"])
@role_required("partner")
def postbacks():
    """The partner's postback URLs (global or per campaign), the test button and the delivery log."""
    from . import postbacks as pb
    from .forms import PostbackForm

    pid = current_partner_id()
    form = PostbackForm()
    form.campaign_id.choices = [(0, "All campaigns")] + [(c.id, c.name) for c in applications.approved_campaigns(pid)]
    status = 200
    if request.method == "POST":
        if form.validate_on_submit():
            try:
                pb.set_postback(pid, form.url.data, form.campaign_id.data or None)
                flash("Your postback URL is saved.")
                return redirect(url_for("partner.postbacks"))
            except DomainError as err:
                db.session.rollback()
                _field_error(form, err, "url")
                status = err.status
        else:
            status = 400
    return _postbacks_page(form, status)


def _postbacks_page(form, status: int, notice: str | None = None):
    from . import postbacks as pb

    pid = current_partner_id()
    return render_template("partner/postbacks.html", form=form, rows=pb.postbacks_of(pid),
                           deliveries=pb.deliveries_of(pid), macros=pb.MACROS, button=EmptyForm(),
                           tz=accounts.partner_timezone(pid), notice=notice), status


@bp.post("/postbacks/<int:postback_id>/test")
@role_required("partner")
def postback_test(postback_id: int):
    """Send a test postback to one of the partner's URLs; past the limit (5 per 10 minutes,
    :func:`partnernet.partners.postbacks.send_test`) the page answers 429 with a notice."""
    from . import postbacks as pb
    from .forms import PostbackForm

    if not EmptyForm().validate_on_submit():
        abort(400)
    try:
        pb.send_test(current_partner_id(), postback_id)
    except NotFound:
        abort(404)
    except TooManyAttempts as err:
        form = PostbackForm(formdata=None)
        form.campaign_id.choices = [(0, "All campaigns")] + [
            (c.id, c.name) for c in applications.approved_campaigns(current_partner_id())]
        page, status = _postbacks_page(form, err.status, notice=err.message)
        return page, status, {"Retry-After": str(pb.TEST_WINDOW_S)}
    flash("Test postback sent: see the delivery log below.")
    return redirect(url_for("partner.postbacks"))


@bp.post("/postbacks/<int:postback_id>/delete")
@role_required("partner")
def postback_delete(postback_id: int):
    """Remove one of the partner's postback URLs."""
    from . import postbacks as pb

    if not EmptyForm().validate_on_submit():
        abort(400)
    try:
        pb.delete_postback(current_partner_id(), postback_id)
    except NotFound:
        abort(404)
    flash("Postback URL removed.")
    return redirect(url_for("partner.postbacks"))
