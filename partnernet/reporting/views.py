"""The web report page (issue 5): one view for every role, scoped to what the viewer may see.

:func:`render_report_page` is the reusable view body: the staff console routes
``/staff/reports`` to ``render_report_page(ReportScope.staff())``, the partner portal
``/partner/reports`` to ``render_report_page(ReportScope.partner(pid))``; the client pages use
it at ``/client/reports``. ``/reports`` (this module's blueprint ``reports``) picks the scope
from the signed-in user's role. Query parameters: ``group_by`` (day, campaign, partner, channel,
sub1; default day), ``from`` / ``to`` (YYYY-MM-DD, default the last 30 days), ``tz`` (IANA, default
the viewer's zone), ``format=csv`` for the CSV export (text cells neutralised against
spreadsheet formulas by :mod:`partnernet.csvsafe`; a partner's ``margin`` cell is empty). Bad
input shows the form with the error and answers 400. The figures come from
:func:`partnernet.reporting.kpis.detailed_report`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import date, timedelta

from flask import Blueprint, Response, abort, render_template, request
from flask_login import current_user
from sqlalchemy import select

from .. import csvsafe
from ..clock import utcnow
from ..errors import ValidationError
from ..extensions import db
from ..models import Campaign, Client, Partner
from ..money import format_minor
from ..web_auth import role_required
from . import kpis

bp = Blueprint("reports", __name__)

GROUP_LABELS = {"day": "Day", "campaign": "Campaign", "partner": "Partner", "channel": "Channel", "sub1": "Sub ID"}
CSV_HEADER = ["key", "label", "currency", "clicks", "unique_clicks", "impressions", "conversions", "events",
              "revenue", "payout", "margin", "cr", "epc", "ecpc", "cpl", "cpa", "cps", "cpm", "sale_amount", "roas"]
#: Columns of product-formatted numbers (kept as numbers); every other cell is text and is
#: neutralised against spreadsheet formulas (a sub1 key such as ``=HYPERLINK(...)``).
CSV_NUMBERS = csvsafe.numeric_columns(CSV_HEADER, CSV_HEADER[3:7] + CSV_HEADER[8:])


@dataclass(frozen=True)
class ReportScope:
    """Who is looking: ``kind`` staff | partner | client, and the partner or client id."""

    kind: str
    owner_id: int | None = None
    default_tz: str = "UTC"

    @classmethod
    def staff(cls, tz: str = "UTC") -> ReportScope:
        """Everything."""
        return cls("staff", None, tz)

    @classmethod
    def partner(cls, partner_id: int, tz: str = "UTC") -> ReportScope:
        """A partner's own rows (CONTRACT §5 partner scope)."""
        return cls("partner", partner_id, tz)

    @classmethod
    def client(cls, client_id: int, tz: str | None = None) -> ReportScope:
        """A client's own campaigns; default zone: the client's."""
        if tz is None:
            tz = db.session.scalar(select(Client.timezone).where(Client.id == client_id)) or "UTC"
        return cls("client", client_id, tz)


def _labels(group_by: str, keys: list[str]) -> dict[str, str]:
    ids = [int(k) for k in keys if k.isdigit()]
    if group_by == "campaign" and ids:
        return {str(i): n for i, n in db.session.execute(select(Campaign.id, Campaign.name).where(Campaign.id.in_(ids)))}
    if group_by == "partner" and ids:
        return {str(i): n for i, n in db.session.execute(select(Partner.id, Partner.name).where(Partner.id.in_(ids)))}
    return {}


def _date(name: str, default: date) -> date:
    text = request.args.get(name) or ""
    if not text:
        return default
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        raise ValidationError(f"{name} must be a date YYYY-MM-DD", code="bad_date", field=name) from None


def _money(minor: int | None, currency: str) -> str:
    return "" if minor is None else format_minor(minor, currency)


def chart_bars(rows: list, value: str = "revenue_minor", width: int = 640, height: int = 180) -> dict | None:
    """Bars for an inline SVG chart of ``value`` per row (first currency only): ``{"bars": [{x, y, w, h,
    label, value}], "width", "height", "currency", "max"}``; None with nothing to draw."""
    if not rows:
        return None
    currency = rows[0].currency
    pts = [r for r in rows if r.currency == currency]
    top = max((getattr(r, value) for r in pts), default=0)
    if top <= 0:
        return None
    n = len(pts)
    slot = min(width / n, 60.0)  # a lone bar stays a bar, not a block
    bars = []
    for i, r in enumerate(pts):
        v = getattr(r, value)
        h = round(v * (height - 20) / top)
        bars.append({"x": round(i * slot + slot * 0.1, 1), "w": max(1.0, round(slot * 0.8, 1)), "y": height - h,
                     "h": h, "label": r.key, "value": v})
    return {"bars": bars, "width": width, "height": height, "currency": currency, "max": top}


def render_report_page(scope: ReportScope, template: str = "reports/report.html"):
    """The report page (HTML, or CSV with ``?format=csv``) for ``scope``; see the module notes."""
    today = utcnow().date()
    error = None
    group_by = request.args.get("group_by") or "day"
    tz = request.args.get("tz") or scope.default_tz
    rows: list = []
    total_rows: list = []
    date_from, date_to = today - timedelta(days=29), today
    try:
        date_from = _date("from", date_from)
        date_to = _date("to", date_to)
        rows = kpis.detailed_report(
            group_by, date_from, date_to, tz,
            partner_id=scope.owner_id if scope.kind == "partner" else None,
            client_id=scope.owner_id if scope.kind == "client" else None,
        )
        total_rows = kpis.totals(rows)
    except ValidationError as err:
        error = err
    labels = _labels(group_by, [r.key for r in rows])
    if request.args.get("format") == "csv" and error is None:
        out = io.StringIO()
        w = csvsafe.writer(out, numeric=CSV_NUMBERS, lineterminator="\n")
        own = scope.kind == "partner"  # a partner's margin is not its figure: the cell stays empty
        w.writerow(CSV_HEADER)
        for r in rows:
            cur = r.currency
            margin = "" if own else _money(r.margin_minor, cur)
            w.writerow([r.key, labels.get(r.key, r.key), cur, r.clicks, r.unique_clicks, r.impressions, r.conversions,
                        ";".join(f"{k}={v}" for k, v in sorted(r.events.items())),
                        _money(r.revenue_minor, cur), _money(r.payout_minor, cur), margin,
                        r.cr, _money(r.epc_minor, cur), _money(r.ecpc_minor, cur), _money(r.cpl_minor, cur),
                        _money(r.cpa_minor, cur), _money(r.cps_minor, cur), _money(r.cpm_minor, cur),
                        _money(r.sale_amount_minor, cur), r.roas or ""])
        name = f"report-{group_by}-{date_from}-{date_to}.csv"
        return Response(out.getvalue(), mimetype="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})
    chart = chart_bars(rows) if error is None else None
    return render_template(
        template, scope=scope, rows=rows, totals=total_rows, labels=labels, group_by=group_by, tz=tz,
        date_from=date_from, date_to=date_to, error=error, group_labels=GROUP_LABELS, chart=chart,
        show_margin=scope.kind != "partner",
    ), (400 if error else 200)


@bp.get("/reports")
@role_required("staff", "partner", "client")
def reports():
    """The report page of the signed-in user's role (staff: all; partner: own rows; client: own campaigns)."""
    role = current_user.role
    if role == "staff":
        return render_report_page(ReportScope.staff())
    if role == "partner":
        if current_user.partner_id is None:
            abort(404)
        return render_report_page(ReportScope.partner(current_user.partner_id))
    if current_user.client_id is None:
        abort(404)
    return render_report_page(ReportScope.client(current_user.client_id))


