"""Helpers shared by the API tests (no tests here): users with API keys and an authenticated
client wrapper. Keys are made through the real use cases (create_user, create_api_key)."""

from __future__ import annotations

import itertools

from partnernet.auth.services import create_api_key, create_user

_seq = itertools.count(1)


def new_key(role: str = "staff", **tie) -> tuple[str, int]:
    """A fresh user of ``role`` (tied by partner_id= / client_id=) and its API key: (key, user_id)."""
    email = f"{role}{next(_seq)}@api.example.com"
    user = create_user(email, "correct horse battery", role, **tie)
    return create_api_key(email), user.id


class Api:
    """The Flask test client with a bearer key; ``get/post/patch`` take paths under /api/v1."""

    def __init__(self, client, key: str | None):
        self.client = client
        self.key = key

    def _headers(self, headers=None):
        out = dict(headers or {})
        if self.key is not None:
            out.setdefault("Authorization", f"Bearer {self.key}")
        return out

    def get(self, path, **kw):
        return self.client.get("/api/v1" + path, headers=self._headers(kw.pop("headers", None)), **kw)

    def post(self, path, json=None, **kw):
        if json is None and "data" not in kw:
            json = {}
        return self.client.post(
            "/api/v1" + path, json=json, headers=self._headers(kw.pop("headers", None)), **kw
        )

    def patch(self, path, json=None, **kw):
        return self.client.patch(
            "/api/v1" + path, json=json, headers=self._headers(kw.pop("headers", None)), **kw
        )


def staff_api(client) -> Api:
    return Api(client, new_key("staff")[0])


def partner_api(client, partner) -> Api:
    return Api(client, new_key("partner", partner_id=partner.id)[0])


def client_api(client, client_row) -> Api:
    return Api(client, new_key("client", client_id=client_row.id)[0])


def assert_error(resp, status: int, code: str, field: str | None = None) -> dict:
    """The answer is the JSON error ``code`` with ``status`` (and ``field`` when given)."""
    assert resp.status_code == status, (resp.status_code, resp.get_data(as_text=True))
    body = resp.get_json()
    assert body["error"] == code, body
    assert isinstance(body["message"], str) and body["message"]
    if field is not None:
        assert body.get("field") == field, body
    return body


CAMPAIGN_BODY = {
    "name": "Spring sale",
    "destination_url": "https://shop.example.com/landing?src=pn",
    "fallback_url": "https://shop.example.com/",
    "deep_link_hosts": ["Shop.Example.com", "blog.example.org"],
    "attribution_model": "linear",
    "budget": "500.00",
    "default_event": "sale",
    "events": [
        {
            "key": "sale",
            "label": "Sale",
            "client_fee_percent": "8",
            "payout_percent": "75",
            "min_amount": "10.00",
        },
        {"key": "lead", "label": "Lead", "client_fee": "3.00", "payout": "2.50", "one_per_click": True},
        {"key": "call", "label": "Call", "client_fee": "12.00", "payout_percent": "50", "min_duration_s": 90},
    ],
}


def campaign_body(client_id, **over) -> dict:
    import copy

    body = copy.deepcopy(CAMPAIGN_BODY)
    body["client_id"] = str(client_id)
    body.update(over)
    return body


def make_conversion(
    link, *, event="sale", txn_id=None, amount_minor=None, status="pending", reason=None, split=True
):
    """Record a conversion on ``link`` through the real use case, commit, and (``split``) run the
    queued ledger sync in-process, so its split lines exist. Returns the Conversion."""
    from partnernet import queue
    from partnernet.conversions.services import record_conversion
    from partnernet.extensions import db
    from partnernet.models import Campaign

    camp = db.session.get(Campaign, link.campaign_id)
    rec = record_conversion(
        campaign_id=camp.id,
        event=camp.event(event),
        link_id=link.id,
        partner_id=link.partner_id,
        click_id=None,
        click_at=None,
        txn_id=txn_id or f"txn-{next(_seq)}",
        amount_minor=amount_minor,
        duration_s=None,
        status=status,
        reason=reason,
    )
    db.session.commit()
    if split:
        queue.run_pending()
    else:
        queue.discard_pending()
    db.session.expire_all()
    return db.session.get(type(rec.conversion), rec.conversion.id)
