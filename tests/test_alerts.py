"""Alert rules end to end (in-app channel), the outside channels' pending deliveries, and the
notification feed."""
import datetime

import pytest

from conftest import SEED_WORKSPACE
from models import AlertDelivery, ApiToken, Issue, Notification, ROLE_SCOPES, ServiceAccount, db, predictions, utcnow
from test_errors import assert_envelope

FINGERPRINT = {"domain": "payments", "root_cause": "probe_flapping_gateway"}
# Above the seed's own patterns (the likeliest is at 0.73 within 7 days).
RULE = {"name": "Likely within a week", "threshold": {"probability": 0.8, "window_days": 7},
        "channels": [{"type": "in_app"}]}


@pytest.fixture
def recurring(client, auth):
    """A pattern with an issue a day for ten days: very likely to recur within a week. Returns
    (pattern id, its issue ids, oldest first)."""
    now = utcnow()
    records = [{"title": f"Gateway flaps {n}", "source": "probe", "external_id": f"flap-{n}",
                "fingerprint": FINGERPRINT,
                "source_created_at": (now - datetime.timedelta(days=10 - n)).isoformat() + "Z"}
               for n in range(10)]

    def ingest():
        response = client.post("/v1/ingest/batch", headers=auth(), json={"records": records})
        assert response.status_code == 202 and not response.get_json()["rejected"], response.get_json()
        with client.application.app_context(), db.connection_context():
            issues = list(Issue.select().where(Issue.source == "probe").order_by(Issue.created_at))
        return issues[0].pattern_id, [issue.id for issue in issues]

    return ingest


def feed(client, auth, **query):
    return client.get("/v1/me/notifications/feed", headers=auth(), query_string=query).get_json()


def create_rule(client, auth, **changes):
    response = client.post("/v1/alert-rules", headers=auth(), json={**RULE, **changes})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def bulk(client, auth, ids, op, value=None):
    body = {"ids": ids, "op": op, **({"value": value} if value else {})}
    assert client.post("/v1/issues/bulk", headers=auth(), json=body).status_code == 200


def test_crossing_the_threshold_notifies_once(client, auth, recurring):
    auth()  # the member whose feed we read
    create_rule(client, auth)
    pattern_id, _ = recurring()
    items = feed(client, auth)["data"]
    assert len(items) == 1
    assert items[0]["type"] == "prediction.alert" and items[0]["read"] is False
    assert items[0]["target"]["type"] == "pattern" and items[0]["target"]["id"] == pattern_id
    assert set(items[0]) == {"id", "type", "title", "read", "created_at", "target"}


def test_a_rule_does_not_fire_twice_for_the_same_window(app, client, auth, recurring):
    auth()
    create_rule(client, auth)
    recurring()
    recurring()  # the same records again: updated, still above the threshold
    with app.app_context():
        predictions.recompute_all()
    assert feed(client, auth)["page"]["total"] == 1


def test_a_rule_created_over_a_likely_pattern_fires_at_once(client, auth, recurring):
    auth()
    recurring()
    create_rule(client, auth)
    assert feed(client, auth)["page"]["total"] == 1


def test_falling_below_and_rising_again_fires_again(client, auth, recurring):
    auth()
    create_rule(client, auth)
    pattern_id, issue_ids = recurring()
    bulk(client, auth, issue_ids[1:], "unlink_pattern")  # only the first is left: no recurrence yet
    assert feed(client, auth)["page"]["total"] == 1
    bulk(client, auth, issue_ids[1:], "link_pattern", pattern_id)
    assert feed(client, auth)["page"]["total"] == 2


def test_a_snoozed_rule_stays_quiet(client, auth, recurring):
    auth()
    create_rule(client, auth, snoozed_until=(utcnow() + datetime.timedelta(days=1)).isoformat() + "Z")
    recurring()
    assert feed(client, auth)["page"]["total"] == 0


def test_a_disabled_rule_stays_quiet(client, auth, recurring):
    auth()
    rule = create_rule(client, auth, enabled=False)
    recurring()
    assert feed(client, auth)["page"]["total"] == 0
    client.patch(f"/v1/alert-rules/{rule['id']}", headers=auth(), json={"enabled": True})
    assert feed(client, auth)["page"]["total"] == 1  # enabled over a likely pattern: fires then


def test_a_rule_for_another_pattern_stays_quiet(client, auth, recurring):
    auth()
    create_rule(client, auth, scope="pattern:pat_01xyz790", threshold={"probability": 0.99, "window_days": 7})
    recurring()
    assert feed(client, auth)["page"]["total"] == 0


def test_outside_channels_are_queued_in_their_own_formats(app, client, auth, recurring):
    create_rule(client, auth, channels=[
        {"type": "webhook", "endpoint_id": "whe_01abc123"},
        {"type": "slack", "url": "https://hooks.slack.com/services/T000/B000/XXXX"},
        {"type": "email", "to": ["oncall@example.com"]}])
    recurring()
    with app.app_context(), db.connection_context():
        queued = {d.channel: d for d in AlertDelivery.select()}
    assert set(queued) == {"webhook", "slack", "email"} and {d.status for d in queued.values()} == {"pending"}
    assert queued["webhook"].target == "whe_01abc123" and queued["webhook"].payload["type"] == "alert.fired"
    assert queued["slack"].payload["text"].endswith("chance of recurring within 7 days")
    assert queued["email"].payload["to"] == ["oncall@example.com"]


def test_preferences_keep_low_risk_patterns_out_of_a_feed(client, auth, recurring):
    response = client.patch("/v1/me/notifications/preferences", headers=auth(), json={"min_risk": 100})
    assert response.get_json() == {"min_severity": "low", "min_risk": 100, "delivery": "immediate"}
    create_rule(client, auth)
    recurring()
    assert feed(client, auth)["page"]["total"] == 0


def test_reading_and_dismissing_the_feed(client, auth, recurring):
    auth()
    create_rule(client, auth)
    pattern_id, _ = recurring()
    create_rule(client, auth, name="Within a month", scope=f"pattern:{pattern_id}",
                threshold={"probability": 0.7, "window_days": 30})
    items = feed(client, auth)["data"]
    assert len(items) == 2
    read = client.post(f"/v1/me/notifications/feed/{items[0]['id']}/read", headers=auth())
    assert read.status_code == 200 and read.get_json()["read"] is True
    assert [item["id"] for item in feed(client, auth, unread="true")["data"]] == [items[1]["id"]]
    assert client.post("/v1/me/notifications/feed/read-all", headers=auth(), json={"type": "prediction."}
                       ).get_json() == {"marked": 1, "unread_count": 0}
    assert client.post(f"/v1/me/notifications/feed/{items[1]['id']}/dismiss", headers=auth()).status_code == 204
    assert [item["id"] for item in feed(client, auth)["data"]] == [items[0]["id"]]


def test_the_feed_is_only_the_readers_own(app, client, auth, token_for, recurring):
    auth()
    create_rule(client, auth)
    recurring()
    mine = feed(client, auth)["data"][0]
    other = {"Authorization": f"Bearer {token_for('viewer', user_id='usr_someone_else')}"}
    theirs = client.get("/v1/me/notifications/feed", headers=other).get_json()
    assert mine["id"] not in [item["id"] for item in theirs["data"]]
    assert_envelope(client.post(f"/v1/me/notifications/feed/{mine['id']}/read", headers=other), 404, "not_found")


def test_a_service_account_has_no_feed(app, client):
    with app.app_context(), db.connection_context():
        account = ServiceAccount.create_in(SEED_WORKSPACE, {"name": "Robot"}, created_by=None)
        token = ApiToken.create_for_service_account(account.id, SEED_WORKSPACE, {
            "name": "t", "scopes": ["alerts:read"], "expires_in_days": 1}, ROLE_SCOPES["owner"], created_by=None)
    response = client.get("/v1/me/notifications/feed", headers={"Authorization": f"Bearer {token.secret}"})
    assert "no notification feed" in assert_envelope(response, 403, "forbidden")["message"]


def test_alert_rules_read_back_as_written(client, auth):
    rule = create_rule(client, auth, scope="pattern:pat_01xyz789")
    assert client.get(f"/v1/alert-rules/{rule['id']}", headers=auth()).get_json() == rule
    assert rule["scope"] == "pattern:pat_01xyz789" and rule["threshold"] == RULE["threshold"]
    assert [r["id"] for r in client.get("/v1/alert-rules", headers=auth()).get_json()["data"]] == [rule["id"]]
    assert client.delete(f"/v1/alert-rules/{rule['id']}", headers=auth()).status_code == 204
    assert_envelope(client.get(f"/v1/alert-rules/{rule['id']}", headers=auth()), 404, "not_found")


def test_a_scope_naming_another_workspaces_pattern_is_refused(client, auth):
    response = client.post("/v1/alert-rules", headers=auth(), json={**RULE, "scope": "pattern:pat_02pqr111"})
    assert "scope" in assert_envelope(response, 422, "unprocessable")["details"]


@pytest.mark.parametrize("threshold", [{"probability": 1.5, "window_days": 7}, {"probability": -0.1, "window_days": 7},
                                       {"probability": "0.7", "window_days": 7}, {"probability": 0.7, "window_days": 14}])
def test_a_threshold_outside_the_rules_is_a_validation_error(client, auth, threshold):
    response = client.post("/v1/alert-rules", headers=auth(), json={**RULE, "threshold": threshold})
    assert "threshold" in str(assert_envelope(response, 400, "validation_error")["details"])


@pytest.mark.parametrize("channel", [{"type": "slack", "url": "https://example.com/hook"}, {"type": "webhook"},
                                     {"type": "in_app", "url": "https://hooks.slack.com/x"}, {"type": "pager"}])
def test_a_channel_must_carry_what_its_type_needs(client, auth, channel):
    response = client.post("/v1/alert-rules", headers=auth(), json={**RULE, "channels": [channel]})
    assert_envelope(response, 400, "validation_error")


def test_alert_rules_are_written_by_analysts_and_up(client, auth):
    response = client.post("/v1/alert-rules", headers=auth("viewer"), json=RULE)
    assert assert_envelope(response, 403, "forbidden")["details"] == {"required_scope": "alerts:write"}
    assert client.get("/v1/alert-rules", headers=auth("viewer")).status_code == 200
