"""The server-to-server postback endpoint (CONTRACT §3): ``GET`` or ``POST /postback``.

The view only reads the request into :class:`~partnernet.postbacks.params.RawParams` (every
``(name, value)`` pair, repeats kept: the query string, then on a POST the form-encoded or JSON
body) and hands it to :func:`partnernet.postbacks.services.process_postback`.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl

from flask import Blueprint, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from .params import RawParams, parse_json_body
from .services import process_postback

log = logging.getLogger(__name__)

bp = Blueprint("postbacks", __name__)

_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def read_params() -> RawParams:
    """The parameters of the current request (CONTRACT §3: on a POST the query string and the
    body form one set). A body is JSON when its content type says so (``application/json`` or
    ``…+json``), or when it has no form content type and starts with ``{``; any other body is
    read as form-encoded (multipart too). A body above ``MAX_CONTENT_LENGTH`` /
    ``MAX_FORM_PARTS`` is not read: ``too_large`` is set. Never raises."""
    pairs: list[tuple[str, str]] = []
    for name, values in request.args.lists():
        pairs.extend((name, v) for v in values)
    raw = RawParams(pairs=pairs)
    if request.method != "POST":
        return raw
    try:
        mimetype = (request.mimetype or "").lower()
        if mimetype in _FORM_TYPES:
            for name, values in request.form.lists():
                raw.pairs.extend((name, v) for v in values)
            for name in request.files:
                raw.nonstring.append(name)
            return raw
        body = request.get_data(cache=True)
        is_json = mimetype == "application/json" or mimetype.endswith("+json")
        if not is_json and not body.lstrip()[:1] == b"{":
            # No (or another) content type: read the body as form-encoded, as most senders mean.
            text = body.decode("utf-8", "replace")
            raw.pairs.extend(parse_qsl(text, keep_blank_values=True))
            return raw
        parsed = parse_json_body(body)
    except RequestEntityTooLarge:
        raw.too_large = True
        return raw
    except Exception:  # noqa: BLE001 - an unreadable body is a 400, never a 500
        log.exception("could not read a postback body")
        raw.unreadable = "the body could not be read"
        return raw
    raw.pairs.extend(parsed.pairs)
    raw.nonstring.extend(parsed.nonstring)
    raw.unreadable = parsed.unreadable
    return raw


@bp.route("/postback", methods=["GET", "POST"])
def postback():
    """CONTRACT §3: record a conversion from the advertiser's server; JSON answer, ``no-store``."""
    raw = read_params()
    status, body = process_postback(raw, method=request.method, remote_ip=request.remote_addr)
    resp = jsonify(body)
    resp.status_code = status
    resp.headers["Cache-Control"] = "no-store"
    if status == 503:
        resp.headers["Retry-After"] = "30"
    return resp
