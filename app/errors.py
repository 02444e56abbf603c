"""The one error envelope, and the handlers that put every failure into it."""
import logging

import marshmallow as ma
import peewee as pw
from flask import g, request
from werkzeug.exceptions import HTTPException
from werkzeug.routing import WebsocketMismatch

from models import Conflict, Forbidden, NotFound, RuleViolation

log = logging.getLogger("causeloop.errors")

CODES = {
    400: "validation_error",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    422: "unprocessable",
    429: "rate_limited",
    500: "internal_error",
    503: "service_unavailable",
}
# Every 401 carries a challenge (RFC 9110 §15.5.2), the token endpoints' invalid_grant included.
WWW_AUTHENTICATE = 'Bearer realm="causeloop"'
RETRY_AFTER_S = "5"  # what every 503 tells clients to wait (set in app/requests.py, last)


class ApiError(Exception):
    """Raise anywhere in a request to answer with the error envelope."""

    def __init__(self, status, message, *, code=None, details=None, headers=None):
        super().__init__(message)
        self.status = status
        self.code = code or CODES.get(status, "error")
        self.message = message
        self.details = details
        self.headers = headers or {}


class ErrorBodySchema(ma.Schema):
    code = ma.fields.String(required=True, metadata={"description": "Stable, machine-readable code."})
    message = ma.fields.String(required=True, metadata={"description": "For people."})
    trace_id = ma.fields.String(required=True, metadata={"description": "Equals the X-Request-Id header."})
    details = ma.fields.Dict(metadata={"description": "Per-field messages for validation errors, or context."})


class ErrorSchema(ma.Schema):
    error = ma.fields.Nested(ErrorBodySchema, required=True)


def envelope(status, code, message, details=None, headers=None):
    body = {"code": code, "message": message, "trace_id": g.get("request_id", "")}
    if details:
        body["details"] = details
    headers = dict(headers or {})
    if status == 401:
        headers.setdefault("WWW-Authenticate", WWW_AUTHENTICATE)
    return {"error": body}, status, headers


LOCATIONS = ("json", "query", "querystring", "view_args", "path", "headers")


def flatten_messages(messages, prefix=""):
    """webargs/marshmallow messages -> one flat key per field, nested keys joined by dots.

    The request location level (json, query, ...) is dropped; a message about the whole
    body lands under `body`.
    """
    if not isinstance(messages, dict):
        return {prefix or "body": messages if isinstance(messages, list) else [str(messages)]}
    flat = {}
    for key, value in messages.items():
        if not prefix and key in LOCATIONS:
            flat.update(flatten_messages(value))
            continue
        if key == "_schema":
            name = prefix or "body"
        else:
            name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            flat.update(flatten_messages(value, name))
        else:
            flat.setdefault(name, []).extend(value if isinstance(value, list) else [str(value)])
    return flat


def _shown_path():
    """The request path, cut short: a 10 kB URL is not echoed back."""
    path = request.path
    return path if len(path) <= 200 else path[:200] + "…"


def _http_message(error):
    data = getattr(error, "data", None) or {}
    if data.get("message"):
        return data["message"]
    if error.code == 404:
        return f"No route for {request.method} {_shown_path()}"
    if error.code == 405:
        allowed = ", ".join(sorted(getattr(error, "valid_methods", None) or []))
        return f"Method {request.method} is not allowed on {_shown_path()}" + (
            f"; allowed: {allowed}" if allowed else "")
    if error.code == 429:
        return "Too many requests"
    if isinstance(error, WebsocketMismatch):
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return f"{_shown_path()} does not take a WebSocket upgrade"
        return f"{_shown_path()} is a WebSocket: send GET with Upgrade: websocket"
    if error.code == 413:
        return f"Request body exceeds the {request.max_content_length}-byte limit"
    if "messages" in data:
        field, problems = next(iter(flatten_messages(data["messages"]).items()))
        return f"Invalid {field}: {' '.join(problems)}"
    return error.description or error.name


def handle_http_exception(error):
    data = getattr(error, "data", None) or {}
    details = flatten_messages(data["messages"]) if "messages" in data else data.get("details")
    headers = dict(data.get("headers") or {})
    if error.code == 405 and getattr(error, "valid_methods", None):
        headers["Allow"] = ", ".join(sorted(error.valid_methods))
    status = 400 if error.code == 422 and "messages" in data else error.code
    return envelope(status, CODES.get(status, error.name.lower().replace(" ", "_")),
                    _http_message(error), details, headers)


def register_error_handlers(app):
    @app.errorhandler(ApiError)
    def api_error(error):
        return envelope(error.status, error.code, error.message, error.details, error.headers)

    @app.errorhandler(NotFound)
    def not_found(error):
        return envelope(404, "not_found", str(error), {"id": error.object_id})

    @app.errorhandler(RuleViolation)
    def rule_violation(error):
        return envelope(422, error.code, error.message, {error.field: [error.message]})

    @app.errorhandler(Forbidden)
    def forbidden(error):
        return envelope(403, "forbidden", error.message, error.details)

    @app.errorhandler(Conflict)
    def conflict(error):
        return envelope(409, "conflict", error.message, error.details)

    @app.errorhandler(pw.OperationalError)
    @app.errorhandler(pw.InterfaceError)
    def database_unavailable(error):
        log.warning("database unavailable: %s", error)
        return envelope(503, "service_unavailable", "The database is unavailable; retry shortly")

    @app.errorhandler(Exception)
    def unexpected(error):
        if isinstance(error, HTTPException):
            return handle_http_exception(error)
        log.exception("unhandled error on %s %s", request.method, request.path)
        return envelope(500, "internal_error", "Something went wrong on our side; it has been logged")
