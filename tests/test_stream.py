"""The live stream (spec §6) against a real gunicorn server and real WebSockets."""
import base64
import contextlib
import json
import os
import re
import threading
import time

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import OctKey
from simple_websocket import Client, ConnectionClosed
from wsproto.events import CloseConnection
from wsproto.frame_protocol import CloseReason

import fixtures
from models import schema
from conftest import ON_POSTGRES, OTHER_WORKSPACE, SEED_WORKSPACE, TEST_DATABASE_URL
from test_server import free_port, run_procfile_web, stop

pytestmark = pytest.mark.live
SECRET = "stream-suite-secret-0123456789-abcdefghijklmnopq"
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


class Live:
    """A gunicorn server (Procfile web) in mock mode, and helpers to talk to it. In the
    PostgreSQL pass it runs on that server, with the Procfile's two workers."""

    def __init__(self, tmp, **env):
        self.database_url = TEST_DATABASE_URL if ON_POSTGRES else f"sqlite:///{tmp / 'stream.db'}"
        if ON_POSTGRES:  # the shared database holds whatever the tests before left: start from the seed
            with self.database():
                schema.migrate()
                fixtures.load_seed(reset=True)
        self.env = {**os.environ, "PORT": str(free_port()), "USE_MOCK": "1", "JWT_SECRET": SECRET,
                    "DATABASE_URL": self.database_url, "STREAM_HEARTBEAT_S": "0.5",
                    "CORS_ORIGINS": "http://localhost:3000", "RATE_LIMIT": "100000/minute", **env}
        self.proc, self.base = run_procfile_web(self.env)
        self.ws_base = self.base.replace("http://", "ws://")
        tokens = requests.post(self.base + "/v1/auth/exchange", json={"subject_token": "x"}, timeout=5).json()
        self.token = tokens["access_token"]
        self.headers = {"Authorization": f"Bearer {self.token}"}

    def token_for(self, workspace):
        """A real token for the seed owner of another workspace, minted with the server's secret."""
        from app.auth import start_session
        from models import ROLE_SCOPES, Membership

        with self.database():
            owner = Membership.get((Membership.workspace == workspace) & (Membership.role == "owner"))
            return start_session(owner.user_id, workspace, ROLE_SCOPES["owner"])["access_token"]

    @contextlib.contextmanager
    def database(self):
        """The server's database, from this (test) process."""
        from app import create_app
        from models import db

        app = create_app({"DATABASE_URL": self.database_url, "JWT_SECRET": SECRET, "USE_MOCK": False,
                          "TESTING": True})
        try:
            with app.app_context(), db.connection_context():
                yield
        finally:
            if hasattr(db.obj, "close_all"):  # PostgreSQL: a pool, whose connection would leak
                db.obj.close_all()

    def connect(self, token=None, workspace=SEED_WORKSPACE, since=None, headers=None):
        query = f"token={token or self.token}&workspace={workspace}"
        if since is not None:
            query += f"&since={since}"
        return Client.connect(f"{self.ws_base}/v1/stream?{query}", headers=headers)

    def post(self, path, **body):
        response = requests.post(self.base + path, headers=self.headers, json=body, timeout=10)
        assert response.status_code in (200, 201), response.text
        return response.json()

    def patch(self, path, **body):
        response = requests.patch(self.base + path, headers=self.headers, json=body, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    server = Live(tmp_path_factory.mktemp("stream"))
    yield server
    stop(server.proc)


def frames(ws, until=lambda frame: False, timeout=5, skip_heartbeats=True):
    """Frames received until `until(frame)` is true (inclusive) or `timeout` passes."""
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        raw = ws.receive(timeout=max(0.01, deadline - time.monotonic()))
        if raw is None:
            continue
        frame = json.loads(raw)
        if skip_heartbeats and frame["type"] == "heartbeat":
            continue
        seen.append(frame)
        if until(frame):
            return seen
    return seen


def connected(ws):
    first = json.loads(ws.receive(timeout=5))
    assert first["type"] == "connected"
    return first


def close_code(ws, timeout=5):
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ws.receive(timeout=0.5)
    except ConnectionClosed as closed:
        if closed.reason == CloseReason.NO_STATUS_RCVD:
            # simple-websocket's client reads only the first event of the handshake's read: a
            # close frame that arrived in the same packet is still queued in its wsproto state.
            for event in ws.ws.events():
                if isinstance(event, CloseConnection):
                    return event.code
        return closed.reason
    raise AssertionError("the socket was not closed")


def test_connected_frame(live):
    ws = live.connect()
    try:
        first = connected(ws)
        assert first["payload"] == {"workspace_id": SEED_WORKSPACE, "user_id": "usr_01abc456"}
        assert TS.match(first["ts"])
    finally:
        ws.close()


def test_heartbeat_every_interval(live):
    ws = live.connect()
    try:
        connected(ws)
        beats = []
        for frame in iter(lambda: json.loads(ws.receive(timeout=3)), None):
            assert frame["type"] == "heartbeat" and frame["payload"] == {"ok": True} and TS.match(frame["ts"])
            beats.append(time.monotonic())
            if len(beats) == 3:
                break
        gaps = [b - a for a, b in zip(beats, beats[1:])]
        assert all(0.3 < gap < 1.5 for gap in gaps), gaps  # STREAM_HEARTBEAT_S=0.5
    finally:
        ws.close()


def test_ping_is_answered_with_pong(live):
    ws = live.connect()
    try:
        connected(ws)
        ws.send(json.dumps({"type": "something-else"}))
        ws.send("not json")
        ws.send(json.dumps({"type": "ping"}))
        pong = frames(ws, until=lambda f: f["type"] == "pong")[-1]
        assert pong["type"] == "pong" and TS.match(pong["ts"])
    finally:
        ws.close()


def event_types(frame_list):
    return [frame["type"] for frame in frame_list if "id" in frame]


def test_create_emits_issue_created_and_pattern_detected(live):
    ws = live.connect()
    try:
        connected(ws)
        issue = live.post("/v1/issues", title="Streamed", pattern_id="pat_01xyz790")
        got = frames(ws, until=lambda f: f["type"] == "pattern.detected")
        created = next(f for f in got if f["type"] == "issue.created")
        assert created["payload"] == {"issue": issue}
        assert isinstance(created["id"], int) and TS.match(created["ts"])
        detected = got[-1]
        assert detected["payload"]["is_new"] is False
        assert detected["payload"]["pattern"]["id"] == "pat_01xyz790"
        assert detected["payload"]["pattern"]["last_seen_at"] == issue["created_at"]
        assert detected["id"] > created["id"]
    finally:
        ws.close()


def test_patch_emits_updated_and_status_changed(live):
    ws = live.connect()
    try:
        connected(ws)
        issue = live.post("/v1/issues", title="To be resolved")
        frames(ws, until=lambda f: f["type"] == "issue.created")
        live.patch(f"/v1/issues/{issue['id']}", status="resolved", team="sre")
        got = frames(ws, until=lambda f: f["type"] == "issue.status.changed")
        updated = next(f for f in got if f["type"] == "issue.updated")
        assert sorted(updated["payload"]["changed"]) == ["status", "team"]
        assert updated["payload"]["issue"]["status"] == "resolved"
        changed = got[-1]["payload"]
        assert (changed["issue_id"], changed["from"], changed["to"]) == (issue["id"], "open", "resolved")
        assert changed["issue"]["resolved_at"] is not None
    finally:
        ws.close()


def test_close_and_bulk_emit_per_issue_events(live):
    ws = live.connect()
    try:
        connected(ws)
        # Unlike each other, so that only the bulk link groups them.
        first = live.post("/v1/issues", title="Checkout latency above 2s for card payments")
        second = live.post("/v1/issues", title="Nightly backup job could not mount the NFS share")
        live.post(f"/v1/issues/{first['id']}/close")
        live.post("/v1/issues/bulk", ids=[first["id"], second["id"]], op="link_pattern", value="pat_01xyz791")
        got = frames(ws, until=lambda f: f["type"] == "pattern.detected" and f["payload"]["pattern"]["id"] == "pat_01xyz791")
        statuses = [f["payload"] for f in got if f["type"] == "issue.status.changed"]
        assert [(s["issue_id"], s["to"]) for s in statuses] == [(first["id"], "closed")]
        linked = [f["payload"]["issue"]["id"] for f in got
                  if f["type"] == "issue.updated" and f["payload"]["changed"] == ["pattern_id"]]
        assert sorted(linked) == sorted([first["id"], second["id"]])
        ids = [f["id"] for f in got if "id" in f]
        assert ids == sorted(ids) and len(ids) == len(set(ids))
    finally:
        ws.close()


def test_pattern_create_and_patch_events(live):
    ws = live.connect()
    try:
        connected(ws)
        pattern = live.post("/v1/patterns", name="Streamed pattern")
        live.patch(f"/v1/patterns/{pattern['id']}", status="active")
        got = frames(ws, until=lambda f: f["type"] == "pattern.updated")
        detected = next(f for f in got if f["type"] == "pattern.detected")
        assert detected["payload"] == {"pattern": pattern, "is_new": True}
        assert got[-1]["payload"]["changed"] == ["status"]
        assert got[-1]["payload"]["pattern"]["status"] == "active"
    finally:
        ws.close()


def expired_token(live):
    claims = json.loads(__import__("base64").urlsafe_b64decode(live.token.split(".")[1] + "=="))
    now = int(time.time())
    return jwt.encode({"alg": "HS256"}, dict(claims, iat=now - 100, exp=now - 50), OctKey.import_key(SECRET),
                      algorithms=["HS256"])


@pytest.mark.parametrize("kind", ["missing", "garbage", "expired"])
def test_bad_token_closes_with_4401(live, kind):
    token = {"missing": "", "garbage": "garbage", "expired": None}[kind]
    if kind == "expired":
        token = expired_token(live)
    url = f"{live.ws_base}/v1/stream?workspace={SEED_WORKSPACE}" + (f"&token={token}" if token else "")
    ws = Client.connect(url)
    assert close_code(ws) == 4401


@pytest.mark.parametrize("workspace", [OTHER_WORKSPACE, "", "ws_nope"])
def test_other_workspace_closes_with_4003(live, workspace):
    assert close_code(live.connect(workspace=workspace)) == 4003


def test_a_token_resigned_for_a_workspace_that_does_not_exist_closes_with_4401(live):
    claims = json.loads(base64.urlsafe_b64decode(live.token.split(".")[1] + "=="))
    token = jwt.encode({"alg": "HS256"}, dict(claims, workspace_id="ws_01nowhere"), OctKey.import_key(SECRET),
                       algorithms=["HS256"])
    assert close_code(live.connect(token=token, workspace="ws_01nowhere")) == 4401


def test_a_token_whose_membership_was_deleted_closes_with_4401(live):
    from app.auth import start_session
    from models import ROLE_SCOPES, Membership, User

    with live.database():
        User.get_or_create(id="usr_stream_leaver")
        Membership.get_or_create(user="usr_stream_leaver", workspace=SEED_WORKSPACE,
                                 defaults={"id": "mem_stream_leaver", "role": "viewer"})
        token = start_session("usr_stream_leaver", SEED_WORKSPACE, ROLE_SCOPES["viewer"])["access_token"]
    ws = live.connect(token=token)
    connected(ws)
    ws.close()
    with live.database():
        Membership.delete().where(Membership.id == "mem_stream_leaver").execute()
    assert close_code(live.connect(token=token)) == 4401


def test_foreign_origin_closes_with_4003(live):
    assert close_code(live.connect(headers={"Origin": "https://evil.example"})) == 4003
    ws = live.connect(headers={"Origin": "http://localhost:3000"})
    try:
        connected(ws)
    finally:
        ws.close()


def test_no_event_from_another_workspace_ever_arrives(live):
    other = live.token_for(OTHER_WORKSPACE)
    ws = live.connect(token=other, workspace=OTHER_WORKSPACE)
    try:
        connected(ws)
        live.post("/v1/issues", title="Workspace one only")
        requests.post(live.base + "/v1/issues", headers={"Authorization": f"Bearer {other}"},
                      json={"title": "Workspace two"}, timeout=5)
        got = frames(ws, until=lambda f: f["type"] == "issue.created")
        assert [f["payload"]["issue"]["title"] for f in got if f["type"] == "issue.created"] == ["Workspace two"]
        assert all(f["payload"].get("issue", {}).get("title") != "Workspace one only" for f in got)
    finally:
        ws.close()


def latest_event_id(live):
    ws = live.connect()
    try:
        connected(ws)
        live.patch("/v1/issues/iss_01abc130", title=f"marker {time.time()}")
        return frames(ws, until=lambda f: f["type"] == "issue.updated")[-1]["id"]
    finally:
        ws.close()


def test_reconnect_with_since_replays_exactly_what_was_missed(live):
    live.patch("/v1/issues/iss_01abc131", pattern_id=None)  # pinned: edits of its text do not move it
    last = latest_event_id(live)
    for n in range(50):
        live.patch("/v1/issues/iss_01abc131", title=f"missed {n}")  # one issue.updated each
    ws = live.connect(since=last)
    try:
        connected(ws)
        replayed = frames(ws, until=lambda f: f.get("id") == last + 50)
        assert [f["id"] for f in replayed] == list(range(last + 1, last + 51))
        assert [f["payload"]["issue"]["title"] for f in replayed] == [f"missed {n}" for n in range(50)]
        live.patch("/v1/issues/iss_01abc131", title="live again")
        after = frames(ws, until=lambda f: f["type"] == "issue.updated")
        assert [f["id"] for f in after] == [last + 51]
    finally:
        ws.close()


def test_replay_seam_has_no_gap_or_duplicate_while_writes_continue(live):
    last = latest_event_id(live)
    for n in range(50):
        live.patch("/v1/issues/iss_01abc132", title=f"before {n}")
    stop_writing = threading.Event()
    written = []

    def keep_writing():
        n = 0
        while not stop_writing.is_set() and n < 400:
            live.patch("/v1/issues/iss_01abc132", title=f"during {n}")
            written.append(n)
            n += 1

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        time.sleep(0.2)
        ws = live.connect(since=last)
        connected(ws)
        time.sleep(0.5)
    finally:
        stop_writing.set()
        writer.join()
    try:
        expected_last = last + 50 + len(written)
        got = frames(ws, until=lambda f: f.get("id") == expected_last, timeout=10)
        ids = [f["id"] for f in got if "id" in f]
        assert ids == list(range(last + 1, expected_last + 1))
    finally:
        ws.close()


def test_malformed_since_is_refused(live):
    assert close_code(live.connect(since="abc")) == 4400


def test_streams_beyond_the_cap_close_with_1013(tmp_path):
    server = Live(tmp_path, STREAM_MAX_SOCKETS="2", WEB_CONCURRENCY="1")
    sockets = []
    try:
        for _ in range(2):
            sockets.append(server.connect())
            connected(sockets[-1])
        assert close_code(server.connect()) == 1013
        assert requests.get(server.base + "/health", timeout=5).status_code == 200
        sockets.pop().close()
        time.sleep(0.5)
        sockets.append(server.connect())
        connected(sockets[-1])
    finally:
        for ws in sockets:
            ws.close()
        stop(server.proc)
