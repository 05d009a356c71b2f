"""The JSON API under /api/v1 (CONTRACT §5).

This module holds the blueprint ``bp``, the bearer-key check that runs before
every call (except ``GET /openapi.json``, which is public) and the error
handlers: domain errors answer ``{"error": code, "message": ..., "field"?}``
with their status (:func:`partnernet.errors.error_body`). The routes live in
:mod:`.catalog_views`, :mod:`.conversion_views`, :mod:`.payout_views` and
:mod:`.report_views`; the OpenAPI document in :mod:`.openapi`.
"""

from flask import Blueprint, jsonify, request
from werkzeug.exceptions import HTTPException

from ..errors import DomainError, error_body
from ..extensions import db
from ..money import MoneyError
from .auth import authenticate

bp = Blueprint("api", __name__, url_prefix="/api/v1")

#: Endpoints answered without a key.
PUBLIC_ENDPOINTS = {"api.openapi_json"}


@bp.before_request
def _authenticate():
    if request.endpoint in PUBLIC_ENDPOINTS:
        return
    authenticate()
    return


def _discard_changes() -> None:
    """An error answer never keeps half-made changes: they must not ride along with a later
    commit (in-process jobs run after the request, in the same session)."""
    db.session.rollback()


@bp.errorhandler(DomainError)
def _domain_error(err: DomainError):
    _discard_changes()
    resp = jsonify(error_body(err))
    resp.status_code = err.status
    if err.status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="partnernet"'
    return resp


@bp.errorhandler(MoneyError)
def _money_error(err: MoneyError):
    _discard_changes()
    return jsonify(error=err.code, message=err.message), 400


@bp.errorhandler(HTTPException)
def _http_error(err: HTTPException):
    _discard_changes()
    code = (err.name or "error").lower().replace(" ", "_")
    if err.code == 400:
        code = "bad_request"
    return jsonify(error=code, message=err.description or code), err.code


@bp.after_request
def _no_store(response):
    response.headers.setdefault("Cache-Control", "no-store")
    return response


from . import catalog_views, conversion_views, openapi, payout_views, report_views  # noqa: F401
from . import commission_views  # noqa: F401  (issue 6: commission rules)
from . import access_views  # noqa: F401,E402  (API keys and users, CONTRACT §5 v2)
