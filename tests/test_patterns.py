"""Patterns: listing, fetching, creating, and workspace isolation."""
from conftest import OTHER_WORKSPACE
from models import Issue, Pattern, db, schema


def test_list_is_riskiest_first(client, auth):
    body = client.get("/v1/patterns", headers=auth()).get_json()
    scores = [item["risk_score"] for item in body["data"]]
    assert scores == sorted(scores, reverse=True)
    assert body["data"][0]["id"] == "pat_01xyz789"
    assert body["page"] == {"next_cursor": None, "has_more": False, "total": 6}


def test_counters_match_the_linked_issues(client, auth):
    for pattern in client.get("/v1/patterns", headers=auth()).get_json()["data"]:
        linked = client.get("/v1/issues", headers=auth(),
                            query_string={"pattern_id": pattern["id"], "limit": 100}).get_json()
        assert pattern["issue_count"] == linked["page"]["total"]
        assert pattern["last_seen_at"] == max(item["created_at"] for item in linked["data"])


def test_other_workspaces_pattern_does_not_exist(client, auth):
    response = client.get("/v1/patterns/pat_02pqr111", headers=auth())
    assert response.status_code == 404
    assert response.get_json()["error"]["message"] == "Pattern pat_02pqr111 not found"


def test_create_pattern(client, auth):
    payload = {"name": "Disk full on log volume", "status": "active", "risk_score": 55,
               "fingerprint": {"domain": "infra", "root_cause": "disk_full"}, "tags": ["disk"],
               "description": "Logs fill the volume."}
    response = client.post("/v1/patterns", headers=auth(), json=payload)
    assert response.status_code == 201
    body = response.get_json()
    assert {key: body[key] for key in payload} == payload
    assert body["issue_count"] == 0 and body["last_seen_at"] is None
    assert response.headers["Location"] == f"/v1/patterns/{body['id']}"


def test_create_pattern_defaults(client, auth):
    body = client.post("/v1/patterns", headers=auth(), json={"name": "n"}).get_json()
    assert (body["status"], body["risk_score"], body["tags"], body["fingerprint"]) == ("watching", 0, [], None)


def test_clients_cannot_write_derived_counters(client, auth):
    response = client.post("/v1/patterns", headers=auth(), json={"name": "n", "issue_count": 99})
    assert response.status_code == 400
    assert "issue_count" in response.get_json()["error"]["details"]


def test_too_many_tags_is_refused(client, auth):
    response = client.post("/v1/patterns", headers=auth(), json={"name": "n", "tags": [str(i) for i in range(21)]})
    assert response.status_code == 400


def test_risk_min_above_risk_max_is_refused(client, auth):
    response = client.get("/v1/patterns?risk_min=80&risk_max=20", headers=auth())
    assert response.status_code == 400
    assert "risk_min" in response.get_json()["error"]["details"]


def test_viewer_cannot_create_patterns(client, auth):
    response = client.post("/v1/patterns", headers=auth("viewer"), json={"name": "n"})
    assert response.status_code == 403
    assert response.get_json()["error"]["details"]["required_scope"] == "patterns:write"


def test_second_workspace_sees_its_own_patterns(client, auth):
    body = client.get("/v1/patterns", headers=auth(workspace=OTHER_WORKSPACE)).get_json()
    assert [item["id"] for item in body["data"]] == ["pat_02pqr111"]


def test_migration_0007_counts_the_issues_already_linked_per_severity(app):
    with app.app_context(), db.connection_context():
        reverted = schema.runner().down(target="0007_pattern_severity_counters")
        assert schema.runner().up() == list(reversed(reverted))
        for pattern in Pattern.select():
            linked = Issue.select().where(Issue.pattern == pattern.id)
            assert pattern.linked_by_severity == {name: linked.where(Issue.severity == name).count()
                                                  for name in pattern.linked_by_severity}
            assert sum(pattern.linked_by_severity.values()) == pattern.issue_count > 0
