"""The audit log: one append-only row per security-relevant change, written by the model
operation that makes the change, in its transaction (so a change that rolls back leaves none)."""
import peewee as pw

from .accounts import Workspace
from .base import BaseModel, db, is_postgres, utcnow
from .search import FewMatches

# Up to this many entries of a family of actions are cheaper sorted than found by walking the log.
FEW_ACTION_MATCHES = 2_000
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
        # Each filter's index ends in the list's order, so a filtered page seeks to its cursor.
        indexes = ((("workspace", "occurred_at", "id"), False),
                   (("workspace", "actor_id", "occurred_at", "id"), False),
                   (("workspace", "target_id", "occurred_at", "id"), False),
                   (("workspace", "action", "occurred_at", "id"), False))

    @classmethod
    def in_workspace(cls, workspace_id):
        return cls.select().where(cls.workspace == workspace_id)

    @classmethod
    def actions_in(cls, workspace_id):
        """The distinct actions of the workspace's log, one index probe each (a skip scan: a
        few dozen actions, however long the log)."""
        next_action = (f'SELECT MIN(action) FROM "audit_entry" WHERE workspace_id = {db.param}'
                       " AND action > seen.action")
        rows = db.execute_sql(
            f'WITH RECURSIVE seen(action) AS (SELECT MIN(action) FROM "audit_entry" WHERE workspace_id = {db.param}'
            f" UNION ALL SELECT ({next_action}) FROM seen WHERE seen.action IS NOT NULL)"
            " SELECT action FROM seen WHERE action IS NOT NULL", (workspace_id, workspace_id)).fetchall()
        return [action for action, in rows]

    @classmethod
    def action_starts_with(cls, workspace_id, prefix):
        """A WHERE expression: the action starts with `prefix` (a literal prefix, case-insensitive
        as LIKE is), as an equality or IN over the actions the log holds, so that the
        (workspace, action, occurred_at, id) index can serve a page: one action seeks to it."""
        prefix = prefix.lower()
        matching = [action for action in cls.actions_in(workspace_id) if action.lower().startswith(prefix)]
        if not matching:
            return pw.SQL("1 = 0")
        if len(matching) == 1:
            return cls.action == matching[0]
        condition = cls.action.in_(matching)
        if not is_postgres() and cls.select(cls.id).where(
                (cls.workspace == workspace_id) & condition).limit(FEW_ACTION_MATCHES + 1).count() <= FEW_ACTION_MATCHES:
            # SQLite, without statistics, walks the log's time index for an IN and filters: for a
            # rare family of actions that reads most of the log to fill one page.
            condition = FewMatches(condition)
        return condition


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
