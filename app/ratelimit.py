"""Rate-limit policy: one budget per client IP across all routes (spec §7)."""
from flask import current_app, request

UNLIMITED_PATHS = ("/health", "/ready", "/openapi.json", "/docs", "/v1/stream")


def client_ip():
    """The client's address; behind a PaaS router (TRUST_PROXY=1) the first X-Forwarded-For
    entry. Without TRUST_PROXY the header is ignored: anyone can send one."""
    if current_app.config["TRUST_PROXY"]:
        first = request.headers.get("X-Forwarded-For", "").split(",")[0].strip()
        if first:
            return first
    return request.remote_addr or "unknown"


def request_identity():
    """Unknown routes spend the budget too (Flask-Limiter skips requests with no endpoint)."""
    return request.endpoint or "unmatched-route"


def current_limit():
    return current_app.config["RATE_LIMIT"]


def is_limited(path):
    """Whether requests to `path` spend the budget. Health, docs and the WebSocket handshake
    do not (the stream still authenticates)."""
    return not (path in UNLIMITED_PATHS or path.startswith("/docs/"))


def unlimited():
    return not is_limited(request.path)


def configure(app):
    app.config.setdefault("RATELIMIT_STORAGE_URI", app.config["REDIS_URL"] or "memory://")
    app.config.setdefault("RATELIMIT_HEADERS_ENABLED", True)
    app.config.setdefault("RATELIMIT_STRATEGY", "fixed-window")
    app.config.setdefault("RATELIMIT_KEY_PREFIX", "causeloop")
