"""Per-request plumbing: request ids, database connections and the access log line."""
import logging
import re
import time

from flask import g, request
from ulid import ULID

from models import db

from .errors import RETRY_AFTER_S

SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
access_log = logging.getLogger("causeloop.access")
# On every response. Browsers ignore HSTS over plain HTTP, so it is safe to send always.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Strict-Transport-Security": "max-age=31536000",
}
# JSON is data, never a document: it may load nothing and be framed by no one. (The /docs
# page is HTML with its own inline script, so it is spared this policy.)
JSON_CONTENT_SECURITY_POLICY = "default-src 'none'; frame-ancestors 'none'"


def add_security_headers(response):
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if response.mimetype == "application/json":
        response.headers.setdefault("Content-Security-Policy", JSON_CONTENT_SECURITY_POLICY)
    if request.path.startswith("/v1/"):
        # Tokens and workspace data: no shared or browser cache keeps a copy (RFC 6749 §5.1).
        response.headers["Cache-Control"] = "no-store"


def init_app(app):
    @app.before_request
    def begin():
        g.started = time.perf_counter()
        sent = request.headers.get("X-Request-Id", "")
        g.request_id = sent if SAFE_REQUEST_ID.match(sent) else f"req_{str(ULID()).lower()}"

    @app.after_request
    def finish(response):
        response.headers["X-Request-Id"] = g.get("request_id", "")
        add_security_headers(response)
        # The limiter sends its window's reset on every response: only a 429 means that one.
        if response.status_code == 503:
            response.headers["Retry-After"] = RETRY_AFTER_S
        elif response.status_code != 429:
            response.headers.pop("Retry-After", None)
        elapsed_ms = (time.perf_counter() - g.get("started", time.perf_counter())) * 1000
        # request.path, never the full URL: query strings can carry tokens.
        access_log.info("method=%s path=%s status=%s duration_ms=%.1f request_id=%s",
                        request.method, request.path, response.status_code, elapsed_ms,
                        g.get("request_id", ""))
        return response

    @app.teardown_request
    def release_connection(exc):
        if not db.is_closed():
            db.close()
