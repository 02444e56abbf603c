"""List rows are rendered by the database (app/rendering.py): each must equal what the item
schema dumps for the same object, for awkward text, JSON and timestamps, on both databases."""
import datetime

import pytest

from app.rendering import json_row
from blueprints.issues import IssueSchema
from blueprints.patterns import PatternSchema
from models import Issue, Pattern, db

AWKWARD = 'quotes " \\ back\\slash, tab\t, newline\n, bell \x07, é, 漢字, emoji 🚒, </script>'
METADATA = {"nested": {"list": [1, 2.5, -0.0, 1e-7, 12345678901234567890, True, None, "x"]},
            "unicode": AWKWARD, "empty": {}, "float": 0.30000000000000004}


@pytest.fixture
def awkward_rows(app):
    """An issue and a pattern holding every kind of value the schemas show."""
    with app.app_context(), db.connection_context():
        pattern = Pattern.create(id="pat_awkward", workspace="ws_01abc123", name=AWKWARD, description=AWKWARD,
                                 tags=[AWKWARD, "t"], risk_score=77, fingerprint_domain="payments",
                                 fingerprint_root_cause="timeout", last_seen_at=datetime.datetime(2026, 1, 2, 3, 4, 5),
                                 created_at=datetime.datetime(2025, 12, 31, 23, 59, 59))
        Issue.create(id="iss_awkward", workspace="ws_01abc123", title=AWKWARD, description=AWKWARD,
                     status="resolved", severity="critical", pattern=pattern, source="sentry",
                     external_id=AWKWARD, external_url="https://example.test/a?b=c&d=é", team=AWKWARD,
                     risk_score=0, metadata=METADATA, created_at=datetime.datetime(2026, 1, 2, 3, 4, 5, 678901),
                     resolved_at=datetime.datetime(2026, 2, 3, 4, 5, 6), fingerprint_domain="payments",
                     fingerprint_root_cause="timeout", detection={"method": "vocabulary", "score": 0.75,
                                                                  "matched": [AWKWARD]})
        Issue.create(id="iss_plain", workspace="ws_01abc123", title="t", pattern=None, metadata={},
                     created_at=datetime.datetime(2026, 1, 2, 3, 4, 5))


@pytest.mark.parametrize("model, schema, url", [
    (Issue, IssueSchema, "/v1/issues?limit=100"),
    (Pattern, PatternSchema, "/v1/patterns?limit=100"),
    (Issue, IssueSchema, "/v1/patterns/pat_awkward/issues"),
])
def test_every_list_row_equals_the_schema_dump(app, client, auth, awkward_rows, model, schema, url):
    listed = client.get(url, headers=auth()).get_json()["data"]
    with app.app_context(), db.connection_context():
        stored = {row.id: row for row in model.select().where(model.workspace == "ws_01abc123")}
        dumped = {item["id"]: schema().dump(stored[item["id"]]) for item in listed}
    assert {"iss_awkward", "pat_awkward"} & {item["id"] for item in listed}
    for item in listed:
        assert item == dumped[item["id"]]
        assert list(item) == list(dumped[item["id"]])  # the schema's field order too


@pytest.mark.parametrize("model, schema, url", [
    (Issue, IssueSchema, "/v1/issues/iss_awkward"),
    (Issue, IssueSchema, "/v1/issues/iss_plain"),
    (Pattern, PatternSchema, "/v1/patterns/pat_awkward"),
])
def test_a_single_get_equals_the_schema_dump(app, client, auth, awkward_rows, model, schema, url):
    response = client.get(url, headers=auth())
    assert response.status_code == 200 and response.mimetype == "application/json"
    with app.app_context(), db.connection_context():
        dumped = schema().dump(model.get_by_id(url.rsplit("/", 1)[1]))
    assert response.get_json() == dumped and list(response.get_json()) == list(dumped)


def test_a_single_get_of_another_workspace_is_not_found(client, auth, awkward_rows):
    response = client.get("/v1/issues/iss_awkward", headers=auth(workspace="ws_02def456"))
    assert response.status_code == 404 and response.get_json()["error"]["code"] == "not_found"


def test_awkward_values_survive_exactly(client, auth, awkward_rows):
    issue = next(item for item in client.get("/v1/issues?limit=100", headers=auth()).get_json()["data"]
                 if item["id"] == "iss_awkward")
    assert issue["title"] == AWKWARD and issue["metadata"] == METADATA
    assert issue["created_at"] == "2026-01-02T03:04:05Z" and issue["resolved_at"] == "2026-02-03T04:05:06Z"
    assert issue["fingerprint"] == {"domain": "payments", "root_cause": "timeout"}
    plain = next(item for item in client.get("/v1/issues?limit=100", headers=auth()).get_json()["data"]
                 if item["id"] == "iss_plain")
    assert plain["fingerprint"] is None and plain["resolved_at"] is None and plain["detection"] is None


def test_a_field_without_a_rendering_is_refused(app):
    import marshmallow as ma

    class Unrenderable(ma.Schema):
        id = ma.fields.String()
        nowhere = ma.fields.String()

    with app.app_context(), pytest.raises(TypeError, match="no column for the 'nowhere' field"):
        json_row(Unrenderable, Issue)


def test_grouping_rule_rows_equal_the_schema_dump(app, client, auth):
    """Booleans (0/1 on SQLite) and objects kept as JSON columns render as the schema dumps them."""
    from blueprints.grouping_rules import GroupingRuleSchema
    from models import GroupingRule

    with app.app_context(), db.connection_context():
        for enabled, name in ((True, AWKWARD), (False, None)):
            GroupingRule.create_in("ws_01abc123", {
                "name": name, "enabled": enabled,
                "conditions": {"match": {"field": "text", "type": "regex", "pattern": AWKWARD.replace("\\", "")},
                               "metadata": {"key": "k", "value": AWKWARD}},
                "action": {"fingerprint": {"domain": "payments", "root_cause": AWKWARD[:100]}}})
        stored = {rule.id: GroupingRuleSchema().dump(rule) for rule in GroupingRule.select()}
    listed = client.get("/v1/grouping-rules", headers=auth()).get_json()["data"]
    assert [item["enabled"] for item in listed] == [True, False]
    for item in listed:
        assert item == stored[item["id"]] and list(item) == list(stored[item["id"]])
        assert client.get(f"/v1/grouping-rules/{item['id']}", headers=auth()).get_json() == item
