"""Idempotency keys: the first response to a creating POST, kept 24 h for exact replays."""
import datetime

import peewee as pw

from .accounts import Workspace
from .base import BaseModel, utcnow

KEY_TTL = datetime.timedelta(hours=24)


class IdempotencyKey(BaseModel):
    workspace = pw.ForeignKeyField(Workspace, on_delete="CASCADE")
    key = pw.CharField(max_length=255)
    request_hash = pw.CharField(max_length=64)
    status = pw.SmallIntegerField()
    body = pw.TextField()
    location = pw.CharField(max_length=2048, null=True)
    created_at = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("workspace", "key"), True), (("created_at",), False))

    @classmethod
    def find(cls, workspace_id, key):
        """The live record for this key, dropping an expired one."""
        row = cls.get_or_none((cls.workspace == workspace_id) & (cls.key == key))
        if row is not None and row.created_at < utcnow() - KEY_TTL:
            row.delete_instance()
            return None
        return row
