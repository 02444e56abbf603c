"""Issues: one failure each, optionally linked to the pattern of its root cause."""
import peewee as pw

from . import audit, events
from .accounts import Workspace
from .base import BaseModel, ChoiceIntField, Conflict, Fingerprinted, RuleViolation, WorkspaceScoped, for_update, utcnow
from .patterns import NO_LINK, Link, Pattern
from .search import matches

ISSUE_STATUSES = ("open", "in_progress", "resolved", "closed")
SEVERITIES = ("low", "medium", "high", "critical")
DONE_STATUSES = ("resolved", "closed")
# An issue's own risk follows its severity until detection refines it.
SEVERITY_RISK = {"low": 20, "medium": 45, "high": 70, "critical": 90}
BULK_OPS = ("set_status", "set_severity", "link_pattern", "unlink_pattern")


class Issue(WorkspaceScoped, Fingerprinted, BaseModel):
    KIND = "Issue"
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
    # The root cause detection assigned (models.detection), and its explanation.
    fingerprint_domain = pw.CharField(max_length=100, null=True)
    fingerprint_root_cause = pw.CharField(max_length=100, null=True)
    detection = pw.JSONField(null=True)
    # Its text as similarity grouping compares it (models/grouping/representation.py), and
    # whether a person placed it (then no automatic pass moves it).
    embedding = pw.BlobField(null=True)
    pinned = pw.BooleanField(default=False)

    class Meta:
        # Migrations own the schema; these mirror the indexes they create.
        indexes = (
            (("workspace", "created_at", "id"), False),
            (("workspace", "updated_at", "id"), False),
            (("workspace", "severity", "id"), False),
            (("workspace", "status", "severity"), False),
            (("workspace", "risk_score", "id"), False),
            (("pattern", "created_at", "id"), False),
            (("workspace", "source", "external_id"), True),
            (("workspace", "fingerprint_domain", "fingerprint_root_cause"), False),
        )  # and "issue_waiting", partial: the unlinked ones similarity may pair (migration 0019)

    @property
    def link(self):
        """What the pattern's derived data knows of this issue."""
        embedding = None if self.embedding is None else bytes(self.embedding)
        return Link(self.pattern_id, self.severity, bool(self.pinned), self.source, embedding)

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
        if filters.get("q"):
            query = query.where(matches(cls, filters["q"]))
        return query

    @staticmethod
    def _check_pattern(pattern_id, workspace_id, field="pattern_id"):
        """`field` names the pattern id in the request, for the 422's details."""
        if pattern_id is None:
            return
        found = Pattern.in_workspace(workspace_id).select(Pattern.status, Pattern.merged_into).where(
            Pattern.id == pattern_id).first()
        if found is None:
            raise RuleViolation(field, f"Pattern {pattern_id} not found in this workspace.")
        if found.status == "merged":
            raise RuleViolation(field, f"Pattern {pattern_id} was merged into {found.merged_into_id}; "
                                       "link to that one.")

    @classmethod
    def create_in(cls, workspace_id, data):
        """Create an issue, placed as ingestion places it unless the client names its pattern
        (then it is pinned there); its pattern's counters and the events commit with it."""
        from .grouping import corrections, representation, rules, similarity
        from .ingest import Grouper, fingerprint_fields

        fields = dict(data)
        pattern_id = fields.pop("pattern_id", None)
        severity = fields.setdefault("severity", "medium")
        fields.setdefault("risk_score", SEVERITY_RISK[severity])
        now = utcnow()
        if fields.get("status") in DONE_STATUSES:
            fields["resolved_at"] = now
        fields["embedding"] = representation.represent([(fields["title"], fields.get("description", ""))])[0]
        inferred, rule_pattern = fingerprint_fields({"source": "api", **fields}, rules.rules_for(workspace_id))
        with events.transaction():
            similarity.lock_workspace(workspace_id)
            cls._check_pattern(pattern_id, workspace_id)
            if fields.get("external_id") is not None and cls.in_workspace(workspace_id).where(
                    (cls.source == fields.get("source", "api"))
                    & (cls.external_id == fields["external_id"])).exists():
                raise Conflict("An issue with this source and external_id already exists.",
                               external_id=fields["external_id"])
            issue = cls.create(id=cls.next_id(), workspace=workspace_id, pattern=pattern_id,
                               created_at=now, updated_at=now, **fields, **inferred)
            grouper = Grouper(workspace_id, now)
            grouper.fresh.add(issue.id)
            grouper.track(issue, new=True)
            if pattern_id is not None:
                corrections.person_placed(grouper.index, issue, NO_LINK, pattern_id)
            else:
                grouper.place(issue, rule_pattern)
            events.record(workspace_id, "issue.created", issue=issue)
            Pattern.links_changed(workspace_id, grouper.moves(), new=grouper.created, rescore=True)
        return issue

    def _apply(self, changes, now):
        """Set `changes` on this row with the lifecycle rules; returns the fields that changed."""
        changes = dict(changes)
        if "pattern_id" in changes:
            changes["pattern"] = changes.pop("pattern_id")
        changed = [name for name, value in changes.items()
                   if (self.pattern_id if name == "pattern" else getattr(self, name)) != value]
        if not changed:
            return []
        old_status = self.status
        for name in changed:
            setattr(self, name, changes[name])
        if "status" in changed:
            if self.status in DONE_STATUSES and old_status not in DONE_STATUSES:
                self.resolved_at = now
            elif self.status not in DONE_STATUSES:
                self.resolved_at = None
        if "severity" in changed:
            self.risk_score = SEVERITY_RISK[self.severity]
        if "title" in changed or "description" in changed:
            from .grouping import representation

            self.embedding = representation.represent([(self.title, self.description)])[0]
        self.updated_at = now
        self.save()
        return ["pattern_id" if name == "pattern" else name for name in changed]

    def _record_update(self, changed, old_status):
        events.record(self.workspace_id, "issue.updated", issue=self, changed=changed)
        if "status" in changed:
            events.record(self.workspace_id, "issue.status.changed", issue_id=self.id,
                          **{"from": old_status, "to": self.status}, issue=self)

    @classmethod
    def update_in(cls, issue_id, workspace_id, changes):
        """Apply a partial update (PATCH); returns the issue as stored. Naming `pattern_id`
        (a pattern, or null) is a person placing the issue: it is pinned there, and the
        workspace's grouping learns from it. Editing the text of an unpinned issue places it
        again."""
        from .grouping import corrections, similarity
        from .ingest import Grouper

        with events.transaction():
            similarity.lock_workspace(workspace_id)
            issue = cls.get_in_workspace(issue_id, workspace_id, lock=True)
            if changes.get("pattern_id") is not None:
                cls._check_pattern(changes["pattern_id"], workspace_id)
            grouper = Grouper(workspace_id, utcnow())
            old_status, old_pattern, before = issue.status, issue.pattern_id, issue.link
            grouper.track(issue)
            text = {name: value for name, value in changes.items() if name not in ("pattern_id", "pinned")}
            changed = issue._apply(text, grouper.now)
            if "pattern_id" in changes:
                corrections.person_placed(grouper.index, issue, before, changes["pattern_id"])
                if issue.pattern_id != old_pattern:
                    changed.append("pattern_id")
            elif changes.get("pinned") is False and issue.pinned:
                issue.pinned = False  # back to automatic grouping: placed afresh
                issue.save(only=[Issue.pinned])
                grouper.fresh.add(issue.id)
                grouper.place(issue)
                changed += ["pinned"] + (["pattern_id"] if issue.pattern_id != old_pattern else [])
            elif ("title" in changed or "description" in changed) and not issue.pinned:
                grouper.fresh.add(issue.id)  # its issue.updated below says where it went
                grouper.place(issue)
                if issue.pattern_id != old_pattern:
                    changed.append("pattern_id")
            if changed:
                issue._record_update(changed, old_status)
            Pattern.links_changed(workspace_id, grouper.moves(), new=grouper.created, rescore=bool(grouper.created))
        return issue

    @classmethod
    def reanalyze_in(cls, issue_id, workspace_id):
        """Place an unpinned issue afresh, as if it had just arrived; returns it."""
        from .grouping import similarity
        from .ingest import Grouper

        with events.transaction():
            similarity.lock_workspace(workspace_id)
            issue = cls.get_in_workspace(issue_id, workspace_id, lock=True)
            if issue.pinned:
                raise Conflict("A person placed this issue; PATCH it with \"pinned\": false to hand it back "
                               "to automatic grouping.", issue_id=issue_id)
            grouper = Grouper(workspace_id, utcnow())
            old_pattern = issue.pattern_id
            grouper.track(issue)
            grouper.fresh.add(issue.id)  # one issue.updated below
            if issue.embedding is None:
                from .grouping import representation

                issue.embedding = representation.represent([(issue.title, issue.description)])[0]
                issue.save(only=[Issue.embedding])
            grouper.place(issue)
            if issue.pattern_id != old_pattern:
                issue._record_update(["pattern_id"], issue.status)
            Pattern.links_changed(workspace_id, grouper.moves(), new=grouper.created, rescore=True)
        return issue

    @classmethod
    def bulk_update(cls, workspace_id, ids, op, value):
        """One operation on up to 100 issues, all or nothing. Returns (updated, not_found).
        Linking and unlinking are a person placing each issue, as in update_in."""
        from .grouping import corrections, similarity
        from .ingest import Grouper

        changes = {"set_status": {"status": value}, "set_severity": {"severity": value}}.get(op)
        wanted = list(dict.fromkeys(ids))
        with events.transaction():
            if changes is None:  # a person placing issues: grouping's state moves
                similarity.lock_workspace(workspace_id)
            if op == "link_pattern":
                cls._check_pattern(value, workspace_id, field="value")
            found = {issue.id: issue for issue in
                     for_update(cls.in_workspace(workspace_id).where(cls.id.in_(wanted)).order_by(cls.id))}
            grouper = Grouper(workspace_id, utcnow())
            for issue in found.values():
                old_status, old_pattern, before = issue.status, issue.pattern_id, issue.link
                grouper.track(issue)
                if changes is None:
                    corrections.person_placed(grouper.index, issue, before,
                                              value if op == "link_pattern" else None)
                    changed = ["pattern_id"] if issue.pattern_id != old_pattern else []
                else:
                    changed = issue._apply(changes, grouper.now)
                if changed:
                    issue._record_update(changed, old_status)
            Pattern.links_changed(workspace_id, grouper.moves())
            if found:
                audit.record(workspace_id, "issue.bulk_updated", "issue", None,
                             {"op": op, "value": value, "issue_ids": sorted(found)})
        return len(found), [issue_id for issue_id in wanted if issue_id not in found]


Issue.SORTS = {"created_at": Issue.created_at, "updated_at": Issue.updated_at,
               "severity": Issue.severity, "risk_score": Issue.risk_score}
