"""Per-request plumbing: request ids, database connections and the access log line."""
import logging
import re
import time

from flask import g, request
from ulid import ULID

from models import db

SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
access_log = logging.getLogger("causeloop.access")


def init_app(app):
    @app.before_request
    def begin():
        g.started = time.perf_counter()
        sent = request.headers.get("X-Request-Id", "")
        g.request_id = sent if SAFE_REQUEST_ID.match(sent) else f"req_{str(ULID()).lower()}"

    @app.after_request
    def finish(response):
        response.headers["X-Request-Id"] = g.get("request_id", "")
        if response.status_code != 429:
            response.headers.pop("Retry-After", None)  # the limiter sends it on every response
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
