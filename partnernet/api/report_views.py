"""``GET /reports`` (CONTRACT §5): every role, scoped (a partner key its own rows, a client key
its campaigns). See :mod:`partnernet.reporting.services` for the figures and the time-zone notes."""

from __future__ import annotations

from flask import jsonify

from ..errors import ValidationError
from ..reporting import services as reporting
from . import serialize
from .auth import require
from .params import arg, date_arg
from .views import bp


@bp.get("/reports")
def get_report():
    who = require("staff", "partner", "client")
    group_by = arg("group_by")
    if group_by is None:
        raise ValidationError(
            f"group_by is required: one of {', '.join(reporting.GROUP_BYS)}",
            code="missing_field",
            field="group_by",
        )
    date_from, date_to = date_arg("from"), date_arg("to")
    tz = arg("tz") or "UTC"
    rows = reporting.report(
        group_by,
        date_from,
        date_to,
        tz,
        partner_id=who.partner_id if who.is_partner else None,
        client_id=who.client_id if who.is_client else None,
    )
    return jsonify(
        {
            "items": [serialize.report_row(r) for r in rows],
            "next": None,
            "group_by": group_by,
            "from": date_from.isoformat(),
            "to": date_to.isoformat(),
            "tz": tz,
        }
    )
