"""Grouping rules: CRUD, validation, workspace isolation, ordering, and first_match()."""
import pytest

from conftest import MY_RULE, OTHER_WORKSPACE, SEED_WORKSPACE, THEIR_RULE
from models import GroupingRule, db
from models.grouping import rules
from models.grouping.rules import first_match, glob_to_re2
from test_errors import assert_envelope

FINGERPRINT = {"domain": "auth", "root_cause": "jwks_fetch_failed"}
JWKS_RULE = {"name": "JWKS fetch failures", "conditions": {"match": {"field": "title", "type": "contains",
                                                                     "pattern": "jwks"}},
             "action": {"fingerprint": FINGERPRINT}}
RULE_FIELDS = {"id", "name", "position", "enabled", "conditions", "action", "created_at", "updated_at"}


def create(client, headers, **changes):
    response = client.post("/v1/grouping-rules", headers=headers, json={**JWKS_RULE, **changes})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def rule_body(conditions, action=None):
    return {"conditions": conditions, "action": {"fingerprint": FINGERPRINT} if action is None else action}


# ---------------------------------------------------------------------------------------------
# CRUD

def test_create_returns_the_rule_with_defaults_and_a_location(client, auth):
    response = client.post("/v1/grouping-rules", headers=auth(), json=JWKS_RULE)
    assert response.status_code == 201
    rule = response.get_json()
    assert set(rule) == RULE_FIELDS
    assert rule["id"].startswith("gru_")
    assert response.headers["Location"].endswith(f"/v1/grouping-rules/{rule['id']}")
    assert rule["enabled"] is True and rule["position"] == 0
    assert rule["conditions"] == JWKS_RULE["conditions"]
    assert rule["action"] == {"fingerprint": FINGERPRINT, "pattern_id": None}


def test_a_text_match_reads_title_and_description_by_default(client, auth):
    rule = create(client, auth(), conditions={"match": {"type": "glob", "pattern": "*jwks*"}})
    assert rule["conditions"]["match"] == {"field": "text", "type": "glob", "pattern": "*jwks*"}


def test_the_default_position_is_after_the_last_rule(client, auth):
    headers = auth()
    create(client, headers, position=7)
    assert create(client, headers)["position"] == 8


def test_get_returns_what_create_returned(client, auth):
    headers = auth()
    rule = create(client, headers, conditions={"source": "sentry", "team": "identity",
                                               "metadata": {"key": "service", "value": "auth-gw"}})
    assert client.get(f"/v1/grouping-rules/{rule['id']}", headers=headers).get_json() == rule


def test_list_is_the_page_envelope(client, auth):
    headers = auth()
    created = [create(client, headers) for _ in range(3)]
    body = client.get("/v1/grouping-rules?limit=2", headers=headers).get_json()
    assert body["page"]["total"] == 3 and body["page"]["has_more"] is True
    rest = client.get("/v1/grouping-rules", headers=headers,
                      query_string={"limit": 2, "cursor": body["page"]["next_cursor"]}).get_json()
    assert [rule["id"] for rule in body["data"] + rest["data"]] == [rule["id"] for rule in created]
    assert body["data"][0] == created[0]


def test_list_is_ordered_by_position_then_creation(client, auth):
    headers = auth()
    late = create(client, headers, position=20, name="late")
    early = create(client, headers, position=5, name="early")
    tie = create(client, headers, position=20, name="tie, created after late")
    names = [rule["name"] for rule in client.get("/v1/grouping-rules", headers=headers).get_json()["data"]]
    assert names == [early["name"], late["name"], tie["name"]]


def test_patch_changes_only_what_it_names(client, auth):
    headers = auth()
    rule = create(client, headers)
    response = client.patch(f"/v1/grouping-rules/{rule['id']}", headers=headers,
                            json={"enabled": False, "position": 3, "action": {"pattern_id": "pat_01xyz789"}})
    assert response.status_code == 200
    patched = response.get_json()
    assert patched == {**rule, "enabled": False, "position": 3, "updated_at": patched["updated_at"],
                       "action": {"fingerprint": None, "pattern_id": "pat_01xyz789"}}
    assert client.get(f"/v1/grouping-rules/{rule['id']}", headers=headers).get_json() == patched


def test_patch_accepts_the_action_as_the_api_shows_it(client, auth):
    headers = auth()
    rule = create(client, headers)
    response = client.patch(f"/v1/grouping-rules/{rule['id']}", headers=headers,
                            json={"action": {"fingerprint": None, "pattern_id": "pat_01xyz789"}})
    assert response.get_json()["action"] == {"fingerprint": None, "pattern_id": "pat_01xyz789"}


def test_delete_removes_the_rule(client, auth):
    headers = auth()
    rule = create(client, headers)
    response = client.delete(f"/v1/grouping-rules/{rule['id']}", headers=headers)
    assert response.status_code == 204 and response.get_data() == b""
    assert_envelope(client.get(f"/v1/grouping-rules/{rule['id']}", headers=headers), 404, "not_found")
    assert_envelope(client.delete(f"/v1/grouping-rules/{rule['id']}", headers=headers), 404, "not_found")


def test_create_is_idempotent_with_a_key(client, auth):
    headers = {**auth(), "Idempotency-Key": "rule-1"}
    first = client.post("/v1/grouping-rules", headers=headers, json=JWKS_RULE)
    again = client.post("/v1/grouping-rules", headers=headers, json=JWKS_RULE)
    assert again.headers["Idempotent-Replayed"] == "true" and again.get_json() == first.get_json()
    assert client.get("/v1/grouping-rules", headers=auth()).get_json()["page"]["total"] == 1


def test_an_analyst_may_write_rules_and_a_viewer_only_read_them(client, auth):
    create(client, auth("analyst"))
    assert client.get("/v1/grouping-rules", headers=auth("viewer")).status_code == 200
    error = assert_envelope(client.post("/v1/grouping-rules", headers=auth("viewer"), json=JWKS_RULE),
                            403, "forbidden")
    assert error["details"] == {"required_scope": "patterns:write"}


# ---------------------------------------------------------------------------------------------
# Validation

@pytest.mark.parametrize("body,field", [
    (rule_body({}), "conditions"),
    ({"action": {"fingerprint": FINGERPRINT}}, "conditions"),
    (rule_body({"team": "identity"}, {}), "action"),
    (rule_body({"team": "identity"}, {"fingerprint": FINGERPRINT, "pattern_id": "pat_01xyz789"}), "action"),
    (rule_body({"team": "identity"}, {"fingerprint": None, "pattern_id": None}), "action"),
    (rule_body({"team": "identity"}, {"fingerprint": {"domain": "", "root_cause": "x"}}),
     "action.fingerprint.domain"),
    (rule_body({"team": "identity"}, {"fingerprint": {"domain": "auth"}}), "action.fingerprint.root_cause"),
    (rule_body({"match": {"type": "fuzzy", "pattern": "x"}}), "conditions.match.type"),
    (rule_body({"match": {"type": "contains", "pattern": "x", "field": "body"}}), "conditions.match.field"),
    (rule_body({"match": {"type": "contains", "pattern": "x" * 501}}), "conditions.match.pattern"),
    (rule_body({"match": {"type": "contains", "pattern": ""}}), "conditions.match.pattern"),
    (rule_body({"metadata": {"value": "x"}}), "conditions.metadata.key"),
    (rule_body({"source": ""}), "conditions.source"),
    (rule_body({"team": "identity", "owner": "me"}), "conditions.owner"),
    ({**rule_body({"team": "identity"}), "enabled": 1}, "enabled"),
    ({**rule_body({"team": "identity"}), "position": True}, "position"),
    ({**rule_body({"team": "identity"}), "position": -1}, "position"),
    ({**rule_body({"team": "identity"}), "workspace_id": OTHER_WORKSPACE}, "workspace_id"),
    ({**rule_body({"team": "identity"}), "workspace": OTHER_WORKSPACE}, "workspace"),
    ({**rule_body({"team": "identity"}), "id": "gru_01mine"}, "id"),
    ({**rule_body({"team": "identity"}), "created_at": "2020-01-01T00:00:00Z"}, "created_at"),
])
def test_a_malformed_rule_is_a_validation_error(client, auth, body, field):
    response = client.post("/v1/grouping-rules", headers=auth(), json=body)
    assert field in assert_envelope(response, 400, "validation_error")["details"]


@pytest.mark.parametrize("pattern", [r"(unclosed", r"[z-a]", r"a{2000}", r"(a)\1", r"(?=lookahead)x",
                                     r"(?<!behind)x", r"(?P<n>x)(?P=n)"])
def test_a_regex_re2_refuses_is_unprocessable_naming_the_field(client, auth, pattern):
    response = client.post("/v1/grouping-rules", headers=auth(),
                           json=rule_body({"match": {"type": "regex", "pattern": pattern}}))
    error = assert_envelope(response, 422, "unprocessable")
    assert list(error["details"]) == ["conditions.match.pattern"]
    assert "RE2" in error["details"]["conditions.match.pattern"][0]


def test_a_backreference_is_refused_on_patch_too(client, auth):
    headers = auth()
    rule = create(client, headers)
    response = client.patch(f"/v1/grouping-rules/{rule['id']}", headers=headers,
                            json={"conditions": {"match": {"type": "regex", "pattern": r"(\w+) \1"}}})
    assert "conditions.match.pattern" in assert_envelope(response, 422, "unprocessable")["details"]
    assert client.get(f"/v1/grouping-rules/{rule['id']}", headers=headers).get_json() == rule


@pytest.mark.parametrize("pattern_id", ["pat_01zzz999", "pat_02pqr111"])
def test_an_unknown_or_another_workspaces_pattern_is_unprocessable_alike(client, auth, pattern_id):
    response = client.post("/v1/grouping-rules", headers=auth(),
                           json=rule_body({"team": "identity"}, {"pattern_id": pattern_id}))
    error = assert_envelope(response, 422, "unprocessable")
    assert error["message"] == f"Pattern {pattern_id} not found in this workspace."
    assert list(error["details"]) == ["action.pattern_id"]


def test_a_merged_pattern_takes_no_rule(app, client, auth):
    from models import Pattern
    with app.app_context(), db.connection_context():
        Pattern.update(status="merged").where(Pattern.id == "pat_01xyz790").execute()
    response = client.post("/v1/grouping-rules", headers=auth(),
                           json=rule_body({"team": "identity"}, {"pattern_id": "pat_01xyz790"}))
    assert "merged" in assert_envelope(response, 422, "unprocessable")["message"]


def test_nothing_is_stored_by_a_refused_create(app, client, auth):
    client.post("/v1/grouping-rules", headers=auth(), json=rule_body({"match": {"type": "regex", "pattern": "("}}))
    with app.app_context(), db.connection_context():
        assert GroupingRule.select().count() == 0


# ---------------------------------------------------------------------------------------------
# Workspace isolation

@pytest.mark.parametrize("method,body", [("get", None), ("patch", {"enabled": False}), ("delete", None)])
def test_another_workspaces_rule_does_not_exist(app, client, auth, grouping_rules, method, body):
    response = client.open(f"/v1/grouping-rules/{THEIR_RULE}", method=method.upper(), headers=auth(), json=body)
    assert assert_envelope(response, 404, "not_found")["details"] == {"id": THEIR_RULE}
    with app.app_context(), db.connection_context():
        theirs = GroupingRule.get_by_id(THEIR_RULE)
    assert theirs.enabled is True


def test_lists_show_only_the_callers_rules(client, auth, grouping_rules):
    mine = client.get("/v1/grouping-rules", headers=auth()).get_json()["data"]
    theirs = client.get("/v1/grouping-rules", headers=auth(workspace=OTHER_WORKSPACE)).get_json()["data"]
    assert [rule["id"] for rule in mine] == [MY_RULE]
    assert [rule["id"] for rule in theirs] == [THEIR_RULE]


def test_the_workspace_comes_from_the_token(app, client, auth):
    rule = create(client, auth(workspace=OTHER_WORKSPACE), conditions={"team": "identity"})
    with app.app_context(), db.connection_context():
        assert GroupingRule.get_by_id(rule["id"]).workspace_id == OTHER_WORKSPACE


# ---------------------------------------------------------------------------------------------
# first_match()

ISSUE = {"title": "JWKS fetch failed for tenant acme", "description": "GET https://idp/.well-known/jwks.json "
         "timed out after 3s", "source": "sentry", "team": "identity",
         "metadata": {"service": "auth-gw", "attempts": 3, "retried": True}}


@pytest.fixture
def make_rule(app):
    """Create a rule through the model, as the API does; returns its id."""

    def build(conditions, workspace=SEED_WORKSPACE, **fields):
        with app.app_context(), db.connection_context():
            data = {"conditions": conditions, "action": {"fingerprint": FINGERPRINT}, **fields}
            return GroupingRule.create_in(workspace, data).id

    return build


@pytest.fixture
def match(app):
    """first_match() for the seed workspace, with ISSUE's fields overridden."""

    def evaluate(workspace=SEED_WORKSPACE, **fields):
        issue = {**ISSUE, **fields}
        with app.app_context(), db.connection_context():
            return first_match(workspace, issue["title"], issue["description"], issue["source"], issue["team"],
                               issue["metadata"])

    return evaluate


def test_no_rules_no_match(match):
    assert match() is None


@pytest.mark.parametrize("conditions,reason", [
    ({"match": {"field": "title", "type": "contains", "pattern": "JWKS FETCH"}}, 'title contains "JWKS FETCH"'),
    ({"match": {"field": "description", "type": "contains", "pattern": "well-known"}},
     'description contains "well-known"'),
    ({"match": {"field": "text", "type": "contains", "pattern": "acme\nget"}}, 'text contains "acme\\nget"'),
    ({"match": {"field": "title", "type": "glob", "pattern": "jwks*tenant ?cme"}},
     'title matches glob "jwks*tenant ?cme"'),
    ({"match": {"field": "title", "type": "glob", "pattern": "[ij]wks *"}}, 'title matches glob "[ij]wks *"'),
    ({"match": {"field": "text", "type": "glob", "pattern": "*timed out after [0-9]s"}},
     'text matches glob "*timed out after [0-9]s"'),
    ({"match": {"field": "title", "type": "regex", "pattern": r"^JWKS fetch \w+"}},
     'title matches regex "^JWKS fetch \\\\w+"'),
    ({"match": {"field": "description", "type": "regex", "pattern": r"(?i)TIMED OUT after \d+s"}},
     'description matches regex "(?i)TIMED OUT after \\\\d+s"'),
    ({"source": "sentry"}, 'source is "sentry"'),
    ({"team": "identity"}, 'team is "identity"'),
    ({"metadata": {"key": "service"}}, 'metadata has "service"'),
    ({"metadata": {"key": "service", "value": "auth-gw"}}, 'metadata.service is "auth-gw"'),
    ({"metadata": {"key": "attempts", "value": "3"}}, 'metadata.attempts is "3"'),
    ({"metadata": {"key": "retried", "value": "true"}}, 'metadata.retried is "true"'),
    ({"match": {"field": "title", "type": "contains", "pattern": "jwks"}, "source": "sentry", "team": "identity"},
     'title contains "jwks" and source is "sentry" and team is "identity"'),
])
def test_each_condition_kind_matches(make_rule, match, conditions, reason):
    rule_id = make_rule(conditions)
    found = match()
    assert found is not None and found.rule_id == rule_id
    assert found.fingerprint == FINGERPRINT and found.pattern_id is None
    assert found.reason == reason


@pytest.mark.parametrize("conditions", [
    {"match": {"field": "description", "type": "contains", "pattern": "tenant acme"}},  # it is in the title
    {"match": {"field": "title", "type": "glob", "pattern": "jwks"}},  # a glob covers the whole field
    {"match": {"field": "title", "type": "regex", "pattern": "jwks"}},  # regexes are case-sensitive
    {"match": {"field": "title", "type": "glob", "pattern": "[!j]wks*"}},
    {"source": "Sentry"},
    {"team": "identity-platform"},
    {"metadata": {"key": "region"}},
    {"metadata": {"key": "service", "value": "AUTH-GW"}},
    {"metadata": {"key": "attempts", "value": "4"}},
    {"match": {"field": "title", "type": "contains", "pattern": "jwks"}, "source": "datadog"},  # all must hold
])
def test_a_condition_that_does_not_hold_does_not_match(make_rule, match, conditions):
    make_rule(conditions)
    assert match() is None


def test_missing_description_team_and_metadata_are_handled(make_rule, match):
    make_rule({"metadata": {"key": "service"}})
    make_rule({"match": {"type": "contains", "pattern": "jwks"}})
    found = match(description=None, team=None, metadata=None)
    assert found.reason == 'text contains "jwks"'


def test_rules_are_tried_by_position_then_creation(make_rule, match):
    make_rule({"source": "sentry"}, position=20, name="late")
    tie = make_rule({"team": "identity"}, position=10)
    make_rule({"source": "sentry"}, position=10)
    assert match().rule_id == tie


def test_a_disabled_rule_never_matches(make_rule, match):
    make_rule({"source": "sentry"}, position=1, enabled=False)
    fallback = make_rule({"team": "identity"}, position=2)
    assert match().rule_id == fallback


def test_a_pattern_action_gives_the_pattern(make_rule, match):
    rule_id = make_rule({"source": "sentry"}, action={"pattern_id": "pat_01xyz789"})
    found = match()
    assert (found.rule_id, found.pattern_id, found.fingerprint) == (rule_id, "pat_01xyz789", None)


def test_another_workspaces_rules_never_match(make_rule, match):
    make_rule({"source": "sentry"}, workspace=OTHER_WORKSPACE)
    assert match() is None
    assert match(workspace=OTHER_WORKSPACE) is not None


def test_the_cache_notices_an_update_a_create_and_a_delete(app, client, auth, make_rule, match):
    headers = auth()
    rule_id = make_rule({"source": "sentry"})
    assert match().rule_id == rule_id  # compiled and cached
    client.patch(f"/v1/grouping-rules/{rule_id}", headers=headers, json={"conditions": {"source": "datadog"}})
    assert match() is None
    assert match(source="datadog").rule_id == rule_id
    other = make_rule({"team": "identity"})
    assert match().rule_id == other
    client.delete(f"/v1/grouping-rules/{other}", headers=headers)
    assert match() is None


def test_the_cache_notices_a_write_by_another_process(app, make_rule, match):
    """Another process's write reaches this one only through the database: the version row."""
    rule_id = make_rule({"source": "sentry"})
    assert match().rule_id == rule_id
    with app.app_context(), db.connection_context():
        cached = rules._compiled[SEED_WORKSPACE]
        GroupingRule.update(enabled=False).where(GroupingRule.id == rule_id).execute()  # not through the model
        assert rules.rules_for(SEED_WORKSPACE) is cached[1]  # unchanged version: the cache stands
        rules.GroupingRuleVersion.bump(SEED_WORKSPACE)  # what every model write does, in its transaction
    assert match() is None


def test_compiled_rules_are_reused_while_nothing_changes(app, make_rule):
    make_rule({"source": "sentry"})
    with app.app_context(), db.connection_context():
        assert rules.rules_for(SEED_WORKSPACE) is rules.rules_for(SEED_WORKSPACE)


@pytest.mark.parametrize("glob,text,matches", [
    ("*", "", True), ("a*b", "A\nxB", True), ("a?c", "abc", True), ("a?c", "ac", False),
    ("[abc]x", "bX", True), ("[!abc]x", "bx", False), ("[a-c]", "B", True), ("[]]", "]", True),
    ("[", "[", True), ("a.b", "axb", False), ("(x)+", "(x)+", True), ("\\d", "\\d", True),
    ("[^]", "^", True), ("*.log", "app.LOG", True), ("*.log", "app.log.1", False),
])
def test_globs_follow_fnmatch_case_insensitively(glob, text, matches):
    import fnmatch
    program = rules.compile_re2(glob_to_re2(glob))
    assert (program.search(text.encode()) is not None) == matches
    assert fnmatch.fnmatchcase(text.lower(), glob.lower()) == matches


# ---------------------------------------------------------------------------------------------
# Rules at ingestion: before the vocabulary, a fingerprint or a pattern, explained

def ingest_one(client, headers, **record):
    response = client.post("/v1/ingest/events", headers=headers, json={"source": "sentry", **record})
    assert response.status_code == 202, response.get_json()
    return client.get(f"/v1/issues/{response.get_json()['issue_ids'][0]}", headers=headers).get_json()


def test_a_fingerprint_rule_overrides_the_vocabulary_and_patterns_form_on_recurrence(client, auth):
    headers = auth()
    rule = create(client, headers)
    # This title alone would make the vocabulary name a TLS or token cause; the rule comes first.
    first = ingest_one(client, headers, title="JWKS fetch failed: certificate has expired", external_id="a")
    assert first["fingerprint"] == FINGERPRINT
    assert first["detection"]["method"] == "rule" and first["detection"]["rule_id"] == rule["id"]
    assert first["detection"]["reason"] == 'title contains "jwks"'
    second = ingest_one(client, headers, title="jwks refresh timed out", external_id="b")
    assert second["pattern_id"] is not None
    assert client.get(f"/v1/issues/{first['id']}", headers=headers).get_json()["pattern_id"] == second["pattern_id"]


def test_a_pattern_rule_links_the_issue_to_that_pattern_and_counts_it(client, auth, grouping_rules):
    headers = auth()
    before = client.get("/v1/patterns/pat_01xyz789", headers=headers).get_json()["issue_count"]
    issue = ingest_one(client, headers, title="Upstream gateway timeout on /checkout", external_id="gt-1")
    assert issue["pattern_id"] == "pat_01xyz789"
    assert issue["detection"] == {"method": "rule", "rule_id": grouping_rules[0], "pattern_id": "pat_01xyz789",
                                  "reason": 'title contains "gateway timeout"'}
    assert client.get("/v1/patterns/pat_01xyz789", headers=headers).get_json()["issue_count"] == before + 1


def test_a_disabled_rule_leaves_placement_to_the_vocabulary(client, auth):
    headers = auth()
    rule = create(client, headers)
    assert client.patch(f"/v1/grouping-rules/{rule['id']}", headers=headers,
                        json={"enabled": False}).status_code == 200
    issue = ingest_one(client, headers, title="JWKS fetch failed", external_id="c")
    assert issue["detection"]["method"] != "rule"


def test_each_workspace_is_placed_by_its_own_rules(client, auth, grouping_rules):
    mine = ingest_one(client, auth(), title="gateway timeout again", external_id="gt-2")
    theirs = ingest_one(client, auth(workspace=OTHER_WORKSPACE), title="gateway timeout again", external_id="gt-2")
    assert (mine["pattern_id"], mine["detection"]["rule_id"]) == ("pat_01xyz789", grouping_rules[0])
    assert (theirs["pattern_id"], theirs["detection"]["rule_id"]) == ("pat_02pqr111", grouping_rules[1])
