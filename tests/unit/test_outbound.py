"""The outbound address rule (partnernet.outbound.addresses) and the client's URL and
resolution checks that need no network: every refused address form, the test switch, and a
resolver that is asked once."""

import pytest
from flask import Flask

from partnernet import outbound
from partnernet.outbound import addresses

REFUSED = [
    ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"), ("::1", "loopback"),
    ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.0.10", "private"), ("fd12:3456::1", "private"),
    ("169.254.169.254", "cloud metadata"), ("fd00:ec2::254", "cloud metadata"),
    ("169.254.1.1", "link-local"), ("fe80::1", "link-local"),
    ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("224.0.0.1", "multicast"), ("233.1.1.1", "multicast"), ("ff0e::1", "multicast"),
    ("240.0.0.1", "reserved"), ("255.255.255.255", "reserved"),
    ("100.64.0.1", "not a public"), ("198.18.0.1", "private"), ("192.0.2.45", "private"),
    ("2001:db8::1", "private"),  # documentation ranges: Python files them as private
    # IPv6 forms carrying an IPv4 address are judged by that address
    ("::ffff:127.0.0.1", "IPv4-mapped form of 127.0.0.1"), ("::ffff:10.0.0.1", "IPv4-mapped form of 10.0.0.1"),
    ("::ffff:169.254.169.254", "cloud metadata"),
    ("2002:7f00:1::", "6to4 form of 127.0.0.1"), ("2002:a9fe:a9fe::1", "6to4 form of 169.254.169.254"),
    ("2002:c0a8:1::", "6to4 form of 192.168.0.1"),
    ("64:ff9b::7f00:1", "NAT64 form of 127.0.0.1"), ("64:ff9b::a9fe:a9fe", "NAT64 form of 169.254.169.254"),
    ("64:ff9b:1::7f00:1", "local-use NAT64"),
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "Teredo address of 127.0.0.1"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
    ("::7f00:1", "reserved"),  # IPv4-compatible (deprecated)
    ("fe80::1%eth0", "link-local"),
    ("not-an-ip", "not an IP address"),
]


@pytest.mark.parametrize("ip,why", REFUSED)
def test_refused_address_forms(ip, why):
    reason = addresses.refusal(ip)
    assert reason is not None and why in reason, reason


@pytest.mark.parametrize("ip", ["93.184.215.14", "8.8.8.8", "2606:4700::1111", "2a00:1450:4001:80b::200e",
                                "::ffff:93.184.215.14", "2002:5db8:d70e::1", "64:ff9b::808:808"])
def test_public_addresses_pass(ip):
    assert addresses.refusal(ip) is None


def test_loopback_switch_lets_plain_loopback_only():
    assert addresses.refusal("127.0.0.1", allow_loopback=True) is None
    assert addresses.refusal("::1", allow_loopback=True) is None
    for ip in ("10.0.0.1", "169.254.169.254", "0.0.0.0", "2002:a9fe:a9fe::"):
        assert addresses.refusal(ip, allow_loopback=True) is not None


def _app(**config):
    app = Flask("outbound-test")
    app.config.update(config)
    return app


def test_the_loopback_switch_is_honoured_only_when_testing():
    assert outbound.loopback_allowed() is False  # no app at all
    with _app(TESTING=False, PARTNERNET_OUTBOUND_ALLOW_LOOPBACK=True).app_context():
        assert outbound.loopback_allowed() is False
        with pytest.raises(outbound.Refused, match="loopback"):
            outbound.checked_addresses("127.0.0.1", 80)
    with _app(TESTING=True).app_context():
        assert outbound.loopback_allowed() is False
    with _app(TESTING=True, PARTNERNET_OUTBOUND_ALLOW_LOOPBACK=True).app_context():
        assert outbound.loopback_allowed() is True
        assert outbound.checked_addresses("127.0.0.1", 80) == ["127.0.0.1"]


def test_a_name_is_refused_when_any_of_its_addresses_is_not_public():
    calls = []

    def resolver(host, port):
        calls.append((host, port))
        return ["93.184.215.14", "10.0.0.7"]

    with pytest.raises(outbound.Refused, match="10.0.0.7 is a private address"):
        outbound.checked_addresses("tracker.example", 443, resolver=resolver)
    assert calls == [("tracker.example", 443)]


def test_a_name_that_does_not_resolve_or_resolves_too_slowly():
    def broken(host, port):
        raise OSError("NXDOMAIN")

    with pytest.raises(outbound.Refused, match="does not resolve"):
        outbound.checked_addresses("nowhere.example", 80, resolver=broken)
    import threading

    gate = threading.Event()
    with pytest.raises(TimeoutError):
        outbound.checked_addresses("slow.example", 80, resolver=lambda h, p: gate.wait(5) or [], timeout_s=0.2)
    gate.set()


@pytest.mark.parametrize("url,why", [
    ("ftp://tracker.example/x", "not an http(s) URL"), ("file:///etc/passwd", "not an http(s) URL"),
    ("http:///nohost", "not an http(s) URL"), ("http://tracker.example:99999/", "not a valid URL"),
    ("http://169.254.169.254/latest/meta-data/", "cloud metadata"), ("http://[::ffff:7f00:1]/", "IPv4-mapped"),
    ("http://[2002:7f00:1::]/", "6to4"), ("http://0x7f000001/", "does not resolve"),
])
def test_get_refuses_without_connecting(url, why):
    def resolver(host, port):
        raise OSError("no such host")  # every name here is a made-up one

    out = outbound.get(url, resolver=resolver)
    assert out.kind == "refused" and why in out.error and out.address is None
