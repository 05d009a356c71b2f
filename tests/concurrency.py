"""Firing requests at once from several threads (PostgreSQL race tests)."""

from __future__ import annotations

import threading

from partnernet.extensions import db


def fire_postbacks(app, params, n: int, *, timeout: float = 180.0) -> list[tuple[int, dict]]:
    """Send a GET /postback from ``n`` threads released together by a barrier, each in its own
    app context; return every (status, JSON body). ``params``: a dict, or a function of the
    thread number giving one. Fails the test when a thread raised."""
    barrier = threading.Barrier(n)
    answers: list = [None] * n
    errors: list = []

    def run(i: int) -> None:
        try:
            with app.app_context():
                http = app.test_client()
                barrier.wait(timeout=60)
                resp = http.get("/postback", query_string=params(i) if callable(params) else params)
                answers[i] = (resp.status_code, resp.get_json())
                db.session.remove()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
    assert not errors, errors
    return answers
