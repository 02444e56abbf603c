"""The OpenAPI document is valid and complete; /docs renders it from this service alone."""
import re

from openapi_spec_validator import validate


def spec_of(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.get_json()


def test_document_is_valid_openapi_3(client):
    spec = spec_of(client)
    assert spec["openapi"].startswith("3.")
    validate(spec)


def test_every_route_is_documented(app, client):
    documented = {(path, method.upper()) for path, item in spec_of(client)["paths"].items()
                  for method in item if method in ("get", "post", "patch", "put", "delete")}
    served = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith(("api-docs", "docs_assets", "static")):
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        served |= {(path, method) for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert served and served <= documented


def test_protected_operations_declare_bearer_security_and_errors(client):
    spec = spec_of(client)
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    operation = spec["paths"]["/v1/issues"]["post"]
    assert operation["security"] == [{"bearerAuth": ["issues:write"]}]
    assert {"201", "400", "401", "403"} <= set(operation["responses"])
    assert spec["paths"]["/v1/issues/{issue_id}"]["get"]["responses"]["404"]
    assert "security" not in spec["paths"]["/health"]["get"]


def test_error_responses_use_the_envelope_schema(client):
    spec = spec_of(client)
    response = spec["components"]["responses"]["NOT_FOUND"]
    schema = response["content"]["application/json"]["schema"]
    assert schema["$ref"].endswith("/Error")
    assert set(spec["components"]["schemas"]["ErrorBody"]["properties"]) >= {"code", "message", "trace_id"}


def test_list_parameters_are_documented(client):
    params = {p["name"] for p in spec_of(client)["paths"]["/v1/issues"]["get"]["parameters"]}
    assert {"limit", "cursor", "status", "severity", "sort"} <= params


def test_docs_page_loads_only_local_assets(client):
    page = client.get("/docs")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets
    for asset in assets:
        assert asset.startswith("/docs/assets/"), asset
        with client.get(asset) as response:
            assert response.status_code == 200
    assert "http://" not in html and "https://" not in html


def operations(spec):
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in ("get", "post", "patch", "put", "delete"):
                yield path, method, operation


def test_no_catch_all_default_response(client):
    """Every status an operation can give is declared; nothing hides behind `default`."""
    for path, method, operation in operations(spec_of(client)):
        assert "default" not in operation["responses"], (method, path)


def test_rate_limit_and_body_size_are_documented_where_they_apply(client):
    for path, method, operation in operations(spec_of(client)):
        responses = operation["responses"]
        limited = path.startswith("/v1/") and path != "/v1/stream"
        assert ("429" in responses) == limited, (method, path)
        assert ("413" in responses) == ("requestBody" in operation), (method, path)


def test_protected_operations_document_a_database_outage(client):
    for path, method, operation in operations(spec_of(client)):
        if "security" in operation:
            assert "503" in operation["responses"], (method, path)


def test_responses_document_their_headers(client):
    spec = spec_of(client)
    ok = spec["paths"]["/v1/issues"]["get"]["responses"]["200"]["headers"]
    assert {"X-Request-Id", "X-RateLimit-Limit", "X-RateLimit-Remaining"} <= set(ok)
    shared = spec["components"]["responses"]
    assert "WWW-Authenticate" in shared["UNAUTHORIZED"]["headers"]
    assert "Retry-After" in shared["TOO_MANY_REQUESTS"]["headers"]
    assert "X-RateLimit-Limit" not in spec["paths"]["/health"]["get"]["responses"]["200"]["headers"]


def test_plain_http_on_the_stream_is_a_documented_400(client):
    response = client.get("/v1/stream?token=x&workspace=ws_01abc123")
    assert response.status_code == 400
    assert "WebSocket" in response.get_json()["error"]["message"]
    assert "400" in spec_of(client)["paths"]["/v1/stream"]["get"]["responses"]


def test_patterns_mean_the_same_to_the_document_and_the_server(client, auth):
    """The document's patterns are ECMAScript regexes, the server's Python ones: their `\\s`,
    `\\d`, `\\w` and `\\b` differ outside ASCII (Python's `\\s` takes U+0085, ECMAScript's
    U+FEFF), so no pattern may use them; a generator once sent U+0085 in a URL's path."""
    patterns = []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("pattern"), str):
                patterns.append(node["pattern"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(spec_of(client))
    assert patterns
    assert [p for p in patterns if re.search(r"(?<!\\)(?:\\\\)*\\[sSdDwWbB]", p)] == []
    for space in ("\x1c", "\x85", "\ufeff", "\u2028"):
        response = client.post("/v1/issues", headers=auth(), json={
            "title": "A URL with a space-like character", "external_url": f"https://a.example/x{space}y"})
        assert response.status_code == 400, repr(space)
        assert "external_url" in response.get_json()["error"]["details"]
