"""App-wide request guards: id URL converters, text that cannot be stored, too large bodies.

- ``int`` URL converter: an id path segment beyond :data:`partnernet.ids.MAX_ID` answers 404
  instead of reaching a 32-bit key column; ``bigint`` (conversions) stops at
  :data:`partnernet.ids.MAX_BIG_ID`.
- Text guard (:func:`reject_unclean_text`): a query string or form field (name or value) with a
  NUL character or a lone surrogate answers 400 ``bad_text`` (JSON under ``/api/``, the HTML
  error page elsewhere) before any view runs. ``/postback`` is left to its own checks (CONTRACT
  §3 answers and logs every postback); JSON API bodies are checked by
  :func:`partnernet.api.params.json_body`.
- JSON read as a form (:func:`page_json_problem`): Flask-WTF takes the JSON body of a request as
  its form data, so on the server-rendered pages a JSON body must be an object whose values are
  clean strings; anything else (a number, null, list or object value, a top-level array)
  answers 400 before any view runs instead of reaching a validator as a non-string (a 500).
- 413: a body above ``MAX_CONTENT_LENGTH`` or a form above ``MAX_FORM_PARTS`` answers 413
  ``too_large``, as JSON under ``/api/`` and ``/postback``, else the HTML error page.
- Malformed forms: werkzeug's form parser is silent by default (a bad multipart body becomes an
  empty form) and keeps a multipart part with no ``name`` under the name ``None``, which every
  later ``name`` check trips on (a 500). The app's request class (:class:`StrictRequest`) parses
  forms with :class:`StrictFormDataParser`: a missing or bad boundary, a truncated or otherwise
  malformed body, or a part with no name raises :class:`MalformedBody` (a 400 ``bad_form``) the
  first time ``request.form`` or ``request.files`` is read, on every route. ``/postback`` turns it
  into its own logged 400 (:mod:`partnernet.postbacks.views`); elsewhere the 400 handler of
  :mod:`partnernet.web` answers (JSON under ``/api/``, the HTML error page otherwise).
"""

from __future__ import annotations

from flask import Flask, Request, jsonify, render_template, request
from werkzeug.exceptions import BadRequest
from werkzeug.formparser import FormDataParser
from werkzeug.routing import IntegerConverter

from .ids import MAX_BIG_ID, MAX_ID
from .text import is_clean

_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class MalformedBody(BadRequest):
    """A form or multipart body that cannot be parsed (400 ``bad_form``); ``description`` says why."""

    code = 400
    error_code = "bad_form"


class StrictFormDataParser(FormDataParser):
    """werkzeug's parser, not silent: a body it cannot parse raises :class:`MalformedBody`
    instead of becoming an empty form, and so does a multipart part without a ``name``
    (werkzeug would keep it under ``None``). RequestEntityTooLarge still answers 413."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.silent = False

    def parse(self, stream, mimetype, content_length, options=None):
        try:
            parsed = super().parse(stream, mimetype, content_length, options)
        except ValueError as exc:  # werkzeug's multipart decoder and boundary errors
            raise MalformedBody(f"the form body is malformed: {str(exc)[:200]}") from None
        _stream, form, files = parsed
        for md in (form, files):
            if any(not isinstance(name, str) for name in md.keys()):
                raise MalformedBody("a multipart part has no name")
        return parsed


class StrictRequest(Request):
    """The app's request class: forms are parsed by :class:`StrictFormDataParser`."""

    form_data_parser_class = StrictFormDataParser


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


def page_json_problem() -> str | None:
    """Why the JSON body of the current request cannot be a page's form data, else None (no
    JSON body, invalid JSON, which Flask-WTF answers 400 itself, ``null``, or an object of clean
    strings). Flask-WTF reads a JSON body as ``ImmutableMultiDict(request.get_json())``: only an
    object whose values are strings (without NUL or lone surrogates) fits its fields."""
    if request.method not in ("POST", "PUT", "PATCH", "DELETE") or not request.is_json:
        return None
    data = request.get_json(silent=True)
    if data is None:
        return None
    if not isinstance(data, dict):
        return "the JSON body must be an object"
    for name, value in data.items():
        if not isinstance(value, str) or not is_clean(name) or not is_clean(value):
            return f"JSON value of {name[:64]!r} is not a string, or holds a NUL or an unpaired UTF-16 surrogate"
    return None


def register_guards(app: Flask) -> None:
    """Install :class:`StrictRequest` and attach the text guard and the 413 handler to ``app``
    (see the module notes)."""

    app.request_class = StrictRequest

    @app.before_request
    def reject_unclean_text():
        if request.path.startswith(("/postback", "/c/", "/i/")):
            return None  # the tracker cleans what it reads (tracking.urls.clip_sub): never an error page
        bad = unclean_field()
        if bad is None:
            problem = None if _wants_json() else page_json_problem()  # the API checks its own JSON
            if problem is None:
                return None
            return render_template("errors/400.html", message=problem), 400
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
