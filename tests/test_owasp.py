"""The OWASP API Security Top 10 (2023), as it applies to this service, one behaviour per test.

Every probe is refused with the right status, in the error envelope, and leaves the database
exactly as it was. Routes are enumerated from the OpenAPI document, so a new route that is not
probed fails here rather than slipping by.

Not probed here, and why: API6 (sensitive business flows) — the API has no purchase-like flow
to automate; API7 (SSRF) — the one client-supplied URL the service requests is a webhook's,
whose checks (https, public addresses only, at registration and at every send) are
tests/test_webhooks.py's (`external_url` is stored and returned, never requested); API9
(inventory) — tests/test_openapi.py proves every served route is documented and
tests/test_schemathesis.py that the document is accurate; API10 (unsafe consumption) — the
upstreams are Clerk, whose tokens tests/test_auth.py covers, and webhook receivers, of whose
answers only the status and a bounded Retry-After are read.
"""
import contextlib
import datetime
import json
import re
import time
import urllib.parse

import peewee as pw
import pytest

from conftest import (MY_ACCOUNT, MY_ALERT_RULE, MY_CONNECTOR, MY_DELIVERY, MY_INVITATION, MY_MEMBER,
                      MY_NOTIFICATION, MY_PREDICTION, MY_RULE, MY_TOKEN, MY_WEBHOOK, OTHER_WORKSPACE, SEED_WORKSPACE,
                      TEST_SECRET, THEIR_ACCOUNT, THEIR_ALERT_RULE, THEIR_CONNECTOR, THEIR_DELIVERY,
                      THEIR_INVITATION, THEIR_MEMBER, THEIR_NOTIFICATION, THEIR_PREDICTION, THEIR_RULE, THEIR_TOKEN,
                      THEIR_WEBHOOK)
from models import MODELS, AuditEntry, AuthSession, Issue, Membership, Pattern, RefreshToken, db
from test_errors import assert_envelope

MY_ISSUE, MY_PATTERN = "iss_01abc123", "pat_01xyz789"
THEIR_ISSUE, THEIR_PATTERN = "iss_02def100", "pat_02pqr111"
THEIR_ISSUES = [f"iss_02def{n}" for n in range(100, 112)]
ONE_MIB = 1024 * 1024
WRITTEN_BY_AN_UPDATE = ("Issue", "Event", "EventCounter")  # the row, and its outbox event


def rows(app, models=MODELS):
    """Every row of every table, in key order: the database as a comparable value."""
    with app.app_context(), db.connection_context():
        return {model.__name__: list(model.select().order_by(*key_of(model)).tuples()) for model in models}


def key_of(model):
    key = model._meta.primary_key
    return [model._meta.fields[name] for name in key.field_names] if isinstance(key, pw.CompositeKey) else [key]


@contextlib.contextmanager
def database_unchanged(app, models=MODELS):
    before = rows(app, models)
    yield
    after = rows(app, models)
    assert after == before, [name for name in before if after[name] != before[name]]


def spec_operations(client):
    spec = client.get("/openapi.json").get_json()
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in ("get", "post", "patch", "put", "delete"):
                yield method, path, operation


def concrete(path, issue_id=MY_ISSUE, pattern_id=MY_PATTERN, rule_id=MY_RULE, token_id=MY_TOKEN,
             account_id=MY_ACCOUNT, connector_id=MY_CONNECTOR, webhook_id=MY_WEBHOOK, delivery_id=MY_DELIVERY,
             member_id=MY_MEMBER, invitation_id=MY_INVITATION, prediction_id=MY_PREDICTION,
             alert_rule_id=MY_ALERT_RULE, notification_id=MY_NOTIFICATION):
    return (path.replace("{issue_id}", issue_id).replace("{pattern_id}", pattern_id).replace("{rule_id}", rule_id)
            .replace("{token_id}", token_id).replace("{account_id}", account_id)
            .replace("{connector_id}", connector_id).replace("{webhook_id}", webhook_id)
            .replace("{delivery_id}", delivery_id).replace("{member_id}", member_id)
            .replace("{invitation_id}", invitation_id).replace("{prediction_id}", prediction_id)
            .replace("{alert_rule_id}", alert_rule_id).replace("{notification_id}", notification_id))


def send(client, method, path, headers, body=None):
    return client.open(path, method=method.upper(), headers=headers, json=body)


# A well-formed request for every write operation: a refusal is then about who asks,
# never about what was sent.
VALID_BODIES = {
    ("post", "/v1/issues"): {"title": "Probe"},
    ("patch", "/v1/issues/{issue_id}"): {"title": "Probe"},
    ("post", "/v1/issues/{issue_id}/close"): None,
    ("post", "/v1/issues/bulk"): {"ids": [MY_ISSUE], "op": "set_status", "value": "closed"},
    ("post", "/v1/patterns"): {"name": "Probe"},
    ("patch", "/v1/patterns/{pattern_id}"): {"name": "Probe"},
    ("post", "/v1/ingest/events"): {"title": "Probe"},
    ("post", "/v1/ingest/batch"): {"records": [{"title": "Probe"}]},
    ("post", "/v1/grouping-rules"): {"conditions": {"source": "probe"}, "action": {"pattern_id": MY_PATTERN}},
    ("patch", "/v1/grouping-rules/{rule_id}"): {"enabled": False},
    ("delete", "/v1/grouping-rules/{rule_id}"): None,
    ("post", "/v1/issues/{issue_id}/reanalyze"): None,
    ("post", "/v1/patterns/{pattern_id}/merge"): {"source_pattern_ids": ["pat_01xyz791"]},
    ("post", "/v1/patterns/{pattern_id}/split"): {"issue_ids": [MY_ISSUE]},
    ("get", "/v1/service-accounts"): None,
    ("post", "/v1/service-accounts"): {"name": "Probe"},
    ("get", "/v1/service-accounts/{account_id}"): None,
    ("patch", "/v1/service-accounts/{account_id}"): {"description": "Probe"},
    ("delete", "/v1/service-accounts/{account_id}"): None,
    ("post", "/v1/service-accounts/{account_id}/tokens"): {"name": "Probe", "scopes": ["issues:read"],
                                                           "expires_in_days": 1},
    ("delete", "/v1/service-accounts/{account_id}/tokens/{token_id}"): None,
    ("get", "/v1/connectors"): None,
    ("post", "/v1/connectors"): {"type": "github", "display_name": "Probe"},
    ("get", "/v1/connectors/{connector_id}"): None,
    ("patch", "/v1/connectors/{connector_id}"): {"enabled": False},
    ("delete", "/v1/connectors/{connector_id}"): None,
    ("post", "/v1/connectors/{connector_id}/rotate"): None,
    ("get", "/v1/webhooks"): None,
    ("post", "/v1/webhooks"): {"url": "https://93.184.215.14/probe", "events": ["*"]},
    ("get", "/v1/webhooks/{webhook_id}"): None,
    ("patch", "/v1/webhooks/{webhook_id}"): {"description": "Probe"},
    ("delete", "/v1/webhooks/{webhook_id}"): None,
    ("post", "/v1/webhooks/{webhook_id}/rotate"): None,
    ("post", "/v1/webhooks/{webhook_id}/test"): None,
    ("get", "/v1/webhooks/{webhook_id}/deliveries"): None,
    ("post", "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"): None,
    ("patch", "/v1/members/{member_id}"): {"role": "viewer"},
    ("delete", "/v1/members/{member_id}"): None,
    ("get", "/v1/invitations"): None,
    ("post", "/v1/invitations"): {"email": "probe@example.test", "role": "viewer"},
    ("delete", "/v1/invitations/{invitation_id}"): None,
    ("post", "/v1/invitations/{invitation_id}/resend"): None,
    ("patch", "/v1/settings/data-retention"): {"issues_days": 30},
    ("post", "/v1/predictions/{prediction_id}/feedback"): {"status": "dismissed", "reason": "Probe"},
    ("post", "/v1/alert-rules"): {"name": "Probe", "threshold": {"probability": 0.7, "window_days": 7},
                                  "channels": [{"type": "in_app"}]},
    ("patch", "/v1/alert-rules/{alert_rule_id}"): {"enabled": True},
    ("delete", "/v1/alert-rules/{alert_rule_id}"): None,
}
# Privileged routes: a scope beyond reading (tokens:admin reads service accounts too, and
# connectors:admin connectors).
PRIVILEGED = (":write", ":admin")


# ---------------------------------------------------------------------------------------------
# API1 Broken object-level authorization: another workspace's ids do not exist for the caller.

ID_ROUTES = [
    ("get", "/v1/issues/{issue_id}"),
    ("patch", "/v1/issues/{issue_id}"),
    ("post", "/v1/issues/{issue_id}/close"),
    ("get", "/v1/patterns/{pattern_id}"),
    ("patch", "/v1/patterns/{pattern_id}"),
    ("get", "/v1/patterns/{pattern_id}/issues"),
    ("get", "/v1/issues/{issue_id}/similar"),
    ("post", "/v1/issues/{issue_id}/reanalyze"),
    ("post", "/v1/patterns/{pattern_id}/merge"),
    ("post", "/v1/patterns/{pattern_id}/split"),
    ("get", "/v1/grouping-rules/{rule_id}"),
    ("patch", "/v1/grouping-rules/{rule_id}"),
    ("delete", "/v1/grouping-rules/{rule_id}"),
    ("post", "/v1/api-tokens/{token_id}/rotate"),
    ("delete", "/v1/api-tokens/{token_id}"),
    ("get", "/v1/service-accounts/{account_id}"),
    ("patch", "/v1/service-accounts/{account_id}"),
    ("delete", "/v1/service-accounts/{account_id}"),
    ("post", "/v1/service-accounts/{account_id}/tokens"),
    ("delete", "/v1/service-accounts/{account_id}/tokens/{token_id}"),
    ("get", "/v1/connectors/{connector_id}"),
    ("patch", "/v1/connectors/{connector_id}"),
    ("delete", "/v1/connectors/{connector_id}"),
    ("post", "/v1/connectors/{connector_id}/rotate"),
    ("get", "/v1/webhooks/{webhook_id}"),
    ("patch", "/v1/webhooks/{webhook_id}"),
    ("delete", "/v1/webhooks/{webhook_id}"),
    ("post", "/v1/webhooks/{webhook_id}/rotate"),
    ("post", "/v1/webhooks/{webhook_id}/test"),
    ("get", "/v1/webhooks/{webhook_id}/deliveries"),
    ("post", "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"),
    ("patch", "/v1/members/{member_id}"),
    ("delete", "/v1/members/{member_id}"),
    ("delete", "/v1/invitations/{invitation_id}"),
    ("post", "/v1/invitations/{invitation_id}/resend"),
    ("get", "/v1/predictions/{prediction_id}"),
    ("post", "/v1/predictions/{prediction_id}/feedback"),
    ("get", "/v1/patterns/{pattern_id}/frequency"),
    ("get", "/v1/alert-rules/{alert_rule_id}"),
    ("patch", "/v1/alert-rules/{alert_rule_id}"),
    ("delete", "/v1/alert-rules/{alert_rule_id}"),
    ("post", "/v1/me/notifications/feed/{notification_id}/read"),
    ("post", "/v1/me/notifications/feed/{notification_id}/dismiss"),
]
# Routes with no bearer auth that take an id: a webhook delivery proves itself by its signature.
SIGNED_ID_ROUTES = [("post", "/v1/webhooks/inbound/{connector_id}")]
ID_PATTERN = r"\b(iss|pat|gru|tok|sva|con|whk|whd|mem|inv|prd|alr|ntf)_\w+"
MISSING_IDS = ("iss_01zzz999", "pat_01zzz999", "gru_01zzz999", "tok_01zzz999", "sva_01zzz999", "con_01zzz999",
               "whk_01zzz999", "whd_01zzz999", "mem_01zzz999", "inv_01zzz999", "prd_01zzz999", "alr_01zzz999",
               "ntf_01zzz999")


def test_every_id_taking_route_is_probed(client):
    documented = {(method, path) for method, path, operation in spec_operations(client)
                  if "{" in path and operation.get("security")}
    assert documented == set(ID_ROUTES)
    unauthenticated = {(method, path) for method, path, operation in spec_operations(client)
                       if "{" in path and not operation.get("security")}
    assert unauthenticated == set(SIGNED_ID_ROUTES)


@pytest.mark.parametrize("method,path", ID_ROUTES)
def test_another_workspaces_id_in_the_path_is_not_found(app, client, auth, grouping_rules, api_tokens,
                                                         connectors, webhooks, invitations, prediction_objects,
                                                         method, path):
    headers = auth()
    body = VALID_BODIES.get((method, path))
    with database_unchanged(app):
        theirs = send(client, method, concrete(path, THEIR_ISSUE, THEIR_PATTERN, THEIR_RULE, THEIR_TOKEN,
                                               THEIR_ACCOUNT, THEIR_CONNECTOR, THEIR_WEBHOOK, THEIR_DELIVERY,
                                               THEIR_MEMBER, THEIR_INVITATION, THEIR_PREDICTION, THEIR_ALERT_RULE,
                                               THEIR_NOTIFICATION), headers, body)
        missing = send(client, method, concrete(path, *MISSING_IDS), headers, body)
    error = assert_envelope(theirs, 404, "not_found")
    assert error["details"]["id"] in (THEIR_ISSUE, THEIR_PATTERN, THEIR_RULE, THEIR_TOKEN, THEIR_ACCOUNT,
                                      THEIR_CONNECTOR, THEIR_WEBHOOK, THEIR_MEMBER, THEIR_INVITATION,
                                      THEIR_PREDICTION, THEIR_ALERT_RULE, THEIR_NOTIFICATION)
    # Indistinguishable from an id that exists nowhere: no existence oracle.
    assert missing.status_code == 404
    assert re.sub(ID_PATTERN, "<id>", error["message"]) == \
        re.sub(ID_PATTERN, "<id>", missing.get_json()["error"]["message"])



def test_a_webhook_signed_for_one_connector_is_refused_at_any_other_alike(app, client, auth, connectors):
    """Their connector, a connector that exists nowhere, and ours unsigned read the same (401):
    no existence oracle, and a bearer token is no substitute for the signature."""
    from app.inbound import custom_api

    body = b'{"title": "Probe", "external_id": "probe-1"}'
    signed = {"Content-Type": "application/json",
              "x-causeloop-signature": custom_api.sign(connectors[MY_CONNECTOR], body, int(time.time()))}
    bearer = {**auth(), "Content-Type": "application/json"}
    with database_unchanged(app):
        answers = [client.post(f"/v1/webhooks/inbound/{connector_id}", data=body, headers=headers)
                   for connector_id, headers in ((THEIR_CONNECTOR, signed), ("con_01zzz999", signed),
                                                 (MY_CONNECTOR, bearer))]
    for response in answers:
        assert_envelope(response, 401, "unauthorized")
    assert len({response.get_json()["error"]["message"] for response in answers}) == 1

def test_a_pattern_of_another_workspace_cannot_be_linked_on_create(app, client, auth):
    headers = auth()
    with database_unchanged(app):
        response = client.post("/v1/issues", headers=headers, json={"title": "x", "pattern_id": THEIR_PATTERN})
    assert "pattern_id" in assert_envelope(response, 422, "unprocessable")["details"]


def test_a_pattern_of_another_workspace_cannot_be_linked_on_patch(app, client, auth):
    headers = auth()
    with database_unchanged(app):
        response = client.patch(f"/v1/issues/{MY_ISSUE}", headers=headers, json={"pattern_id": THEIR_PATTERN})
    assert "pattern_id" in assert_envelope(response, 422, "unprocessable")["details"]


def test_a_pattern_of_another_workspace_cannot_be_linked_in_bulk(app, client, auth):
    headers = auth()
    with database_unchanged(app):
        response = client.post("/v1/issues/bulk", headers=headers,
                               json={"ids": [MY_ISSUE], "op": "link_pattern", "value": THEIR_PATTERN})
    assert "value" in assert_envelope(response, 422, "unprocessable")["details"]


@pytest.mark.parametrize("op,value", [("set_status", "closed"), ("set_severity", "low"),
                                      ("unlink_pattern", None), ("link_pattern", MY_PATTERN)])
def test_bulk_ids_of_another_workspace_are_not_found(app, client, auth, op, value):
    headers = auth()
    with database_unchanged(app):
        response = client.post("/v1/issues/bulk", headers=headers,
                               json={"ids": THEIR_ISSUES, "op": op, "value": value})
    assert response.status_code == 200
    assert response.get_json() == {"updated": 0, "not_found": THEIR_ISSUES}


def test_bulk_with_mixed_ids_touches_only_the_callers_issues(app, client, auth):
    headers = auth()
    written = WRITTEN_BY_AN_UPDATE + ("Pattern", "AuditEntry", "Prediction", "PredictionSettings")
    with database_unchanged(app, [model for model in MODELS if model.__name__ not in written]):
        before = rows(app, [Issue, Pattern])
        response = client.post("/v1/issues/bulk", headers=headers,
                               json={"ids": [MY_ISSUE, THEIR_ISSUE], "op": "set_severity", "value": "low"})
    assert response.get_json() == {"updated": 1, "not_found": [THEIR_ISSUE]}
    with app.app_context(), db.connection_context():  # on the record: the caller's issue only
        assert [entry.changes["issue_ids"] for entry in AuditEntry.select()
                if entry.action == "issue.bulk_updated"] == [[MY_ISSUE]]
    after = rows(app, [Issue, Pattern])
    for model, mine in (("Issue", MY_ISSUE), ("Pattern", MY_PATTERN)):
        assert [row for row in after[model] if row[0] != mine] == [row for row in before[model] if row[0] != mine]
    # The caller's issue (high) moved from one severity count of its pattern to another.
    was, now = ({name: value for name, value in zip(Pattern._meta.sorted_field_names, row)}
                for state in (before, after) for row in state["Pattern"] if row[0] == MY_PATTERN)
    assert now == {**was, "linked_high": was["linked_high"] - 1, "linked_low": was["linked_low"] + 1}


def test_filtering_by_another_workspaces_pattern_finds_nothing(app, client, auth):
    response = client.get(f"/v1/issues?pattern_id={THEIR_PATTERN}", headers=auth())
    assert response.status_code == 200
    assert response.get_json()["data"] == [] and response.get_json()["page"]["total"] == 0


@pytest.mark.parametrize("path", ["/v1/issues?q=Warehouse", "/v1/issues?q=Oversold OR payment",
                                  "/v1/patterns?q=Inventory", "/v1/patterns?domain=inventory",
                                  "/v1/issues?limit=100&sort=created_at", "/v1/patterns?limit=100"])
def test_lists_and_searches_never_return_another_workspaces_rows(client, auth, path):
    """Their words and their domain match nothing here; no page of ours holds their rows."""
    ids = {item["id"] for item in client.get(path, headers=auth()).get_json()["data"]}
    assert not ids & set(THEIR_ISSUES + [THEIR_PATTERN])


def test_an_idempotency_key_used_by_another_workspace_is_invisible(app, client, auth):
    """A key taken elsewhere neither replays their response nor conflicts (a 409 would leak it)."""
    key = {"Idempotency-Key": "key-from-another-workspace"}
    theirs = client.post("/v1/issues", headers={**auth(workspace=OTHER_WORKSPACE), **key}, json={"title": "Theirs"})
    mine = client.post("/v1/issues", headers={**auth(), **key}, json={"title": "Mine, another body"})
    assert (theirs.status_code, mine.status_code) == (201, 201)
    assert mine.get_json()["title"] == "Mine, another body" and "Idempotent-Replayed" not in mine.headers


# ---------------------------------------------------------------------------------------------
# API2 Broken authentication (tests/test_auth.py covers malformed, expired, tampered, `none`,
# wrong-algorithm and no-`exp` tokens; these are the ones that are well-formed and signed).

def test_a_token_whose_membership_was_deleted_is_unauthorized(app, client, token_for):
    token = token_for("owner", user_id="usr_removed")
    with app.app_context(), db.connection_context():
        Membership.delete().where(Membership.user == "usr_removed").execute()
    with database_unchanged(app):
        response = client.get("/v1/issues", headers={"Authorization": f"Bearer {token}"})
    assert_envelope(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_token_of_a_revoked_session_is_unauthorized(app, client, token_for):
    token = token_for("owner", user_id="usr_logged_out")
    with app.app_context(), db.connection_context():
        for session in AuthSession.select().where(AuthSession.user == "usr_logged_out"):
            session.revoke()
    with database_unchanged(app):
        response = client.post("/v1/issues", headers={"Authorization": f"Bearer {token}"}, json={"title": "x"})
    assert_envelope(response, 401, "unauthorized")


def test_a_token_minted_with_another_secret_is_unauthorized(app, client, token_for):
    """A genuine token, live session and all, from a deployment with another JWT_SECRET."""
    app.config["JWT_SECRET"] = "another-deployments-secret-0123456789-abcdefgh"
    try:
        token = token_for("owner")
    finally:
        app.config["JWT_SECRET"] = TEST_SECRET
    with database_unchanged(app):
        response = client.get("/v1/issues", headers={"Authorization": f"Bearer {token}"})
    assert_envelope(response, 401, "unauthorized")


def test_a_reused_refresh_token_mints_nothing_and_ends_the_session(app, client):
    first = client.post("/v1/auth/exchange", json={"subject_token": "anything"}).get_json()
    second = client.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}).get_json()
    with database_unchanged(app, [model for model in MODELS if model not in (AuthSession, AuditEntry)]):
        replay = client.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert_envelope(replay, 401, "invalid_grant")
    with app.app_context(), db.connection_context():  # the replay is on the record, once
        assert AuditEntry.select().where(AuditEntry.action == "auth.refresh_token_reused").count() == 1
    assert "access_token" not in replay.get_data(as_text=True)
    for token in (first["access_token"], second["access_token"]):
        assert client.get("/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    refreshed = client.post("/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert_envelope(refreshed, 401, "invalid_grant")


def test_an_expired_refresh_token_is_invalid_grant(app, client):
    tokens = client.post("/v1/auth/exchange", json={"subject_token": "anything"}).get_json()
    with app.app_context(), db.connection_context():
        RefreshToken.update(expires_at=datetime.datetime(2000, 1, 1)).execute()
    with database_unchanged(app):
        response = client.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert_envelope(response, 401, "invalid_grant")


def test_an_access_token_is_not_a_refresh_token(app, client):
    tokens = client.post("/v1/auth/exchange", json={"subject_token": "anything"}).get_json()
    with database_unchanged(app):
        response = client.post("/v1/auth/refresh", json={"refresh_token": tokens["access_token"][:512]})
    assert_envelope(response, 401, "invalid_grant")


def test_a_refresh_token_is_not_an_access_token(app, client):
    tokens = client.post("/v1/auth/exchange", json={"subject_token": "anything"}).get_json()
    with database_unchanged(app):
        response = client.get("/v1/issues", headers={"Authorization": f"Bearer {tokens['refresh_token']}"})
    assert_envelope(response, 401, "unauthorized")


def test_guessing_refresh_tokens_spends_the_rate_budget(make_app):
    client = make_app(RATE_LIMIT="3/minute").test_client()
    statuses = [client.post("/v1/auth/refresh", json={"refresh_token": f"clp_refresh_guess{n}"}).status_code
                for n in range(4)]
    assert statuses == [401, 401, 401, 429]


# ---------------------------------------------------------------------------------------------
# API3 Broken object property-level authorization. Server-owned fields are refused by name
# (400), not silently dropped: a client that believes it set `risk_score` learns at once that
# it did not. On issues `risk_score` follows the severity; `issue_count` and `last_seen_at`
# are derived from the links; ids, the workspace and the timestamps are the server's.

SERVER_OWNED = {"id": "iss_01mine", "workspace_id": OTHER_WORKSPACE, "issue_count": 5,
                "last_seen_at": "2024-01-01T00:00:00Z", "created_at": "2020-01-01T00:00:00Z",
                "updated_at": "2020-01-01T00:00:00Z", "resolved_at": "2020-01-01T00:00:00Z",
                "risk_score": 99}
ISSUE_FIELDS = {"id", "title", "description", "status", "severity", "pattern_id", "source", "external_id",
                "external_url", "team", "risk_score", "metadata", "created_at", "updated_at", "resolved_at",
                "fingerprint", "detection", "pinned"}
PATTERN_FIELDS = {"id", "name", "description", "status", "risk_score", "issue_count", "last_seen_at",
                  "fingerprint", "tags", "merged_into", "created_at", "updated_at"}


@pytest.mark.parametrize("field", SERVER_OWNED)
def test_server_owned_issue_fields_are_refused_on_create(app, client, auth, field):
    headers = auth()
    with database_unchanged(app):
        response = client.post("/v1/issues", headers=headers, json={"title": "x", field: SERVER_OWNED[field]})
    assert field in assert_envelope(response, 400, "validation_error")["details"]


@pytest.mark.parametrize("field", SERVER_OWNED)
def test_server_owned_issue_fields_are_refused_on_patch(app, client, auth, field):
    headers = auth()
    with database_unchanged(app):
        response = client.patch(f"/v1/issues/{MY_ISSUE}", headers=headers, json={field: SERVER_OWNED[field]})
    assert field in assert_envelope(response, 400, "validation_error")["details"]


@pytest.mark.parametrize("field", ["id", "workspace_id", "issue_count", "last_seen_at", "created_at",
                                   "updated_at"])
def test_server_owned_pattern_fields_are_refused(app, client, auth, field):
    headers = auth()
    value = {**SERVER_OWNED, "id": "pat_01mine"}[field]
    with database_unchanged(app):
        created = client.post("/v1/patterns", headers=headers, json={"name": "x", field: value})
        patched = client.patch(f"/v1/patterns/{MY_PATTERN}", headers=headers, json={field: value})
    for response in (created, patched):
        assert field in assert_envelope(response, 400, "validation_error")["details"]


def test_issues_expose_exactly_their_documented_fields(client, auth):
    headers = auth()
    one = client.get(f"/v1/issues/{MY_ISSUE}", headers=headers).get_json()
    listed = client.get("/v1/issues?limit=100", headers=headers).get_json()["data"]
    assert set(one) == ISSUE_FIELDS
    assert all(set(item) == ISSUE_FIELDS for item in listed)


def test_patterns_expose_exactly_their_documented_fields(client, auth):
    headers = auth()
    one = client.get(f"/v1/patterns/{MY_PATTERN}", headers=headers).get_json()
    assert set(one) == PATTERN_FIELDS
    assert set(one["fingerprint"]) == {"domain", "root_cause"}


def test_me_exposes_no_internal_account_fields(client, auth):
    body = client.get("/v1/me", headers=auth()).get_json()
    assert set(body) == {"user", "workspace", "role", "scopes", "workspaces"}
    assert set(body["user"]) == {"id", "email", "name", "created_at"}
    assert set(body["workspace"]) == {"id", "name", "organization_id", "created_at"}
    assert all(set(workspace) == {"id", "name", "organization_id", "created_at", "role"}
               for workspace in body["workspaces"])


def test_token_responses_carry_no_session_internals(client):
    body = client.post("/v1/auth/exchange", json={"subject_token": "anything"}).get_json()
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in", "scope", "workspace_id"}


# ---------------------------------------------------------------------------------------------
# API4 Unrestricted resource consumption: every size is bounded, and said so before any work.

BODY_ROUTES = [(method, path) for method, path in VALID_BODIES if VALID_BODIES[(method, path)] is not None] + [
    ("post", "/v1/auth/exchange"), ("post", "/v1/auth/refresh"), ("post", "/v1/auth/revoke"),
    ("post", "/v1/api-tokens"), ("post", "/v1/webhooks/inbound/{connector_id}"),
    ("post", "/v1/me/notifications/feed/read-all"), ("patch", "/v1/me/notifications/preferences")]


@pytest.mark.parametrize("method,path", BODY_ROUTES)
def test_a_body_over_one_mib_is_payload_too_large(app, client, auth, method, path):
    headers = {**auth(), "Content-Type": "application/json"}
    body = b'{"title": "' + b"x" * ONE_MIB + b'"}'
    with database_unchanged(app):
        response = client.open(concrete(path), method=method.upper(), headers=headers, data=body)
    assert_envelope(response, 413, "payload_too_large")


@pytest.mark.parametrize("path", ["/v1/issues", "/v1/patterns", f"/v1/patterns/{MY_PATTERN}/issues",
                                  "/v1/grouping-rules", "/v1/predictions", "/v1/me/notifications/feed"])
@pytest.mark.parametrize("limit", ["101", "1000000", "0", "-1"])
def test_a_page_size_outside_1_to_100_is_refused(client, auth, path, limit):
    response = client.get(f"{path}?limit={limit}", headers=auth())
    assert assert_envelope(response, 400, "validation_error")["details"] == {"limit": ["Must be between 1 and 100."]}


@pytest.mark.parametrize("path", ["/v1/issues", "/v1/patterns", f"/v1/patterns/{MY_PATTERN}/issues"])
def test_a_search_over_200_characters_is_refused(client, auth, path):
    response = client.get(path, headers=auth(), query_string={"q": "payment " * 26})
    assert "q" in assert_envelope(response, 400, "validation_error")["details"]


def test_a_bulk_request_over_100_ids_is_refused(app, client, auth):
    headers = auth()
    ids = [MY_ISSUE] + [f"iss_01zzz{n:03d}" for n in range(100)]
    with database_unchanged(app):
        response = client.post("/v1/issues/bulk", headers=headers, json={"ids": ids, "op": "set_status", "value": "closed"})
    assert "ids" in assert_envelope(response, 400, "validation_error")["details"]


def test_an_idempotency_key_over_255_characters_is_refused(app, client, auth):
    headers = {**auth(), "Idempotency-Key": "k" * 256}
    with database_unchanged(app):
        response = client.post("/v1/issues", headers=headers, json={"title": "x"})
    assert "Idempotency-Key" in assert_envelope(response, 400, "validation_error")["details"]


@pytest.mark.parametrize("path", ["/v1/issues/iss_{}", "/v1/issues/iss_{}/close", "/v1/patterns/pat_{}",
                                  "/v1/patterns/pat_{}/issues", "/v1/grouping-rules/gru_{}",
                                  "/v1/api-tokens/tok_{}/rotate", "/v1/service-accounts/sva_{}",
                                  "/v1/connectors/con_{}", "/v1/webhooks/inbound/con_{}",
                                  "/v1/webhooks/whk_{}"])
def test_a_very_long_id_in_a_path_is_not_found(app, client, auth, path):
    headers = auth()
    with database_unchanged(app):
        for method in ("get", "post", "patch"):
            response = send(client, method, path.format("0" * 100_000), headers)
            assert_envelope(response, 404, "not_found")


@pytest.mark.parametrize("path,parameter", [("/v1/issues", "pattern_id"), ("/v1/issues", "source"),
                                            ("/v1/patterns", "domain")])
def test_a_filter_over_100_values_is_refused(client, auth, path, parameter):
    """Each value is a bound parameter: 70,000 of them once made PostgreSQL refuse the query."""
    values = ",".join(f"v{n}" for n in range(70_000))
    response = client.get(path, headers=auth(), query_string={parameter: values})
    assert assert_envelope(response, 400, "validation_error")["details"] == {
        parameter: ["Must name at most 100 values."]}


def test_a_cursor_over_2048_characters_is_refused(client, auth):
    response = client.get("/v1/issues", headers=auth(), query_string={"cursor": "c" * 2049})
    assert "cursor" in assert_envelope(response, 400, "validation_error")["details"]


# ---------------------------------------------------------------------------------------------
# API5 Broken function-level authorization: read-only roles call no write (or admin) route.

def test_every_write_route_is_probed(client):
    writes = {(method, path) for method, path, operation in spec_operations(client)
              if any(scope.endswith(PRIVILEGED) for requirement in operation.get("security", [])
                     for scopes in requirement.values() for scope in scopes)}
    assert writes == set(VALID_BODIES)


@pytest.mark.parametrize("role", ["viewer", "read_only"])
@pytest.mark.parametrize("method,path", list(VALID_BODIES))
def test_read_only_roles_cannot_call_a_write_route(app, client, auth, role, method, path):
    headers = auth(role)
    documented = next(operation["security"][0]["bearerAuth"][0]
                      for m, p, operation in spec_operations(client) if (m, p) == (method, path))
    with database_unchanged(app):
        response = send(client, method, concrete(path), headers, VALID_BODIES[(method, path)])
    error = assert_envelope(response, 403, "forbidden")
    assert error["details"] == {"required_scope": documented}


@pytest.mark.parametrize("method,path", list(VALID_BODIES))
def test_a_read_only_role_is_refused_before_the_resource_is_looked_up(app, client, auth, method, path):
    """403 even for an id that does not exist: no existence oracle for unprivileged callers."""
    headers = auth("viewer")
    with database_unchanged(app):
        response = send(client, method, concrete(path, *MISSING_IDS), headers,
                        VALID_BODIES[(method, path)])
    assert_envelope(response, 403, "forbidden")


# ---------------------------------------------------------------------------------------------
# API8 Injection: hostile strings in every filter, sort, search and path id are only data.

HOSTILE = [
    "' OR '1'='1", "1; DROP TABLE issue; --", '" OR 1=1 --', "') UNION SELECT id, workspace_id FROM issue --",
    "%", "_", "\\", "';--",
    '"unbalanced', "a OR", "NEAR(a b)", "title:*", "*", "-", "^x", "a AND NOT b", "()", "a & b | !c <-> d",
    '{"$ne": null}', '{"$gt": ""}', "[$where]=1", "true", "null",
    "\u202egnp.exe", "\U0001d54f\U0001f642", "e\u0301", "\ufeffbom", "\u200b",
    "\x00", "a\x00b",
    "../../etc/passwd", "..\\..\\windows\\win.ini", "%2e%2e%2f", "a\r\nSet-Cookie: x=1", "%s%n{0}",
]
LIST_PARAMETERS = {
    "/v1/issues": ["status", "severity", "pattern_id", "source", "created_after", "created_before", "q", "sort",
                   "cursor", "limit"],
    "/v1/patterns": ["status", "domain", "risk_min", "risk_max", "q", "sort", "cursor", "limit"],
    f"/v1/patterns/{MY_PATTERN}/issues": ["status", "severity", "source", "created_after", "created_before", "q",
                                          "sort", "cursor", "limit"],
    f"/v1/issues/{MY_ISSUE}/similar": ["limit"],
    "/v1/grouping-rules": ["cursor", "limit"],
    f"/v1/webhooks/{MY_WEBHOOK}/deliveries": ["cursor", "limit"],
    "/v1/audit-log": ["action", "actor_id", "target_id", "since", "until", "cursor", "limit"],
    "/v1/audit-log/export": ["action", "actor_id", "target_id", "since", "until"],
    "/v1/predictions": ["min_probability", "window_days", "pattern_id", "status", "sort", "cursor", "limit"],
    "/v1/predictions/summary": ["window"],
    "/v1/predictions/forecast": ["window", "pattern_id"],
    "/v1/predictions/accuracy": ["window"],
    f"/v1/patterns/{MY_PATTERN}/frequency": ["window"],
    "/v1/me/notifications/feed": ["unread", "cursor", "limit"],
}


def test_every_query_parameter_is_probed(client):
    for method, path, operation in spec_operations(client):
        names = {parameter["name"] for parameter in operation.get("parameters", []) if parameter["in"] == "query"}
        if names and path != "/v1/stream":  # the WebSocket's token and workspace: tests/test_stream.py
            assert names == set(LIST_PARAMETERS.get(concrete(path), ())), (method, path)


@pytest.mark.parametrize("path,parameter", [(path, name) for path, names in LIST_PARAMETERS.items()
                                            for name in names])
def test_hostile_strings_in_a_list_parameter_are_only_data(app, client, auth, webhooks, path, parameter):
    headers = auth()
    with database_unchanged(app):
        for value in HOSTILE:
            response = client.get(path, headers=headers, query_string={parameter: value})
            assert response.status_code in (200, 400), (value, response.status_code)
            if response.status_code == 400:
                assert_envelope(response, 400, "validation_error")
            else:
                body = response.get_data(as_text=True)
                rows = ([json.loads(line) for line in body.splitlines()] if response.mimetype == "application/jsonl"
                        else response.get_json()["data"])
                ids = [item["id"] for item in rows]
                assert not set(ids) & set(THEIR_ISSUES + [THEIR_PATTERN]), value


@pytest.mark.parametrize("method,path", ID_ROUTES + SIGNED_ID_ROUTES)
def test_hostile_strings_as_a_path_id_are_not_found(app, client, auth, method, path):
    headers = auth()
    with database_unchanged(app):
        for value in HOSTILE:
            quoted = urllib.parse.quote(value, safe="")
            target = concrete(path, *[quoted] * 13)
            response = send(client, method, target, headers, VALID_BODIES.get((method, path)))
            assert_envelope(response, 404, "not_found")


def test_an_sql_looking_title_is_stored_verbatim_and_nothing_else_changes(app, client, auth):
    headers = auth()
    title = "Robert'); DROP TABLE issue; --"
    # A create also moves the derived grouping data: its source's profile, and a pattern it joins.
    written = WRITTEN_BY_AN_UPDATE + ("SourceProfile", "Pattern", "Prediction", "PredictionSettings")
    with database_unchanged(app, [model for model in MODELS if model.__name__ not in written]):
        before = rows(app, [Issue])["Issue"]
        created = client.post("/v1/issues", headers=headers, json={"title": title})
    assert created.status_code == 201
    assert client.get(f"/v1/issues/{created.get_json()['id']}", headers=headers).get_json()["title"] == title
    assert [row for row in rows(app, [Issue])["Issue"] if row[0] != created.get_json()["id"]] == before


# ---------------------------------------------------------------------------------------------
# API8 Security misconfiguration.

@pytest.mark.parametrize("raised,status", [
    (RuntimeError("boom near SELECT * FROM issue WHERE workspace_id = 'ws_02def456'"), 500),
    (pw.ProgrammingError('relation "issue" does not exist LINE 1: SELECT "t1"."id" FROM "issue"'), 500),
    (pw.OperationalError("could not connect to server at 10.0.0.5:5432; SELECT 1"), 503),
])
def test_failures_show_no_stack_trace_sql_or_internals(client, auth, monkeypatch, raised, status):
    def fail(*args, **kwargs):
        raise raised

    monkeypatch.setattr(Issue, "search", fail)
    response = client.get("/v1/issues", headers=auth())
    error = assert_envelope(response, status, "internal_error" if status == 500 else "service_unavailable")
    text = response.get_data(as_text=True)
    for leak in ("SELECT", "FROM", "issue\"", "Traceback", "10.0.0.5", "ws_02def456", ".py"):
        assert leak not in text, leak
    assert "details" not in error


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://localhost:3000.evil.example",
                                    "http://evil.localhost:3000"])
def test_cors_does_not_echo_an_unlisted_origin(client, auth, origin):
    simple = client.get("/v1/issues", headers={**auth(), "Origin": origin})
    preflight = client.options("/v1/issues", headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                                      "Access-Control-Request-Headers": "Authorization"})
    for response in (simple, preflight):
        assert response.headers.get("Access-Control-Allow-Origin") in (None, "http://localhost:3000")
        assert "Access-Control-Allow-Credentials" not in response.headers


@pytest.mark.parametrize("path", ["/v1/issues", "/v1/nothing-here", "/health", "/openapi.json"])
def test_every_response_carries_the_security_headers(client, auth, path):
    headers = client.get(path, headers=auth()).headers
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Strict-Transport-Security"].startswith("max-age=")
    assert "default-src 'none'" in headers["Content-Security-Policy"]


@pytest.mark.parametrize("method,path,body", [("get", "/v1/issues", None), ("get", "/v1/me", None),
                                              ("post", "/v1/auth/exchange", {"subject_token": "x"})])
def test_tokens_and_workspace_data_are_never_cached(client, auth, method, path, body):
    response = send(client, method, path, auth(), body)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"


def test_trace_is_not_allowed_and_echoes_nothing(client, auth):
    headers = auth()
    response = client.open("/v1/issues", method="TRACE", headers=headers)
    assert_envelope(response, 405, "method_not_allowed")
    assert headers["Authorization"].split()[1] not in response.get_data(as_text=True)


def test_the_service_does_not_run_in_debug_mode(app):
    assert not app.debug
    assert not app.config.get("PROPAGATE_EXCEPTIONS")


def test_docs_page_is_not_frameable(client):
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


# A principal whose workspace, membership or user is gone is a 401 on every kind of route (a
# read, a create, ingestion; the stream in tests/test_stream.py), never a 500.

GONE_PROBES = [("get", "/v1/issues", None), ("get", "/v1/me", None), ("post", "/v1/issues", {"title": "x"}),
               ("post", "/v1/patterns", {"name": "x"}), ("post", "/v1/ingest/events", {"title": "x"}),
               ("post", "/v1/ingest/batch", {"records": [{"title": "x"}]})]


def resigned(token, **changes):
    """The token's claims, changed, signed with the server's own secret (as a leaked secret would allow)."""
    from test_auth import claims_of, signed
    return signed(dict(claims_of(token), **changes))


def assert_gone(app, client, token, probes=GONE_PROBES):
    with database_unchanged(app):
        for method, path, body in probes:
            response = send(client, method, path, {"Authorization": f"Bearer {token}"}, body)
            assert response.status_code == 401, (method, path, response.status_code)
            assert_envelope(response, 401, "unauthorized")


@pytest.mark.parametrize("workspace", ["ws_01nowhere", OTHER_WORKSPACE])
def test_a_token_resigned_for_another_or_no_workspace_is_unauthorized(app, client, token_for, workspace):
    assert_gone(app, client, resigned(token_for("owner"), workspace_id=workspace))


@pytest.mark.parametrize("claim", ["sub", "sid", "workspace_id", "scope"])
def test_a_token_resigned_with_a_non_text_claim_is_unauthorized(app, client, token_for, claim):
    assert_gone(app, client, resigned(token_for("owner"), **{claim: ["ws_01abc123"]}), GONE_PROBES[:1])


def test_a_token_resigned_for_another_user_is_unauthorized(app, client, token_for):
    assert_gone(app, client, resigned(token_for("owner"), sub="usr_01abc456"))


def test_every_route_refuses_a_token_whose_membership_was_deleted(app, client, token_for):
    token = token_for("owner", user_id="usr_removed")
    with app.app_context(), db.connection_context():
        Membership.delete().where(Membership.user == "usr_removed").execute()
    assert_gone(app, client, token)


def test_every_route_refuses_a_token_whose_user_was_deleted(app, client, token_for):
    from models import User
    token = token_for("owner", user_id="usr_deleted")
    with app.app_context(), db.connection_context():
        User.delete().where(User.id == "usr_deleted").execute()
    assert_gone(app, client, token)


def test_every_route_refuses_every_kind_of_token_once_the_workspace_is_deleted(app, client, token_for,
                                                                                api_tokens):
    from models import Workspace
    tokens = [token_for("owner", OTHER_WORKSPACE), api_tokens[THEIR_TOKEN], api_tokens["tok_02def101"]]
    with app.app_context(), db.connection_context():
        Workspace.delete().where(Workspace.id == OTHER_WORKSPACE).execute()
    for token in tokens:
        assert_gone(app, client, token)


def test_a_personal_api_token_whose_membership_was_deleted_is_unauthorized(app, client, api_tokens):
    with app.app_context(), db.connection_context():
        Membership.delete().where(Membership.user == "usr_test_owner_ws_01abc123").execute()
    assert_gone(app, client, api_tokens[MY_TOKEN])


# Role escalation (API5): nobody grants, changes or removes a role above their own; tampered or
# spent invitation links sign no one in (tests/test_members.py replays an accepted one).

@pytest.mark.parametrize("role,method,path,body", [
    ("security_admin", "post", "/v1/invitations", {"email": "climber@example.test", "role": "tenant_admin"}),
    ("tenant_admin", "post", "/v1/invitations", {"email": "climber@example.test", "role": "owner"}),
    ("tenant_admin", "patch", f"/v1/members/{MY_MEMBER}", {"role": "viewer"}),  # an owner
    ("tenant_admin", "delete", f"/v1/members/{MY_MEMBER}", None),
    ("analyst", "patch", f"/v1/members/{MY_MEMBER}", {"role": "viewer"}),
    ("security_admin", "patch", f"/v1/members/{MY_MEMBER}", {"role": "owner"}),
])
def test_role_escalation_is_refused(app, client, auth, role, method, path, body):
    headers = auth(role)
    with database_unchanged(app):
        response = send(client, method, path, headers, body)
    assert_envelope(response, 403, "forbidden")


def test_a_tenant_admin_cannot_promote_themselves_to_owner(app, client, auth):
    headers = auth("tenant_admin")
    with app.app_context(), db.connection_context():
        mine = Membership.get(Membership.user == f"usr_test_tenant_admin_{SEED_WORKSPACE}").id
    with database_unchanged(app):
        response = send(client, "patch", f"/v1/members/{mine}", headers, {"role": "owner"})
    assert_envelope(response, 403, "forbidden")


@pytest.mark.parametrize("tamper", [lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"), lambda t: t + "x",
                                    lambda t: t.replace("clp_inv_", "clp_pat_")])
def test_a_tampered_invitation_link_is_refused(app, client, invitations, tamper):
    with database_unchanged(app):
        response = client.post("/v1/invitations/accept",
                               json={"token": tamper(invitations[MY_INVITATION]), "subject_token": "x"})
    assert_envelope(response, 401, "invalid_grant")
