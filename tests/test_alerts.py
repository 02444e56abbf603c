"""Alert rules and the notification feed; the outside channels (webhook, Slack, email) by the
model functions the worker's tasks call, then end to end with a live worker, a standardwebhooks
receiver, a Slack stand-in and an SMTP server, all on loopback."""
import contextlib
import datetime
import http.server
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest
import requests

from conftest import SEED_WORKSPACE, THEIR_WEBHOOK
from models import (Alert, AlertDelivery, ApiToken, Issue, Notification, ROLE_SCOPES, ServiceAccount, WebhookDelivery,
                    alerts, db, predictions, utcnow)
from models import webhooks as outbound
from test_errors import assert_envelope
from test_server import ROOT, free_port, procfile_command, run_procfile_web, stop
from test_webhooks import LIVE_ENV, Receiver, wait_for

FINGERPRINT = {"domain": "payments", "root_cause": "probe_flapping_gateway"}
# Above the seed's own patterns (the likeliest is at 0.73 within 7 days).
RULE = {"name": "Likely within a week", "threshold": {"probability": 0.8, "window_days": 7},
        "channels": [{"type": "in_app"}]}


@pytest.fixture
def recurring(client, auth):
    """A pattern with an issue a day for ten days: very likely to recur within a week, ingested
    through `through` (default: the `client` fixture). Returns (pattern id, its issue ids, oldest first)."""
    now = utcnow()
    records = [{"title": f"Gateway flaps {n}", "source": "probe", "external_id": f"flap-{n}",
                "fingerprint": FINGERPRINT,
                "source_created_at": (now - datetime.timedelta(days=10 - n)).isoformat() + "Z"}
               for n in range(10)]

    def ingest(through=client):
        response = through.post("/v1/ingest/batch", headers=auth(), json={"records": records})
        assert response.status_code == 202 and not response.get_json()["rejected"], response.get_json()
        with through.application.app_context(), db.connection_context():
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


# ---------------------------------------------------------------------------------------------
# The outside channels, by the functions the worker's tasks call.

FAST = outbound.Policy(allow_insecure=True, timeout_s=5, retry_scale=0.0)  # retries at once
PUBLIC_URL = "https://93.184.215.14/hooks"  # a public address: registrable, never called here


class SlackStandIn:
    """An incoming-webhook receiver on loopback: keeps each POST's JSON, answers with
    `respond(request number) -> (status, headers)` (by default 200 "ok", as Slack answers)."""

    def __init__(self, respond=None):
        self.posts, self.respond, self.lock = [], respond or (lambda n: (200, {})), threading.Lock()
        stand_in = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with stand_in.lock:
                    stand_in.posts.append((self.headers["Content-Type"], json.loads(body)))
                    status, headers = stand_in.respond(len(stand_in.posts))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/T000/B000/XXXX"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def messages(self):
        with self.lock:
            return [message for _, message in self.posts]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def slack(stand_ins):
    return lambda respond=None: stand_ins(SlackStandIn, respond)


def rows(app, model=AlertDelivery, *where):
    with app.app_context(), db.connection_context():
        return list(model.select().where(*where) if where else model.select())


def attempt_until_settled(app, delivery_id, policy=FAST, mailer=None, limit=20):
    """Make attempts as the scheduled tasks would, until the row leaves `pending`."""
    with app.app_context(), db.connection_context():
        for _ in range(limit):
            wait = alerts.deliver(delivery_id, policy, mailer or _no_mail)
            delivery = AlertDelivery.get_by_id(delivery_id)
            if delivery.status != "pending":
                return delivery
            time.sleep(wait or 0)
    return delivery


def _no_mail(*args):
    raise AssertionError("no email expected")


def test_a_firing_queues_one_message_per_outside_channel(insecure_app, auth, recurring, slack):
    client = insecure_app.test_client()
    named = client.post("/v1/webhooks", headers=auth(), json={"url": PUBLIC_URL, "events": ["issue.created"]})
    catch_all = client.post("/v1/webhooks", headers=auth(), json={"url": PUBLIC_URL, "events": ["*"]})
    create_rule(client, auth, channels=[
        {"type": "webhook", "endpoint_id": named.get_json()["id"]},
        {"type": "slack", "url": slack().url},
        {"type": "email", "to": ["oncall@example.com", "sre@example.com"]}])
    pattern_id, _ = recurring(insecure_app.test_client())
    queued = {d.channel: d for d in rows(insecure_app)}
    assert set(queued) == {"slack", "email"} and {d.status for d in queued.values()} == {"pending"}
    with insecure_app.app_context(), db.connection_context():
        outbound.fan_out()
    fired = rows(insecure_app, WebhookDelivery, WebhookDelivery.event_type == "alert.fired")
    # The endpoint the rule names gets it though it subscribes to issue.created only; `*` does not.
    assert [d.endpoint_id for d in fired] == [named.get_json()["id"]]
    assert json.loads(fired[0].body)["data"]["alert"]["pattern"]["id"] == pattern_id
    assert catch_all.status_code == 201
    email = queued["email"].payload
    assert email["to"] == ["oncall@example.com", "sre@example.com"]
    assert email["subject"].endswith("chance of recurring within 7 days")
    assert f"https://app.causeloop.test/patterns/{pattern_id}" in email["body"]


def test_the_slack_message_names_the_pattern_its_chance_the_window_and_a_link(insecure_app, auth, recurring, slack):
    client = insecure_app.test_client()
    create_rule(client, auth, channels=[{"type": "slack", "url": slack().url}])
    pattern_id, _ = recurring(insecure_app.test_client())
    [delivery] = rows(insecure_app)
    message = delivery.payload
    section, context = message["blocks"]
    link = f"https://app.causeloop.test/patterns/{pattern_id}"
    assert message["text"].endswith(f"chance of recurring within 7 days ({link})")
    assert section["type"] == "section" and section["text"]["type"] == "mrkdwn"
    name, chance = section["text"]["text"].split("\n")
    assert name.startswith(f"*<{link}|") and name.endswith(">*")
    assert chance.endswith("% chance of recurring within 7 days") and 80 <= int(chance.split("%")[0]) <= 100
    assert context["elements"][0]["text"].startswith(f"Rule {RULE['name']} · threshold 80%")


def test_slack_markup_in_a_pattern_name_is_shown_literally(insecure_app):
    payload = {"id": "alt_1", "rule_id": "alr_1", "rule_name": "<!channel> & co", "prediction_id": "prd_1",
               "pattern": {"id": "pat_1", "name": "<https://evil.test|Click> me", "risk_score": 50},
               "probability": 0.9, "window_days": 7, "threshold": {"probability": 0.8, "window_days": 7}}
    with insecure_app.app_context():
        message = alerts.slack_message(payload)
    assert "&lt;https://evil.test|Click&gt; me" in message["blocks"][0]["text"]["text"]
    assert "&lt;!channel&gt; &amp; co" in message["blocks"][1]["elements"][0]["text"]


def test_a_failing_slack_receiver_is_retried_until_it_succeeds(insecure_app, auth, recurring, slack):
    answers = {1: (500, {}), 2: (429, {"Retry-After": "0"})}
    receiver = slack(lambda n: answers.get(n, (200, {})))
    create_rule(insecure_app.test_client(), auth, channels=[{"type": "slack", "url": receiver.url}])
    recurring(insecure_app.test_client())
    [delivery] = rows(insecure_app)
    delivery = attempt_until_settled(insecure_app, delivery.id)
    assert delivery.status == "succeeded" and delivery.attempts == 3 and delivery.last_error is None
    assert len(receiver.posts) == 3 and len({json.dumps(m) for m in receiver.messages()}) == 1
    assert receiver.posts[0][0] == "application/json"
    with insecure_app.app_context(), db.connection_context():  # a task run again after success sends nothing
        assert alerts.deliver(delivery.id, FAST, _no_mail) is None
    assert len(receiver.posts) == 3


def test_a_failed_attempt_waits_for_its_turn(insecure_app, auth, recurring, slack):
    receiver = slack(lambda n: (503, {}))
    create_rule(insecure_app.test_client(), auth, channels=[{"type": "slack", "url": receiver.url}])
    recurring(insecure_app.test_client())
    [delivery] = rows(insecure_app)
    slow = outbound.Policy(allow_insecure=True, timeout_s=5)
    with insecure_app.app_context(), db.connection_context():
        assert 4 <= alerts.deliver(delivery.id, slow, _no_mail) <= 6  # the schedule's 5 s, ±10 %
        assert alerts.deliver(delivery.id, slow, _no_mail) is None  # not due yet: nothing sent
        delivery = AlertDelivery.get_by_id(delivery.id)
    assert len(receiver.posts) == 1 and delivery.attempts == 1 and delivery.last_error == "HTTP 503"
    assert delivery.status == "pending" and delivery.next_attempt_at > outbound.now()


@pytest.mark.parametrize("resolves_to", ["10.0.0.7", "169.254.169.254", "127.0.0.1"])
def test_a_slack_url_resolving_to_a_non_public_address_is_not_contacted(insecure_app, auth, recurring, slack,
                                                                        monkeypatch, resolves_to):
    receiver = slack()
    create_rule(insecure_app.test_client(), auth,
                channels=[{"type": "slack", "url": "https://hooks.slack.com/services/T000/B000/XXXX"}])
    recurring(insecure_app.test_client())
    [delivery] = rows(insecure_app)
    real = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo",
                        lambda host, *a, **k: real(resolves_to if host == "hooks.slack.com" else host, *a, **k))
    secure = outbound.Policy(timeout_s=5)  # WEBHOOKS_ALLOW_INSECURE off, as in production
    with insecure_app.app_context(), db.connection_context():
        assert alerts.deliver(delivery.id, secure, _no_mail) is not None  # refused, and retried later
        delivery = AlertDelivery.get_by_id(delivery.id)
    assert "resolves to a" in delivery.last_error and resolves_to in delivery.last_error
    assert delivery.status == "pending" and delivery.attempts == 1 and receiver.posts == []


def test_a_loopback_receiver_is_refused_without_the_insecure_setting(insecure_app, auth, recurring, slack):
    receiver = slack()
    create_rule(insecure_app.test_client(), auth, channels=[{"type": "slack", "url": receiver.url}])
    recurring(insecure_app.test_client())
    [delivery] = rows(insecure_app)
    with insecure_app.app_context(), db.connection_context():
        alerts.deliver(delivery.id, outbound.Policy(timeout_s=5), _no_mail)
        delivery = AlertDelivery.get_by_id(delivery.id)
    assert delivery.last_error == "A webhook URL must use https" and receiver.posts == []


def test_a_channel_failing_for_good_holds_up_no_other(make_app, auth, recurring, slack, smtp_server):
    from app import mail
    from conftest import ON_POSTGRES
    import fixtures

    inbox, _ = smtp_server
    app = make_app(WEBHOOKS_ALLOW_INSECURE=True, SMTP_URL=f"smtp://127.0.0.1:{free_port()}")  # nobody listens
    if ON_POSTGRES:
        fixtures.load_seed(reset=True)
    receiver = slack()
    create_rule(app.test_client(), auth, channels=[{"type": "email", "to": ["oncall@example.com"]},
                                                   {"type": "slack", "url": receiver.url}])
    recurring(app.test_client())
    queued = {d.channel: d for d in rows(app)}
    email = attempt_until_settled(app, queued["email"].id, mailer=mail.attempt)
    slack_row = attempt_until_settled(app, queued["slack"].id)
    assert email.status == "failed" and email.attempts == len(outbound.RETRY_SCHEDULE_S)
    assert "ConnectionRefusedError" in email.last_error and email.next_attempt_at is None
    assert slack_row.status == "succeeded" and len(receiver.posts) == 1 and inbox.messages == []


def test_the_sweep_resends_what_a_lost_task_left_behind(auth, insecure_app, recurring, slack):
    from app import tasks  # bound to the app built last: insecure_app, after auth's


    receiver = slack()
    create_rule(insecure_app.test_client(), auth, channels=[{"type": "slack", "url": receiver.url}])
    recurring(insecure_app.test_client())
    [delivery] = rows(insecure_app)
    tasks.huey.flush()  # the task the commit queued is lost with its worker
    with insecure_app.app_context(), db.connection_context():
        AlertDelivery.update(locked_until=outbound.now() - datetime.timedelta(seconds=1)).execute()  # a lapsed lease
    time.sleep(0.2)  # past WEBHOOK_SWEEP_S: the sweep leaves alone what is only waiting its turn
    tasks.sweep()
    while (task := tasks.huey.dequeue()) is not None:
        tasks.huey.execute(task)
    assert len(receiver.posts) == 1 and rows(insecure_app)[0].status == "succeeded"


def test_a_channel_naming_another_workspaces_webhook_is_refused(client, auth, webhooks):
    response = client.post("/v1/alert-rules", headers=auth(),
                           json={**RULE, "channels": [{"type": "webhook", "endpoint_id": THEIR_WEBHOOK}]})
    assert "not found" in assert_envelope(response, 422, "unprocessable")["details"]["channels"][0]


def test_a_loopback_slack_url_is_refused_without_the_insecure_setting(client, auth):
    response = client.post("/v1/alert-rules", headers=auth(),
                           json={**RULE, "channels": [{"type": "slack", "url": "http://127.0.0.1:9/services/x"}]})
    assert_envelope(response, 400, "validation_error")


# ---------------------------------------------------------------------------------------------
# End to end: the Procfile's web (gunicorn) and worker processes on the suite's database, and
# every receiver on loopback.

@contextlib.contextmanager
def live_worker(database_url, **env):
    """gunicorn and `flask worker` on `database_url`; yields (base URL, the mock owner's headers,
    run(argv): a `flask --app wsgi` command in the same environment)."""
    env = {**os.environ, **LIVE_ENV, "PORT": str(free_port()), "WORKER": "external", "DATABASE_URL": database_url,
           **env}
    web, base = run_procfile_web(env)
    command = procfile_command("worker")
    command[0] = os.path.join(os.path.dirname(sys.executable), command[0])
    worker = subprocess.Popen(command, cwd=ROOT, env=env, stdout=(log := tempfile.TemporaryFile()),
                              stderr=subprocess.STDOUT)
    worker.log = log

    def run(*argv):
        flask = os.path.join(os.path.dirname(sys.executable), "flask")
        subprocess.run([flask, "--app", "wsgi", *argv], cwd=ROOT, env=env, check=True, capture_output=True)

    try:
        tokens = requests.post(base + "/v1/auth/exchange", json={"subject_token": "x"}, timeout=5).json()
        yield base, {"Authorization": f"Bearer {tokens['access_token']}"}, run
    finally:
        stop(worker)
        stop(web)


@pytest.mark.live
def test_alerts_reach_every_channel_once_with_a_live_worker(app, database_url, smtp_server, slack):
    inbox, smtp_url = smtp_server
    slack_in, hook = slack(), Receiver()
    now = utcnow()
    records = [{"title": f"Gateway flaps {n}", "source": "probe", "external_id": f"flap-{n}",
                "fingerprint": FINGERPRINT,
                "source_created_at": (now - datetime.timedelta(days=10 - n)).isoformat() + "Z"} for n in range(10)]
    try:
        with live_worker(database_url, SMTP_URL=smtp_url, APP_URL="https://app.causeloop.test") as (base, headers, run):
            def call(method, path, **kwargs):
                response = requests.request(method, base + path, headers=headers, timeout=10, **kwargs)
                assert response.status_code < 300, response.text
                return response.json() if response.content else None

            endpoint = call("POST", "/v1/webhooks", json={"url": hook.url, "events": ["*"]})
            hook.secrets.append(endpoint["secret"])
            rule = call("POST", "/v1/alert-rules", json={**RULE, "channels": [
                {"type": "in_app"}, {"type": "webhook", "endpoint_id": endpoint["id"]},
                {"type": "slack", "url": slack_in.url}, {"type": "email", "to": ["oncall@example.test"]}]})

            def received():
                with hook.lock:
                    fired = [message for _, message, _ in hook.verified if message["type"] == "alert.fired"]
                return {"in_app": call("GET", "/v1/me/notifications/feed")["page"]["total"], "webhook": len(fired),
                        "slack": len(slack_in.posts), "email": len(inbox.messages)}

            def settles_at(count):
                """Every channel reaches `count` and stays there while the worker and its sweeper
                run on (a few sweeps), and no more firings were written than that."""
                expected = dict.fromkeys(("in_app", "webhook", "slack", "email"), count)
                assert wait_for(lambda: received() == expected), received()
                time.sleep(2)
                assert received() == expected
                with app.app_context(), db.connection_context():
                    assert AlertDelivery.select().count() == 2 * count  # slack and email, once per firing

            call("POST", "/v1/ingest/batch", json={"records": records})
            settles_at(1)
            with hook.lock:
                [message] = [m for _, m, _ in hook.verified if m["type"] == "alert.fired"]
            pattern_id = message["data"]["alert"]["pattern"]["id"]
            assert message["data"]["alert"]["rule_id"] == rule["id"] and message["data"]["alert"]["window_days"] == 7
            [slack_message] = slack_in.messages()
            assert f"<https://app.causeloop.test/patterns/{pattern_id}|" in slack_message["blocks"][0]["text"]["text"]
            [(recipients, email)] = inbox.messages
            subject = email["Subject"].strip()  # a long one is folded, and Python keeps the fold's space
            assert recipients == ["oncall@example.test"] and subject.endswith("chance of recurring within 7 days")
            assert slack_message["text"].startswith(subject)
            assert f"https://app.causeloop.test/patterns/{pattern_id}" in email.get_content()

            # The same window again: the same records re-ingested, every prediction recomputed.
            call("POST", "/v1/ingest/batch", json={"records": records})
            run("predictions", "recompute")
            settles_at(1)

            with app.app_context(), db.connection_context():
                later = [i.id for i in Issue.select().where(Issue.source == "probe").order_by(Issue.created_at)][1:]

            def drop_and_rise():
                call("POST", "/v1/issues/bulk", json={"ids": later, "op": "unlink_pattern"})
                with app.app_context(), db.connection_context():
                    assert not Alert.select().where(Alert.rule == rule["id"]).exists()  # re-armed
                call("POST", "/v1/issues/bulk", json={"ids": later, "op": "link_pattern", "value": pattern_id})

            drop_and_rise()
            settles_at(2)

            snoozed = (utcnow() + datetime.timedelta(days=1)).isoformat() + "Z"
            call("PATCH", f"/v1/alert-rules/{rule['id']}", json={"snoozed_until": snoozed})
            drop_and_rise()
            settles_at(2)

            call("PATCH", f"/v1/alert-rules/{rule['id']}", json={"snoozed_until": None, "enabled": False})
            drop_and_rise()
            settles_at(2)

            call("PATCH", f"/v1/alert-rules/{rule['id']}", json={"enabled": True})  # over a likely pattern: fires
            settles_at(3)
            assert not hook.unverified
    finally:
        hook.close()
