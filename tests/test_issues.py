"""Issues: listing with keyset cursors, fetching, creating, and workspace isolation."""
import pytest
from itsdangerous import URLSafeSerializer

from conftest import OTHER_WORKSPACE, TEST_SECRET


def walk(client, headers, url="/v1/issues", limit=10):
    seen, cursor = [], None
    while True:
        page = client.get(url, headers=headers,
                          query_string={"limit": limit, **({"cursor": cursor} if cursor else {})}).get_json()
        seen.extend(item["id"] for item in page["data"])
        if not page["page"]["has_more"]:
            assert page["page"]["next_cursor"] is None
            return seen
        cursor = page["page"]["next_cursor"]


def test_walking_every_page_returns_each_issue_once(client, auth):
    seen = walk(client, auth(), limit=10)
    assert len(seen) == 87 == len(set(seen))


def test_pages_are_in_newest_first_order(client, auth):
    page = client.get("/v1/issues?limit=100", headers=auth()).get_json()
    keys = [(item["created_at"], item["id"]) for item in page["data"]]
    assert keys == sorted(keys, reverse=True)


@pytest.mark.parametrize("limit", ["0", "101", "-1", "abc", "1.5", ""])
def test_limit_outside_1_to_100_is_refused(client, auth, limit):
    response = client.get(f"/v1/issues?limit={limit}", headers=auth())
    assert response.status_code == 400
    assert "limit" in response.get_json()["error"]["details"]


@pytest.mark.parametrize("limit", ["1", "100"])
def test_limit_bounds_are_accepted(client, auth, limit):
    body = client.get(f"/v1/issues?limit={limit}", headers=auth()).get_json()
    assert len(body["data"]) == min(int(limit), 87)
    assert body["page"]["has_more"] is (int(limit) < 87)


def malformed(response):
    assert response.status_code == 400
    error = response.get_json()["error"]
    return error["code"] == "validation_error" and error["message"] == "malformed cursor token"


def test_quickstart_sample_cursor_is_malformed(client, auth):
    assert malformed(client.get("/v1/issues?cursor=eyJvZmZzZXQiOiAyNX0", headers=auth()))


def test_modified_cursor_is_malformed(client, auth):
    cursor = client.get("/v1/issues?limit=5", headers=auth()).get_json()["page"]["next_cursor"]
    flipped = cursor[:10] + ("A" if cursor[10] != "A" else "B") + cursor[11:]
    assert malformed(client.get("/v1/issues", headers=auth(), query_string={"cursor": flipped}))
    assert malformed(client.get("/v1/issues", headers=auth(), query_string={"cursor": cursor[:-3]}))


def test_cursor_forged_without_the_server_secret_is_malformed(client, auth):
    forged = URLSafeSerializer("guessed-secret", salt="causeloop.cursor").dumps(["x", 1, "iss_0"])
    assert malformed(client.get("/v1/issues", headers=auth(), query_string={"cursor": forged}))


def test_cursor_from_another_endpoint_is_malformed(client, auth):
    cursor = client.get("/v1/patterns?limit=1", headers=auth()).get_json()["page"]["next_cursor"]
    assert malformed(client.get("/v1/issues", headers=auth(), query_string={"cursor": cursor}))


def test_signed_cursor_with_a_wrong_shape_is_malformed(client, auth):
    odd = URLSafeSerializer(TEST_SECRET, salt="causeloop.cursor").dumps({"offset": 25})
    assert malformed(client.get("/v1/issues", headers=auth(), query_string={"cursor": odd}))


def test_limit_may_change_between_pages(client, auth):
    first = client.get("/v1/issues?limit=5", headers=auth()).get_json()
    second = client.get("/v1/issues", headers=auth(),
                        query_string={"limit": 50, "cursor": first["page"]["next_cursor"]}).get_json()
    assert len(second["data"]) == 50
    assert not {i["id"] for i in first["data"]} & {i["id"] for i in second["data"]}


def test_get_one_issue(client, auth):
    body = client.get("/v1/issues/iss_01abc123", headers=auth()).get_json()
    assert body["title"] == "Payment gateway timeout on checkout"
    assert body["metadata"] == {"environment": "production", "region": "eu-west-1"}


def test_missing_issue_is_not_found_with_its_id(client, auth):
    response = client.get("/v1/issues/iss_01abc999", headers=auth())
    assert response.status_code == 404
    error = response.get_json()["error"]
    assert error["message"] == "Issue iss_01abc999 not found"
    assert error["details"] == {"id": "iss_01abc999"}


def test_other_workspaces_issue_does_not_exist(client, auth):
    assert client.get("/v1/issues/iss_02def100", headers=auth()).status_code == 404
    assert client.get("/v1/issues/iss_02def100", headers=auth(workspace=OTHER_WORKSPACE)).status_code == 200


def test_list_shows_only_the_tokens_workspace(client, auth):
    body = client.get("/v1/issues?limit=100", headers=auth(workspace=OTHER_WORKSPACE)).get_json()
    assert body["page"]["total"] == 12
    assert all(item["id"].startswith("iss_02") for item in body["data"])


def test_create_with_every_field(client, auth):
    payload = {"title": "Card declined loop", "description": "Retries forever.", "severity": "critical",
               "status": "in_progress", "pattern_id": "pat_01xyz789", "source": "sentry",
               "external_id": "SENTRY-1", "external_url": "https://sentry.example.com/1",
               "team": "payments", "metadata": {"env": "prod"}}
    response = client.post("/v1/issues", headers=auth(), json=payload)
    assert response.status_code == 201
    body = response.get_json()
    assert {key: body[key] for key in payload} == payload
    assert body["resolved_at"] is None
    assert body["created_at"].endswith("Z")


def test_create_resolved_issue_sets_resolved_at(client, auth):
    body = client.post("/v1/issues", headers=auth(), json={"title": "t", "status": "resolved"}).get_json()
    assert body["resolved_at"] == body["created_at"]


def test_create_updates_the_patterns_counters(client, auth):
    created = client.post("/v1/issues", headers=auth(), json={"title": "t", "pattern_id": "pat_01xyz789"}).get_json()
    pattern = client.get("/v1/patterns/pat_01xyz789", headers=auth()).get_json()
    assert pattern["issue_count"] == 15
    assert pattern["last_seen_at"] == created["created_at"]


def test_create_linking_another_workspaces_pattern_is_unprocessable(client, auth):
    response = client.post("/v1/issues", headers=auth(), json={"title": "t", "pattern_id": "pat_02pqr111"})
    assert response.status_code == 422
    assert "pattern_id" in response.get_json()["error"]["details"]
    pattern = client.get("/v1/patterns/pat_02pqr111", headers=auth(workspace=OTHER_WORKSPACE)).get_json()
    assert pattern["issue_count"] == 6


def test_duplicate_external_id_is_a_conflict(client, auth):
    payload = {"title": "t", "source": "sentry", "external_id": "SENTRY-4821"}
    response = client.post("/v1/issues", headers=auth(), json=payload)
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "conflict"


@pytest.mark.parametrize("payload,field", [
    ({}, "title"),
    ({"title": ""}, "title"),
    ({"title": "x" * 301}, "title"),
    ({"title": "t", "severity": "urgent"}, "severity"),
    ({"title": "t", "status": "done"}, "status"),
    ({"title": "t", "description": "x" * 10_001}, "description"),
    ({"title": "t", "external_url": "javascript:alert(1)"}, "external_url"),
    ({"title": "t", "metadata": ["not", "an", "object"]}, "metadata"),
    ({"title": "t", "id": "iss_mine"}, "id"),
    ({"title": "t", "created_at": "2020-01-01T00:00:00Z"}, "created_at"),
])
def test_invalid_create_is_refused_and_stores_nothing(client, auth, payload, field):
    response = client.post("/v1/issues", headers=auth(), json=payload)
    assert response.status_code == 400
    assert field in response.get_json()["error"]["details"]
    assert client.get("/v1/issues?limit=1", headers=auth()).get_json()["page"]["total"] == 87
