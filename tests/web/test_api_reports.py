"""API: GET /reports (CONTRACT §5): shapes, money strings, scope per key, and refusals.
The figures themselves are worked out in tests/services/test_reports.py."""

from __future__ import annotations

from tests.services.test_reports import build_world
from tests.web.test_api_support import assert_error, client_api, partner_api, staff_api

Q = {"group_by": "campaign", "from": "2025-03-10", "to": "2025-03-11"}


def test_report_rows_as_json(client):
    w = build_world()
    resp = staff_api(client).get("/reports", query_string=Q)
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["next"] is None and body["tz"] == "UTC"
    assert body["items"] == [
        {
            "key": str(w["cx"].id),
            "currency": "USD",
            "clicks": 22,
            "unique_clicks": 19,
            "impressions": 150,
            "conversions": 2,
            "revenue": "13.20",
            "payout": "6.75",
            "margin": "6.45",
            "cr": "10.53",
            "epc": "0.31",
        },
        {
            "key": str(w["cy"].id),
            "currency": "EUR",
            "clicks": 7,
            "unique_clicks": 2,
            "impressions": 0,
            "conversions": 1,
            "revenue": "5.00",
            "payout": "2.00",
            "margin": "3.00",
            "cr": "50.00",
            "epc": "0.29",
        },
    ]


def test_report_with_time_zone(client):
    build_world()
    body = staff_api(client).get("/reports", query_string={**Q, "group_by": "day", "tz": "America/New_York"})
    items = body.get_json()["items"]
    assert [(i["key"], i["currency"], i["clicks"]) for i in items] == [
        ("2025-03-10", "USD", 22),
        ("2025-03-11", "EUR", 7),
        ("2025-03-11", "USD", 100),
    ]


def test_report_scope_per_key(client):
    w = build_world()
    a, b = w["a"], w["b"]
    items = partner_api(client, b).get("/reports", query_string=Q).get_json()["items"]
    assert items == [
        {
            "key": str(w["cx"].id),
            "currency": "USD",
            "clicks": 7,
            "unique_clicks": 7,
            "impressions": 50,
            "conversions": 1,
            "revenue": "1.50",
            "payout": "1.50",
            "margin": "0.00",
            "cr": "14.29",
            "epc": "0.21",
        }
    ]
    items = (
        partner_api(client, a).get("/reports", query_string={**Q, "group_by": "partner"}).get_json()["items"]
    )
    assert {i["key"] for i in items} == {str(a.id)}
    items = client_api(client, w["y"]).get("/reports", query_string=Q).get_json()["items"]
    assert [i["key"] for i in items] == [str(w["cy"].id)]


def test_report_refusals(client):
    api = staff_api(client)
    assert_error(api.get("/reports", query_string={**Q, "group_by": "week"}), 400, "bad_group_by", "group_by")
    assert_error(
        api.get("/reports", query_string={k: v for k, v in Q.items() if k != "group_by"}),
        400,
        "missing_field",
        "group_by",
    )
    assert_error(api.get("/reports", query_string={**Q, "tz": "Mars/Base"}), 400, "unknown_timezone", "tz")
    assert_error(
        api.get("/reports", query_string={**Q, "tz": "../../etc/passwd"}), 400, "unknown_timezone", "tz"
    )
    assert_error(api.get("/reports", query_string={**Q, "from": "2025-3-10"}), 400, "bad_date", "from")
    assert_error(api.get("/reports", query_string={**Q, "to": "2025-02-30"}), 400, "bad_date", "to")
    assert_error(
        api.get("/reports", query_string={k: v for k, v in Q.items() if k != "to"}),
        400,
        "missing_field",
        "to",
    )
    assert_error(api.get("/reports", query_string={**Q, "from": "2025-03-12"}), 400, "bad_range", "to")
    assert_error(client.get("/api/v1/reports", query_string=Q), 401, "unauthorized")
