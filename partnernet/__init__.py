"""PartnerNet: a self-hosted affiliate and influencer partner network.

:func:`create_app` is the application factory (ARCHITECTURE: layout).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from flask import Flask

from . import config as config_module
from .extensions import csrf, db, login_manager, migrate

ROOT = Path(__file__).resolve().parent.parent


def create_app(config: dict | None = None) -> Flask:
    """Build the Flask app: defaults, then the environment, then ``config`` overrides.

    Raises RuntimeError when no SECRET_KEY is configured outside testing.
    """
    app = Flask(
        __name__,
        instance_path=str(ROOT / "instance"),
        template_folder=str(ROOT / "templates"),
        static_folder=str(ROOT / "static"),
    )
    app.config.update(config_module.DEFAULTS)
    app.config.update(config_module.from_environment())
    if config:
        app.config.update(config)
    if not app.config.get("SQLALCHEMY_DATABASE_URI"):
        os.makedirs(app.instance_path, exist_ok=True)
        app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite:///" + os.path.join(app.instance_path, "partnernet.db")
    if not app.config.get("SECRET_KEY"):
        if app.config.get("TESTING"):
            app.config["SECRET_KEY"] = "test-secret-key"
        else:
            raise RuntimeError("SECRET_KEY is not set: export SECRET_KEY=<a long random string>")
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        opts = dict(app.config.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
        opts.setdefault("connect_args", {"timeout": 30})
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = opts


    from .request_guards import register_converters, register_guards

    register_converters(app)  # before any route: ``<int:...>`` ids stop at the key columns' range
    register_guards(app)
    db.init_app(app)
    migrate.init_app(app, db, directory=str(ROOT / "migrations"), render_as_batch=True)
    login_manager.init_app(app)
    csrf.init_app(app)
    _sqlite_pragmas(app)

    from . import signing

    keys = [app.config["SECRET_KEY"], *app.config.get("SECRET_KEY_FALLBACKS", [])]
    app.extensions["partnernet_link_signer"] = signing.LinkSigner(keys)
    app.extensions["partnernet_click_signer"] = signing.ClickIdSigner(keys)

    from . import models  # noqa: F401  (register every table on the metadata)
    from .api.views import bp as api_bp
    from .auth.views import bp as auth_bp
    from .postbacks.views import bp as postbacks_bp
    from .tracking.views import bp as tracking_bp
    from .web import register_web

    app.register_blueprint(tracking_bp)
    app.register_blueprint(postbacks_bp)
    app.register_blueprint(api_bp)
    csrf.exempt(tracking_bp)
    csrf.exempt(postbacks_bp)
    csrf.exempt(api_bp)
    app.register_blueprint(auth_bp)
    from .staff.views import bp as staff_bp  # noqa: E402

    app.register_blueprint(staff_bp)
    from .partners.views import bp as partner_bp, public_bp as signup_bp

    app.register_blueprint(signup_bp)
    app.register_blueprint(partner_bp)
    from .clients.views import bp as client_bp  # issue 5: client pages
    from .reporting.views import bp as reports_bp

    app.register_blueprint(client_bp)
    app.register_blueprint(reports_bp)
    login_manager.login_view = "auth.login"
    register_web(app)
    from . import security_headers

    security_headers.init_app(app)  # CSP, framing, nosniff, referrer, HSTS; Secure + SameSite cookies
    from .filters import register_filters

    register_filters(app)

    from .cli import register_cli

    register_cli(app)

    from .schedule.runner import install as install_schedule

    install_schedule(app)  # without Redis, the web process runs the periodic work (CONTRACT v2 §6)

    from .tracking import lean

    lean.install(app)  # /c/ and /i/ on cached state, before Flask's app-wide hooks (ARCHITECTURE)
    hops = int(app.config.get("PARTNERNET_PROXY_HOPS") or 0)
    if hops > 0:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=0)

    @app.after_request
    def _run_inprocess_jobs(response):
        from .queue import run_pending

        if not app.config.get("REDIS_URL"):
            run_pending()
        return response

    if not app.debug and not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return app


def _sqlite_pragmas(app: Flask) -> None:
    """WAL and a busy timeout on SQLite, so the embedded default tolerates a worker beside the web."""
    if not app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        return
    from sqlalchemy import event

    with app.app_context():
        engine = db.engine

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()
