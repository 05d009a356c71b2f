"""What a partner may see of a conversion (CONTRACT v2 §5 "What a partner may do and see").

A partner never sees the client fee, the margin, another partner's amounts or another
partner's sub IDs. The API (:func:`partnernet.api.serialize.conversion`), the portal
(:mod:`partnernet.partners.portal`) and the reports (:mod:`partnernet.reporting.services`)
apply these helpers:

- :func:`own_lines`: of a conversion's split lines, only the partner's own (converter, touch,
  recruiter); never the agency's margin line nor another partner's line;
- :func:`partner_rule_text`: the payout rule of a line as the partner sees it. The stored text
  (``"event: 50%"``, ``"tier Gold: 60%"``) gives the payout as a percent *of the client fee*, so
  with the partner's amount it would give away the client fee and the margin; and a touch's
  line carries the converter's rule (another partner's terms). So the partner sees the rule's
  name without its figure (``"event"``, ``"tier Gold"``) on a converter line,
  :data:`TOUCH_RULE` on a touch line, and the recruiter rule as it is (it names only the tier
  of the override).
"""

from __future__ import annotations

from collections.abc import Iterable

#: Roles of a partner's own split lines.
PARTNER_ROLES = ("converter", "touch", "recruiter")
#: The rule a partner sees on its touch lines (the converter's rule is not its to see).
TOUCH_RULE = "multi-touch share"


def own_lines(splits: Iterable, partner_id: int) -> list:
    """The split lines (objects with ``partner_id`` and ``role``) of ``partner_id`` in a partner
    role, in their order; the margin and other partners' lines are left out."""
    return [s for s in splits if s.partner_id == partner_id and s.role in PARTNER_ROLES]


def partner_rule_text(rule: str | None, role: str) -> str | None:
    """The rule text ``rule`` of a line of role ``role`` as its partner sees it (see the module
    notes): converter → the name before the last ``": "`` (``"event: 50%"`` → ``"event"``);
    touch → :data:`TOUCH_RULE`; recruiter → unchanged. None stays None."""
    if rule is None:
        return None
    if role == "touch":
        return TOUCH_RULE
    if role == "converter":
        name, sep, _figure = rule.rpartition(": ")
        return name if sep else rule
    return rule
