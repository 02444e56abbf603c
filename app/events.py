"""The event bus: committed events in, live subscribers out.

Two implementations behind one interface:
- `LocalBus` fans out in this process (SQLite, a single process, the tests);
- `PostgresBus` rides on LISTEN/NOTIFY: every worker of every server hears every commit.
Both read the outbox (models.events.Event) as the source of truth; the bus only says "new
events were committed", so a subscriber can always catch up from the table.
"""
import logging
import queue
import threading
import time

import psycopg
from playhouse.db_url import parse as parse_db_url

from models import Event, db
from models import events as outbox
from models.base import is_postgres

log = logging.getLogger("causeloop.events")
CHANNEL = "causeloop_events"


class Subscription:
    """A subscriber's inbox: live events for one workspace, in commit order."""

    def __init__(self, bus, workspace_id):
        self.bus = bus
        self.workspace_id = workspace_id
        self.inbox = queue.SimpleQueue()

    def get(self, timeout):
        try:
            return self.inbox.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self):
        self.bus.unsubscribe(self)


class LocalBus:
    def __init__(self):
        self._lock = threading.Lock()
        self._subscribers = {}

    def subscribe(self, workspace_id):
        subscription = Subscription(self, workspace_id)
        with self._lock:
            self._subscribers.setdefault(workspace_id, set()).add(subscription)
        return subscription

    def unsubscribe(self, subscription):
        with self._lock:
            self._subscribers.get(subscription.workspace_id, set()).discard(subscription)

    def deliver(self, events):
        for event in events:
            with self._lock:
                targets = list(self._subscribers.get(event.workspace_id, ()))
            for subscription in targets:
                subscription.inbox.put(event)

    def committed(self, events):
        """Called by the write path after commit (models.events.transaction.on_commit)."""
        self.deliver(events)


class PostgresBus(LocalBus):
    """NOTIFY is sent inside the writing transaction, so PostgreSQL delivers it exactly when
    (and only if) the write commits, in commit order; one listener thread per process fetches
    the announced rows once and fans them out locally."""

    def __init__(self, database_url):
        super().__init__()
        self._params = parse_db_url("postgresql" + database_url[database_url.index(":"):])
        self._listener = None
        self._start_lock = threading.Lock()

    def subscribe(self, workspace_id):
        self._ensure_listener()
        return super().subscribe(workspace_id)

    def committed(self, events):
        """Local delivery happens when our own NOTIFY comes back, like everyone else's."""

    def _ensure_listener(self):
        with self._start_lock:
            if self._listener is None or not self._listener.is_alive():
                ready = threading.Event()
                self._listener = threading.Thread(target=self._listen, args=(ready,),
                                                  name="causeloop-listen", daemon=True)
                self._listener.start()
                ready.wait(timeout=10)

    def _connect(self):
        params = dict(self._params)
        return psycopg.connect(dbname=params.pop("database"), autocommit=True, connect_timeout=5,
                               **params)

    def _listen(self, ready):
        while True:
            try:
                with self._connect() as connection:
                    connection.execute(f"LISTEN {CHANNEL}")
                    ready.set()
                    for notice in connection.notifies():
                        self._announced(notice.payload)
            except psycopg.Error as error:
                ready.set()
                log.warning("event listener lost its connection (%s); reconnecting", error)
                time.sleep(1)

    def _announced(self, payload):
        workspace_id, first, last = payload.rsplit(":", 2)
        with self._lock:
            if not self._subscribers.get(workspace_id):
                return
        with db.connection_context():
            events = list(Event.select()
                          .where((Event.workspace == workspace_id) & Event.seq.between(int(first), int(last)))
                          .order_by(Event.seq))
        self.deliver(events)


def announce(events):
    """Inside the writing transaction: tell every listener which events it committed."""
    by_workspace = {}
    for event in events:
        by_workspace.setdefault(event.workspace_id, []).append(event.seq)
    for workspace_id, seqs in by_workspace.items():
        db.execute_sql("SELECT pg_notify(%s, %s)", (CHANNEL, f"{workspace_id}:{min(seqs)}:{max(seqs)}"))


def init_app(app, serializers):
    outbox.SERIALIZERS.update(serializers)
    if is_postgres():
        bus = PostgresBus(app.config["DATABASE_URL"])
        outbox.transaction.before_commit = announce
    else:
        bus = LocalBus()
        outbox.transaction.before_commit = None
    outbox.transaction.on_commit = bus.committed
    app.extensions["causeloop.bus"] = bus
    return bus
