"""Which IP addresses outbound HTTP may reach (the SSRF rule of :mod:`partnernet.outbound`).

Pure module: standard library :mod:`ipaddress` only. An address is allowed only when it is
globally reachable (``is_global``, the IANA special-purpose registries of RFC 6890) and is none
of: private, loopback, link-local, unspecified, multicast, reserved, or the cloud metadata
address (``169.254.169.254``; AWS's IPv6 ``fd00:ec2::254``). IPv6 forms that carry an IPv4
address are judged by that address:

- IPv4-mapped ``::ffff:0:0/96`` (RFC 4291): a dual-stack socket connecting to
  ``::ffff:127.0.0.1`` reaches 127.0.0.1, so it is judged as the IPv4 address alone;
- NAT64 ``64:ff9b::/96`` (RFC 6052): judged as the embedded IPv4 address; the local-use prefix
  ``64:ff9b:1::/48`` (RFC 8215) is refused outright;
- 6to4 ``2002::/16`` (RFC 3056): refused when the embedded IPv4 address is (``2002:7f00:1::``
  is loopback's 6to4 form and passes ``is_global``), else judged as any IPv6 address;
- Teredo ``2001::/32`` (RFC 4380): refused when its server or client IPv4 address is, and
  otherwise by the general rule (Teredo is not globally routable: ``is_global`` is False).

``allow_loopback`` lets plain loopback (``127.0.0.0/8``, ``::1``) through: the test switch
``PARTNERNET_OUTBOUND_ALLOW_LOOPBACK``, honoured only in a TESTING app (see
:func:`partnernet.outbound.client.loopback_allowed`).
"""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA_ADDRESSES = frozenset({ipaddress.ip_address("169.254.169.254"),
                                ipaddress.ip_address("fd00:ec2::254")})
NAT64 = ipaddress.ip_network("64:ff9b::/96")
NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")


def parse_ip(text: str) -> IPAddress | None:
    """The address in ``text`` (an IPv6 zone ``%eth0`` and ``[...]`` brackets dropped), or None
    when it is not an IP address literal."""
    text = (text or "").strip().strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _embedded_v4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", ip.ipv4_mapped
    if ip in NAT64:
        return "NAT64", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def refusal(ip: IPAddress | str, *, allow_loopback: bool = False) -> str | None:
    """Why outbound HTTP may not connect to ``ip`` (an address or its text), or None when it
    may. The reason is short English for logs and the partner's delivery log, e.g.
    ``"127.0.0.1 is a loopback address"``. Text that is not an IP address is refused."""
    if isinstance(ip, str):
        parsed = parse_ip(ip)
        if parsed is None:
            return f"{ip[:64]!r} is not an IP address"
        ip = parsed
    if ip in METADATA_ADDRESSES:
        return f"{ip} is the cloud metadata address"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_v4(ip)
        if embedded is not None:
            form, v4 = embedded
            why = refusal(v4, allow_loopback=allow_loopback)
            return f"{ip} is the {form} form of {v4}: {why}" if why else None
        if ip in NAT64_LOCAL:
            return f"{ip} is a local-use NAT64 address"
        if ip.sixtofour is not None:
            why = refusal(ip.sixtofour, allow_loopback=allow_loopback)
            if why:
                return f"{ip} is the 6to4 form of {ip.sixtofour}: {why}"
        if ip.teredo is not None:
            for v4 in ip.teredo:
                why = refusal(v4, allow_loopback=allow_loopback)
                if why:
                    return f"{ip} is a Teredo address of {v4}: {why}"
    if ip.is_loopback:
        return None if allow_loopback else f"{ip} is a loopback address"
    for test, what in ((ip.is_unspecified, "the unspecified address"),
                       (ip.is_link_local, "a link-local address"), (ip.is_multicast, "a multicast address"), (ip.is_reserved, "a reserved address"),
                       (ip.is_private, "a private address"), (not ip.is_global, "not a public address")):
        if test:
            return f"{ip} is {what}"
    return None
