"""auth.safe_next: only our own relative paths are followed after login."""

import pytest

from partnernet.auth.safe_next import safe_next


@pytest.mark.parametrize("target", ["/", "/partner/links", "/a?b=1&c=%2F#frag", "/earnings/2025-03"])
def test_own_paths_are_kept(target):
    assert safe_next(target, "/home") == target


@pytest.mark.parametrize("target", [
    None, "", "//evil.example/x", "/\\evil.example", "/\t/evil.example", "\t/x", "https:evil.example",
    "https://evil.example/", "http://127.0.0.1/x", "javascript:alert(1)", "x/y", "/x\n", "/ /x", "\\\\evil",
    "/%09/x".replace("%09", "\t"),
])
def test_anything_else_goes_to_the_default(target):
    assert safe_next(target, "/home") == "/home"
