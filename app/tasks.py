"""The task queue (Huey): outbound webhooks' fan-out and delivery, and alert rules' Slack and
email messages.

Storage follows the deployment, chosen in `init_app()` and opened on first use (so building
the app touches no database or network): `REDIS_URL` set → Redis; else, on PostgreSQL, Huey's
SqlHuey storage in the app's own database (tables `kv`, `schedule`, `task`); else a SQLite
file beside the database (`HUEY_SQLITE_PATH`, default `<database>.tasks.db`).

Who consumes: `WORKER=inline` (the default) runs a consumer in every web process, started by
its first request (gunicorn forks its workers after building the app, and threads do not
survive a fork); `WORKER=external` leaves it to `flask --app wsgi worker` (the Procfile's
worker line). Beside each consumer a sweeper thread fans out outbox events nobody announced
(a writer that died between commit and enqueue) and re-queues deliveries that are due but
held by nobody (a task lost with a killed worker), webhook and alert deliveries alike, every
`WEBHOOK_SWEEP_S`. The delivery rows are the truth (models/webhooks.py, models/alerts.py); the
queue only makes them prompt.

Tasks are thin: each calls a model function, which tests may call directly.
"""
import logging
import os
import threading
import time
from urllib.parse import urlsplit

from flask import current_app
from huey import Huey, crontab
from huey.consumer import Consumer
from huey.storage import BlackHoleStorage, RedisStorage, SqliteStorage

from . import mail

from models import alerts, db, predictions, retention, webhooks
from models import events as outbox
from models.base import is_postgres

log = logging.getLogger("causeloop.tasks")
NAME = "causeloop"
PREDICTIONS_EVERY_MINUTES = 15

# Bound to its storage by init_app(); until then it drops what it is given.
huey = Huey(NAME, results=False, utc=True, storage_class=BlackHoleStorage)
_bound = {"app": None}


class DeferredStorage:
    """Huey's storage, opened on first use."""

    def __init__(self, factory):
        self._factory, self._storage, self._lock = factory, None, threading.Lock()

    def __getattr__(self, name):
        if self._storage is None:
            with self._lock:
                if self._storage is None:
                    self._storage = self._factory()
        return getattr(self._storage, name)


def storage_factory(config):
    if config["REDIS_URL"]:
        return lambda: RedisStorage(NAME, url=config["REDIS_URL"])
    if is_postgres():
        from huey.contrib.sql_huey import SqlStorage

        database = db.obj
        return lambda: SqlStorage(NAME, database=database)
    path = config["HUEY_SQLITE_PATH"] or default_sqlite_path(config["DATABASE_URL"])
    return lambda: SqliteStorage(NAME, filename=path)


def default_sqlite_path(database_url):
    path = urlsplit(database_url).path[1:] or "causeloop.db"
    return (path[:-3] if path.endswith(".db") else path) + ".tasks.db"


def policy(config=None):
    config = config or current_app.config
    return webhooks.Policy(retry_scale=config["WEBHOOK_RETRY_SCALE"], timeout_s=config["WEBHOOK_TIMEOUT_S"],
                           allow_insecure=config["WEBHOOKS_ALLOW_INSECURE"])


class _context:
    """The app context and a database connection, around a task."""

    def __enter__(self):
        self._app_context = _bound["app"].app_context()
        self._app_context.push()
        self._connection = db.connection_context()
        self._connection.__enter__()

    def __exit__(self, *exc):
        self._connection.__exit__(*exc)
        self._app_context.pop()


@huey.task()
def fan_out(workspace_id=None):
    """Turn the workspace's new outbox events into deliveries, and send them, endpoint by endpoint."""
    with _context():
        for endpoint_id in webhooks.fan_out(workspace_id):
            deliver_due(endpoint_id)


@huey.task()
def deliver_due(endpoint_id):
    """The endpoint's due deliveries, in batches over one connection; each failure's next
    attempt is scheduled on its own."""
    with _context():
        retries = webhooks.deliver_due(endpoint_id, policy())
    for delivery_id, wait in retries:
        deliver.schedule((delivery_id,), delay=wait)


@huey.task()
def deliver(delivery_id):
    """One attempt at one delivery; the next one is scheduled when it failed."""
    with _context():
        wait = webhooks.deliver(delivery_id, policy())
    if wait is not None:
        deliver.schedule((delivery_id,), delay=wait)


@huey.task()
def deliver_to_channel(delivery_id):
    """One attempt at one alert's Slack or email message; the next one is scheduled when it failed."""
    with _context():
        wait = alerts.deliver(delivery_id, policy(), mail.attempt)
    if wait is not None:
        deliver_to_channel.schedule((delivery_id,), delay=wait)


def send_soon(delivery_id):
    """Queue a delivery a request just made due; if the queue is out of reach, the sweep sends it."""
    try:
        deliver(delivery_id)
    except Exception:
        log.exception("could not queue webhook delivery %s", delivery_id)


def sweep():
    """Fan out what nobody announced; send what is due and held by nobody. Deliveries still
    waiting in the queue are not re-queued: they are only waiting their turn."""
    with _context():
        for endpoint_id in webhooks.fan_out():
            deliver_due(endpoint_id)
        if huey.pending_count() == 0:
            for endpoint_id in webhooks.due(grace_s=current_app.config["WEBHOOK_SWEEP_S"]):
                deliver_due(endpoint_id)
            for delivery_id in alerts.due(grace_s=current_app.config["WEBHOOK_SWEEP_S"]):
                deliver_to_channel(delivery_id)


def _sweep_forever(interval, stop):
    while not stop.wait(interval):
        try:
            sweep()
        except Exception:  # a database or queue outage: try again next round
            log.exception("webhook sweep failed")


def _committed(events):
    """After a write committed: fan its events out now, where any endpoint listens, and send
    the Slack and email messages of the alerts it fired."""
    try:
        for workspace_id in {event.workspace_id for event in events}:
            if webhooks.has_endpoints(workspace_id):
                fan_out(workspace_id)
    except Exception:  # the write stands; the sweep fans these events out
        log.exception("could not queue webhook fan-out")
    try:
        for event in events:
            if event.type == "alert.fired":
                for delivery_id in alerts.of_alert(event.payload["alert"]["id"]):
                    deliver_to_channel(delivery_id)
    except Exception:  # the sweep sends them
        log.exception("could not queue alert deliveries")


@huey.periodic_task(crontab(minute=f"*/{PREDICTIONS_EVERY_MINUTES}"), retries=0)
@huey.lock_task("causeloop-predictions")
def recompute_predictions():
    """Every workspace's predictions afresh (time moves them even when no link does: a
    pattern's evidence decays, a rule's snooze runs out), on the worker's schedule. Only the
    `flask worker` consumer schedules it; the lock (in the queue's storage) keeps two workers
    from running it at once."""
    with _context():
        changed = in_background(predictions.recompute_all)
    log.info("predictions recomputed: %d rows changed", sum(changed.values()))


@huey.periodic_task(crontab(minute="17", hour="3"), retries=0)
@huey.lock_task("causeloop-prune")
def prune_expired():
    """Every workspace's data retention applied, daily at 03:17 UTC (what `flask prune` does),
    in short transactions at a lower priority; only the `flask worker` consumer schedules it."""
    with _context():
        done = in_background(retention.prune)
    log.info("pruned: %s", {workspace_id: counts for workspace_id, counts in done.items() if any(counts.values())})


BACKGROUND_NICENESS = 10


def _lower_priority():
    """This thread to the lowest CPU priority the system offers without privileges: Linux's
    SCHED_IDLE (any other thread that wakes preempts it, whatever its process or session's
    autogroup, and it keeps a sliver of CPU under full load, so it is slowed, never starved);
    elsewhere a nice of 10. On Linux both are a thread's, not its process's."""
    me = threading.get_native_id()
    if hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(me, os.SCHED_IDLE, os.sched_param(0))
            return
        except OSError:  # a sandbox refusing the call: niceness still works
            pass
    if hasattr(os, "setpriority"):  # never up: raising a priority takes privileges
        os.setpriority(os.PRIO_PROCESS, me, max(BACKGROUND_NICENESS, os.getpriority(os.PRIO_PROCESS, me)))


def in_background(function, *args):
    """function(*args) in a thread of its own at the lowest CPU priority (the worker's other
    threads, and web processes on the same machine, come first), in the caller's app context;
    returns its result."""
    app, result = current_app._get_current_object(), {}

    def run():
        _lower_priority()
        with app.app_context():
            try:
                result["value"] = function(*args)
            except BaseException as error:  # re-raised in the caller
                result["error"] = error

    thread = threading.Thread(target=run, name="causeloop-background")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


def make_consumer(app, periodic=False):
    return Consumer(huey, workers=app.config["WORKER_THREADS"], periodic=periodic, initial_delay=0.05,
                    backoff=1.5, max_delay=0.5, check_worker_health=True)


def start_inline(app):
    """A consumer and a sweeper in this process's own threads (no signal handlers: they belong
    to the server). Once per process."""
    state = app.extensions["causeloop.worker"]
    if state.get("pid") == os.getpid():
        return
    with state["lock"]:
        if state.get("pid") == os.getpid():
            return
        consumer = make_consumer(app)
        consumer.scheduler.start()
        for _, thread in consumer.worker_threads:
            thread.start()
        threading.Thread(target=_sweep_forever, args=(app.config["WEBHOOK_SWEEP_S"], consumer.stop_flag),
                         name="causeloop-sweep", daemon=True).start()
        state.update(pid=os.getpid(), consumer=consumer)
        log.info("inline worker started: %d threads", app.config["WORKER_THREADS"])


def run_worker(app):
    """The `flask worker` command: Huey's consumer in the foreground (SIGTERM stops it after
    the tasks under way; SIGINT at once), and the sweeper beside it."""
    consumer = make_consumer(app, periodic=True)
    stop = threading.Event()
    threading.Thread(target=_sweep_forever, args=(app.config["WEBHOOK_SWEEP_S"], stop),
                     name="causeloop-sweep", daemon=True).start()
    try:
        consumer.run()
    finally:
        stop.set()


def init_app(app):
    """Bind the queue to this app's storage and hook fan-out onto the write path (after
    events.init_app, which sets the bus's hook this one follows)."""
    huey.storage = DeferredStorage(storage_factory(app.config))
    _bound["app"] = app
    app.extensions["causeloop.worker"] = {"lock": threading.Lock()}
    announce = outbox.transaction.on_commit

    def on_commit(events):
        if announce:
            announce(events)
        _committed(events)

    outbox.transaction.on_commit = on_commit
    if app.config["WORKER"] == "inline":
        app.before_request(lambda: start_inline(app))
