"""Customers and recurring commissions (CONTRACT v2 §3): find a customer's binding, judge its
window, and bind a customer to a link on its first conversion.

Nothing here runs unless the postback carries a ``customer_id``: a postback without one makes no
extra query. Bindings are never cached: a postback writes them, and the very next one must see
them.

Project choices (documented in the README):

- A ``customer_id`` is bound per campaign. A postback that names only the customer (no click ID,
  coupon or number) is matched against the bindings of this client's campaigns: one binding is
  used as it is; among several, the one whose campaign resolves the posted ``event`` (or its
  default event) to a recurring event; when that still leaves more than one, the postback answers
  400 ``ambiguous_customer`` (step 3: crediting a guess would pay the wrong partner).
- A month is a calendar month: a binding made on 31 January with ``recurring_months`` 1 credits
  until 28 (or 29) February at the same time of day (exclusive).
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from ..extensions import db
from ..models import Campaign, CustomerBinding
from .params import Refusal

#: Bindings read for one customer of one client (a customer bound on more campaigns of one
#: client than this is refused as ambiguous).
MAX_BINDINGS = 20

_BIND = CustomerBinding.__table__
_INSERT_BINDING = {  # INSERT ... ON CONFLICT (campaign, customer) DO NOTHING
    name: dialect_insert(_BIND).on_conflict_do_nothing(index_elements=("campaign_id", "customer_id"))
    for name, dialect_insert in (("postgresql", postgresql.insert), ("sqlite", sqlite.insert))
}


@dataclass(frozen=True)
class Binding:
    """A customer's binding on one campaign: the link (and its partner when bound) and when."""

    campaign_id: int
    link_id: int
    partner_id: int
    bound_at: datetime


def bindings_of(client_id: int, customer_id: str) -> list[Binding]:
    """The bindings of ``customer_id`` on the campaigns of client ``client_id``, oldest first
    (one indexed query; at most ``MAX_BINDINGS + 1`` rows)."""
    rows = db.session.execute(
        select(_BIND.c.campaign_id, _BIND.c.link_id, _BIND.c.partner_id, _BIND.c.bound_at)
        .join(Campaign, Campaign.id == _BIND.c.campaign_id)
        .where(_BIND.c.customer_id == customer_id, Campaign.client_id == client_id)
        .order_by(_BIND.c.id).limit(MAX_BINDINGS + 1))
    return [Binding(*r) for r in rows]


def pick_binding(bindings: list[Binding], is_recurring) -> Binding | None:
    """The binding a customer-only postback is credited through (module docstring), or None when
    it is ambiguous. ``bindings``: non-empty, oldest first. ``is_recurring(campaign_id)``: True
    when the postback's event resolves to a recurring event on that campaign."""
    if len(bindings) == 1:
        return bindings[0]
    if len(bindings) > MAX_BINDINGS:
        return None
    recurring = [b for b in bindings if is_recurring(b.campaign_id)]
    if len(recurring) == 1:
        return recurring[0]
    if not recurring:  # no campaign takes it: step 4 answers (missing_click_id / unknown_event)
        return bindings[0]
    return None


def resolve(client_id: int, customer_id: str, event_key: str | None, look) -> Binding | Refusal:
    """CONTRACT v2 §3 step 3 for a postback with a ``customer_id`` and no click ID, coupon or
    number: the binding to credit, or the refusal: 404 ``unknown_customer`` (bound on none of
    the client's campaigns), 400 ``ambiguous_customer`` (module docstring). ``event_key``: the
    posted event (None: each campaign's default); ``look``: the postback's
    :class:`~partnernet.postbacks.lookups.Lookups` (for the campaigns' events)."""
    bindings = bindings_of(client_id, customer_id)
    if not bindings:
        return Refusal(404, "unknown_customer", "unknown customer_id (no conversion has bound it to a link)")

    def is_recurring(campaign_id: int) -> bool:
        terms = look.campaign(campaign_id)
        ev = terms.event(event_key or terms.default_event) if terms is not None else None
        return ev is not None and ev.recurring_months != 0

    binding = pick_binding(bindings, is_recurring)
    if binding is None:
        return Refusal(400, "ambiguous_customer", "this customer_id is bound on several campaigns that take "
                       "this event: send a click_id, coupon or number")
    return binding


def add_months(at: datetime, months: int) -> datetime:
    """``at`` plus ``months`` calendar months, the day clamped to the target month's last day
    (31 Jan + 1 month = 28/29 Feb), time of day and time zone kept."""
    index = at.month - 1 + months
    year, month = at.year + index // 12, index % 12 + 1
    day = min(at.day, calendar.monthrange(year, month)[1])
    return at.replace(year=year, month=month, day=day)


def within_window(bound_at: datetime, recurring_months: int | None, now: datetime) -> bool:
    """True while a binding made at ``bound_at`` still credits an event with ``recurring_months``
    (CONTRACT v2 §3: None is lifetime; the binding must be younger than the months; 0 never)."""
    if recurring_months is None:
        return True
    if recurring_months <= 0:
        return False
    return now < add_months(bound_at, recurring_months)


def bind(*, campaign_id: int, customer_id: str, link_id: int, partner_id: int, conversion_id: int,
         at: datetime) -> None:
    """Bind ``customer_id`` to ``link_id`` on ``campaign_id`` unless it is bound already
    (CONTRACT v2 §3: the first conversion binds; nothing rebinds). One ``INSERT … ON CONFLICT DO
    NOTHING`` in the caller's transaction, so concurrent first postbacks bind once (the second
    waits for the first's commit, then writes nothing). Does not commit."""
    conn = db.session.connection()
    conn.execute(_INSERT_BINDING[conn.dialect.name], {
        "campaign_id": campaign_id, "customer_id": customer_id, "link_id": link_id,
        "partner_id": partner_id, "bound_at": at, "conversion_id": conversion_id,
    })
