"""Outbound HTTP: the one client for every call the product makes to a URL someone else chose
(partner postbacks and the partner's "Send test"), with the address rule that keeps those
calls off internal networks (server-side request forgery).

- :mod:`.addresses`: which IP addresses may be reached (pure, :mod:`ipaddress`);
- :mod:`.client`: :func:`get`, resolve once, connect to the checked address, one deadline, a
  size limit, no redirects.
"""

from .addresses import refusal
from .client import (
    DEADLINE_S,
    MAX_BYTES,
    Outcome,
    Refused,
    checked_addresses,
    get,
    loopback_allowed,
    system_resolver,
)

__all__ = ["DEADLINE_S", "MAX_BYTES", "Outcome", "Refused", "checked_addresses", "get", "loopback_allowed",
           "refusal", "system_resolver"]
