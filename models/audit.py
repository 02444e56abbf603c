"""The audit log: one append-only row per security-relevant change, written by the model
operation that makes the change, in its transaction (so a change that rolls back leaves none)."""
import peewee as pw

from .accounts import Workspace
from .base import BaseModel, utcnow

SYSTEM = {"type": "system", "id": "system", "display": "system"}


def _no_request():
    return {"actor": SYSTEM, "ip": None, "user_agent": None, "request_id": None}


# Who, from where, in which request: the app installs a provider that reads the request and its
# principal (app/auth.py); outside a request (the CLI) the actor is the system.
_context_provider = _no_request


def set_context_provider(provider):
    global _context_provider
    _context_provider = provider


class AuditEntry(BaseModel):
    ID_PREFIX = "aud"
    KIND = "Audit entry"
    id = pw.CharField(primary_key=True, max_length=40)
    workspace = pw.ForeignKeyField(Workspace, on_delete="CASCADE")
    occurred_at = pw.DateTimeField(default=utcnow)
    action = pw.CharField(max_length=64)
    actor_type = pw.CharField(max_length=20)
    actor_id = pw.CharField(max_length=64)
    actor_display = pw.CharField(max_length=320)
    target_type = pw.CharField(max_length=40, null=True)
    target_id = pw.CharField(max_length=64, null=True)
    ip = pw.CharField(max_length=64, null=True)
    user_agent = pw.CharField(max_length=512, null=True)
    request_id = pw.CharField(max_length=128, null=True)
    changes = pw.JSONField(null=True)

    class Meta:
        indexes = ((("workspace", "occurred_at", "id"), False), (("workspace", "actor_id"), False),
                   (("workspace", "target_id"), False), (("workspace", "action"), False))

    @classmethod
    def in_workspace(cls, workspace_id):
        return cls.select().where(cls.workspace == workspace_id)


def record(workspace_id, action, target_type=None, target_id=None, changes=None, actor=None):
    """Append one entry, in the caller's transaction. `actor` ({type, id, display}) defaults to
    the request's principal (the system outside a request); `changes` holds before/after
    values, never a secret."""
    context = _context_provider()
    actor = actor or context["actor"]
    return AuditEntry.create(
        id=AuditEntry.next_id(), workspace=workspace_id, action=action, actor_type=actor["type"],
        actor_id=actor["id"], actor_display=(actor.get("display") or actor["id"])[:320],
        target_type=target_type, target_id=target_id, ip=context["ip"],
        user_agent=(context["user_agent"] or None) and context["user_agent"][:512],
        request_id=context["request_id"], changes=changes)


def user_actor(user):
    return {"type": "user", "id": user.id, "display": user.email or user.name or user.id}
