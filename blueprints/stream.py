"""Live events over a WebSocket: GET /v1/stream?token=…&workspace=…[&since=…] (spec §6)."""
import datetime
import json
import logging
import os
import threading
import time

import flask
from flask import current_app, request

from app.auth import JWTBearerValidator
from app.extensions import sock
from models import Event, db

blp = flask.Blueprint("stream", __name__)
log = logging.getLogger("causeloop.stream")

CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4003
CLOSE_BAD_REQUEST = 4400
CLOSE_TRY_AGAIN_LATER = 1013
REPLAY_BATCH = 500
POLL_S = 0.1  # how often an idle socket looks for client frames and its heartbeat

_open_sockets = 0
_count_lock = threading.Lock()


def now_ts():
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def frame(frame_type, payload):
    return json.dumps({"type": frame_type, "payload": payload, "ts": now_ts()})


def _claim_slot():
    global _open_sockets
    with _count_lock:
        if _open_sockets >= current_app.config["STREAM_MAX_SOCKETS"]:
            return False
        _open_sockets += 1
        return True


def _release_slot():
    global _open_sockets
    with _count_lock:
        _open_sockets -= 1


def open_sockets():
    return _open_sockets


def _authorize(args):
    """(token, None) when the socket may stream, else (None, (close code, reason))."""
    origin = request.headers.get("Origin")
    if origin and origin not in current_app.config["CORS_ORIGINS"]:
        return None, (CLOSE_FORBIDDEN, "origin not allowed")
    token = JWTBearerValidator().authenticate_token(args.get("token", ""))
    if token is None or token.is_revoked():
        return None, (CLOSE_UNAUTHORIZED, "invalid, expired or revoked token")
    if args.get("workspace") != token.workspace_id:
        return None, (CLOSE_FORBIDDEN, "workspace is not the token's")
    if "issues:read" not in token.scopes and "patterns:read" not in token.scopes:
        return None, (CLOSE_FORBIDDEN, "token may not read this workspace")
    return token, None


def _refuse(ws, code, reason):
    ws.close(reason=code, message=reason)


def _parse_since(raw):
    if raw is None:
        return None
    if not raw.isdigit() or len(raw) > 18:
        raise ValueError
    return int(raw)


def _replay(ws, workspace_id, since):
    """Send every retained event after `since`, in order; returns the last seq sent."""
    last = since
    with db.connection_context():
        oldest = (Event.select(Event.seq).where(Event.workspace == workspace_id)
                  .order_by(Event.seq).limit(1).scalar())
        if oldest is not None and oldest > since + 1:
            ws.send(frame("stream.gap", {"missed_from": since + 1, "missed_to": oldest - 1,
                                         "reason": "older events are no longer retained"}))
        while True:
            batch = list(Event.select()
                         .where((Event.workspace == workspace_id) & (Event.seq > last))
                         .order_by(Event.seq).limit(REPLAY_BATCH))
            for event in batch:
                ws.send(json.dumps(event.frame()))
                last = event.seq
            if len(batch) < REPLAY_BATCH:
                return last


def _serve(ws, token, since):
    heartbeat_s = current_app.config["STREAM_HEARTBEAT_S"]
    bus = current_app.extensions["causeloop.bus"]
    subscription = bus.subscribe(token.workspace_id)  # before replaying: no gap at the seam
    try:
        ws.send(frame("connected", {"workspace_id": token.workspace_id, "user_id": token.user_id}))
        last = _replay(ws, token.workspace_id, since) if since is not None else 0
        next_beat = time.monotonic() + heartbeat_s
        while ws.connected:
            if time.time() >= token["exp"]:
                _refuse(ws, CLOSE_UNAUTHORIZED, "token expired")
                return
            event = subscription.get(timeout=min(POLL_S, max(0.0, next_beat - time.monotonic())))
            while event is not None:
                if since is None or event.seq > last:  # replayed already: not twice
                    ws.send(json.dumps(event.frame()))
                    last = event.seq
                event = subscription.get(timeout=0)
            message = ws.receive(timeout=0)
            while message is not None:
                _answer(ws, message)
                message = ws.receive(timeout=0)
            if time.monotonic() >= next_beat:
                ws.send(frame("heartbeat", {"ok": True}))
                next_beat = time.monotonic() + heartbeat_s
    finally:
        subscription.close()


def _answer(ws, message):
    try:
        data = json.loads(message)
    except (TypeError, ValueError):
        return
    if isinstance(data, dict) and data.get("type") == "ping":
        ws.send(frame("pong", {}))


@sock.route("/v1/stream", bp=blp)
def stream(ws):
    """Live events of the token's workspace (see spec §6)."""
    token, refusal = _authorize(request.args)
    db.close()  # nothing below holds a pooled connection while the socket idles
    if refusal:
        _refuse(ws, *refusal)
        return
    try:
        since = _parse_since(request.args.get("since"))
    except ValueError:
        _refuse(ws, CLOSE_BAD_REQUEST, "since must be an event id")
        return
    if not _claim_slot():
        _refuse(ws, CLOSE_TRY_AGAIN_LATER, "too many streams on this server; retry")
        return
    log.info("stream.open workspace=%s pid=%s", token.workspace_id, os.getpid())
    try:
        _serve(ws, token, since)
    finally:
        _release_slot()
        log.info("stream.close workspace=%s pid=%s", token.workspace_id, os.getpid())


def document(spec, app):
    """The stream is a WebSocket, outside flask-smorest: describe it in the OpenAPI document."""
    rule = next(rule for rule in app.url_map.iter_rules() if rule.endpoint == "stream.stream")
    spec.path(rule=rule, operations={"get": {
        "tags": ["stream"],
        "summary": "Live events of the token's workspace (WebSocket)",
        "description": (
            "Upgrade to a WebSocket. Frames are JSON `{type, payload, ts}`; event frames also carry "
            "`id`, a per-workspace increasing sequence. First frame `connected`, then `heartbeat` "
            "every STREAM_HEARTBEAT_S seconds, and the events `issue.created`, `issue.updated`, "
            "`issue.status.changed`, `pattern.detected`, `pattern.updated`. Send `{\"type\": \"ping\"}` "
            "for a `pong`. Reconnect with `since=<last id>` to receive what was missed first "
            "(a `stream.gap` frame says when some is no longer retained). Close codes: 4401 bad, "
            "expired or revoked token; 4003 workspace not the token's, or Origin not allowed; "
            "4400 malformed `since`; 1013 this server holds its maximum of streams, retry."),
        "parameters": [
            {"name": "token", "in": "query", "required": True, "schema": {"type": "string"},
             "description": "An access token (browsers cannot set headers on a WebSocket)."},
            {"name": "workspace", "in": "query", "required": True, "schema": {"type": "string"}},
            {"name": "since", "in": "query", "required": False,
             "schema": {"type": "integer", "minimum": 0}},
            # Without the handshake's headers, a plain GET is refused (400).
            {"name": "Upgrade", "in": "header", "required": True, "schema": {"type": "string", "enum": ["websocket"]}},
            {"name": "Connection", "in": "header", "required": True, "schema": {"type": "string", "enum": ["Upgrade"]}},
            {"name": "Sec-WebSocket-Key", "in": "header", "required": True,
             "schema": {"type": "string", "pattern": "^[A-Za-z0-9+/]{22}==$"}},
            {"name": "Sec-WebSocket-Version", "in": "header", "required": True,
             "schema": {"type": "string", "enum": ["13"]}},
        ],
        "responses": {"101": {"description": "Switching Protocols: the stream is open."},
                      "400": "BAD_REQUEST"},  # a plain HTTP request, without the upgrade
    }})
