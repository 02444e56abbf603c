"""Inbound webhook parsers and signature checks (app/inbound/): each tool's documented example
payload (tests/fixtures/webhooks/) parses to ingest records, and verifies only when signed as
that tool signs. Pure functions: no app, no database."""
import base64
import copy
import hashlib
import hmac
import json
import pathlib
import time

import pytest

from app.inbound import PARSERS, alertmanager, custom_api, datadog, github, jira, pagerduty, sentry
from blueprints.ingest import RecordSchema

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "webhooks"
SECRET, OLD_SECRET, WRONG_SECRET = "whsec-new-0123456789", "whsec-old-9876543210", "not-the-secret"


def fixture(name):
    raw = (FIXTURES / f"{name}.json").read_bytes()
    return raw, json.loads(raw)


def hex_hmac(secret, message):
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


# How each type's sender proves itself, given a secret and the raw body.
SIGNERS = {
    "sentry": lambda secret, body: {"Sentry-Hook-Signature": hex_hmac(secret, body)},
    "pagerduty": lambda secret, body: {"X-PagerDuty-Signature": "v1=" + hex_hmac(secret, body)},
    "github": lambda secret, body: {"X-Hub-Signature-256": "sha256=" + hex_hmac(secret, body)},
    "jira": lambda secret, body: {"X-Hub-Signature": "sha256=" + hex_hmac(secret, body)},
    "alertmanager": lambda secret, body: {"Authorization": f"Bearer {secret}"},
    "datadog": lambda secret, body: {"Authorization": f"Bearer {secret}"},
    "custom_api": lambda secret, body: {"x-causeloop-signature": custom_api.sign(secret, body, int(time.time()))},
}
SIGNING_TYPES = ["sentry", "pagerduty", "github", "jira", "custom_api"]  # these sign the body itself

# (type, fixture, headers that come with it)
DELIVERIES = [
    ("sentry", "sentry_event_alert_triggered", {"Sentry-Hook-Resource": "event_alert", "Request-ID": "req-1"}),
    ("sentry", "sentry_issue_created", {"Sentry-Hook-Resource": "issue", "Request-ID": "req-2"}),
    ("pagerduty", "pagerduty_incident_priority_updated", {}),
    ("github", "github_issues_opened", {"X-GitHub-Event": "issues", "X-GitHub-Delivery": "gh-1"}),
    ("github", "github_workflow_run_completed", {"X-GitHub-Event": "workflow_run", "X-GitHub-Delivery": "gh-2"}),
    ("github", "github_check_run_completed", {"X-GitHub-Event": "check_run", "X-GitHub-Delivery": "gh-3"}),
    ("alertmanager", "alertmanager_v4_firing_and_resolved", {}),
    ("alertmanager", "grafana_alerting_firing", {}),
    ("datadog", "datadog_default_triggered", {}),
    ("jira", "jira_issue_updated", {"X-Atlassian-Webhook-Identifier": "jira-1"}),
]


def only_record(parsed):
    assert parsed.ignored is None
    assert len(parsed.records) == 1
    return parsed.records[0]


# --- the registry and the record shape -----------------------------------------------------

def test_registry_names_one_module_per_type_each_with_parse_and_verify():
    assert set(PARSERS) == {"sentry", "pagerduty", "github", "alertmanager", "datadog", "jira", "custom_api"}
    assert all(callable(module.parse) and callable(module.verify) for module in PARSERS.values())


@pytest.mark.parametrize("kind,name,headers", DELIVERIES, ids=[name for _, name, _ in DELIVERIES])
def test_every_parsed_record_is_a_valid_ingest_record(kind, name, headers):
    parsed = PARSERS[kind].parse(headers, fixture(name)[1])
    for item in parsed.records:
        RecordSchema().load(item)


def test_a_long_title_is_cut_to_the_schema_limit():
    _, payload = fixture("sentry_issue_created")
    payload["data"]["issue"]["title"] = "ReferenceError: " + "x" * 400
    item = only_record(sentry.parse({"Sentry-Hook-Resource": "issue"}, payload))
    assert len(item["title"]) == 300 and item["title"].endswith("…")
    RecordSchema().load(item)


# --- signatures, for every type ------------------------------------------------------------

@pytest.mark.parametrize("kind", sorted(SIGNERS))
def test_signed_with_the_secret_verifies(kind):
    body = b'{"example": "body"}'
    assert PARSERS[kind].verify(SIGNERS[kind](SECRET, body), body, [SECRET])


@pytest.mark.parametrize("kind", sorted(SIGNERS))
def test_signed_with_a_wrong_secret_does_not_verify(kind):
    body = b'{"example": "body"}'
    assert not PARSERS[kind].verify(SIGNERS[kind](WRONG_SECRET, body), body, [SECRET])


@pytest.mark.parametrize("kind", sorted(SIGNERS))
def test_a_missing_signature_does_not_verify(kind):
    assert not PARSERS[kind].verify({}, b'{"example": "body"}', [SECRET])


@pytest.mark.parametrize("kind", sorted(SIGNERS))
def test_no_secret_configured_verifies_nothing(kind):
    body = b'{"example": "body"}'
    assert not PARSERS[kind].verify(SIGNERS[kind]("", body), body, [])
    assert not PARSERS[kind].verify(SIGNERS[kind]("", body), body, [""])


@pytest.mark.parametrize("kind", sorted(SIGNERS))
def test_during_rotation_the_old_and_the_new_secret_both_verify(kind):
    body = b'{"example": "body"}'
    assert PARSERS[kind].verify(SIGNERS[kind](OLD_SECRET, body), body, [SECRET, OLD_SECRET])
    assert PARSERS[kind].verify(SIGNERS[kind](SECRET, body), body, [SECRET, OLD_SECRET])


@pytest.mark.parametrize("kind", SIGNING_TYPES)
def test_a_flipped_byte_in_the_body_does_not_verify(kind):
    body, _ = fixture({"sentry": "sentry_issue_created", "pagerduty": "pagerduty_incident_priority_updated",
                       "github": "github_issues_opened", "jira": "jira_issue_updated",
                       "custom_api": "alertmanager_v4_firing_and_resolved"}[kind])
    headers = SIGNERS[kind](SECRET, body)
    assert PARSERS[kind].verify(headers, body, [SECRET])
    tampered = bytearray(body)
    tampered[len(tampered) // 2] ^= 0x01
    assert not PARSERS[kind].verify(headers, bytes(tampered), [SECRET])


def test_headers_are_found_whatever_their_case():
    body = b"{}"
    assert github.verify({"x-hub-signature-256": "sha256=" + hex_hmac(SECRET, body)}, body, [SECRET])


def test_pagerduty_verifies_when_any_of_its_signatures_matches():
    body, _ = fixture("pagerduty_incident_priority_updated")
    header = f"v1={hex_hmac(WRONG_SECRET, body)},v1={hex_hmac(SECRET, body)}"
    assert pagerduty.verify({"X-PagerDuty-Signature": header}, body, [SECRET])
    assert not pagerduty.verify({"X-PagerDuty-Signature": "v0=" + hex_hmac(SECRET, body)}, body, [SECRET])


def test_custom_api_refuses_a_stale_or_future_timestamp():
    body = b'{"title": "Disk full"}'
    for skew in (-301, 301):
        header = custom_api.sign(SECRET, body, int(time.time()) + skew)
        assert not custom_api.verify({"x-causeloop-signature": header}, body, [SECRET])
    assert custom_api.verify({"x-causeloop-signature": custom_api.sign(SECRET, body, int(time.time()) - 200)},
                             body, [SECRET])


def test_custom_api_signature_covers_the_timestamp():
    body, now = b'{"title": "Disk full"}', int(time.time())
    signature = custom_api.sign(SECRET, body, now - 1000).partition(",")[2]
    assert not custom_api.verify({"x-causeloop-signature": f"t={now},{signature}"}, body, [SECRET])


def test_custom_api_signature_format_is_t_and_v1_over_t_dot_body():
    body, now = b'{"title": "Disk full"}', int(time.time())
    header = f"t={now},v1={hex_hmac(SECRET, f'{now}.'.encode() + body)}"
    assert custom_api.verify({"x-causeloop-signature": header}, body, [SECRET])


def test_alertmanager_and_datadog_accept_the_secret_as_basic_auth_password():
    basic = "Basic " + base64.b64encode(f"causeloop:{SECRET}".encode()).decode()
    wrong = "Basic " + base64.b64encode(f"{SECRET}:wrong".encode()).decode()
    for module in (alertmanager, datadog):
        assert module.verify({"Authorization": basic}, b"{}", [SECRET])
        assert not module.verify({"Authorization": wrong}, b"{}", [SECRET])
        assert not module.verify({"Authorization": "Basic not-base64!"}, b"{}", [SECRET])
        assert not module.verify({"Authorization": SECRET}, b"{}", [SECRET])


def test_grafana_signature_over_the_body_verifies():
    body, _ = fixture("grafana_alerting_firing")
    headers = {"X-Grafana-Alerting-Signature": hex_hmac(SECRET, body)}
    assert alertmanager.verify(headers, body, [OLD_SECRET, SECRET])
    assert not alertmanager.verify(headers, body.replace(b"firing", b"resolved", 1), [SECRET])
    assert not alertmanager.verify({"X-Grafana-Alerting-Signature": hex_hmac(WRONG_SECRET, body)}, body, [SECRET])


def test_grafana_signature_with_a_timestamp_covers_it_and_goes_stale():
    body, _ = fixture("grafana_alerting_firing")
    now = str(int(time.time()))
    headers = {"X-Grafana-Alerting-Signature": hex_hmac(SECRET, f"{now}:".encode() + body),
               "X-Grafana-Alerting-Timestamp": now}
    assert alertmanager.verify(headers, body, [SECRET])
    assert not alertmanager.verify({**headers, "X-Grafana-Alerting-Timestamp": str(int(now) - 1)}, body, [SECRET])
    stale = str(int(now) - 600)
    assert not alertmanager.verify({"X-Grafana-Alerting-Signature": hex_hmac(SECRET, f"{stale}:".encode() + body),
                                    "X-Grafana-Alerting-Timestamp": stale}, body, [SECRET])


# --- Sentry ---------------------------------------------------------------------------------

def test_sentry_issue_alert_is_a_record_keyed_by_the_sentry_issue():
    _, payload = fixture("sentry_event_alert_triggered")
    parsed = sentry.parse({"Sentry-Hook-Resource": "event_alert", "Request-ID": "req-1"}, payload)
    item = only_record(parsed)
    assert parsed.delivery_id == "req-1"
    assert item["source"] == "sentry" and item["external_id"] == "1117540176"
    assert item["title"] == "ReferenceError: heck is not defined"
    assert item["severity"] == "high"  # level error
    assert item["external_url"] == ("https://sentry.io/organizations/test-org/issues/1117540176/events/"
                                    "e4874d664c3540c1a32eab185f12c5ab/")
    assert item["source_created_at"] == "2019-08-19T21:06:17Z"
    assert item["metadata"]["rule"] == "Very Important Alert Rule!"


def test_sentry_issue_created_is_a_record_with_its_project_as_team():
    _, payload = fixture("sentry_issue_created")
    item = only_record(sentry.parse({"Sentry-Hook-Resource": "issue"}, payload))
    assert item["external_id"] == "1170820242"
    assert item["title"] == "ReferenceError: blooopy is not defined"
    assert item["team"] == "front-end"
    assert item["source_created_at"] == "2019-08-19T20:58:37Z"
    assert "blooopy is not defined" in item["body"]


def test_sentry_issue_resolved_resolves_it():
    _, payload = fixture("sentry_issue_created")
    payload["action"] = "resolved"
    parsed = sentry.parse({"Sentry-Hook-Resource": "issue"}, payload)
    assert parsed.records == [] and parsed.resolved_external_ids == ["1170820242"]


def test_sentry_issue_assigned_is_ignored_with_a_reason():
    _, payload = fixture("sentry_issue_created")
    payload["action"] = "assigned"
    parsed = sentry.parse({"Sentry-Hook-Resource": "issue", "Request-ID": "req-3"}, payload)
    assert parsed.records == [] and "assigned" in parsed.ignored and parsed.delivery_id == "req-3"


# --- PagerDuty ------------------------------------------------------------------------------

def test_pagerduty_incident_is_a_record_with_priority_severity_and_team():
    _, payload = fixture("pagerduty_incident_priority_updated")
    parsed = pagerduty.parse({}, payload)
    item = only_record(parsed)
    assert parsed.delivery_id == "5ac64822-4adc-4fda-ade0-410becf0de4f"
    assert item["source"] == "pagerduty" and item["external_id"] == "PGR0VU2"
    assert item["title"] == "A little bump in the road"
    assert item["severity"] == "critical"  # P1
    assert item["external_url"] == "https://acme.pagerduty.com/incidents/PGR0VU2"
    assert item["team"] == "Engineering"
    assert item["source_created_at"] == "2020-04-09T15:16:27Z"
    assert item["metadata"]["service"] == "API Service" and item["metadata"]["escalation_policy"] == "Default"


def test_pagerduty_triggered_without_priority_takes_severity_from_urgency():
    _, payload = fixture("pagerduty_incident_priority_updated")
    payload["event"]["event_type"] = "incident.triggered"
    payload["event"]["data"]["priority"] = None
    assert only_record(pagerduty.parse({}, payload))["severity"] == "high"


def test_pagerduty_resolved_resolves_the_incident():
    _, payload = fixture("pagerduty_incident_priority_updated")
    payload["event"]["event_type"] = "incident.resolved"
    payload["event"]["data"]["status"] = "resolved"
    parsed = pagerduty.parse({}, payload)
    assert parsed.records == [] and parsed.resolved_external_ids == ["PGR0VU2"]


def test_pagerduty_note_is_ignored_with_a_reason():
    _, payload = fixture("pagerduty_incident_priority_updated")
    payload["event"]["event_type"] = "incident.annotated"
    payload["event"]["data"] = {  # the docs' incident_note data type
        "incident": {"html_url": "https://acme.pagerduty.com/incidents/PGR0VU2", "id": "PGR0VU2",
                     "self": "https://api.pagerduty.com/incidents/PGR0VU2",
                     "summary": "A little bump in the road", "type": "incident_reference"},
        "id": "P2LA89X", "content": "I sure am glad we are using PagerDuty!", "trimmed": False,
        "type": "incident_note"}
    parsed = pagerduty.parse({}, payload)
    assert parsed.records == [] and "incident_note" in parsed.ignored
    assert parsed.delivery_id == "5ac64822-4adc-4fda-ade0-410becf0de4f"


# --- GitHub ---------------------------------------------------------------------------------

def test_github_successful_workflow_run_is_ignored_with_a_reason():
    _, payload = fixture("github_workflow_run_completed")
    parsed = github.parse({"X-GitHub-Event": "workflow_run", "X-GitHub-Delivery": "gh-2"}, payload)
    assert parsed.records == [] and "success" in parsed.ignored and parsed.delivery_id == "gh-2"


@pytest.mark.parametrize("conclusion,verb", [("failure", "failed"), ("timed_out", "timed out")])
def test_github_failed_workflow_run_is_a_record(conclusion, verb):
    _, payload = fixture("github_workflow_run_completed")
    payload["workflow_run"]["conclusion"] = conclusion
    item = only_record(github.parse({"X-GitHub-Event": "workflow_run"}, payload))
    assert item["source"] == "github" and item["external_id"] == "workflow_run/289782451"
    assert item["title"] == f"test {verb} on master (octo-org/octo-repo)"  # the workflow's name
    assert item["severity"] == "high"  # on the default branch
    assert item["external_url"] == "https://github.com/octo-org/octo-repo/actions/runs/289782451"
    assert item["team"] == "octo-org/octo-repo"
    assert item["metadata"]["conclusion"] == conclusion


def test_github_failure_off_the_default_branch_is_medium():
    _, payload = fixture("github_workflow_run_completed")
    payload["workflow_run"].update(conclusion="failure", head_branch="feature/x")
    assert only_record(github.parse({"X-GitHub-Event": "workflow_run"}, payload))["severity"] == "medium"


def test_github_failed_check_run_is_a_record_and_a_successful_one_is_ignored():
    _, payload = fixture("github_check_run_completed")
    assert "success" in github.parse({"X-GitHub-Event": "check_run"}, payload).ignored
    payload["check_run"]["conclusion"] = "failure"
    item = only_record(github.parse({"X-GitHub-Event": "check_run"}, payload))
    assert item["external_id"] == "check_run/128620228"
    assert item["title"].startswith("Octocoders-linter failed")
    assert item["external_url"] == "https://github.com/Codertocat/Hello-World/runs/128620228"
    assert item["source_created_at"] == "2019-05-15T15:21:12Z"


def test_github_issue_labelled_bug_is_a_record():
    _, payload = fixture("github_issues_opened")
    parsed = github.parse({"X-GitHub-Event": "issues", "X-GitHub-Delivery": "gh-1"}, payload)
    item = only_record(parsed)
    assert parsed.delivery_id == "gh-1"
    assert item["external_id"] == "Codertocat/Hello-World#1"
    assert item["title"] == "Spelling error in the README file"
    assert item["external_url"] == "https://github.com/Codertocat/Hello-World/issues/1"
    assert item["team"] == "Codertocat/Hello-World"
    assert item["source_created_at"] == "2019-05-15T15:20:18Z"


def test_github_issue_without_a_bug_label_is_ignored_and_a_closed_bug_resolves():
    _, payload = fixture("github_issues_opened")
    closed = copy.deepcopy(payload)
    closed["action"] = "closed"
    assert github.parse({"X-GitHub-Event": "issues"}, closed).resolved_external_ids == ["Codertocat/Hello-World#1"]
    payload["issue"]["labels"] = []
    assert "bug" in github.parse({"X-GitHub-Event": "issues"}, payload).ignored


def test_github_ping_is_ignored_with_a_reason():
    parsed = github.parse({"X-GitHub-Event": "ping", "X-GitHub-Delivery": "gh-9"}, {"zen": "Keep it simple."})
    assert parsed.records == [] and parsed.ignored and parsed.delivery_id == "gh-9"


# --- Alertmanager and Grafana ---------------------------------------------------------------

def test_alertmanager_each_firing_alert_is_a_record_and_a_resolved_one_resolves():
    _, payload = fixture("alertmanager_v4_firing_and_resolved")
    parsed = alertmanager.parse({}, payload)
    item = only_record(parsed)
    assert item["source"] == "alertmanager" and item["external_id"] == "5b0b9c0c1f2e4a7d"
    assert item["title"] == "CheckoutErrorRate: Checkout error rate above 5%"
    assert item["body"] == "checkout-1 returned 5xx for 7.2% of requests over 5m"
    assert item["severity"] == "critical"
    assert item["team"] == "payments"
    assert item["source_created_at"] == "2026-11-30T10:15:00Z"
    assert item["external_url"].startswith("http://prometheus.example.com:9090/graph")
    assert parsed.resolved_external_ids == ["a1e5d3c27f90b864"]


def test_alertmanager_delivery_id_is_stable_for_a_repeat_and_changes_with_the_alerts():
    _, payload = fixture("alertmanager_v4_firing_and_resolved")
    first = alertmanager.parse({}, payload).delivery_id
    assert first and alertmanager.parse({}, copy.deepcopy(payload)).delivery_id == first
    payload["alerts"][0]["status"] = "resolved"
    assert alertmanager.parse({}, payload).delivery_id != first


def test_grafana_alerts_are_records_keyed_by_fingerprint_with_team_label():
    _, payload = fixture("grafana_alerting_firing")
    parsed = alertmanager.parse({}, payload)
    assert [item["external_id"] for item in parsed.records] == ["c6eadffa33fcdf37", "bc97ff14869b13e3"]
    first = parsed.records[0]
    assert first["source"] == "grafana"
    assert first["title"] == "High memory usage: This alert was triggered for zone us-1"
    assert first["team"] == "blue"
    assert first["source_created_at"] == "2021-10-12T07:51:03Z"  # +02:00 in the payload
    assert first["external_url"] == "https://play.grafana.org/alerting/1afz29v7z/edit"
    assert parsed.resolved_external_ids == []


def test_alertmanager_notification_without_alerts_is_ignored_with_a_reason():
    _, payload = fixture("alertmanager_v4_firing_and_resolved")
    payload["alerts"] = []
    parsed = alertmanager.parse({}, payload)
    assert parsed.records == [] and parsed.ignored


# --- Datadog --------------------------------------------------------------------------------

def test_datadog_triggered_alert_is_a_record():
    _, payload = fixture("datadog_default_triggered")
    parsed = datadog.parse({}, payload)
    item = only_record(parsed)
    assert parsed.delivery_id == "7224413542542651373"  # $ID
    assert item["source"] == "datadog" and item["external_id"] == "7224413542542651373"  # $ALERT_CYCLE_KEY
    assert item["title"] == "[Memory Alert]"  # the transition prefix is not part of the name
    assert item["severity"] == "critical"  # P1
    assert item["external_url"] == "https://app.datadoghq.com/event/event?id=7224413542542651373"
    assert item["team"] == "platform"
    assert item["source_created_at"] == "2014-07-29T19:37:52Z"
    assert item["metadata"]["monitor_id"] == "1234"


def test_datadog_default_payload_alone_reads_the_transition_from_the_title():
    _, payload = fixture("datadog_default_triggered")
    default_only = {key: payload[key] for key in ("body", "last_updated", "event_type", "title", "date", "org", "id")}
    item = only_record(datadog.parse({}, default_only))
    assert item["external_id"] == "7224413542542651373" and item["severity"] == "high"
    default_only["title"] = "[Recovered] [Memory Alert]"
    assert datadog.parse({}, default_only).resolved_external_ids == ["7224413542542651373"]


def test_datadog_alert_title_scope_is_not_part_of_the_transition():
    _, payload = fixture("datadog_default_triggered")
    del payload["alert_transition"]
    payload["title"] = "[Recovered on {host:ip-012345}] Host is Down"
    assert datadog.parse({}, payload).resolved_external_ids == ["7224413542542651373"]
    payload["title"] = "[Triggered on {host:ip-012345}] Host is Down"
    assert only_record(datadog.parse({}, payload))["title"] == "Host is Down"


def test_datadog_recovered_resolves_and_no_data_is_ignored():
    _, payload = fixture("datadog_default_triggered")
    payload["alert_transition"] = "Recovered"
    assert datadog.parse({}, payload).resolved_external_ids == ["7224413542542651373"]
    payload["alert_transition"] = "No Data"
    parsed = datadog.parse({}, payload)
    assert parsed.records == [] and "No Data" in parsed.ignored


# --- Jira -----------------------------------------------------------------------------------

def test_jira_issue_event_is_a_record_with_project_as_team():
    _, payload = fixture("jira_issue_updated")
    parsed = jira.parse({"X-Atlassian-Webhook-Identifier": "jira-1"}, payload)
    item = only_record(parsed)
    assert parsed.delivery_id == "jira-1"
    assert item["source"] == "jira" and item["external_id"] == "JRA-20002"
    assert item["title"] == "I feel the need for speed"
    assert item["body"] == "Make the issue nav load 10x faster"
    assert item["severity"] == "low"  # Minor
    assert item["external_url"] == "https://jira.atlassian.com/browse/JRA-20002"
    assert item["team"] == "JRA"
    assert item["source_created_at"] == "2009-12-17T05:46:10Z"  # -0600 in the payload


def test_jira_cloud_objects_for_priority_and_project_are_read():
    _, payload = fixture("jira_issue_updated")
    payload["webhookEvent"] = "jira:issue_created"
    payload["issue"]["fields"].update(priority={"name": "Highest"}, project={"key": "PAY"})
    item = only_record(jira.parse({}, payload))
    assert item["severity"] == "critical" and item["team"] == "PAY"


def test_jira_resolved_issue_resolves_and_a_comment_event_is_ignored():
    _, payload = fixture("jira_issue_updated")
    resolved = copy.deepcopy(payload)
    resolved["issue"]["fields"]["resolution"] = {"name": "Fixed"}
    assert jira.parse({}, resolved).resolved_external_ids == ["JRA-20002"]
    payload["webhookEvent"] = "comment_created"
    parsed = jira.parse({}, payload)
    assert parsed.records == [] and "comment_created" in parsed.ignored


# --- custom_api -----------------------------------------------------------------------------

def test_custom_api_takes_one_record_or_a_batch_as_sent():
    one = custom_api.parse({"Idempotency-Key": "k-1"}, {"title": "Disk full", "severity": "high"})
    assert one.records == [{"source": "custom_api", "title": "Disk full", "severity": "high"}]
    assert one.delivery_id == "k-1"
    batch = custom_api.parse({}, {"records": [{"source": "cron", "external_id": "j-1", "title": "Backup failed"}],
                                  "resolved_external_ids": ["j-0"]})
    assert batch.records == [{"source": "cron", "external_id": "j-1", "title": "Backup failed"}]
    assert batch.resolved_external_ids == ["j-0"]
    for item in one.records + batch.records:
        RecordSchema().load(item)


def test_custom_api_empty_batch_is_ignored_with_a_reason():
    parsed = custom_api.parse({}, {"records": []})
    assert parsed.records == [] and parsed.ignored
