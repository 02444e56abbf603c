"""Outbound webhooks: the endpoints' CRUD and rules, the SSRF refusals, and delivery — by the
model functions the tasks call, then end to end with real processes (gunicorn, the Procfile's
worker) and a real receiver on loopback that verifies every message with standardwebhooks."""
import base64
import collections
import contextlib
import datetime
import http.server
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

import pytest
import requests
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from conftest import MY_WEBHOOK, OTHER_WORKSPACE, SEED_WORKSPACE, THEIR_WEBHOOK
from models import Event, WebhookDelivery, WebhookEndpoint, db
from models import webhooks as outbound
from test_errors import assert_envelope
from test_server import ROOT, free_port, procfile_command, run_procfile_web, stop

INSECURE = outbound.Policy(allow_insecure=True, timeout_s=5, retry_scale=0.001)


class Receiver:
    """A threaded HTTP/1.1 server on loopback: verifies each message with every secret it knows,
    answers with `respond(body) -> (status, headers)`, and keeps what it verified, and the
    connection (client port) each request came on."""

    def __init__(self, respond=None):
        self.secrets, self.respond = [], respond or (lambda body: (204, {}))
        self.verified, self.unverified, self.requests, self.connections = [], [], 0, []
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver.lock:
                    receiver.connections.append((self.path, self.client_address[1]))
                status, headers = receiver.receive(body, headers)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def receive(self, body, headers):
        with self.lock:
            self.requests += 1
            secrets = list(self.secrets)
        for secret in secrets:
            try:
                message = Webhook(secret).verify(body, headers)
            except WebhookVerificationError:
                continue
            status, extra = self.respond(message)
            if 200 <= status < 300:
                with self.lock:
                    self.verified.append((headers["webhook-id"], message, headers))
            return status, extra
        with self.lock:
            self.unverified.append(headers)
        return 401, {}

    def message_ids(self):
        with self.lock:
            return {message_id for message_id, _, _ in self.verified}

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(stand_ins):
    return lambda respond=None: stand_ins(Receiver, respond)


def create(client, headers, url="https://93.184.215.14/hooks", events=("*",), **extra):
    return client.post("/v1/webhooks", headers=headers, json={"url": url, "events": list(events), **extra})


# ---------------------------------------------------------------------------------------------
# Endpoints.

def test_a_webhook_is_created_with_a_secret_shown_once(client, auth):
    headers = auth()
    response = create(client, headers, events=["issue.created", "pattern.detected"], description="Ops")
    assert response.status_code == 201
    body = response.get_json()
    assert body["secret"].startswith("whsec_") and len(base64.b64decode(body["secret"][6:])) == 32
    assert body["events"] == ["issue.created", "pattern.detected"] and body["status"] == "active"
    assert body["health"] == {"last_delivery_status": None, "last_status_code": None, "last_attempt_at": None,
                              "failures_in_a_row": 0, "failing_since": None}
    fetched = client.get(response.headers["Location"], headers=headers).get_json()
    assert "secret" not in fetched and fetched["id"] == body["id"]
    listed = client.get("/v1/webhooks", headers=headers).get_json()["data"]
    assert [item["id"] for item in listed] == [body["id"]] and "secret" not in listed[0]


def test_a_webhook_is_patched_paused_and_deleted(client, auth):
    headers = auth()
    webhook_id = create(client, headers).get_json()["id"]
    patched = client.patch(f"/v1/webhooks/{webhook_id}", headers=headers,
                           json={"events": ["issue.updated"], "description": "x", "paused": True}).get_json()
    assert (patched["events"], patched["description"], patched["paused"], patched["status"]) == \
        (["issue.updated"], "x", True, "paused")
    assert client.delete(f"/v1/webhooks/{webhook_id}", headers=headers).status_code == 204
    assert_envelope(client.get(f"/v1/webhooks/{webhook_id}", headers=headers), 404, "not_found")


@pytest.mark.parametrize("body,field", [
    ({"url": "https://93.184.215.14/", "events": ["issue.exploded"]}, "events.0"),
    ({"url": "https://93.184.215.14/", "events": []}, "events"),
    ({"url": "https://93.184.215.14/"}, "events"),
    ({"url": "not a url", "events": ["*"]}, "url"),
    ({"url": "ftp://93.184.215.14/", "events": ["*"]}, "url"),
    ({"url": "https://93.184.215.14/", "events": ["*"], "secret": "whsec_mine"}, "secret"),
])
def test_malformed_webhooks_are_refused(client, auth, body, field):
    response = client.post("/v1/webhooks", headers=auth(), json=body)
    assert field in assert_envelope(response, 400, "validation_error")["details"]


def test_a_star_subscription_is_stored_alone(client, auth):
    assert create(client, auth(), events=["issue.created", "*"]).get_json()["events"] == ["*"]


def test_webhooks_need_the_admin_scope_and_a_signed_in_member(client, auth, api_tokens, webhooks):
    from conftest import MY_TOKEN

    assert_envelope(client.get("/v1/webhooks", headers=auth("analyst")), 403, "forbidden")
    token = {"Authorization": f"Bearer {api_tokens[MY_TOKEN]}"}
    assert_envelope(client.get("/v1/webhooks", headers=token), 403, "forbidden")


def test_another_workspaces_webhooks_are_not_listed_or_found(client, auth, webhooks):
    headers = auth()
    assert [item["id"] for item in client.get("/v1/webhooks", headers=headers).get_json()["data"]] == [MY_WEBHOOK]
    assert_envelope(client.get(f"/v1/webhooks/{THEIR_WEBHOOK}/deliveries", headers=headers), 404, "not_found")


def test_rotating_returns_a_new_secret_and_keeps_the_old_one_signing(app, client, auth, webhooks):
    headers = auth()
    rotated = client.post(f"/v1/webhooks/{MY_WEBHOOK}/rotate", headers=headers).get_json()
    with app.app_context(), db.connection_context():
        endpoint = WebhookEndpoint.get_by_id(MY_WEBHOOK)
        assert endpoint.signing_secrets() == [rotated["secret"], endpoint.previous_secret]
        later = outbound.now() + datetime.timedelta(hours=24, seconds=1)
        assert endpoint.signing_secrets(later) == [rotated["secret"]]


def test_deliveries_are_listed_newest_first_with_a_cursor(client, auth, webhooks):
    headers = auth()
    for _ in range(2):
        assert client.post(f"/v1/webhooks/{MY_WEBHOOK}/test", headers=headers).status_code == 202
    first = client.get(f"/v1/webhooks/{MY_WEBHOOK}/deliveries?limit=2", headers=headers).get_json()
    second = client.get(f"/v1/webhooks/{MY_WEBHOOK}/deliveries?limit=2&cursor={first['page']['next_cursor']}",
                        headers=headers).get_json()
    listed = first["data"] + second["data"]
    assert len(listed) == 3 and not second["page"]["has_more"]
    assert all(item["event_type"] == "webhook.test" and item["status"] == "pending" for item in listed)


# ---------------------------------------------------------------------------------------------
# No SSRF: https to public addresses only, checked at registration and again at each send.

@pytest.mark.parametrize("url", ["http://127.0.0.1/hook", "https://127.0.0.1/hook", "https://169.254.169.254/",
                                 "https://10.0.0.1/", "https://192.168.1.1/", "https://[::1]/",
                                 "https://[fd00:ec2::254]/", "https://localhost/", "https://224.0.0.1/",
                                 "https://0.0.0.0/", "https://100.64.0.1/"])
def test_receivers_on_non_public_addresses_are_refused(app, client, auth, url):
    response = create(client, auth(), url=url)
    assert "url" in assert_envelope(response, 422, "unprocessable")["details"]


@pytest.mark.parametrize("url", ["https://169.254.169.254/latest/meta-data", "https://10.0.0.1/",
                                 "http://[fd00:ec2::254]/"])
def test_the_insecure_setting_lets_only_loopback_through(insecure_app, auth, url):
    client = insecure_app.test_client()
    assert create(client, auth(), url=url).status_code == 422
    assert create(client, auth(), url="http://127.0.0.1:9/hook").status_code == 201


def test_a_name_that_resolves_privately_at_send_time_is_not_contacted(monkeypatch, receiver):
    """DNS can change after registration: every send resolves and checks again."""
    hook = receiver()
    real = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo",
                        lambda host, *a, **k: real("10.0.0.7" if host == "hooks.example.test" else host, *a, **k))
    outcome = outbound.send("https://hooks.example.test/x", "msg_1", "{}", [outbound.new_secret()], INSECURE)
    assert outcome.status_code is None and "private" in outcome.error
    assert hook.requests == 0


# ---------------------------------------------------------------------------------------------
# Delivery, by the functions the worker's tasks call.

def _endpoint(app, url, events=("*",)):
    with app.app_context(), db.connection_context():
        endpoint = WebhookEndpoint.create_in(SEED_WORKSPACE, {"url": url, "events": list(events)}, INSECURE)
    return endpoint


def _fan_out_and_deliver(app, policy=INSECURE):
    with app.app_context(), db.connection_context():
        return {endpoint_id: outbound.deliver_due(endpoint_id, policy) for endpoint_id in outbound.fan_out()}


def test_an_event_arrives_signed_in_the_standard_webhooks_shape(insecure_app, auth, receiver):
    hook = receiver()
    endpoint = _endpoint(insecure_app, hook.url, ["issue.created"])
    hook.secrets.append(endpoint.new_secret)
    client = insecure_app.test_client()
    issue = client.post("/v1/issues", headers=auth(), json={"title": "Webhook probe"}).get_json()
    _fan_out_and_deliver(insecure_app)
    [(message_id, message, headers)] = hook.verified
    assert message["type"] == "issue.created" and message["data"]["issue"] == issue
    assert message["timestamp"].endswith("Z") and message_id.startswith("msg_")
    assert headers["webhook-signature"].startswith("v1,")


def test_a_failure_is_retried_with_the_same_message_id(insecure_app, receiver):
    answers = iter([(500, {}), (503, {"Retry-After": "0"}), (200, {})])
    hook = receiver(lambda message: next(answers))
    endpoint = _endpoint(insecure_app, hook.url)
    hook.secrets.append(endpoint.new_secret)
    with insecure_app.app_context(), db.connection_context():
        delivery = WebhookEndpoint.send_test(endpoint.id, SEED_WORKSPACE)
        for _ in range(3):
            wait = outbound.deliver(delivery.id, INSECURE)
            time.sleep(wait or 0)
        delivery = WebhookDelivery.get_by_id(delivery.id)
    assert delivery.status == "succeeded" and delivery.attempt_count == 3
    assert [attempt["status_code"] for attempt in delivery.attempts] == [500, 503, 200]
    assert len(hook.message_ids()) == 1


def test_retry_after_is_honoured(insecure_app, receiver):
    hook = receiver(lambda message: (429, {"Retry-After": "120"}))
    endpoint = _endpoint(insecure_app, hook.url)
    hook.secrets.append(endpoint.new_secret)
    with insecure_app.app_context(), db.connection_context():
        delivery = WebhookEndpoint.send_test(endpoint.id, SEED_WORKSPACE)
        assert outbound.deliver(delivery.id, INSECURE) >= 120
        assert outbound.deliver(delivery.id, INSECURE) is None  # not due yet: nothing sent
    assert hook.requests == 1


def test_a_410_disables_the_endpoint_and_says_so(insecure_app, receiver):
    hook = receiver(lambda message: (410, {}))
    endpoint = _endpoint(insecure_app, hook.url)
    hook.secrets.append(endpoint.new_secret)
    with insecure_app.app_context(), db.connection_context():
        delivery = WebhookEndpoint.send_test(endpoint.id, SEED_WORKSPACE)
        assert outbound.deliver(delivery.id, INSECURE) is None
        endpoint = WebhookEndpoint.get_by_id(endpoint.id)
        event = Event.select().where(Event.type == "webhook.disabled").get()
    assert endpoint.status == "disabled" and "410" in endpoint.disabled_reason
    assert event.payload["webhook"]["id"] == endpoint.id


def test_an_endpoint_failing_for_five_days_is_disabled(insecure_app, receiver):
    hook = receiver(lambda message: (500, {}))
    endpoint = _endpoint(insecure_app, hook.url)
    hook.secrets.append(endpoint.new_secret)
    with insecure_app.app_context(), db.connection_context():
        WebhookEndpoint.update(failing_since=outbound.now() - datetime.timedelta(days=5)).execute()
        delivery = WebhookEndpoint.send_test(endpoint.id, SEED_WORKSPACE)
        outbound.deliver(delivery.id, outbound.Policy(allow_insecure=True))
        assert WebhookEndpoint.get_by_id(endpoint.id).disabled_reason.startswith("Failing since")
        assert WebhookDelivery.get_by_id(delivery.id).status == "failed"


def test_a_paused_endpoint_keeps_its_deliveries_until_resumed(insecure_app, auth, receiver):
    hook = receiver()
    endpoint = _endpoint(insecure_app, hook.url)
    hook.secrets.append(endpoint.new_secret)
    client, headers = insecure_app.test_client(), auth()
    client.patch(f"/v1/webhooks/{endpoint.id}", headers=headers, json={"paused": True})
    client.post("/v1/issues", headers=headers, json={"title": "While paused"})
    _fan_out_and_deliver(insecure_app)
    assert hook.requests == 0
    client.patch(f"/v1/webhooks/{endpoint.id}", headers=headers, json={"paused": False})
    with insecure_app.app_context(), db.connection_context():
        for endpoint_id in outbound.due():
            outbound.deliver_due(endpoint_id, INSECURE)
    assert len(hook.verified) >= 1


def test_a_redelivery_sends_the_same_message_again(insecure_app, auth, receiver):
    hook = receiver()
    endpoint = _endpoint(insecure_app, hook.url)
    hook.secrets.append(endpoint.new_secret)
    client, headers = insecure_app.test_client(), auth()
    delivery = client.post(f"/v1/webhooks/{endpoint.id}/test", headers=headers).get_json()
    with insecure_app.app_context(), db.connection_context():
        outbound.deliver(delivery["id"], INSECURE)
    again = client.post(f"/v1/webhooks/{endpoint.id}/deliveries/{delivery['id']}/redeliver", headers=headers)
    assert again.status_code == 202 and again.get_json()["status"] == "pending"
    with insecure_app.app_context(), db.connection_context():
        outbound.deliver(delivery["id"], INSECURE)
    assert [message_id for message_id, _, _ in hook.verified] == [delivery["message_id"]] * 2
    listed = client.get(f"/v1/webhooks/{endpoint.id}/deliveries", headers=headers).get_json()["data"]
    assert listed[0]["attempt_count"] == 2 and listed[0]["status"] == "succeeded"


def test_events_from_before_an_endpoint_existed_are_not_sent(insecure_app, auth, receiver):
    client, headers = insecure_app.test_client(), auth()
    client.post("/v1/issues", headers=headers, json={"title": "Before"})
    hook = receiver()
    endpoint = _endpoint(insecure_app, hook.url, ["issue.created"])
    hook.secrets.append(endpoint.new_secret)
    client.post("/v1/issues", headers=headers, json={"title": "After"})
    _fan_out_and_deliver(insecure_app)
    assert [message["data"]["issue"]["title"] for _, message, _ in hook.verified] == ["After"]


def _queued(app, endpoint, count):
    """`count` test messages queued for the endpoint, oldest first."""
    with app.app_context(), db.connection_context():
        return [WebhookEndpoint.send_test(endpoint.id, SEED_WORKSPACE).id for _ in range(count)]


def _deliveries(app, ids):
    with app.app_context(), db.connection_context():
        found = {delivery.id: delivery for delivery in WebhookDelivery.select().where(WebhookDelivery.id.in_(ids))}
    return [found[delivery_id] for delivery_id in ids]


def test_a_batch_goes_over_one_connection_and_retries_each_failure_on_its_own(insecure_app, receiver):
    answers = iter([204, 500, 204, 503, 204, 204])
    hook = receiver(lambda message: (next(answers), {}))
    endpoint = _endpoint(insecure_app, hook.url)
    hook.secrets.append(endpoint.new_secret)
    ids = _queued(insecure_app, endpoint, 5)
    with insecure_app.app_context(), db.connection_context():
        retries = outbound.deliver_due(endpoint.id, INSECURE)
    assert [delivery_id for delivery_id, _ in retries] == [ids[1], ids[3]]
    assert all(0 < wait < 1 for _, wait in retries)
    rows = _deliveries(insecure_app, ids)
    assert [row.status for row in rows] == ["succeeded", "pending", "succeeded", "pending", "succeeded"]
    assert [row.last_status_code for row in rows] == [204, 500, 204, 503, 204]
    assert all(row.attempt_count == 1 and row.locked_until is None for row in rows)
    assert len({port for _, port in hook.connections}) == 1
    with insecure_app.app_context(), db.connection_context():
        assert WebhookEndpoint.get_by_id(endpoint.id).health["failures_in_a_row"] == 0  # the last one succeeded
        time.sleep(retries[0][1])
        assert outbound.deliver(ids[1], INSECURE) is None  # the retry: this delivery alone
    rows = _deliveries(insecure_app, ids)
    assert [attempt["status_code"] for attempt in rows[1].attempts] == [500, 204] and rows[1].status == "succeeded"
    assert rows[3].attempt_count == 1 and hook.requests == 6


def test_kept_alive_connections_carry_one_endpoint_each(insecure_app, receiver):
    hook = receiver()
    first, second = _endpoint(insecure_app, hook.url + "/first"), _endpoint(insecure_app, hook.url + "/second")
    hook.secrets += [first.new_secret, second.new_secret]
    for _ in range(2):
        for endpoint in (first, second):
            _queued(insecure_app, endpoint, 3)
        with insecure_app.app_context(), db.connection_context():
            for endpoint in (first, second):
                assert outbound.deliver_due(endpoint.id, INSECURE) == []
    ports = {path: {port for each, port in hook.connections if each == path} for path in ("/hook/first", "/hook/second")}
    assert len(hook.connections) == 12 and len(hook.verified) == 12
    assert len(ports["/hook/first"]) == 1 and len(ports["/hook/second"]) == 1  # reused across batches
    assert ports["/hook/first"].isdisjoint(ports["/hook/second"])


def test_a_410_stops_the_batch_and_leaves_the_rest_pending(insecure_app, receiver):
    answers = iter([204, 410])
    hook = receiver(lambda message: (next(answers), {}))
    endpoint = _endpoint(insecure_app, hook.url)
    hook.secrets.append(endpoint.new_secret)
    ids = _queued(insecure_app, endpoint, 4)
    with insecure_app.app_context(), db.connection_context():
        assert outbound.deliver_due(endpoint.id, INSECURE) == []
        assert WebhookEndpoint.get_by_id(endpoint.id).status == "disabled"
    rows = _deliveries(insecure_app, ids)
    assert [row.status for row in rows] == ["succeeded", "failed", "pending", "pending"]
    assert [row.attempt_count for row in rows[2:]] == [0, 0] and all(row.locked_until is None for row in rows)
    assert hook.requests == 2


def test_a_retry_after_holds_the_rest_of_the_batch_unattempted(insecure_app, receiver):
    hook = receiver(lambda message: (429, {"Retry-After": "120"}))
    endpoint = _endpoint(insecure_app, hook.url)
    hook.secrets.append(endpoint.new_secret)
    ids = _queued(insecure_app, endpoint, 3)
    with insecure_app.app_context(), db.connection_context():
        [(delivery_id, wait)] = outbound.deliver_due(endpoint.id, INSECURE)
        assert outbound.deliver_due(endpoint.id, INSECURE) == []  # nothing due: nothing sent
    assert delivery_id == ids[0] and wait >= 120 and hook.requests == 1
    rows = _deliveries(insecure_app, ids)
    assert [row.attempt_count for row in rows] == [1, 0, 0]
    assert all(row.next_attempt_at >= outbound.now() + datetime.timedelta(seconds=110) for row in rows)


def test_a_receiver_that_does_not_answer_costs_one_attempt_a_batch(insecure_app):
    endpoint = _endpoint(insecure_app, f"http://127.0.0.1:{free_port()}/hook")
    ids = _queued(insecure_app, endpoint, 3)
    with insecure_app.app_context(), db.connection_context():
        [(delivery_id, _)] = outbound.deliver_due(endpoint.id, INSECURE)
    rows = _deliveries(insecure_app, ids)
    assert delivery_id == ids[0] and rows[0].last_error and rows[0].last_status_code is None
    assert [row.attempt_count for row in rows] == [1, 0, 0] and all(row.status == "pending" for row in rows)


def test_concurrent_batches_for_one_endpoint_send_each_message_once(insecure_app, receiver):
    hook = receiver(lambda message: (time.sleep(0.005), (204, {}))[1])
    endpoint = _endpoint(insecure_app, hook.url)
    hook.secrets.append(endpoint.new_secret)
    ids = _queued(insecure_app, endpoint, 40)

    def drain():
        with insecure_app.app_context(), db.connection_context():
            outbound.deliver_due(endpoint.id, INSECURE, batch_size=5)

    threads = [threading.Thread(target=drain) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert hook.requests == 40 and len(hook.message_ids()) == 40
    assert all(row.status == "succeeded" and row.attempt_count == 1 for row in _deliveries(insecure_app, ids))


# ---------------------------------------------------------------------------------------------
# End to end: gunicorn (the Procfile's web) + the Procfile's worker, on SQLite, and receivers.

LIVE_ENV = {"USE_MOCK": "1", "RATE_LIMIT": "100000/minute", "WEBHOOKS_ALLOW_INSECURE": "1",
            "WEBHOOK_RETRY_SCALE": "0.0005", "WEBHOOK_TIMEOUT_S": "2", "WEBHOOK_SWEEP_S": "0.5",
            "WORKER_THREADS": "4"}


@contextlib.contextmanager
def live_service(tmp_path, worker="external", **env):
    env = {**os.environ, **LIVE_ENV, "PORT": str(free_port()), "WORKER": worker,
           "DATABASE_URL": f"sqlite:///{tmp_path / 'live.db'}", **env}
    proc, base = run_procfile_web(env)
    workers = []

    def start_worker():
        command = procfile_command("worker")
        command[0] = os.path.join(os.path.dirname(sys.executable), command[0])
        log = tempfile.TemporaryFile()
        worker_proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        worker_proc.log = log
        workers.append(worker_proc)
        return worker_proc

    try:
        tokens = requests.post(base + "/v1/auth/exchange", json={"subject_token": "x"}, timeout=5).json()
        headers = {"Authorization": f"Bearer {tokens['access_token']}"}
        yield base, headers, start_worker, tmp_path / "live.db"
    finally:
        for worker_proc in workers:
            if worker_proc.poll() is None:
                stop(worker_proc)
            else:
                worker_proc.log.close()
        stop(proc)


def outbox_events(database, since_id=0):
    with contextlib.closing(sqlite3.connect(database)) as connection:
        return connection.execute("SELECT type, payload FROM event WHERE workspace_id = ? AND id > ? ORDER BY seq",
                                  (SEED_WORKSPACE, since_id)).fetchall()


def wait_for(condition, timeout=40):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def write_issues(base, headers, count, prefix):
    for n in range(count):
        created = requests.post(base + "/v1/issues", headers=headers, json={"title": f"{prefix} {n}"}, timeout=10)
        assert created.status_code == 201


def received_as_outbox(hook, database):
    """Every outbox event (of the seed workspace, all types) arrived, verified, once each."""
    expected = collections.Counter((kind, payload) for kind, payload in outbox_events(database))
    with hook.lock:
        unique = {message_id: message for message_id, message, _ in hook.verified}
    got = collections.Counter((message["type"], json.dumps(message["data"], separators=(",", ":")))
                              for message in unique.values())
    return {kind for kind, _ in expected} and sum(expected.values()) == sum(got.values()) and \
        {kind for kind, _ in got} == {kind for kind, _ in expected}


@pytest.mark.live
def test_every_event_reaches_a_flaky_receiver_through_a_rotation(tmp_path, receiver):
    rng, lock = random.Random(7), threading.Lock()

    def flaky(message):
        with lock:
            return (500, {}) if rng.random() < 0.3 else (200, {})

    hook = receiver(flaky)
    with live_service(tmp_path) as (base, headers, start_worker, database):
        created = requests.post(base + "/v1/webhooks", headers=headers, json={"url": hook.url, "events": ["*"]},
                                timeout=5).json()
        hook.secrets.append(created["secret"])
        start_worker()
        write_issues(base, headers, 15, "Before rotation")
        rotated = requests.post(f"{base}/v1/webhooks/{created['id']}/rotate", headers=headers, timeout=5).json()
        write_issues(base, headers, 15, "After rotation")  # the receiver still knows only the old secret
        assert wait_for(lambda: received_as_outbox(hook, database)), (len(hook.verified), len(outbox_events(database)))
        hook.secrets[:] = [rotated["secret"]]  # now only the new one
        write_issues(base, headers, 5, "New secret only")
        assert wait_for(lambda: received_as_outbox(hook, database)), (len(hook.verified), len(outbox_events(database)))
        assert not hook.unverified
        assert hook.verified[-1][2]["webhook-signature"].count("v1,") == 2
        health = requests.get(f"{base}/v1/webhooks/{created['id']}", headers=headers, timeout=5).json()["health"]
        assert health["last_delivery_status"] in ("succeeded", "failed")


@pytest.mark.live
def test_killing_the_worker_mid_delivery_loses_nothing(tmp_path, receiver):
    hook = receiver(lambda message: (time.sleep(0.05), (200, {}))[1])
    with live_service(tmp_path) as (base, headers, start_worker, database):
        created = requests.post(base + "/v1/webhooks", headers=headers, json={"url": hook.url, "events": ["*"]},
                                timeout=5).json()
        hook.secrets.append(created["secret"])
        worker = start_worker()
        write_issues(base, headers, 40, "Kill")
        assert wait_for(lambda: len(hook.verified) >= 5, timeout=20)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        arrived = len(hook.message_ids())
        start_worker()
        assert wait_for(lambda: received_as_outbox(hook, database)), (arrived, len(hook.message_ids()))
        assert arrived < len(hook.message_ids())


@pytest.mark.live
def test_the_quickstart_server_delivers_with_its_inline_worker_and_a_410_disables(tmp_path, receiver):
    hook, gone = receiver(), receiver(lambda message: (410, {}))
    with live_service(tmp_path, worker="inline") as (base, headers, _, database):
        ids = []
        for each in (hook, gone):
            created = requests.post(base + "/v1/webhooks", headers=headers,
                                    json={"url": each.url, "events": ["issue.created"]}, timeout=5).json()
            each.secrets.append(created["secret"])
            ids.append(created["id"])
        write_issues(base, headers, 3, "Inline")
        assert requests.post(f"{base}/v1/webhooks/{ids[0]}/test", headers=headers, timeout=5).status_code == 202
        assert wait_for(lambda: len(hook.verified) == 4)
        assert {message["type"] for _, message, _ in hook.verified} == {"issue.created", "webhook.test"}

        def disabled():
            return requests.get(f"{base}/v1/webhooks/{ids[1]}", headers=headers, timeout=5).json()["status"] == "disabled"

        assert wait_for(disabled)
        sent = gone.requests  # at most the three in flight together
        write_issues(base, headers, 2, "After the 410")
        assert wait_for(lambda: len(hook.verified) == 6)
        assert gone.requests == sent <= 3


def test_a_url_whose_bracketed_host_is_no_address_is_unprocessable(client, auth):
    response = client.post("/v1/webhooks", headers=auth(), json={"url": "https://[435a7F]/hook", "events": ["*"]})
    assert response.status_code == 422 and "url" in response.get_json()["error"]["details"]
