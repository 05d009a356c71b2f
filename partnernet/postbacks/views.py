"""The server-to-server postback endpoint (CONTRACT §3): ``GET`` or ``POST /postback``.

The view only reads the request into :class:`~partnernet.postbacks.params.RawParams` (every
``(name, value)`` pair, repeats kept: the query string, then on a POST the form-encoded or JSON
body) and hands it to :func:`partnernet.postbacks.services.process_postback`, with the flood
limit on refusals (:mod:`partnernet.postbacks.flood`: 429 ``too_many_refusals``, not logged).
A form body that cannot be parsed (a multipart part with no name, a bad boundary, a truncated
body: :class:`partnernet.request_guards.MalformedBody`) is a 400 ``bad_json`` like any body
that cannot be read, and is logged (bounded) like every other refusal.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl

from flask import Blueprint, jsonify, request
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge

from . import flood
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
            form, files = request.form, request.files
            if any(not isinstance(n, str) for n in (*form.keys(), *files.keys())):
                raise BadRequest("a multipart part has no name")  # the app's strict parser already says so
            for name, values in form.lists():
                raw.pairs.extend((name, v) for v in values)
            for name in files:
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
    except BadRequest as exc:  # a malformed form body (request_guards.MalformedBody)
        raw.unreadable = f"the form body cannot be read: {exc.description}"
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
    remote_ip = request.remote_addr
    retry_after: list[int] = []

    def throttle(_status: int, _outcome: str):
        wait = flood.admit_refusal(remote_ip)
        if wait is None:
            return None
        retry_after.append(wait)
        flood.record_throttled(remote_ip)
        return 429, {"ok": False, "error": "too_many_refusals",
                     "message": f"too many refused postbacks from this address; retry after {wait} s"}

    status, body = process_postback(raw, method=request.method, remote_ip=remote_ip, throttle=throttle)
    resp = jsonify(body)
    resp.status_code = status
    resp.headers["Cache-Control"] = "no-store"
    if status == 503:
        resp.headers["Retry-After"] = "30"
    elif status == 429 and retry_after:
        resp.headers["Retry-After"] = str(retry_after[0])
    return resp
