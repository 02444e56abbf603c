"""The event outbox: every change is recorded in its own transaction, numbered per workspace,
and handed to the bus only after commit."""
import datetime
import threading

import peewee as pw

from .accounts import Workspace
from .base import BaseModel, db

# type(model instance) -> callable(instance) -> JSON-ready dict. The app registers the same
# output schemas the API uses, so an event carries exactly what a GET would return.
SERIALIZERS = {}
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


def _serialize(value):
    serializer = SERIALIZERS.get(type(value))
    return serializer(value) if serializer else value


def _next_seq(workspace_id):
    updated = (EventCounter.update(last_seq=EventCounter.last_seq + 1)
               .where(EventCounter.workspace == workspace_id).execute())
    if not updated:
        EventCounter.insert(workspace=workspace_id, last_seq=1).on_conflict(
            conflict_target=[EventCounter.workspace],
            update={EventCounter.last_seq: EventCounter.last_seq + 1}).execute()
    return EventCounter.get_by_id(workspace_id).last_seq


def record(workspace_id, event_type, **payload):
    """Add an event to the outbox; call inside the transaction that made the change."""
    if not db.in_transaction():
        raise RuntimeError("events.record() must run inside the write's transaction")
    event = Event.create(
        workspace=workspace_id, seq=_next_seq(workspace_id), type=event_type,
        payload={key: _serialize(value) for key, value in payload.items()},
        created_at=datetime.datetime.now(datetime.UTC).replace(tzinfo=None))
    pending = getattr(_local, "pending", None)
    if pending is not None:
        pending.append(event)
    return event


class transaction:
    """`db.atomic()` that hands the events it recorded to `on_commit` once committed.

    Nested uses join the outermost one; a rollback drops the events with the rows.
    """

    on_commit = None  # set by the app: callable(list[Event])

    def __enter__(self):
        self._outermost = getattr(_local, "pending", None) is None
        if self._outermost:
            _local.pending = []
        self._atomic = db.atomic()
        self._atomic.__enter__()
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            self._atomic.__exit__(exc_type, exc, tb)
        finally:
            if self._outermost:
                events, _local.pending = _local.pending, None
        if self._outermost and exc_type is None and events and transaction.on_commit:
            transaction.on_commit(events)
        return False
