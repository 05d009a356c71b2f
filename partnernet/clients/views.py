"""Client (advertiser) pages at /client/ (blueprint ``client``): own campaigns only (spend against
budget and caps, KPIs, conversions with status and reason), pause and resume, budget and caps,
postback setup, invoices and reports. Another tenant's object answers 404. Views parse, call one
service, render."""

from __future__ import annotations

import time

from flask import Blueprint, Response, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select

from ..catalog.services import get_campaign
from ..errors import DomainError
from ..extensions import db
from ..models import CONVERSION_STATUSES, Conversion, Partner
from ..money import format_minor
from ..web_auth import current_client_id, role_required
from . import services
from .forms import LimitsForm, StatusForm

bp = Blueprint("client", __name__, url_prefix="/client")
PAGE = 100


def _money_text(minor: int | None, currency: str) -> str:
    return "" if minor is None else format_minor(minor, currency)


@bp.get("/")
@role_required("client")
def home():
    """Overview: every own campaign with spend against budget and caps, and pause/resume."""
    cid = current_client_id()
    client = services.get_client(cid)
    rows = services.campaign_summaries(cid)
    return render_template("client/home.html", client=client, rows=rows, status_form=StatusForm())


@bp.route("/campaigns/<int:campaign_id>", methods=["GET", "POST"])
@role_required("client")
def campaign(campaign_id: int):
    """One own campaign: spend, caps, its limits form and its latest conversions."""
    cid = current_client_id()
    camp = _own_campaign(campaign_id, cid)
    form = LimitsForm()
    if request.method == "GET":
        form.budget.data = _money_text(camp.budget_minor, camp.currency)
        form.daily_cap.data = _money_text(camp.daily_cap_minor, camp.currency)
        form.monthly_cap.data = _money_text(camp.monthly_cap_minor, camp.currency)
    status = 200
    if form.validate_on_submit():
        try:
            services.set_campaign_limits(
                camp.id,
                {"budget": form.budget.data, "daily_cap": form.daily_cap.data,
                 "monthly_cap": form.monthly_cap.data},
                as_client_id=cid, actor_user_id=current_user.id,
            )
        except DomainError as err:
            db.session.rollback()
            field = getattr(form, err.field or "", None) or form.budget
            field.errors = list(field.errors or []) + [err.message]
            status = err.status
        else:
            flash("Budget and caps saved. They apply from the next click and conversion.")
            return redirect(url_for("client.campaign", campaign_id=camp.id))
    elif request.method == "POST":
        status = 400
    summary = next(s for s in services.campaign_summaries(cid) if s.campaign.id == camp.id)
    convs = _conversions(cid, campaign_id=camp.id, limit=20)
    return render_template("client/campaign.html", client=services.get_client(cid), s=summary, camp=camp,
                           form=form, status_form=StatusForm(), conversions=convs), status


@bp.post("/campaigns/<int:campaign_id>/status")
@role_required("client")
def set_status(campaign_id: int):
    """Pause or resume an own campaign (effective on the next click)."""
    cid = current_client_id()
    _own_campaign(campaign_id, cid)
    form = StatusForm()
    if not form.validate_on_submit():
        abort(400)
    services.set_campaign_status(campaign_id, form.status.data, as_client_id=cid, actor_user_id=current_user.id)
    flash("Campaign resumed: clicks go to your landing page again." if form.status.data == "active"
          else "Campaign paused: clicks now go to the fallback page and are not billed.")
    return redirect(request.form.get("back") if request.form.get("back", "").startswith("/client/")
                    else url_for("client.home"))


@bp.get("/conversions")
@role_required("client")
def conversions():
    """Own conversions, newest first, filtered by ``status``, ``campaign`` and ``reason``."""
    cid = current_client_id()
    status = request.args.get("status") or None
    if status is not None and status not in CONVERSION_STATUSES:
        status = None
    campaign_id = request.args.get("campaign", type=int)
    if campaign_id is not None:
        _own_campaign(campaign_id, cid)
    reason = (request.args.get("reason") or "")[:32] or None
    rows = _conversions(cid, campaign_id=campaign_id, status=status, reason=reason, limit=PAGE)
    camps = [s.campaign for s in services.campaign_summaries(cid)]
    return render_template("client/conversions.html", client=services.get_client(cid), rows=rows,
                           campaigns=camps, status=status, campaign_id=campaign_id, reason=reason,
                           statuses=CONVERSION_STATUSES)


@bp.get("/postback")
@role_required("client")
def postback():
    """Postback setup: the URL template, the key, and a worked signature example (CONTRACT §3)."""
    cid = current_client_id()
    client = services.get_client(cid)
    base = (current_app.config.get("PARTNERNET_BASE_URL") or request.host_url).rstrip("/")
    ts = str(int(time.time()))
    example = {"key": client.postback_key, "click_id": "CLICK_ID", "event": "sale", "txn_id": "ORDER-1001",
               "amount": "129.90", "ts": ts}
    signed_text, sig = services.signature_example(client, example)
    camps = [s.campaign for s in services.campaign_summaries(cid)]
    return render_template("client/postback.html", client=client, base=base, example=example,
                           signed_text=signed_text, sig=sig, campaigns=camps)


@bp.get("/reports")
@role_required("client")
def reports():
    """The client's report page (own campaigns; days in the client's time zone by default)."""
    from ..reporting.views import ReportScope, render_report_page

    return render_report_page(ReportScope.client(current_client_id()))


@bp.get("/invoices")
@role_required("client")
def invoices():
    """The client's invoices, newest period first, with totals per currency."""
    from . import invoices as inv_services

    cid = current_client_id()
    rows = [i for i in inv_services.invoices_of(cid) if i.status != "draft"] + \
        [i for i in inv_services.invoices_of(cid) if i.status == "draft"]
    rows.sort(key=lambda i: (i.period_start, i.currency), reverse=True)
    return render_template("client/invoices.html", client=services.get_client(cid), invoices=rows,
                           totals=inv_services.totals_per_currency([i for i in rows if i.status != "draft"]))


@bp.get("/invoices/<int:invoice_id>")
@role_required("client")
def invoice(invoice_id: int):
    """One own invoice, fit to print (``?print=1`` hides the navigation)."""
    from . import invoices as inv_services

    cid = current_client_id()
    try:
        inv = inv_services.get_invoice(invoice_id, client_id=cid)
    except DomainError:
        abort(404)
    return render_template("client/invoice.html", client=services.get_client(cid), inv=inv)


@bp.get("/invoices/<int:invoice_id>.csv")
@role_required("client")
def invoice_csv(invoice_id: int):
    """One own invoice as CSV (header :data:`partnernet.clients.invoices.CSV_HEADER`)."""
    from . import invoices as inv_services

    cid = current_client_id()
    try:
        inv = inv_services.get_invoice(invoice_id, client_id=cid)
    except DomainError:
        abort(404)
    return Response(inv_services.invoice_csv(inv), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{inv.number}.csv"'})


def _own_campaign(campaign_id: int, client_id: int):
    try:
        return get_campaign(campaign_id, client_id=client_id)
    except DomainError:
        abort(404)


def _conversions(client_id: int, *, campaign_id=None, status=None, reason=None, limit=PAGE):
    from ..reporting.services import conversions_query

    stmt = conversions_query(campaign_id=campaign_id, status=status, reason=reason, scope_client_id=client_id)
    stmt = stmt.order_by(None).order_by(Conversion.id.desc()).limit(limit)
    convs = list(db.session.scalars(stmt))
    names = {}
    if convs:
        pids = {c.partner_id for c in convs}
        names = dict(db.session.execute(select(Partner.id, Partner.name).where(Partner.id.in_(pids))).all())
    return [(c, names.get(c.partner_id, "")) for c in convs]

