"""The ceiling for our stack: a bare Flask app answering the same 302 as ``/c/<token>``
with no tracking at all (no token check, no Redis, no database).

Serve it with the same gunicorn settings as PartnerNet (see bench/redirect.py)::

    gunicorn -w 4 -k gthread --threads 4 -b 127.0.0.1:8001 'bare_app:app'   # from bench/
"""

from __future__ import annotations

import secrets

from flask import Flask, Response

app = Flask(__name__)

DESTINATION = "https://shop.example/landing?utm_source=pn"


@app.route("/c/<token>", methods=["GET", "HEAD"])
def click(token: str):
    """302 to a fixed destination with a fresh random click id, ``Cache-Control: no-store``."""
    resp = Response(status=302)
    resp.headers["Location"] = f"{DESTINATION}&click_id={secrets.token_urlsafe(24)}"
    resp.headers["Cache-Control"] = "no-store"
    return resp


@app.get("/healthz")
def healthz():
    """200 when serving."""
    return "ok"
