"""Tracking endpoints: GET /c/<token> and GET /i/<token> (CONTRACT §1, §2)."""

from flask import Blueprint

bp = Blueprint("tracking", __name__)
