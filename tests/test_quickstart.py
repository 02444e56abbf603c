"""The quickstart walkthrough (shared/seeds/quickstart.txt), call by call, in mock mode."""


def exchange(client):
    response = client.post("/v1/auth/exchange", json={"subject_token": "<your_clerk_session_jwt>"})
    assert response.status_code == 200
    return response.get_json()


def test_exchange_returns_exactly_the_quickstart_fields(client):
    body = exchange(client)
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in", "scope",
                         "workspace_id"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 259200
    assert body["workspace_id"] == "ws_01abc123"
    assert body["access_token"].startswith("eyJ")
    assert body["refresh_token"].startswith("clp_refresh_")
    assert body["scope"].startswith("issues:read issues:write patterns:read")


def quickstart_headers(token):
    """Exactly as the walkthrough's curl lines send it: note the space before the closing quote."""
    return {"Authorization": f"Bearer {token} "}


def test_issue_list_is_newest_first_with_the_quickstart_values(client):
    token = exchange(client)["access_token"]
    body = client.get("/v1/issues", headers=quickstart_headers(token)).get_json()
    first = body["data"][0]
    assert {key: first[key] for key in ("id", "title", "status", "severity", "pattern_id", "created_at")} == {
        "id": "iss_01abc123",
        "title": "Payment gateway timeout on checkout",
        "status": "open",
        "severity": "high",
        "pattern_id": "pat_01xyz789",
        "created_at": "2024-01-15T09:00:00Z",
    }
    assert body["page"]["total"] == 87
    assert body["page"]["has_more"] is True
    assert isinstance(body["page"]["next_cursor"], str)


def test_pattern_has_the_quickstart_values(client):
    token = exchange(client)["access_token"]
    body = client.get("/v1/patterns/pat_01xyz789", headers=quickstart_headers(token)).get_json()
    assert {key: body[key] for key in ("id", "name", "status", "risk_score", "issue_count",
                                       "last_seen_at", "fingerprint")} == {
        "id": "pat_01xyz789",
        "name": "Payment gateway timeout under load",
        "status": "active",
        "risk_score": 82,
        "issue_count": 14,
        "last_seen_at": "2024-01-15T09:00:00Z",
        "fingerprint": {"domain": "payments", "root_cause": "third_party_timeout"},
    }


def test_created_issue_heads_the_list(client):
    headers = quickstart_headers(exchange(client)["access_token"])
    created = client.post("/v1/issues", headers=headers, json={"title": "Search results empty for umlauts"})
    assert created.status_code == 201
    issue = created.get_json()
    assert created.headers["Location"] == f"/v1/issues/{issue['id']}"
    assert issue["id"].startswith("iss_") and issue["status"] == "open" and issue["severity"] == "medium"
    listing = client.get("/v1/issues", headers=headers).get_json()
    assert listing["data"][0]["id"] == issue["id"]
    assert listing["page"]["total"] == 88
