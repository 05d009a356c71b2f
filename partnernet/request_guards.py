"""App-wide request guards: id URL converters, text that cannot be stored, too large bodies.

- ``int`` URL converter: an id path segment beyond :data:`partnernet.ids.MAX_ID` answers 404
  instead of reaching a 32-bit key column; ``bigint`` (conversions) stops at
  :data:`partnernet.ids.MAX_BIG_ID`.
- Text guard (:func:`reject_unclean_text`): a query string or form field (name or value) with a
  NUL character or a lone surrogate answers 400 ``bad_text`` (JSON under ``/api/``, the HTML
  error page elsewhere) before any view runs. ``/postback`` is left to its own checks (CONTRACT
  §3 answers and logs every postback); JSON API bodies are checked by
  :func:`partnernet.api.params.json_body`.
- 413: a body above ``MAX_CONTENT_LENGTH`` or a form above ``MAX_FORM_PARTS`` answers 413
  ``too_large``, as JSON under ``/api/`` and ``/postback``, else the HTML error page.
"""

from __future__ import annotations

from flask import Flask, jsonify, render_template, request
from werkzeug.routing import IntegerConverter

from .ids import MAX_BIG_ID, MAX_ID
from .text import is_clean

_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class IdConverter(IntegerConverter):
    """``<int:...>``: ASCII digits, at most :data:`partnernet.ids.MAX_ID` unless ``max`` is given."""

    def __init__(self, map, *args, **kwargs):  # noqa: A002 - werkzeug's own argument name
        kwargs.setdefault("max", MAX_ID)
        super().__init__(map, *args, **kwargs)


class BigIdConverter(IntegerConverter):
    """``<bigint:...>``: an id of a 64-bit key (conversions), at most :data:`partnernet.ids.MAX_BIG_ID`."""

    def __init__(self, map, *args, **kwargs):  # noqa: A002
        kwargs.setdefault("max", MAX_BIG_ID)
        super().__init__(map, *args, **kwargs)


def register_converters(app: Flask) -> None:
    """Install the ``int`` and ``bigint`` converters; call before any blueprint is registered."""
    app.url_map.converters["int"] = IdConverter
    app.url_map.converters["bigint"] = BigIdConverter


def _wants_json() -> bool:
    return request.path.startswith("/api/") or request.path.startswith("/postback")


def _multidict_clean(md) -> str | None:
    for name, values in md.lists():
        if not is_clean(name):
            return "?"
        for v in values:
            if isinstance(v, str) and not is_clean(v):
                return name
    return None


def unclean_field() -> str | None:
    """The name of the first query or form field of the current request whose name or value
    holds a NUL or a lone surrogate (``"?"`` when the name itself does), else None. Reading the
    form may raise werkzeug's RequestEntityTooLarge (answered 413)."""
    bad = _multidict_clean(request.args)
    if bad is None and request.method in ("POST", "PUT", "PATCH", "DELETE") \
            and (request.mimetype or "").lower() in _FORM_TYPES:
        bad = _multidict_clean(request.form)
    return bad


def register_guards(app: Flask) -> None:
    """Attach the text guard and the 413 handler to ``app`` (see the module notes)."""

    @app.before_request
    def reject_unclean_text():
        if request.path.startswith("/postback"):
            return None
        bad = unclean_field()
        if bad is None:
            return None
        message = f"field {bad!r} holds a NUL character or an unpaired UTF-16 surrogate"
        if _wants_json():
            return jsonify(error="bad_text", message=message, field=bad), 400
        return render_template("errors/400.html", message=message), 400

    @app.errorhandler(413)
    def too_large(_err):
        limit = app.config.get("MAX_CONTENT_LENGTH")
        message = f"the request is too large (at most {limit} bytes, {app.config.get('MAX_FORM_PARTS')} multipart parts)"
        if _wants_json():
            if request.path.startswith("/postback"):
                return jsonify(ok=False, error="too_large", message=message), 413
            return jsonify(error="too_large", message=message), 413
        return render_template("errors/400.html", message=message), 413
