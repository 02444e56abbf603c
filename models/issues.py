"""Issues: one failure each, optionally linked to the pattern of its root cause."""
import peewee as pw

from .accounts import Workspace
from .base import BaseModel, ChoiceIntField, Conflict, NotFound, RuleViolation, db, utcnow
from .patterns import Pattern

ISSUE_STATUSES = ("open", "in_progress", "resolved", "closed")
SEVERITIES = ("low", "medium", "high", "critical")
DONE_STATUSES = ("resolved", "closed")
# An issue's own risk follows its severity until detection refines it.
SEVERITY_RISK = {"low": 20, "medium": 45, "high": 70, "critical": 90}


class Issue(BaseModel):
    ID_PREFIX = "iss"
    id = pw.CharField(primary_key=True, max_length=40)
    workspace = pw.ForeignKeyField(Workspace, backref="issues", on_delete="CASCADE")
    title = pw.CharField(max_length=300)
    description = pw.TextField(default="")
    status = pw.CharField(max_length=16, default="open")
    severity = ChoiceIntField(SEVERITIES, default="medium")
    pattern = pw.ForeignKeyField(Pattern, null=True, backref="issues", on_delete="SET NULL")
    source = pw.CharField(max_length=64, default="api")
    external_id = pw.CharField(max_length=255, null=True)
    external_url = pw.CharField(max_length=2048, null=True)
    team = pw.CharField(max_length=100, null=True)
    risk_score = pw.SmallIntegerField(default=45)
    metadata = pw.JSONField(default=dict)
    created_at = pw.DateTimeField(default=utcnow)
    updated_at = pw.DateTimeField(default=utcnow)
    resolved_at = pw.DateTimeField(null=True)

    class Meta:
        indexes = (
            (("workspace", "created_at", "id"), False),
            (("pattern", "created_at"), False),
            (("workspace", "source", "external_id"), True),
        )

    @classmethod
    def in_workspace(cls, workspace_id):
        return cls.select().where(cls.workspace == workspace_id)

    @classmethod
    def get_in_workspace(cls, issue_id, workspace_id):
        issue = cls.in_workspace(workspace_id).where(cls.id == issue_id).first()
        if issue is None:
            raise NotFound("Issue", issue_id)
        return issue

    @staticmethod
    def _check_pattern(pattern_id, workspace_id):
        if pattern_id is not None and not (
                Pattern.in_workspace(workspace_id).where(Pattern.id == pattern_id).exists()):
            raise RuleViolation("pattern_id", f"Pattern {pattern_id} not found in this workspace.")

    @classmethod
    def create_in(cls, workspace_id, data):
        """Create an issue and keep its pattern's counters exact, in one transaction."""
        fields = dict(data)
        pattern_id = fields.pop("pattern_id", None)
        severity = fields.setdefault("severity", "medium")
        fields.setdefault("risk_score", SEVERITY_RISK[severity])
        now = utcnow()
        if fields.get("status") in DONE_STATUSES:
            fields["resolved_at"] = now
        with db.atomic():
            cls._check_pattern(pattern_id, workspace_id)
            if fields.get("external_id") is not None and cls.in_workspace(workspace_id).where(
                    (cls.source == fields.get("source", "api"))
                    & (cls.external_id == fields["external_id"])).exists():
                raise Conflict("An issue with this source and external_id already exists.",
                               external_id=fields["external_id"])
            issue = cls.create(id=cls.next_id(), workspace=workspace_id, pattern=pattern_id,
                               created_at=now, updated_at=now, **fields)
            Pattern.refresh_counters([pattern_id])
        return issue

    @classmethod
    def search(cls, workspace_id, filters):
        """Issues of a workspace matching the list filters of spec §4 (all optional)."""
        query = cls.in_workspace(workspace_id)
        if filters.get("status"):
            query = query.where(cls.status.in_(filters["status"]))
        if filters.get("severity"):
            query = query.where(cls.severity.in_(filters["severity"]))
        if filters.get("source"):
            query = query.where(cls.source.in_(filters["source"]))
        if filters.get("pattern_id"):
            query = query.where(cls.pattern.in_(filters["pattern_id"]))
        if filters.get("created_after"):
            query = query.where(cls.created_at >= filters["created_after"])
        if filters.get("created_before"):
            query = query.where(cls.created_at < filters["created_before"])
        return query


Issue.SORTS = {"created_at": Issue.created_at, "updated_at": Issue.updated_at,
               "severity": Issue.severity, "risk_score": Issue.risk_score}
