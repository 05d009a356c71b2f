"""The partner's conversions as the portal shows them (CONTRACT v2 §5 "What a partner may do and
see"): those it converted and those where it has a split line (touch, recruiter), each with the
sale amount and the partner's own lines only. Amounts are int minor units with their currency."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import or_, select

from ..errors import NotFound
from ..extensions import db
from ..models import Campaign, Click, Conversion, ConversionSplit
from ..reporting.visibility import PARTNER_ROLES, own_lines, partner_rule_text


@dataclass(frozen=True)
class OwnLine:
    """One of the partner's own split lines as the partner sees it: ``rule`` from
    :func:`partnernet.reporting.visibility.partner_rule_text`."""

    id: int
    role: str
    rule: str | None
    amount_minor: int


@dataclass
class ConversionView:
    """A conversion as its partner sees it (CONTRACT v2 §5 "What a partner may do and see"): the
    sale amount, the partner's own split lines and nothing of the client fee, the margin or the
    other partners' amounts; ``sub1`` is the click's sub ID only when the partner converted
    (its own click), ``""`` when it is a touch or a recruiter; ``shared`` tells that other
    partners have lines too (without their amounts)."""

    conversion: Conversion
    campaign: str
    sub1: str
    sale_minor: int | None
    share_minor: int
    recruiter_minor: int
    mine_as_recruiter: bool
    shared: bool = False
    lines: list = field(default_factory=list)  # OwnLine: the partner's own lines (any role)

    @property
    def mine_minor(self) -> int:
        """The sum of the partner's own lines (converter, touch and recruiter), minor units."""
        return sum(s.amount_minor for s in self.lines)

    @property
    def roles(self) -> list[str]:
        """The partner's roles on this conversion, in ``PARTNER_ROLES`` order."""
        return [r for r in PARTNER_ROLES if any(s.role == r for s in self.lines)]


def conversions_for(partner_id: int, limit: int | None = 200, conversion_id: int | None = None) -> list[ConversionView]:
    """The partner's conversions, newest first: those it converted and those where it has a split
    line (touch, recruiter). ``conversion_id`` picks one (empty list when it is not the partner's).
    Amounts are the partner's own: ``share_minor`` its converter and touch lines,
    ``recruiter_minor`` its own recruiter overrides."""
    mine = select(ConversionSplit.conversion_id).where(ConversionSplit.partner_id == partner_id)
    stmt = (select(Conversion, Campaign.name, Click.sub1)
            .join(Campaign, Campaign.id == Conversion.campaign_id)
            .outerjoin(Click, Click.click_id == Conversion.click_id)
            .where(or_(Conversion.partner_id == partner_id, Conversion.id.in_(mine)))
            .order_by(Conversion.created_at.desc(), Conversion.id.desc()))
    if conversion_id is not None:
        stmt = stmt.where(Conversion.id == conversion_id)
    if limit:
        stmt = stmt.limit(limit)
    out = []
    for conv, cname, sub1 in db.session.execute(stmt).all():
        own = [OwnLine(s.id or 0, s.role, partner_rule_text(s.rule, s.role), s.amount_minor)
               for s in own_lines(conv.splits, partner_id)]
        out.append(ConversionView(
            conversion=conv, campaign=cname,
            sub1=(sub1 or "") if conv.partner_id == partner_id else "",  # another partner's click: not shown
            sale_minor=conv.amount_minor,
            share_minor=sum(s.amount_minor for s in own if s.role in ("converter", "touch")),
            recruiter_minor=sum(s.amount_minor for s in own if s.role == "recruiter"),
            mine_as_recruiter=any(s.role == "recruiter" for s in own),
            shared=any(s.partner_id not in (None, partner_id) for s in conv.splits),
            lines=sorted(own, key=lambda s: (PARTNER_ROLES.index(s.role), s.id))))
    return out


def get_own_conversion(partner_id: int, conversion_id: int) -> ConversionView:
    """One conversion of the partner; NotFound otherwise."""
    found = conversions_for(partner_id, None, conversion_id)
    if not found:
        raise NotFound(f"no conversion {conversion_id}")
    return found[0]
