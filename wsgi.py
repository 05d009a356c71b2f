"""WSGI entry point: ``gunicorn wsgi:app`` and ``flask --app wsgi ...``."""

import os
import sys

from partnernet import create_app
from partnernet.tracking.durability import check_at_start

app = create_app()

_argv0 = sys.argv[0] if sys.argv else ""
if os.path.basename(_argv0) != "flask" and not _argv0.endswith(os.path.join("flask", "__main__.py")):
    # A server process (gunicorn, granian): warn, or refuse in production, when the Redis it is
    # given cannot keep clicks (README, Production). CLI commands (drain, db upgrade) still run.
    check_at_start(app)
