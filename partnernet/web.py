"""Server-rendered pages shared by every side: home, error pages, the login loader."""

from __future__ import annotations

from flask import Flask, jsonify, render_template, request

from .extensions import login_manager


def register_web(app: Flask) -> None:
    """Attach the home page, the user loader and the HTML/JSON error pages to ``app``."""

    from .auth.sessions import load_user

    login_manager.user_loader(load_user)  # "<id>:<session token>": ended sessions are refused

    @app.get("/")
    def home():
        return render_template("home.html")

    @app.get("/healthz")
    def healthz():
        return jsonify(ok=True)

    def _wants_json() -> bool:
        return request.path.startswith("/api/") or request.path.startswith("/postback")

    @app.errorhandler(400)
    def bad_request(err):
        # abort(400), a CSRF failure, and a form body that cannot be parsed (request_guards.MalformedBody):
        # always a 400, never a 500.
        code = getattr(err, "error_code", "bad_request")
        message = getattr(err, "description", None) or "bad request"
        if _wants_json():
            return jsonify(error=code, message=message), 400
        return render_template("errors/400.html", message=message), 400

    @app.errorhandler(404)
    def not_found(_err):
        if _wants_json():
            return jsonify(error="not_found", message="no such resource"), 404
        return render_template("errors/404.html"), 404

    @app.errorhandler(405)
    def not_allowed(_err):
        if _wants_json():
            return jsonify(error="method_not_allowed", message="method not allowed"), 405
        return render_template("errors/404.html"), 405

    @app.errorhandler(500)
    def server_error(_err):
        if _wants_json():
            return jsonify(error="server_error", message="internal error"), 500
        return render_template("errors/500.html"), 500
