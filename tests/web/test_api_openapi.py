"""API: the OpenAPI 3 document at GET /api/v1/openapi.json describes every call (CONTRACT §5)."""

from __future__ import annotations

import json
import re

METHODS = {"get", "post", "put", "patch", "delete"}


def _doc(client):
    resp = client.get("/api/v1/openapi.json")  # public: no key
    assert resp.status_code == 200
    return resp.get_json()


def test_every_api_route_is_documented(app, client):
    doc = _doc(client)
    paths = doc["paths"]
    routes = 0
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/"):
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule[len("/api/v1") :])
        assert path in paths, f"{rule.rule} is missing from openapi.json"
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert method.lower() in paths[path], f"{method} {rule.rule} is missing from openapi.json"
            routes += 1
    assert routes >= 30
    # and nothing documented under the API that does not exist
    api_paths = {p for p in paths if "servers" not in paths[p]}
    rules = {
        re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", r.rule[len("/api/v1") :])
        for r in app.url_map.iter_rules()
        if r.rule.startswith("/api/v1/")
    }
    assert api_paths == rules


def test_document_structure(client):
    doc = _doc(client)
    assert doc["openapi"].startswith("3.0")
    assert doc["servers"][0]["url"] == "http://testserver/api/v1"
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": doc["components"]["securitySchemes"]["bearer"]["description"],
    }
    assert doc["security"] == [{"bearer": []}]
    schemas = doc["components"]["schemas"]
    assert set(schemas["Error"]["required"]) == {"error", "message"}
    # the public endpoints outside /api/v1, on the bare origin
    for path in ("/postback", "/c/{token}", "/i/{token}"):
        assert doc["paths"][path]["servers"][0]["url"] == "http://testserver"
    assert set(doc["paths"]["/postback"]) >= {"get", "post"}
    # every path parameter is declared, every $ref resolves, every operation answers something
    text = json.dumps(doc)
    for ref in set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', text)):
        assert ref in schemas, ref
    for path, item in doc["paths"].items():
        declared = {p["name"] for p in item.get("parameters", [])}
        for method, op in item.items():
            if method not in METHODS:
                continue
            assert op["responses"], (path, method)
            names = declared | {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert set(re.findall(r"{([^}]+)}", path)) <= names, (path, method)
            if path not in ("/openapi.json",) and "servers" not in item:
                assert "401" in op["responses"], (path, method)
    # contract field names are in the schemas
    assert set(schemas["Conversion"]["required"]) >= {
        "id",
        "campaign_id",
        "partner_id",
        "event",
        "txn_id",
        "click_id",
        "status",
        "reason",
        "amount",
        "currency",
        "created_at",
        "splits",
    }
    assert "client_fee" in schemas["Conversion"]["properties"]  # absent for partner keys (CONTRACT v2 §5)
    assert set(schemas["ReportRow"]["required"]) == {
        "key",
        "currency",
        "clicks",
        "unique_clicks",
        "impressions",
        "conversions",
        "revenue",
        "payout",
        "margin",
        "cr",
        "epc",
    }
