"""Text that can be stored: the one shared check for NUL characters and lone UTF-16 surrogates.

Pure module: standard library only.

A JSON string may hold a lone surrogate (``"\\ud800"``) and any input may hold a NUL
(``"\\u0000"``, ``%00``). Neither can be stored: a surrogate cannot be encoded as UTF-8
(every database driver fails with ``UnicodeEncodeError``) and PostgreSQL text cannot hold
NUL. Every entry point refuses such text before it reaches a query (the JSON API with 400
``bad_text``, the postback with 400 ``bad_encoding`` or 401 for a key, web forms with a form
error), and logs that keep what was sent replace the characters with U+FFFD
(:func:`scrub`).
"""

from __future__ import annotations

import re
from typing import Any

# NUL and every UTF-16 surrogate code point (a valid pair never survives decoding as two
# surrogates in a Python str, so any surrogate found here is a lone one).
_BAD = re.compile("[\x00\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def is_clean(text: str) -> bool:
    """True when ``text`` holds neither NUL nor a lone surrogate, i.e. it can be stored as is."""
    return _BAD.search(text) is None


def scrub(text: str) -> str:
    """``text`` with every NUL and lone surrogate replaced by U+FFFD (for logs that keep
    what was sent: ``scrub("a\\x00b") == "a\\ufffdb"``)."""
    return _BAD.sub(REPLACEMENT, text)


def find_unclean(value: Any, path: str = "") -> str | None:
    """The path of the first string in ``value`` that is not :func:`is_clean`, else None.

    ``value`` is a parsed JSON value (dict, list, str, numbers, None); object keys are checked
    as well as values. Paths read like ``"name"``, ``"events[2].key"``; a bad object key is
    reported as its parent's path (``""`` for the top level).
    """
    if isinstance(value, str):
        return None if is_clean(value) else path
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and not is_clean(key):
                return path
            found = find_unclean(item, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
        return None
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found = find_unclean(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None
