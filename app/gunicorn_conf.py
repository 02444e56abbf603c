"""Gunicorn settings, in one place; the Procfile's web process runs with them.

Environment knobs: PORT, WEB_CONCURRENCY (workers), GUNICORN_THREADS (threads per worker).
"""
import os

bind = f"0.0.0.0:{os.environ.get('PORT', '4000')}"
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Each open WebSocket holds one thread for its lifetime: leave room for plain HTTP too.
threads = int(os.environ.get("GUNICORN_THREADS", "32"))
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
