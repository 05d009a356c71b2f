"""Domain errors, and the one place that maps them to HTTP answers.

Services raise these; views and the API turn them into a 4xx with a machine
code (``{"error": code, "message": ...}``, CONTRACT §5), the CLI into a message.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base of every rule-level error. ``code`` is the machine code, ``status`` the HTTP status."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str = "", *, code: str | None = None, field: str | None = None):
        super().__init__(message or self.code)
        self.message = message or self.code
        if code:
            self.code = code
        self.field = field


class ValidationError(DomainError):
    """Input that breaks a rule (400). ``field`` names the offending input when there is one."""

    status = 400
    code = "invalid"


class Unauthorized(DomainError):
    """Missing or wrong credentials (401)."""

    status = 401
    code = "unauthorized"


class Forbidden(DomainError):
    """Authenticated but not allowed (403), e.g. the maker-checker rule on payout batches."""

    status = 403
    code = "forbidden"


class NotFound(DomainError):
    """No such object, or not the caller's (404: we never reveal another tenant's objects)."""

    status = 404
    code = "not_found"


class InvalidState(DomainError):
    """A transition that the object's state does not allow (409)."""

    status = 409
    code = "invalid_state"


class Duplicate(DomainError):
    """A value that must be unique already exists (409)."""

    status = 409
    code = "duplicate"


def error_body(err: DomainError) -> dict:
    """The JSON body for ``err``: ``{"error": code, "message": text}`` (plus ``field`` when known)."""
    body = {"error": err.code, "message": err.message}
    if err.field:
        body["field"] = err.field
    return body


class TooManyAttempts(DomainError):
    """Rate limited (429), e.g. too many failed logins for an account or an IP."""

    status = 429
    code = "too_many_attempts"
