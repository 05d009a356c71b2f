"""Signed values: tracking-link tokens and click IDs (CONTRACT §1).

Pure module (itsdangerous and the standard library). Every purpose has its own
salt, so a value signed for one purpose never verifies for another. Keys are
given newest first: ``[SECRET_KEY, *SECRET_KEY_FALLBACKS]``; values are signed
with the newest and verified with all of them, so links keep working after a
key rotation.

Tokens and click IDs are verified as exact strings: a decoder that accepts
several spellings of one value (base64 padding bits, for instance) would let a
changed character through, so every candidate is re-encoded and compared.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import struct
from dataclasses import dataclass

from itsdangerous import BadData, BadSignature, URLSafeSerializer
from itsdangerous.encoding import base64_decode, base64_encode

LINK_SALT = "partnernet.link"
CLICK_SALT = b"partnernet.click"
EMAIL_SALT = "partnernet.email"


class LinkSigner:
    """Signs and verifies link tokens: a link's integer id in a URL-safe signed token.

    ``keys`` is newest first. ``dumps(42)`` gives a ~31-character token such as
    ``NDI.Xy...``; ``loads(token)`` returns the id or ``None`` when the token is
    not exactly one we issued under any of the keys.
    """

    def __init__(self, keys: list[str | bytes], salt: str = LINK_SALT):
        if not keys:
            raise ValueError("at least one secret key is needed")
        self._serializers = [URLSafeSerializer(k, salt=salt) for k in keys]

    def dumps(self, link_id: int) -> str:
        """The token of ``link_id`` under the newest key (deterministic)."""
        return self._serializers[0].dumps(int(link_id))

    def loads(self, token: str) -> int | None:
        """The link id of ``token``, or ``None`` for anything we did not issue exactly."""
        if not isinstance(token, str) or len(token) > 200:
            return None
        for ser in self._serializers:
            try:
                value = ser.loads(token)
            except BadSignature:
                continue
            if isinstance(value, int) and not isinstance(value, bool) and ser.dumps(value) == token:
                return value
        return None


def is_canonical_token(token: str) -> bool:
    """True when every ``.``-separated part of an itsdangerous token is in canonical URL-safe
    base64, so that no other spelling of the same bytes (a changed last character whose
    padding bits are ignored) is accepted. Tokens are verified as exact strings (CONTRACT §1)."""
    if not isinstance(token, str) or not token:
        return False
    try:
        return all(base64_encode(base64_decode(part)).decode("ascii") == part for part in token.split("."))
    except (ValueError, TypeError, BadData):
        return False


@dataclass(frozen=True)
class ClickRef:
    """What a click ID carries: the link, the time (unix seconds, UTC) and the redirect's flags."""

    link_id: int
    ts: int
    bot: bool
    fallback: bool


_CLICK_STRUCT = struct.Struct(">IIB6s")  # link id, unix seconds, flags, random
_MAC_LEN = 9
_FLAG_BOT = 1
_FLAG_FALLBACK = 2


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class ClickIdSigner:
    """Makes and verifies click IDs: 32 URL-safe characters, signed, hard to guess.

    A click ID packs the link id, the click time and the bot/fallback flags
    with 48 random bits, and a 72-bit keyed BLAKE2b MAC over them. A postback
    can therefore be attributed before the buffered click row is written
    (ARCHITECTURE, the hot path). ``keys`` is newest first.
    """

    def __init__(self, keys: list[str | bytes]):
        if not keys:
            raise ValueError("at least one secret key is needed")
        self._keys = [hashlib.sha256((k.encode() if isinstance(k, str) else k) + CLICK_SALT).digest()
                      for k in keys]

    @staticmethod
    def _mac(key: bytes, body: bytes) -> bytes:
        return hashlib.blake2b(body, key=key, digest_size=_MAC_LEN).digest()

    def make(self, link_id: int, ts: int, *, bot: bool = False, fallback: bool = False) -> str:
        """A new click ID for a click on ``link_id`` at unix second ``ts``."""
        flags = (_FLAG_BOT if bot else 0) | (_FLAG_FALLBACK if fallback else 0)
        body = _CLICK_STRUCT.pack(int(link_id), int(ts), flags, secrets.token_bytes(6))
        return _b64(body + self._mac(self._keys[0], body))

    def verify(self, click_id: str) -> ClickRef | None:
        """The :class:`ClickRef` of ``click_id``, or ``None`` when it is not exactly one we made."""
        if not isinstance(click_id, str) or len(click_id) != 32:
            return None
        try:
            raw = base64.urlsafe_b64decode(click_id + "=" * (-len(click_id) % 4))
        except (binascii.Error, ValueError):
            return None
        if len(raw) != _CLICK_STRUCT.size + _MAC_LEN or _b64(raw) != click_id:
            return None
        body, mac = raw[: _CLICK_STRUCT.size], raw[_CLICK_STRUCT.size:]
        if not any(hmac.compare_digest(self._mac(k, body), mac) for k in self._keys):
            return None
        link_id, ts, flags, _rand = _CLICK_STRUCT.unpack(body)
        return ClickRef(link_id, ts, bool(flags & _FLAG_BOT), bool(flags & _FLAG_FALLBACK))


VISITOR_SALT = b"partnernet.visitor"
_VISITOR_MAC_LEN = 12  # bytes: 16 URL-safe base64 characters, no padding (96 bits)
VISITOR_MAC_CHARS = 16
_VISITOR_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


class VisitorCookieSigner:
    """Signs and verifies the visitor cookie (CONTRACT §1, v2: the cookie is issued and signed by
    the server).

    A cookie value is ``<visitor id><mac>``: the visitor id (16-48 of ``A-Z a-z 0-9 _ -``; the
    tracker issues 32 hex characters) followed by :data:`VISITOR_MAC_CHARS` URL-safe base64
    characters of a 96-bit keyed BLAKE2b MAC of the id (one key per secret, derived with its own
    salt, so no other signed value of the app verifies as a cookie). ``keys`` is newest first:
    cookies are signed with the newest and verified with every key (``SECRET_KEY_FALLBACKS``).
    The MAC is compared as an exact string (its 16 characters carry 96 bits, no padding bits),
    so no other spelling of a cookie verifies. About a microsecond per call: the redirect calls
    it on every click.
    """

    def __init__(self, keys: list[str | bytes]):
        if not keys:
            raise ValueError("at least one secret key is needed")
        self._keys = [hashlib.sha256((k.encode() if isinstance(k, str) else k) + VISITOR_SALT).digest()
                      for k in keys]

    @staticmethod
    def _mac(key: bytes, visitor: str) -> str:
        return _b64(hashlib.blake2b(visitor.encode("ascii"), key=key, digest_size=_VISITOR_MAC_LEN).digest())

    def sign(self, visitor: str) -> str:
        """The cookie value for ``visitor`` (16-48 of ``A-Z a-z 0-9 _ -``) under the newest key.
        Raises ValueError for any other visitor id."""
        if not 16 <= len(visitor) <= 48 or not _VISITOR_ID_CHARS.issuperset(visitor):
            raise ValueError("a visitor id is 16-48 of A-Z a-z 0-9 _ -")
        return visitor + self._mac(self._keys[0], visitor)

    def verify(self, value: str | None) -> tuple[str, bool] | None:
        """``(visitor id, signed with the newest key)`` for a cookie value we issued, else None
        (a made-up value, a changed character, a value of another length or alphabet)."""
        if not isinstance(value, str) or not 32 <= len(value) <= 64 or not _VISITOR_ID_CHARS.issuperset(value):
            return None
        visitor, mac = value[:-VISITOR_MAC_CHARS], value[-VISITOR_MAC_CHARS:]
        for i, key in enumerate(self._keys):
            if hmac.compare_digest(self._mac(key, visitor), mac):
                return visitor, i == 0
        return None
