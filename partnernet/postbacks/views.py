"""The server-to-server postback endpoint (CONTRACT §3)."""

from flask import Blueprint

bp = Blueprint("postbacks", __name__)
