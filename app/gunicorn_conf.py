"""Gunicorn settings, in one place; the Procfile's web process runs with them.

Environment knobs: PORT, WEB_CONCURRENCY (workers), GUNICORN_THREADS (threads per worker).
"""
import os

from app.config import DEFAULT_THREADS

bind = f"0.0.0.0:{os.environ.get('PORT', '4000')}"
worker_class = "gthread"
# Live events fan out across processes through PostgreSQL (LISTEN/NOTIFY). On the embedded
# SQLite default they fan out inside one process, so that runs one worker unless told otherwise.
_on_postgres = os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://"))
workers = int(os.environ.get("WEB_CONCURRENCY", "2" if _on_postgres else "1"))
# Each open WebSocket holds one thread for its lifetime; the app caps streams per worker at
# threads - 16 (STREAM_MAX_SOCKETS) so plain HTTP always has threads left.
threads = int(os.environ.get("GUNICORN_THREADS", str(DEFAULT_THREADS)))
timeout = 30
graceful_timeout = 20
keepalive = 5
# No worker recycling: it would drop every WebSocket the worker holds.
max_requests = 0
# Build the app once in the master: migrations and the mock seed run once, and workers fork
# with no database connection open (start-up DB work runs in a connection context).
preload_app = True
# The app writes one structured line per request (with its request id); gunicorn's own
# access log would log query strings, which may carry tokens.
accesslog = None
errorlog = "-"
# Several gunicorns on one machine (tests, benches) must not share one control socket.
control_socket_disable = True


def on_starting(server):
    if workers > 1 and not _on_postgres:
        server.log.warning("%d workers on SQLite: a live stream only sees events written by its "
                           "own worker; use PostgreSQL (DATABASE_URL) to run several", workers)


def post_worker_init(worker):
    # The grouping model (16 MB, numpy) and the compiled vocabulary (about a second) are made
    # once per worker here, not on the first requests' time; no-ops when the master already
    # made them (preload_app with mock mode's seed).
    from models import detection
    from models.grouping import representation

    representation.model()
    detection.infer("warm-up")
