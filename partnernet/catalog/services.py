"""Catalog use cases: clients, campaigns, partners, links (CONTRACT §5 staff calls)."""

from __future__ import annotations

import secrets


def new_postback_credentials() -> tuple[str, str]:
    """A fresh (postback_key, postback_secret) pair: URL-safe random strings (CONTRACT §3)."""
    return "pk_" + secrets.token_urlsafe(18), secrets.token_urlsafe(32)
