"""Settings: the environment of spec §8, read once, parsed and checked."""
import os
import re
from urllib.parse import urlsplit

DEV_JWT_SECRET = "causeloop-dev-secret-do-not-use-in-production"
MIN_SECRET_BYTES = 32
# gunicorn gthread: each open WebSocket holds a thread; HTTP_THREADS stay free for requests.
DEFAULT_THREADS = 64
HTTP_THREADS = 16
_RATE_LIMIT = re.compile(r"^\s*\d+\s*(/|per)\s*\d*\s*(second|minute|hour|day)s?\s*$", re.I)


class ConfigError(RuntimeError):
    """A setting is missing or malformed; the message says how to fix it."""


def _flag(environ, name, default=False):
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be a boolean (1/0, true/false), got {raw!r}")


def _number(environ, name, default, kind=int, minimum=None):
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a {kind.__name__}, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {raw!r}")
    return value


def _choice(environ, name, choices, default):
    value = (environ.get(name) or default).strip().lower()
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {environ.get(name)!r}")
    return value


def _list(environ, name, default=""):
    raw = environ.get(name, default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def _smtp_url(url):
    if url and urlsplit(url).scheme not in ("smtp", "smtps", "smtp+starttls"):
        raise ConfigError(f"SMTP_URL must look like smtp://user:password@host:587, got scheme "
                          f"{urlsplit(url).scheme!r}")
    return url


def from_env(environ=None):
    """Build the Flask config mapping from the process environment."""
    env = os.environ if environ is None else environ
    use_mock = _flag(env, "USE_MOCK")
    debug = _flag(env, "FLASK_DEBUG")
    threads = _number(env, "GUNICORN_THREADS", DEFAULT_THREADS, minimum=1)
    rate_limit = env.get("RATE_LIMIT", "600/minute")
    if not _RATE_LIMIT.match(rate_limit):
        raise ConfigError(f"RATE_LIMIT must look like '600/minute', got {rate_limit!r}")
    return {
        "PORT": _number(env, "PORT", 4000, minimum=1),
        "DATABASE_URL": env.get("DATABASE_URL") or "sqlite:///causeloop.db",
        "USE_MOCK": use_mock,
        "DEBUG": debug,
        "JWT_SECRET": env.get("JWT_SECRET", ""),
        "CORS_ORIGINS": _list(env, "CORS_ORIGINS", "http://localhost:3000"),
        "CLERK_JWKS_URL": env.get("CLERK_JWKS_URL", ""),
        "CLERK_JWT_KEY": env.get("CLERK_JWT_KEY", ""),
        "CLERK_ISSUER": env.get("CLERK_ISSUER", ""),
        "CLERK_AUDIENCE": env.get("CLERK_AUDIENCE", ""),
        "CLERK_AUTHORIZED_PARTIES": _list(env, "CLERK_AUTHORIZED_PARTIES"),
        "REDIS_URL": env.get("REDIS_URL", ""),
        "RATE_LIMIT": rate_limit,
        "TRUST_PROXY": _flag(env, "TRUST_PROXY"),
        "STREAM_HEARTBEAT_S": _number(env, "STREAM_HEARTBEAT_S", 5.0, float, minimum=0.1),
        "LOG_LEVEL": env.get("LOG_LEVEL", "INFO").upper(),
        "MAX_CONTENT_LENGTH": _number(env, "MAX_BODY_BYTES", 1024 * 1024, minimum=1024),
        "STREAM_MAX_SOCKETS": _number(env, "STREAM_MAX_SOCKETS", max(1, threads - HTTP_THREADS), minimum=1),
        # The threads that may be serving HTTP at once, plus a few for streams' short lookups.
        "DB_POOL_SIZE": _number(env, "DB_POOL_SIZE", HTTP_THREADS + 4, minimum=1),
        # Outbound webhooks (app/tasks.py, models/webhooks.py).
        "WORKER": _choice(env, "WORKER", ("inline", "external"), "inline"),
        "WORKER_THREADS": _number(env, "WORKER_THREADS", 8, minimum=1),
        "HUEY_SQLITE_PATH": env.get("HUEY_SQLITE_PATH", ""),
        "WEBHOOKS_ALLOW_INSECURE": _flag(env, "WEBHOOKS_ALLOW_INSECURE"),
        "WEBHOOK_RETRY_SCALE": _number(env, "WEBHOOK_RETRY_SCALE", 1.0, float, minimum=0.0),
        "WEBHOOK_TIMEOUT_S": _number(env, "WEBHOOK_TIMEOUT_S", 15.0, float, minimum=0.1),
        "WEBHOOK_SWEEP_S": _number(env, "WEBHOOK_SWEEP_S", 5.0, float, minimum=0.1),
        "SMTP_URL": _smtp_url(env.get("SMTP_URL", "")),
        "SMTP_FROM": env.get("SMTP_FROM", "Causeloop <no-reply@causeloop.invalid>"),
        "INVITATION_URL": env.get("INVITATION_URL", "http://localhost:3000/invitations/accept"),
        # The web app, for links in alerts sent to Slack and email (<APP_URL>/patterns/<id>).
        "APP_URL": env.get("APP_URL", "http://localhost:3000"),
        "ACCESS_TOKEN_TTL_S": 72 * 3600,
        "REFRESH_TOKEN_TTL_S": 30 * 24 * 3600,
    }


def check_secret(config):
    """Fill in the dev secret where allowed; refuse to run production without a real one."""
    secret = config.get("JWT_SECRET") or ""
    relaxed = config.get("USE_MOCK") or config.get("DEBUG") or config.get("TESTING")
    if not secret and relaxed:
        config["JWT_SECRET"] = DEV_JWT_SECRET
        return
    if relaxed:
        return
    if not secret or secret == DEV_JWT_SECRET or len(secret.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(
            "JWT_SECRET must be set to a random value of at least "
            f"{MIN_SECRET_BYTES} bytes outside mock/debug mode. Make one with: "
            "python -c 'import secrets; print(secrets.token_urlsafe(48))'"
        )
