"""Connectors and inbound webhooks, through real HTTP: manage a connector, then have each tool's
documented example payload, signed as that tool signs it, become the issue it describes; and
every unverified, malformed or repeated delivery store nothing."""
import base64
import copy
import datetime
import json
import time

import pytest

from app.inbound import custom_api
from conftest import OTHER_WORKSPACE
from models import MODELS, Connector, Issue, db
from models.tokens import TOKEN_SCOPES
from test_errors import assert_envelope
from test_inbound_parsers import SIGNERS, fixture, hex_hmac


def grafana_signer(secret, body):
    return {"X-Grafana-Alerting-Signature": hex_hmac(secret, body)}


# (connector type, fixture, headers the tool sends with it, how it signs, the issue it becomes)
DELIVERIES = [
    ("sentry", "sentry_event_alert_triggered", {"Sentry-Hook-Resource": "event_alert", "Request-ID": "req-1"},
     SIGNERS["sentry"],
     {"source": "sentry", "external_id": "1117540176", "title": "ReferenceError: heck is not defined",
      "severity": "high", "team": None,
      "external_url": "https://sentry.io/organizations/test-org/issues/1117540176/events/"
                      "e4874d664c3540c1a32eab185f12c5ab/"}),
    ("pagerduty", "pagerduty_incident_priority_updated", {}, SIGNERS["pagerduty"],
     {"source": "pagerduty", "external_id": "PGR0VU2", "title": "A little bump in the road",
      "severity": "critical", "team": "Engineering", "external_url": "https://acme.pagerduty.com/incidents/PGR0VU2"}),
    ("github", "github_issues_opened", {"X-GitHub-Event": "issues", "X-GitHub-Delivery": "gh-1"}, SIGNERS["github"],
     {"source": "github", "external_id": "Codertocat/Hello-World#1", "title": "Spelling error in the README file",
      "severity": "medium", "team": "Codertocat/Hello-World",
      "external_url": "https://github.com/Codertocat/Hello-World/issues/1"}),
    ("alertmanager", "alertmanager_v4_firing_and_resolved", {}, SIGNERS["alertmanager"],
     {"source": "alertmanager", "external_id": "5b0b9c0c1f2e4a7d",
      "title": "CheckoutErrorRate: Checkout error rate above 5%", "severity": "critical", "team": "payments",
      "external_url": "http://prometheus.example.com:9090/graph?g0.expr=job%3Acheckout_errors%3Arate5m+%3E+0.05"}),
    ("alertmanager", "grafana_alerting_firing", {}, grafana_signer,
     {"source": "grafana", "external_id": "c6eadffa33fcdf37",
      "title": "High memory usage: This alert was triggered for zone us-1", "severity": "medium", "team": "blue",
      "external_url": "https://play.grafana.org/alerting/1afz29v7z/edit"}),
    ("datadog", "datadog_default_triggered", {}, SIGNERS["datadog"],
     {"source": "datadog", "external_id": "7224413542542651373", "title": "[Memory Alert]", "severity": "critical",
      "team": "platform", "external_url": "https://app.datadoghq.com/event/event?id=7224413542542651373"}),
    ("jira", "jira_issue_updated", {"X-Atlassian-Webhook-Identifier": "jira-1"}, SIGNERS["jira"],
     {"source": "jira", "external_id": "JRA-20002", "title": "I feel the need for speed", "severity": "low",
      "team": "JRA", "external_url": "https://jira.atlassian.com/browse/JRA-20002"}),
    ("custom_api", "custom_api_record", {"Idempotency-Key": "run-42"}, SIGNERS["custom_api"],
     {"source": "custom_api", "external_id": "run-42", "title": "Nightly build failed", "severity": "high",
      "team": "platform", "external_url": "https://ci.example.com/runs/42"}),
]
IDS = [name for _, name, _, _, _ in DELIVERIES]
# These sign the body itself (the others send the secret as a bearer or basic credential).
BODY_SIGNED = [delivery for delivery in DELIVERIES if delivery[0] not in ("alertmanager", "datadog")
               or delivery[1] == "grafana_alerting_firing"]
CUSTOM_RECORD = {"title": "Nightly build failed", "external_id": "run-42", "severity": "p2", "team": "platform",
                 "external_url": "https://ci.example.com/runs/42"}


def payload_of(name):
    """The raw body a tool sends: its documented example (our own format for custom_api)."""
    if name == "custom_api_record":
        return json.dumps(CUSTOM_RECORD).encode()
    return fixture(name)[0]


def counts(app):
    """Rows per table: what a refused delivery must leave as it was."""
    with app.app_context(), db.connection_context():
        return {model.__name__: model.select().count() for model in MODELS}


def create(client, headers, kind="custom_api", name=None, **fields):
    response = client.post("/v1/connectors", headers=headers,
                           json={"type": kind, "display_name": name or f"{kind} connector", **fields})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def deliver(client, connector, raw, headers=None, secret=None, signer=None):
    """POST a delivery to the connector's URL, signed with `secret` by `signer` when given."""
    signed = signer(secret, raw) if signer else {}
    return client.post(connector["inbound_url"], data=raw,
                       headers={"Content-Type": "application/json", **signed, **(headers or {})})


@pytest.fixture
def owner(auth):
    return auth()


# --- managing connectors --------------------------------------------------------------------

def test_a_connector_shows_its_url_and_its_secret_once(client, owner):
    created = create(client, owner, "github", "Acme repos")
    assert created["inbound_url"] == f"http://localhost/v1/webhooks/inbound/{created['id']}"
    assert created["secret"].startswith("whsec_") and len(created["secret"]) >= len("whsec_") + 43
    assert created["secret_last_four"] == created["secret"][-4:]
    assert (created["type"], created["display_name"], created["enabled"]) == ("github", "Acme repos", True)
    one = client.get(f"/v1/connectors/{created['id']}", headers=owner)
    listed = client.get("/v1/connectors", headers=owner).get_json()["data"]
    assert one.status_code == 200 and "secret" not in one.get_json()
    assert [item["id"] for item in listed] == [created["id"]] and "secret" not in listed[0]
    assert one.get_json() == {name: value for name, value in created.items() if name != "secret"}


def test_the_secret_is_stored_sealed_never_in_plain(app, client, owner):
    secret = create(client, owner)["secret"]
    with app.app_context(), db.connection_context():
        stored = " ".join(str(row) for model in MODELS for row in model.select().tuples())
    assert secret not in stored and secret[6:] not in stored


def test_a_secret_sealed_for_one_connector_does_not_open_for_another(app, client, owner):
    first, second = create(client, owner, name="one"), create(client, owner, name="two")
    with app.app_context(), db.connection_context():
        sealed = Connector.get_by_id(first["id"]).secret_sealed
        Connector.update(secret_sealed=sealed).where(Connector.id == second["id"]).execute()
    raw = payload_of("custom_api_record")
    assert_envelope(deliver(client, second, raw, secret=first["secret"], signer=SIGNERS["custom_api"]),
                    401, "unauthorized")


def test_display_names_are_unique_per_workspace(client, owner, auth):
    create(client, owner, name="Prod alerts")
    duplicate = client.post("/v1/connectors", headers=owner, json={"type": "datadog", "display_name": "Prod alerts"})
    assert "display_name" in assert_envelope(duplicate, 409, "conflict")["details"]
    create(client, auth(workspace=OTHER_WORKSPACE), name="Prod alerts")
    other = create(client, owner, name="Staging alerts")
    renamed = client.patch(f"/v1/connectors/{other['id']}", headers=owner, json={"display_name": "Prod alerts"})
    assert_envelope(renamed, 409, "conflict")


@pytest.mark.parametrize("body,field", [
    ({"display_name": "x"}, "type"),
    ({"type": "splunk", "display_name": "x"}, "type"),
    ({"type": "github"}, "display_name"),
    ({"type": "github", "display_name": ""}, "display_name"),
    ({"type": "github", "display_name": "x" * 101}, "display_name"),
    ({"type": "github", "display_name": "x", "secret": "short"}, "secret"),
    ({"type": "github", "display_name": "x", "secret": "has spaces in it, sixteen+"}, "secret"),
    ({"type": "github", "display_name": "x", "workspace_id": OTHER_WORKSPACE}, "workspace_id"),
    ({"type": "github", "display_name": "x", "inbound_url": "https://evil.example"}, "inbound_url"),
])
def test_bad_input_is_a_validation_error_naming_the_field(app, client, owner, body, field):
    before = counts(app)
    response = client.post("/v1/connectors", headers=owner, json=body)
    assert field in assert_envelope(response, 400, "validation_error")["details"]
    assert counts(app) == before


def test_patch_renames_disables_and_enables(client, owner):
    connector = create(client, owner)
    raw, sign = payload_of("custom_api_record"), SIGNERS["custom_api"]
    patched = client.patch(f"/v1/connectors/{connector['id']}", headers=owner,
                           json={"display_name": "CI", "enabled": False})
    assert patched.status_code == 200
    assert (patched.get_json()["display_name"], patched.get_json()["enabled"]) == ("CI", False)
    assert_envelope(deliver(client, connector, raw, secret=connector["secret"], signer=sign), 401, "unauthorized")
    client.patch(f"/v1/connectors/{connector['id']}", headers=owner, json={"enabled": True})
    assert deliver(client, connector, raw, secret=connector["secret"], signer=sign).status_code == 202
    refused = client.patch(f"/v1/connectors/{connector['id']}", headers=owner, json={"type": "github"})
    assert "type" in assert_envelope(refused, 400, "validation_error")["details"]


def test_a_deleted_connector_is_gone_and_its_url_refuses(client, owner):
    connector = create(client, owner)
    assert client.delete(f"/v1/connectors/{connector['id']}", headers=owner).status_code == 204
    assert_envelope(client.get(f"/v1/connectors/{connector['id']}", headers=owner), 404, "not_found")
    raw = payload_of("custom_api_record")
    assert_envelope(deliver(client, connector, raw, secret=connector["secret"], signer=SIGNERS["custom_api"]),
                    401, "unauthorized")


def test_another_workspaces_connector_does_not_exist_for_you(app, client, owner, auth):
    theirs = create(client, auth(workspace=OTHER_WORKSPACE), name="Theirs")
    before = counts(app)
    for method, path, body in (("get", "", None), ("patch", "", {"enabled": False}), ("delete", "", None),
                               ("post", "/rotate", None)):
        response = client.open(f"/v1/connectors/{theirs['id']}{path}", method=method.upper(), headers=owner,
                               json=body)
        assert assert_envelope(response, 404, "not_found")["details"] == {"id": theirs["id"]}
    assert client.get("/v1/connectors", headers=owner).get_json()["data"] == []
    assert counts(app) == before


@pytest.mark.parametrize("role", ["analyst", "viewer"])
def test_only_owners_and_tenant_admins_manage_connectors(client, auth, role):
    response = client.get("/v1/connectors", headers=auth(role))
    assert assert_envelope(response, 403, "forbidden")["details"] == {"required_scope": "connectors:admin"}
    assert client.get("/v1/connectors", headers=auth("tenant_admin")).status_code == 200


def test_api_tokens_cannot_manage_connectors(client, owner):
    token = client.post("/v1/api-tokens", headers=owner, json={
        "name": "everything", "scopes": list(TOKEN_SCOPES), "expires_in_days": 1}).get_json()["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    for method, body in (("get", None), ("post", {"type": "github", "display_name": "x"})):
        response = client.open("/v1/connectors", method=method.upper(), headers=bearer, json=body)
        assert_envelope(response, 403, "forbidden")
    assert "connectors:admin" not in TOKEN_SCOPES


# --- deliveries: each tool's example becomes its issue --------------------------------------

@pytest.mark.parametrize("kind,name,headers,signer,expected", DELIVERIES, ids=IDS)
def test_a_signed_example_delivery_becomes_its_issue(client, owner, kind, name, headers, signer, expected):
    connector = create(client, owner, kind)
    response = deliver(client, connector, payload_of(name), headers, connector["secret"], signer)
    assert response.status_code == 202, response.get_json()
    receipt = response.get_json()
    assert receipt["status"] == "accepted" and receipt["reason"] is None and receipt["issue_ids"]
    issue = client.get(f"/v1/issues/{receipt['issue_ids'][0]}", headers=owner).get_json()
    assert {field: issue[field] for field in expected} == expected
    assert issue["status"] == "open"


@pytest.mark.parametrize("kind,name,headers,signer,expected", BODY_SIGNED,
                         ids=[delivery[1] for delivery in BODY_SIGNED])
def test_a_flipped_byte_is_refused_and_stores_nothing(app, client, owner, kind, name, headers, signer, expected):
    connector = create(client, owner, kind)
    raw = payload_of(name)
    signature = signer(connector["secret"], raw)
    tampered = bytearray(raw)
    tampered[len(tampered) // 2] ^= 0x01
    before = counts(app)
    response = client.post(connector["inbound_url"], data=bytes(tampered),
                           headers={"Content-Type": "application/json", **headers, **signature})
    assert_envelope(response, 401, "unauthorized")
    assert counts(app) == before


@pytest.mark.parametrize("kind,name,headers,signer,expected", DELIVERIES, ids=IDS)
def test_a_missing_signature_or_another_connectors_secret_is_refused(app, client, owner, kind, name, headers,
                                                                     signer, expected):
    connector, other = create(client, owner, kind), create(client, owner, kind, name="another")
    raw = payload_of(name)
    before = counts(app)
    unsigned = deliver(client, connector, raw, headers)
    wrong = deliver(client, connector, raw, headers, other["secret"], signer)
    for response in (unsigned, wrong):
        error = assert_envelope(response, 401, "unauthorized")
        assert connector["secret"] not in response.get_data(as_text=True) and "details" not in error
    assert unsigned.get_json()["error"]["message"] == wrong.get_json()["error"]["message"]
    assert counts(app) == before


@pytest.mark.parametrize("kind,name,sign", [
    ("custom_api", "custom_api_record",
     lambda secret, raw, stamp: {"x-causeloop-signature": custom_api.sign(secret, raw, stamp)}),
    ("alertmanager", "grafana_alerting_firing",
     lambda secret, raw, stamp: {"X-Grafana-Alerting-Timestamp": str(stamp),
                                 "X-Grafana-Alerting-Signature": hex_hmac(secret, f"{stamp}:".encode() + raw)}),
])
def test_a_stale_timestamped_signature_is_refused(app, client, owner, kind, name, sign):
    connector = create(client, owner, kind)
    raw = payload_of(name)
    before = counts(app)
    stale = client.post(connector["inbound_url"], data=raw, headers={
        "Content-Type": "application/json", **sign(connector["secret"], raw, int(time.time()) - 600)})
    assert_envelope(stale, 401, "unauthorized")
    assert counts(app) == before
    fresh = client.post(connector["inbound_url"], data=raw, headers={
        "Content-Type": "application/json", **sign(connector["secret"], raw, int(time.time()))})
    assert fresh.status_code == 202


def test_basic_auth_with_the_secret_as_password_is_accepted(client, owner):
    connector = create(client, owner, "datadog")
    basic = base64.b64encode(f"datadog:{connector['secret']}".encode()).decode()
    response = deliver(client, connector, payload_of("datadog_default_triggered"), {"Authorization": f"Basic {basic}"})
    assert response.status_code == 202


def test_a_redelivery_is_a_no_op_that_says_so(app, client, owner):
    connector = create(client, owner, "github")
    raw, headers = payload_of("github_issues_opened"), {"X-GitHub-Event": "issues", "X-GitHub-Delivery": "gh-7"}
    first = deliver(client, connector, raw, headers, connector["secret"], SIGNERS["github"])
    assert first.status_code == 202
    before = counts(app)
    again = deliver(client, connector, raw, headers, connector["secret"], SIGNERS["github"])
    assert again.status_code == 200
    assert again.get_json() == {"status": "duplicate", "reason": again.get_json()["reason"], "delivery_id": "gh-7",
                                "issue_ids": [], "resolved_issue_ids": []}
    assert "before" in again.get_json()["reason"]
    assert counts(app) == before


def test_the_same_failure_in_a_new_delivery_updates_its_issue(app, client, owner):
    connector = create(client, owner)
    sign = SIGNERS["custom_api"]
    first = deliver(client, connector, payload_of("custom_api_record"), {"Idempotency-Key": "a"},
                    connector["secret"], sign).get_json()
    changed = json.dumps({**CUSTOM_RECORD, "severity": "critical"}).encode()
    second = deliver(client, connector, changed, {"Idempotency-Key": "b"}, connector["secret"], sign).get_json()
    assert second["status"] == "accepted" and second["issue_ids"] == first["issue_ids"]
    assert client.get(f"/v1/issues/{first['issue_ids'][0]}", headers=owner).get_json()["severity"] == "critical"


def test_a_resolved_alertmanager_alert_resolves_its_issue(client, owner):
    connector = create(client, owner, "alertmanager")
    _, payload = fixture("alertmanager_v4_firing_and_resolved")
    firing = copy.deepcopy(payload)
    firing["alerts"][1]["status"] = "firing"
    auth_header = SIGNERS["alertmanager"]
    opened = deliver(client, connector, json.dumps(firing).encode(), secret=connector["secret"], signer=auth_header)
    issue_ids = opened.get_json()["issue_ids"]
    assert len(issue_ids) == 2
    resolved = deliver(client, connector, payload_of("alertmanager_v4_firing_and_resolved"),
                       secret=connector["secret"], signer=auth_header)
    assert resolved.status_code == 202
    assert resolved.get_json()["resolved_issue_ids"] == [issue_ids[1]]
    issues = [client.get(f"/v1/issues/{issue_id}", headers=owner).get_json() for issue_id in issue_ids]
    assert [issue["status"] for issue in issues] == ["open", "resolved"]
    assert issues[1]["external_id"] == "a1e5d3c27f90b864" and issues[1]["resolved_at"]


def test_a_resolve_touches_only_the_connectors_workspace(client, owner, auth):
    theirs = create(client, auth(workspace=OTHER_WORKSPACE), "alertmanager", "Theirs")
    _, payload = fixture("alertmanager_v4_firing_and_resolved")
    payload["alerts"][1]["status"] = "firing"
    opened = deliver(client, theirs, json.dumps(payload).encode(), secret=theirs["secret"],
                     signer=SIGNERS["alertmanager"]).get_json()
    mine = create(client, owner, "alertmanager")
    resolved = deliver(client, mine, payload_of("alertmanager_v4_firing_and_resolved"), secret=mine["secret"],
                       signer=SIGNERS["alertmanager"]).get_json()
    assert resolved["resolved_issue_ids"] == []
    their_issue = client.get(f"/v1/issues/{opened['issue_ids'][1]}", headers=auth(workspace=OTHER_WORKSPACE))
    assert their_issue.get_json()["status"] == "open"


def test_a_delivery_without_a_failure_is_ignored_with_a_reason(app, client, owner):
    connector = create(client, owner, "github")
    raw = payload_of("github_workflow_run_completed")  # a successful run
    before = counts(app)
    response = deliver(client, connector, raw, {"X-GitHub-Event": "workflow_run", "X-GitHub-Delivery": "gh-2"},
                       connector["secret"], SIGNERS["github"])
    assert response.status_code == 202
    receipt = response.get_json()
    assert receipt["status"] == "ignored" and "success" in receipt["reason"] and receipt["issue_ids"] == []
    assert counts(app) == before


# --- rotation -------------------------------------------------------------------------------

def test_after_rotation_the_old_secret_keeps_working_for_a_day_and_the_new_one_works(app, client, owner):
    connector = create(client, owner)
    rotated = client.post(f"/v1/connectors/{connector['id']}/rotate", headers=owner)
    assert rotated.status_code == 200
    new = rotated.get_json()
    assert new["secret"] != connector["secret"] and new["id"] == connector["id"]
    valid_until = datetime.datetime.fromisoformat(new["previous_secret_valid_until"].replace("Z", "+00:00"))
    assert abs((valid_until - datetime.datetime.now(datetime.UTC)) - datetime.timedelta(hours=24)) \
        < datetime.timedelta(minutes=1)
    sign = SIGNERS["custom_api"]
    for key, secret in (("old", connector["secret"]), ("new", new["secret"])):
        response = deliver(client, connector, payload_of("custom_api_record"), {"Idempotency-Key": key}, secret, sign)
        assert response.status_code == 202, key
    with app.app_context(), db.connection_context():
        Connector.update(previous_secret_expires_at=datetime.datetime(2000, 1, 1)).execute()
    expired = deliver(client, connector, payload_of("custom_api_record"), {"Idempotency-Key": "late"},
                      connector["secret"], sign)
    assert_envelope(expired, 401, "unauthorized")
    assert client.get(f"/v1/connectors/{connector['id']}", headers=owner).get_json()["previous_secret_valid_until"] \
        is None


def test_a_tools_own_secret_can_be_set_on_create_and_rotate(client, owner):
    """Sentry and PagerDuty mint the secret themselves: it is pasted into Causeloop instead."""
    connector = create(client, owner, "sentry", secret="sentry-client-secret-0123456789abcdef")
    assert connector["secret"] == "sentry-client-secret-0123456789abcdef"
    raw, headers = payload_of("sentry_event_alert_triggered"), {"Sentry-Hook-Resource": "event_alert"}
    assert deliver(client, connector, raw, headers, connector["secret"], SIGNERS["sentry"]).status_code == 202
    rotated = client.post(f"/v1/connectors/{connector['id']}/rotate", headers=owner,
                          json={"secret": "sentry-client-secret-rotated-000000"}).get_json()
    assert rotated["secret"] == "sentry-client-secret-rotated-000000"


# --- malformed deliveries -------------------------------------------------------------------

@pytest.mark.parametrize("raw", [b'{"title": "unterminated', b"[1, 2]", b'"text"', b'{"title": NaN}',
                                 b'{"title": "a\\u0000b"}', b"\xff\xfe"])
def test_a_signed_body_that_is_not_a_json_object_is_refused(app, client, owner, raw):
    connector = create(client, owner)
    before = counts(app)
    response = deliver(client, connector, raw, secret=connector["secret"], signer=SIGNERS["custom_api"])
    assert_envelope(response, 400, "validation_error")
    assert counts(app) == before


def test_a_body_over_the_limit_is_payload_too_large(app, client, owner):
    connector = create(client, owner)
    raw = json.dumps({"title": "x" * (1024 * 1024)}).encode()
    before = counts(app)
    response = deliver(client, connector, raw, secret=connector["secret"], signer=SIGNERS["custom_api"])
    assert_envelope(response, 413, "payload_too_large")
    assert counts(app) == before


def test_a_body_not_in_the_tools_shape_is_refused(app, client, owner):
    connector = create(client, owner, "sentry")
    raw = json.dumps({"action": "triggered", "data": {"event": {"title": "no issue id"}}}).encode()
    before = counts(app)
    response = deliver(client, connector, raw, {"Sentry-Hook-Resource": "event_alert"}, connector["secret"],
                       SIGNERS["sentry"])
    assert "sentry" in assert_envelope(response, 400, "validation_error")["message"]
    assert counts(app) == before


def test_a_refused_record_refuses_the_whole_delivery_which_can_then_be_fixed(app, client, owner):
    connector = create(client, owner)
    sign, key = SIGNERS["custom_api"], {"Idempotency-Key": "batch-1"}
    bad = json.dumps({"records": [{"title": "fine"}, {"title": "bad", "severity": "urgent"}]}).encode()
    before = counts(app)
    refused = deliver(client, connector, bad, key, connector["secret"], sign)
    error = assert_envelope(refused, 400, "validation_error")
    assert "records.1" in error["details"] and "severity" in error["message"]
    assert counts(app) == before
    fixed = json.dumps({"records": [{"title": "fine"}, {"title": "bad", "severity": "high"}]}).encode()
    accepted = deliver(client, connector, fixed, key, connector["secret"], sign)
    assert accepted.status_code == 202 and len(accepted.get_json()["issue_ids"]) == 2


def test_the_inbound_route_is_documented_without_bearer_security(client):
    operation = client.get("/openapi.json").get_json()["paths"]["/v1/webhooks/inbound/{connector_id}"]["post"]
    assert operation["security"] == []
    assert {"200", "202", "400", "401", "413", "429"} <= set(operation["responses"])
    assert "X-Hub-Signature-256" in operation["description"] and "x-causeloop-signature" in operation["description"]


def test_an_issue_from_a_delivery_is_an_ordinary_issue(app, client, owner):
    connector = create(client, owner, "pagerduty")
    raw = payload_of("pagerduty_incident_priority_updated")
    issue_id = deliver(client, connector, raw, secret=connector["secret"],
                       signer=SIGNERS["pagerduty"]).get_json()["issue_ids"][0]
    with app.app_context(), db.connection_context():
        issue = Issue.get_by_id(issue_id)
    assert issue.workspace_id == "ws_01abc123" and issue.detection


# --- under gunicorn -------------------------------------------------------------------------

LIVE_ALERTS = 5
LIVE_DELIVERIES = 200


def live_alert(number, payload):
    """Alert `number % LIVE_ALERTS` firing. Every other delivery of an alert is byte-identical
    (one delivery id: deduplicated by the delivery table); the rest each carry their own group
    key (a new delivery id: deduplicated by (source, external_id) in ingestion)."""
    alert = copy.deepcopy(payload["alerts"][0])
    which = number % LIVE_ALERTS
    alert["fingerprint"] = f"live{which:02d}"
    alert["labels"] = {**alert["labels"], "alertname": f"LiveAlert{which}", "instance": f"live-{which}"}
    group_key = "{}:{alertname=\"live\"}" if number % 2 else f"{{}}:{{delivery=\"{number}\"}}"
    return json.dumps({**payload, "groupKey": group_key, "alerts": [alert]}).encode()


@pytest.mark.live
def test_concurrent_signed_deliveries_under_gunicorn_create_each_alert_once(tmp_path):
    import concurrent.futures

    import requests

    from test_server import mock_server

    _, payload = fixture("alertmanager_v4_firing_and_resolved")
    with mock_server(tmp_path, WEB_CONCURRENCY="2") as (base, headers, _):
        connector = requests.post(base + "/v1/connectors", headers=headers, timeout=10, json={
            "type": "alertmanager", "display_name": f"Live {time.time_ns()}"}).json()
        bearer = {"Authorization": f"Bearer {connector['secret']}", "Content-Type": "application/json"}

        def send(number):
            return requests.post(connector["inbound_url"], data=live_alert(number, payload), headers=bearer,
                                 timeout=60)

        with concurrent.futures.ThreadPoolExecutor(max_workers=32) as pool:
            responses = list(pool.map(send, range(LIVE_DELIVERIES)))
        statuses = [response.status_code for response in responses]
        assert set(statuses) <= {200, 202}, [response.text for response in responses if response.status_code
                                             not in (200, 202)][:3]
        issue_ids = {issue_id for response in responses for issue_id in response.json()["issue_ids"]}
        listed = requests.get(base + "/v1/issues", headers=headers, timeout=10,
                              params={"source": "alertmanager", "limit": 100}).json()["data"]
    assert sorted(issue["external_id"] for issue in listed) == [f"live{n:02d}" for n in range(LIVE_ALERTS)]
    assert issue_ids == {issue["id"] for issue in listed}
    assert statuses.count(200) > 0  # some byte-identical redeliveries were answered as duplicates


def test_a_delivery_chosen_as_a_deadlock_victim_is_stored_on_a_retry(app, client, owner, monkeypatch):
    """PostgreSQL may roll back one of two concurrent deliveries (40P01); it is run again whole."""
    import peewee as pw

    import models.connectors

    real, calls = models.connectors.ingest, []

    def deadlock_once(workspace_id, records):
        calls.append(workspace_id)
        if len(calls) == 1:
            models.connectors.InboundDelivery.select().count()  # inside the transaction that rolls back
            raise pw.OperationalError("deadlock detected")
        return real(workspace_id, records)

    monkeypatch.setattr(models.connectors, "ingest", deadlock_once)
    connector = create(client, owner)
    response = deliver(client, connector, payload_of("custom_api_record"), {"Idempotency-Key": "once"},
                       connector["secret"], SIGNERS["custom_api"])
    assert response.status_code == 202 and len(calls) == 2
    with app.app_context(), db.connection_context():
        assert models.connectors.InboundDelivery.select().count() == 1


def test_deliveries_spend_the_rate_budget(make_app):
    client = make_app(RATE_LIMIT="3/minute").test_client()
    statuses = [client.post("/v1/webhooks/inbound/con_01zzz999", data=b"{}",
                            headers={"Content-Type": "application/json"}).status_code for _ in range(4)]
    assert statuses == [401, 401, 401, 429]
