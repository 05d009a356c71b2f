"""The staff console (issue 4): blueprint ``staff`` at ``/staff/``. Views parse, call one
service, then flash and redirect (303) or render; a refused action renders
``staff/refused.html`` with the service's message and its 4xx status (403 maker-checker,
409 a state conflict such as a second approval, 400 bad input, 404 unknown object)."""

from __future__ import annotations

from datetime import date

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select

from .. import audit
from ..catalog import services as catalog
from ..errors import DomainError, NotFound
from ..extensions import db
from ..models import CONVERSION_STATUSES, PARTNER_STATUSES, REJECTION_REASONS, Campaign, Client, Partner, PayoutBatch
from ..money import MoneyError, is_currency, parse_amount
from ..payouts import exports as payout_exports
from ..payouts import services as payouts
from ..web_auth import role_required
from . import services
from .forms import (
    ActionForm,
    BatchForm,
    BulkReviewForm,
    CampaignForm,
    ClientForm,
    GrantForm,
    OverrideForm,
    ReasonForm,
    event_lines,
    parse_event_lines,
)

bp = Blueprint("staff", __name__, url_prefix="/staff")


@bp.before_request
@role_required("staff")
def _staff_only():
    """Every page here needs a signed-in staff user (others: sign-in page or 404)."""
    return None


def _uid() -> int:
    return current_user.id


def refused(err: DomainError, back: str):
    """The page for a refused action, with the error's HTTP status."""
    return render_template("staff/refused.html", err=err, back=back), err.status


def _int_arg(name: str) -> int | None:
    value = (request.args.get(name) or "").strip()
    if not value:
        return None
    if not value.isdigit() or len(value) > 18:
        abort(400)
    return int(value)


def _date_arg(name: str) -> date | None:
    value = (request.args.get(name) or "").strip()
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        abort(400)


# --------------------------------------------------------------------------- dashboard


@bp.get("/")
def dashboard():
    """Today and the last 30 days, top partners and campaigns, work waiting, queue health."""
    return render_template("staff/dashboard.html", d=services.dashboard(), health=services.queue_health(),
                           form=ActionForm())


@bp.post("/jobs/<job_id>/retry")
def retry_job(job_id: str):
    """Requeue a failed RQ job."""
    if not ActionForm().validate_on_submit():
        abort(400)
    try:
        name = services.retry_failed_job(job_id, _uid())
    except DomainError as err:
        return refused(err, url_for(".dashboard"))
    flash(f"Job {job_id} is queued again on {name}.")
    return redirect(url_for(".dashboard"), 303)


# --------------------------------------------------------------------------- partners


@bp.get("/partners")
def partners():
    """The partner application queue (``?status=pending`` by default) and other statuses."""
    status = request.args.get("status", "pending")
    if status not in PARTNER_STATUSES:
        abort(400)
    return render_template("staff/partners.html", partners=services.partner_applications(status),
                           status=status, statuses=PARTNER_STATUSES)


@bp.get("/partners/<int:partner_id>")
def partner(partner_id: int):
    """One partner's application details and the actions its status allows."""
    try:
        detail = services.partner_detail(partner_id)
    except NotFound:
        abort(404)
    history = db.session.scalars(audit.audit_query(target_type="partner", target_id=str(partner_id)).limit(20))
    return render_template("staff/partner.html", d=detail, form=ReasonForm(), history=list(history))


@bp.post("/partners/<int:partner_id>/<action>")
def partner_action(partner_id: int, action: str):
    """Approve, reject (reason required, e-mailed), suspend or reinstate a partner."""
    if action not in ("approve", "reject", "suspend", "reinstate"):
        abort(404)
    form = ReasonForm()
    if not form.validate_on_submit():
        return render_template("staff/refused.html", err=DomainError("the reason is too long"),
                               back=url_for(".partner", partner_id=partner_id)), 400
    try:
        p = services.change_partner_status(partner_id, action, _uid(), form.reason.data)
    except DomainError as err:
        return refused(err, url_for(".partner", partner_id=partner_id))
    flash(f"{p.name} is now {p.status}.")
    return redirect(url_for(".partner", partner_id=partner_id), 303)


@bp.get("/applications")
def applications():
    """Partners' applications to campaigns (partner portal), pending first."""
    try:
        from ..partners.applications import applications_query
    except ImportError:  # pragma: no cover
        abort(404)
    status = request.args.get("status", "pending")
    rows = db.session.scalars(applications_query(status=status or None).limit(200)).all()
    return render_template("staff/applications.html", rows=rows, status=status, form=ReasonForm())


@bp.post("/applications/<int:app_id>/<action>")
def application_action(app_id: int, action: str):
    """Approve or reject a campaign application (the partner is e-mailed)."""
    from ..partners.applications import approve_application, reject_application

    fn = {"approve": approve_application, "reject": reject_application}.get(action)
    form = ReasonForm()
    if fn is None or not form.validate_on_submit():
        abort(404 if fn is None else 400)
    try:
        fn(app_id, _uid(), form.reason.data or None)
    except DomainError as err:
        return refused(err, url_for(".applications"))
    flash(f"Application {app_id}: {action}d.")
    return redirect(url_for(".applications"), 303)


# --------------------------------------------------------------------------- conversions


@bp.get("/conversions")
def conversions():
    """The review queue with filters (campaign, partner, status, reason, flag) and the fraud
    flags stored on each conversion, with their evidence."""
    from ..conversions.flags import FLAG_LABELS
    from .review import FLAG_FILTERS, review_queue

    status = request.args.get("status", "pending")
    try:
        q = review_queue(campaign_id=_int_arg("campaign_id"), partner_id=_int_arg("partner_id"),
                         status=status or None, reason=request.args.get("reason") or None,
                         flag=request.args.get("flag") or None)
    except DomainError as err:
        return refused(err, url_for(".conversions"))
    campaigns = db.session.execute(select(Campaign.id, Campaign.name).order_by(Campaign.name)).all()
    return render_template("staff/conversions.html", q=q, form=BulkReviewForm(), status=status,
                           statuses=CONVERSION_STATUSES, reasons=REJECTION_REASONS + ("rejected_by_staff",),
                           flags=FLAG_FILTERS, flag_labels=FLAG_LABELS, campaigns=campaigns,
                           args=request.args)


@bp.post("/conversions/review")
def review():
    """Approve or reject the ticked conversions (one or many; flagged ones too: staff decide them)."""
    from .review import review_many

    form = BulkReviewForm()
    back = request.form.get("back") or url_for(".conversions")
    if not back.startswith("/staff/"):
        back = url_for(".conversions")
    if not form.validate_on_submit():
        return refused(DomainError("bad review form"), back)
    try:
        ids = [int(x) for x in request.form.getlist("ids") if x.isdigit()]
        result = review_many(ids, form.action.data, _uid(), form.reason.data or None)
    except DomainError as err:
        return refused(err, back)
    verb = "approved" if form.action.data == "approve" else "rejected"
    msg = f"{len(result.done)} conversion(s) {verb}."
    if result.failed:
        msg += " Not changed: " + "; ".join(f"#{k}: {v}" for k, v in result.failed.items())
    flash(msg)
    return redirect(back, 303)


# --------------------------------------------------------------------------- payouts


def _batch_partners(batch: PayoutBatch) -> dict[int, Partner]:
    ids = [i.partner_id for i in batch.items]
    return {p.id: p for p in db.session.scalars(select(Partner).where(Partner.id.in_(ids)))} if ids else {}


@bp.get("/payouts")
def payout_batches():
    """Payout batches, newest first, and the form for a new one."""
    batches = db.session.scalars(select(PayoutBatch).order_by(PayoutBatch.id.desc()).limit(100)).all()
    currencies = sorted(set(db.session.scalars(select(Client.currency).distinct())) or {"USD"})
    form = BatchForm()
    if currencies and not form.currency.data:
        form.currency.data = currencies[0]
    return render_template("staff/payouts.html", batches=batches, form=form, currencies=currencies)


@bp.post("/payouts")
def create_batch():
    """Create a draft batch for one currency with a minimum per partner."""
    form = BatchForm()
    if not form.validate_on_submit():
        batches = db.session.scalars(select(PayoutBatch).order_by(PayoutBatch.id.desc()).limit(100)).all()
        return render_template("staff/payouts.html", batches=batches, form=form, currencies=[]), 400
    currency = form.currency.data.upper()
    try:
        if not is_currency(currency):
            raise DomainError(f"unknown currency {currency}", code="unknown_currency")
        try:
            minimum = parse_amount(form.min_amount.data, currency, allow_zero=True)
        except MoneyError as exc:
            raise DomainError(f"minimum: {exc.message}", code="bad_amount") from None
        batch = payouts.create_batch(currency, minimum, _uid())
    except DomainError as err:
        return refused(err, url_for(".payout_batches"))
    flash(f"Draft batch {batch.id} created with {len(batch.items)} item(s). A second staff user must approve it.")
    return redirect(url_for(".payout_batch", batch_id=batch.id), 303)


@bp.get("/payouts/<int:batch_id>")
def payout_batch(batch_id: int):
    """One batch: its items, and the actions its status allows."""
    try:
        batch = payouts.get_batch(batch_id)
    except NotFound:
        abort(404)
    users = {u.id: u.email for u in db.session.scalars(select(services.User).where(
        services.User.id.in_([x for x in (batch.created_by, batch.approved_by) if x])))}
    short = {x.partner_id: x for x in payouts.shortfalls(batch)} if batch.status == "draft" else {}
    return render_template("staff/payout_batch.html", batch=batch, partners=_batch_partners(batch), users=users,
                           form=ActionForm(), shortfalls=short, exportable=batch.status in payout_exports.EXPORTABLE)


@bp.post("/payouts/<int:batch_id>/<action>")
def payout_action(batch_id: int, action: str):
    """approve (not by the creator: 403), cancel, mark-paid; a repeated click answers 409."""
    fn = {"approve": payouts.approve_batch, "cancel": payouts.cancel_batch,
          "mark-paid": payouts.mark_batch_paid}.get(action)
    if fn is None:
        abort(404)
    if not ActionForm().validate_on_submit():
        abort(400)
    try:
        batch = fn(batch_id, _uid())
    except DomainError as err:
        return refused(err, url_for(".payout_batch", batch_id=batch_id))
    done = {"approve": "approved", "cancel": "cancelled", "mark-paid": "marked paid"}[action]
    flash(f"Batch {batch.id} {done}.")
    return redirect(url_for(".payout_batch", batch_id=batch_id), 303)


def _payout_file(batch_id: int, make, mimetype: str, filename: str):
    """A payout file (approved or paid batches only: else the refused page, 409)."""
    try:
        body = make(batch_id)
    except NotFound:
        abort(404)
    except DomainError as err:
        return refused(err, url_for(".payout_batch", batch_id=batch_id))
    return Response(body, mimetype=mimetype, headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@bp.get("/payouts/<int:batch_id>/export.csv")
def export_bank(batch_id: int):
    """The bank CSV (CONTRACT v2 §5 columns)."""
    return _payout_file(batch_id, payout_exports.export_csv, "text/csv", f"payout-batch-{batch_id}.csv")


@bp.get("/payouts/<int:batch_id>/paypal.csv")
def export_paypal(batch_id: int):
    """The PayPal Payouts CSV (no header), PayPal partners only."""
    return _payout_file(batch_id, payout_exports.export_paypal_csv, "text/csv", f"paypal-payouts-{batch_id}.csv")


@bp.get("/payouts/<int:batch_id>/sepa.xml")
def export_sepa(batch_id: int):
    """The SEPA credit-transfer file (pain.001.001.03), bank-transfer partners of an EUR batch."""
    from ..payouts.sepa import export_sepa_xml

    return _payout_file(batch_id, export_sepa_xml, "application/xml", f"sepa-payout-batch-{batch_id}.xml")


# --------------------------------------------------------------------------- clients


@bp.get("/clients")
def clients():
    """Every client."""
    return render_template("staff/clients.html", clients=db.session.scalars(catalog.clients_query()).all())


def _client_data(form: ClientForm, *, new: bool) -> dict:
    data = {"name": form.name.data, "website_url": (form.website_url.data or "").strip(),
            "require_signature": bool(form.require_signature.data),
            "ip_allowlist": form.ip_allowlist.data or "", "timezone": form.timezone.data.strip()}
    if new:
        data["currency"] = (form.currency.data or "").strip().upper()
    return data


def _form_error(form, err: DomainError) -> None:
    name = (err.field or "").split("[")[0].split(".")[0]
    target = getattr(form, name, None) if name else None
    if target is not None and hasattr(target, "errors"):
        target.errors = list(target.errors) + [err.message]
    else:
        form.form_errors.append(err.message)


@bp.route("/clients/new", methods=["GET", "POST"])
def client_new():
    """Create a client: postback key and secret are generated."""
    form = ClientForm()
    if form.validate_on_submit():
        try:
            c = services.create_client(_client_data(form, new=True), _uid())
        except DomainError as err:
            db.session.rollback()
            _form_error(form, err)
            return render_template("staff/client_form.html", form=form, client=None), err.status
        flash(f"Client {c.name} created.")
        return redirect(url_for(".client", client_id=c.id), 303)
    return render_template("staff/client_form.html", form=form, client=None), (400 if form.errors else 200)


@bp.route("/clients/<int:client_id>", methods=["GET", "POST"])
def client(client_id: int):
    """Edit a client; shows its postback key and secret and its campaigns."""
    c = db.session.get(Client, client_id) or abort(404)
    form = ClientForm(obj=c)
    if form.validate_on_submit():
        try:
            services.update_client(client_id, _client_data(form, new=False), _uid())
        except DomainError as err:
            db.session.rollback()
            _form_error(form, err)
            return render_template("staff/client_form.html", form=form, client=c, action=ActionForm()), err.status
        flash("Client saved.")
        return redirect(url_for(".client", client_id=client_id), 303)
    return render_template("staff/client_form.html", form=form, client=c, action=ActionForm()), \
        (400 if form.errors else 200)


@bp.post("/clients/<int:client_id>/rotate-secret")
def rotate_secret(client_id: int):
    """A new postback secret for the client."""
    if not ActionForm().validate_on_submit():
        abort(400)
    try:
        services.rotate_client_secret(client_id, _uid())
    except DomainError as err:
        return refused(err, url_for(".clients"))
    flash("New postback secret issued: the old one no longer verifies.")
    return redirect(url_for(".client", client_id=client_id), 303)


# --------------------------------------------------------------------------- campaigns


@bp.get("/campaigns")
def campaigns():
    """Every campaign with its spend and budget."""
    return render_template("staff/campaigns.html", campaigns=db.session.scalars(catalog.campaigns_query()).all())


def _fill_campaign_form(form: CampaignForm, camp: Campaign) -> None:
    """The fields whose text differs from the column: events lines, hosts, money as decimals."""
    from ..money import format_minor

    def amount(minor):
        return format_minor(minor, camp.currency) if minor is not None else ""

    form.events.data = event_lines(camp)
    form.deep_link_hosts.data = ", ".join(camp.deep_link_hosts or [])
    form.budget.data = amount(camp.budget_minor)
    form.daily_cap.data = amount(camp.daily_cap_minor)
    form.monthly_cap.data = amount(camp.monthly_cap_minor)
    form.fallback_url.data = camp.fallback_url or ""
    form.visibility.data = camp.visibility or "public"


def _campaign_form(camp: Campaign | None = None, *, from_request: bool | None = None) -> CampaignForm:
    """The campaign form: from the POSTed data, or (a GET, or ``from_request=False``) from ``camp``."""
    if from_request is None:
        from_request = request.method != "GET"
    fill = camp is not None and not from_request
    form = CampaignForm(obj=camp, formdata=None) if fill else CampaignForm()
    form.client_id.choices = [(c.id, c.name) for c in db.session.scalars(catalog.clients_query())]
    if fill:
        _fill_campaign_form(form, camp)
    return form


def _campaign_data(form: CampaignForm) -> dict:
    try:
        events = parse_event_lines(form.events.data)
    except ValueError as exc:
        from ..errors import ValidationError

        raise ValidationError(str(exc), field="events") from None
    return {
        "name": form.name.data, "destination_url": form.destination_url.data.strip(),
        "fallback_url": (form.fallback_url.data or "").strip() or None,
        "deep_link_hosts": [h.strip() for h in (form.deep_link_hosts.data or "").split(",") if h.strip()],
        "events": events, "default_event": form.default_event.data.strip(),
        "budget": (form.budget.data or "").strip() or None, "hold_days": form.hold_days.data,
        "attribution_window_days": form.attribution_window_days.data,
        "attribution_model": form.attribution_model.data, "status": form.status.data,
        "visibility": form.visibility.data, "auto_approve_partners": bool(form.auto_approve_partners.data),
        "daily_cap": (form.daily_cap.data or "").strip() or None,
        "monthly_cap": (form.monthly_cap.data or "").strip() or None,
    }


@bp.route("/campaigns/new", methods=["GET", "POST"])
def campaign_new():
    """Create a campaign of a client."""
    form = _campaign_form()
    if form.validate_on_submit():
        try:
            data = _campaign_data(form)
            data["client_id"] = str(form.client_id.data)
            camp = services.create_campaign(data, _uid())
        except DomainError as err:
            db.session.rollback()
            _form_error(form, err)
            return render_template("staff/campaign_form.html", form=form, camp=None), err.status
        flash(f"Campaign {camp.name} created.")
        return redirect(url_for(".campaign", campaign_id=camp.id), 303)
    return render_template("staff/campaign_form.html", form=form, camp=None), (400 if form.errors else 200)


def _override_form(camp: Campaign, form: OverrideForm | None = None) -> OverrideForm:
    form = form or OverrideForm(formdata=None)
    form.partner_id.choices = [(p.id, f"{p.name} (#{p.id})") for p in db.session.scalars(
        select(Partner).where(Partner.status.in_(("approved", "pending", "suspended")))
        .order_by(Partner.name, Partner.id).limit(1000))]
    form.event.choices = [("", "every event")] + [(e.key, e.key) for e in camp.events]
    return form


def _grant_form(form: GrantForm | None = None) -> GrantForm:
    form = form or GrantForm(formdata=None)
    form.partner_id.choices = [(p.id, f"{p.name} (#{p.id})") for p in db.session.scalars(
        select(Partner).where(Partner.status == "approved").order_by(Partner.name, Partner.id).limit(1000))]
    return form


def _campaign_page(form: CampaignForm, camp: Campaign, status: int = 200, ov_form: OverrideForm | None = None,
                   grant_form: GrantForm | None = None):
    """The campaign edit page: the campaign form, its per-partner payout overrides and the
    partners granted access (CONTRACT §5 (v2) visibility)."""
    from ..partners.applications import applications_query

    granted = db.session.scalars(applications_query(status="approved", campaign_id=camp.id).limit(500)).all()
    return render_template("staff/campaign_form.html", form=form, camp=camp,
                           overrides=services.campaign_overrides(camp.id), ov_form=_override_form(camp, ov_form),
                           action=ActionForm(), granted=granted, grant_form=_grant_form(grant_form)), status


@bp.route("/campaigns/<int:campaign_id>", methods=["GET", "POST"])
def campaign(campaign_id: int):
    """Edit a campaign (the client cannot change); below it, the per-partner payout overrides."""
    camp = db.session.get(Campaign, campaign_id) or abort(404)
    form = _campaign_form(camp)
    form.client_id.data = camp.client_id
    if request.method == "POST" and form.validate_on_submit():
        try:
            services.update_campaign(campaign_id, _campaign_data(form), _uid())
        except DomainError as err:
            db.session.rollback()
            _form_error(form, err)
            return _campaign_page(form, camp, err.status)
        flash("Campaign saved.")
        return redirect(url_for(".campaign", campaign_id=campaign_id), 303)
    return _campaign_page(form, camp, 400 if form.errors else 200)


@bp.post("/campaigns/<int:campaign_id>/overrides")
def override_add(campaign_id: int):
    """Set (add or replace) a partner's payout on the campaign."""
    camp = db.session.get(Campaign, campaign_id) or abort(404)
    ov_form = _override_form(camp, OverrideForm())
    if ov_form.validate_on_submit():
        try:
            services.set_campaign_override(campaign_id, ov_form.partner_id.data, ov_form.event.data or None,
                                           ov_form.payout.data, _uid())
        except DomainError as err:
            db.session.rollback()
            field = {"payout_percent": "payout", "event": "event", "event_key": "event"}.get(err.field or "", "payout")
            target = getattr(ov_form, field)
            target.errors = list(target.errors) + [err.message]
            return _campaign_page(_campaign_form(camp, from_request=False), camp, err.status, ov_form)
        flash("Payout override saved.")
        return redirect(url_for(".campaign", campaign_id=campaign_id) + "#overrides", 303)
    return _campaign_page(_campaign_form(camp, from_request=False), camp, 400, ov_form)


@bp.post("/campaigns/<int:campaign_id>/partners")
def campaign_grant(campaign_id: int):
    """Give a partner access to the campaign (as ``POST /api/v1/campaigns/<id>/partners``)."""
    from ..catalog.access import grant_access

    camp = db.session.get(Campaign, campaign_id) or abort(404)
    grant_form = _grant_form(GrantForm())
    if not grant_form.validate_on_submit():
        return _campaign_page(_campaign_form(camp, from_request=False), camp, 400, grant_form=grant_form)
    try:
        _app, created = grant_access(campaign_id, grant_form.partner_id.data, _uid())
    except DomainError as err:
        db.session.rollback()
        return refused(err, url_for(".campaign", campaign_id=campaign_id))
    flash("Access granted." if created else "The partner already had access.")
    return redirect(url_for(".campaign", campaign_id=campaign_id) + "#access", 303)


@bp.post("/campaigns/<int:campaign_id>/overrides/<int:override_id>/delete")
def override_delete(campaign_id: int, override_id: int):
    """Remove one of the campaign's payout overrides."""
    if not ActionForm().validate_on_submit():
        abort(400)
    try:
        services.delete_campaign_override(campaign_id, override_id, _uid())
    except NotFound:
        abort(404)
    flash("Payout override removed.")
    return redirect(url_for(".campaign", campaign_id=campaign_id) + "#overrides", 303)


def _base_url() -> str:
    from flask import current_app

    return current_app.config.get("PARTNERNET_BASE_URL") or request.host_url


@bp.get("/campaigns/<int:campaign_id>/postback")
def postback_setup(campaign_id: int):
    """The postback URL template, a signing example and the test button."""
    camp = db.session.get(Campaign, campaign_id) or abort(404)
    return render_template("staff/postback_setup.html", camp=camp,
                           template=services.postback_url_template(camp, _base_url()),
                           example=services.signature_example(camp), form=ActionForm(), result=None)


@bp.post("/campaigns/<int:campaign_id>/test-postback")
def test_postback(campaign_id: int):
    """Send a signed test postback (a test conversion, never money) and show request and answer."""
    camp = db.session.get(Campaign, campaign_id) or abort(404)
    if not ActionForm().validate_on_submit():
        abort(400)
    try:
        result = services.send_test_postback(campaign_id, _uid(), _base_url())
    except DomainError as err:
        return refused(err, url_for(".postback_setup", campaign_id=campaign_id))
    return render_template("staff/postback_setup.html", camp=camp,
                           template=services.postback_url_template(camp, _base_url()),
                           example=services.signature_example(camp), form=ActionForm(), result=result)


@bp.get("/postback-log")
def postback_log():
    """The postback log, filtered by outcome, error code and campaign."""
    stmt = services.postback_log_query(outcome=request.args.get("outcome") or None,
                                       error=request.args.get("error") or None,
                                       campaign_id=_int_arg("campaign_id"))
    rows = db.session.scalars(stmt.limit(200)).all()
    outcomes = services.postback_outcomes()
    campaigns = db.session.execute(select(Campaign.id, Campaign.name).order_by(Campaign.name)).all()
    return render_template("staff/postback_log.html", rows=rows, outcomes=outcomes, campaigns=campaigns,
                           args=request.args, ok_outcomes=("created", "existing", "rejected"))


# --------------------------------------------------------------------------- invoices


@bp.get("/invoices")
def invoices():
    """Every client's invoices, newest period first (``?client_id=`` and ``?status=`` filter),
    with Issue (draft) and Mark paid (issued) buttons."""
    from ..clients import invoices as inv_services
    from ..models import INVOICE_STATUSES

    client_id, status = _int_arg("client_id"), request.args.get("status") or None
    if status is not None and status not in INVOICE_STATUSES:
        abort(400)
    rows = [i for i in inv_services.invoices_of(client_id) if status is None or i.status == status]
    names = dict(db.session.execute(select(Client.id, Client.name)).all())
    return render_template("staff/invoices.html", invoices=rows, names=names, statuses=INVOICE_STATUSES,
                           totals=inv_services.totals_per_currency(rows), form=ActionForm(), args=request.args)


@bp.get("/invoices/<int:invoice_id>")
def invoice(invoice_id: int):
    """One invoice, rendered like the client's own (``client/_invoice_article.html``)."""
    from ..clients import invoices as inv_services

    try:
        inv = inv_services.get_invoice(invoice_id)
    except NotFound:
        abort(404)
    return render_template("staff/invoice.html", inv=inv, client=db.session.get(Client, inv.client_id),
                           form=ActionForm())


@bp.get("/invoices/<int:invoice_id>.csv")
def invoice_csv(invoice_id: int):
    """The invoice as CSV (:func:`partnernet.clients.invoices.invoice_csv`)."""
    from ..clients import invoices as inv_services

    try:
        inv = inv_services.get_invoice(invoice_id)
    except NotFound:
        abort(404)
    return Response(inv_services.invoice_csv(inv), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{inv.number}.csv"'})


@bp.post("/invoices/<int:invoice_id>/<action>")
def invoice_action(invoice_id: int, action: str):
    """``issue`` a draft or ``mark-paid`` an issued invoice; a repeated click answers 409."""
    fn = {"issue": services.issue_invoice, "mark-paid": services.mark_invoice_paid}.get(action)
    if fn is None:
        abort(404)
    if not ActionForm().validate_on_submit():
        abort(400)
    back = request.form.get("back") or url_for(".invoices")
    if not back.startswith("/staff/"):
        back = url_for(".invoices")
    try:
        inv = fn(invoice_id, _uid())
    except NotFound:
        abort(404)
    except DomainError as err:
        return refused(err, back)
    flash(f"Invoice {inv.number} {'issued' if action == 'issue' else 'marked paid'}.")
    return redirect(back, 303)


# --------------------------------------------------------------------------- audit


@bp.get("/audit")
def audit_log():
    """The audit log with filters: actor (id, email or "system"), action, target type, dates."""
    stmt = audit.audit_query(actor=request.args.get("actor") or None, action=request.args.get("action") or None,
                             target_type=request.args.get("target_type") or None,
                             target_id=request.args.get("target_id") or None,
                             date_from=_date_arg("from"), date_to=_date_arg("to"))
    rows = db.session.scalars(stmt.limit(300)).all()
    users = {u.id: u.email for u in db.session.scalars(select(services.User).where(
        services.User.id.in_({r.actor_user_id for r in rows if r.actor_user_id})))}
    return render_template("staff/audit.html", rows=rows, users=users, actions=audit.actions(), args=request.args)


from . import user_views  # noqa: E402,F401  (the users pages, on this blueprint)
