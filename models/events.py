"""The event outbox: every change is recorded in its own transaction, numbered per workspace,
and handed to the bus only after commit."""
import datetime
import random
import threading

import peewee as pw

from .accounts import Workspace
from .base import BaseModel, db, insert_rows, is_postgres, prepared_rows

# type(model instance) -> callable(instance) -> JSON-ready dict. The app registers the same
# output schemas the API uses, so an event carries exactly what a GET would return.
SERIALIZERS = {}
# Events stay replayable (`since=`) at least this long; spec §6 asks for 24 h.
RETENTION = datetime.timedelta(hours=48)
PRUNE_EVERY = 500  # writes, on average
_local = threading.local()


class Event(BaseModel):
    id = pw.BigAutoField()
    workspace = pw.ForeignKeyField(Workspace, on_delete="CASCADE")
    seq = pw.BigIntegerField()
    type = pw.CharField(max_length=64)
    payload = pw.JSONField()
    created_at = pw.DateTimeField()

    class Meta:
        indexes = ((("workspace", "seq"), True), (("created_at",), False))

    def frame(self):
        """The WebSocket frame for this event (spec §6)."""
        return {"type": self.type, "id": self.seq, "payload": self.payload,
                "ts": self.created_at.isoformat(timespec="milliseconds") + "Z"}


class EventCounter(BaseModel):
    """The last event number of each workspace. Taking the next number locks the row, so a
    workspace's events commit in number order: a reader never sees 12 before 11."""

    workspace = pw.ForeignKeyField(Workspace, primary_key=True, on_delete="CASCADE")
    last_seq = pw.BigIntegerField(default=0)


def last_seq(workspace_id):
    """The workspace's last event number: it moves with every committed write to its issues
    and patterns, so a result computed at one number still holds while it stands."""
    rows = prepared_rows("EventCounter.last_seq", lambda workspace_id: (
        EventCounter.select(EventCounter.last_seq).where(EventCounter.workspace == workspace_id)),
        workspace_id=workspace_id)
    return rows[0][0] if rows else 0


def _serialize(value):
    serializer = SERIALIZERS.get(type(value))
    return serializer(value) if serializer else value


def _reserve(workspace_id, count):
    """Take the next `count` numbers of the workspace's sequence; returns the first."""
    updated = prepared_rows("EventCounter.reserve", lambda workspace_id, count: (
        EventCounter.update(last_seq=EventCounter.last_seq + count).where(EventCounter.workspace == workspace_id)
        .returning(EventCounter.last_seq)), workspace_id=workspace_id, count=count)
    if updated:
        return updated[0][0] - count + 1
    EventCounter.insert(workspace=workspace_id, last_seq=count).on_conflict(  # the workspace's first event
        conflict_target=[EventCounter.workspace],
        update={EventCounter.last_seq: EventCounter.last_seq + count}).execute()
    return EventCounter.get_by_id(workspace_id).last_seq - count + 1


def record(workspace_id, event_type, **payload):
    """Note an event of the write under way; it is numbered and stored when the write's
    `transaction()` commits (and dropped if it rolls back).

    The payload is serialized now, so it shows the change as it was made.
    """
    pending = getattr(_local, "pending", None)
    if pending is None:
        raise RuntimeError("events.record() must run inside events.transaction()")
    pending.append((workspace_id, event_type, {key: _serialize(value) for key, value in payload.items()}))


def _store(pending):
    """Number and insert the write's events: the last step before commit, so the workspace's
    counter row is locked only briefly, and always after any pattern row (no lock cycles)."""
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    if random.randrange(PRUNE_EVERY) == 0:
        prune(now - RETENTION)
    per_workspace = {}
    for workspace_id, _, _ in pending:
        per_workspace[workspace_id] = per_workspace.get(workspace_id, 0) + 1
    next_seq = {workspace_id: _reserve(workspace_id, count) for workspace_id, count in per_workspace.items()}
    stored = []
    for workspace_id, event_type, payload in pending:
        stored.append(Event(workspace=workspace_id, seq=next_seq[workspace_id], type=event_type,
                            payload=payload, created_at=now))
        next_seq[workspace_id] += 1
    insert_rows(Event, [{"workspace": e.workspace_id, "seq": e.seq, "type": e.type, "payload": e.payload,
                         "created_at": e.created_at} for e in stored])
    return stored


def prune(before):
    """Forget events older than `before`; returns how many."""
    return Event.delete().where(Event.created_at < before).execute()


class transaction:
    """`db.atomic()` whose recorded events are stored with it and handed to `on_commit`
    once committed. Nested uses join the outermost one; a rollback drops the events."""

    before_commit = None  # set by the app: callable(list[Event]), runs inside the transaction
    on_commit = None  # set by the app: callable(list[Event]), runs after it committed

    def __enter__(self):
        self._outermost = getattr(_local, "pending", None) is None
        if self._outermost:
            _local.pending = []
        # SQLite: take the write lock up front. A deferred transaction that read first cannot
        # upgrade once another writer committed (SQLITE_BUSY_SNAPSHOT); an immediate one waits.
        self._atomic = db.atomic() if is_postgres() else db.atomic(lock_type="IMMEDIATE")
        try:
            self._atomic.__enter__()
        except BaseException:
            if self._outermost:  # no transaction began: the thread's next one is outermost again
                _local.pending = None
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        stored = []
        try:
            if self._outermost and exc_type is None and _local.pending:
                try:
                    stored = _store(_local.pending)
                    if transaction.before_commit:
                        transaction.before_commit(stored)
                except BaseException as error:
                    self._atomic.__exit__(type(error), error, error.__traceback__)
                    raise
            self._atomic.__exit__(exc_type, exc, tb)
        finally:
            if self._outermost:
                _local.pending = None
        if stored and transaction.on_commit:
            transaction.on_commit(stored)
        return False
