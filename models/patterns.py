"""Patterns: clusters of issues that share a root-cause fingerprint, with derived counters."""
import peewee as pw

from .accounts import Workspace
from .base import BaseModel, NotFound, db, utcnow

PATTERN_STATUSES = ("active", "watching", "resolved")


class Pattern(BaseModel):
    ID_PREFIX = "pat"
    id = pw.CharField(primary_key=True, max_length=40)
    workspace = pw.ForeignKeyField(Workspace, backref="patterns", on_delete="CASCADE")
    name = pw.CharField(max_length=200)
    description = pw.TextField(default="")
    status = pw.CharField(max_length=16, default="watching")
    risk_score = pw.SmallIntegerField(default=0)
    # Derived from the linked issues by refresh_counters(); never written by clients.
    issue_count = pw.IntegerField(default=0)
    last_seen_at = pw.DateTimeField(null=True)
    fingerprint_domain = pw.CharField(max_length=100, null=True)
    fingerprint_root_cause = pw.CharField(max_length=100, null=True)
    tags = pw.JSONField(default=list)
    created_at = pw.DateTimeField(default=utcnow)
    updated_at = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = (
            (("workspace", "risk_score", "id"), False),
            (("workspace", "created_at", "id"), False),
        )

    @property
    def fingerprint(self):
        if self.fingerprint_domain is None and self.fingerprint_root_cause is None:
            return None
        return {"domain": self.fingerprint_domain, "root_cause": self.fingerprint_root_cause}

    @classmethod
    def in_workspace(cls, workspace_id):
        return cls.select().where(cls.workspace == workspace_id)

    @classmethod
    def get_in_workspace(cls, pattern_id, workspace_id):
        pattern = cls.in_workspace(workspace_id).where(cls.id == pattern_id).first()
        if pattern is None:
            raise NotFound("Pattern", pattern_id)
        return pattern

    @classmethod
    def create_in(cls, workspace_id, data):
        fields = dict(data)
        fingerprint = fields.pop("fingerprint", None) or {}
        now = utcnow()
        with db.atomic():
            return cls.create(
                id=cls.next_id(), workspace=workspace_id, created_at=now, updated_at=now,
                fingerprint_domain=fingerprint.get("domain"),
                fingerprint_root_cause=fingerprint.get("root_cause"),
                **fields,
            )

    @classmethod
    def refresh_counters(cls, pattern_ids):
        """Recompute issue_count and last_seen_at from the linked issues.

        The single place these derived values are written; callers run it inside the
        transaction that changed the links, so the counters never disagree with the rows.
        """
        from .issues import Issue

        ids = {pid for pid in pattern_ids if pid}
        if not ids:
            return
        linked = Issue.select().where(Issue.pattern == cls.id)
        (cls.update(issue_count=linked.select(pw.fn.COUNT(Issue.id)),
                    last_seen_at=linked.select(pw.fn.MAX(Issue.created_at)))
         .where(cls.id.in_(sorted(ids)))
         .execute())

    @classmethod
    def search(cls, workspace_id, filters):
        """Patterns of a workspace matching the list filters of spec §4 (all optional)."""
        query = cls.in_workspace(workspace_id)
        if filters.get("status"):
            query = query.where(cls.status.in_(filters["status"]))
        if filters.get("domain"):
            query = query.where(cls.fingerprint_domain.in_(filters["domain"]))
        if filters.get("risk_min") is not None:
            query = query.where(cls.risk_score >= filters["risk_min"])
        if filters.get("risk_max") is not None:
            query = query.where(cls.risk_score <= filters["risk_max"])
        return query


Pattern.SORTS = {"risk_score": Pattern.risk_score, "issue_count": Pattern.issue_count,
                 "last_seen_at": Pattern.last_seen_at, "created_at": Pattern.created_at}
