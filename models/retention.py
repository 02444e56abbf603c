"""Data retention: how long a workspace keeps its issues, sign-in activity and audit log, and
the prune that applies it in bounded batches."""
import datetime

import peewee as pw

from . import audit, events
from .accounts import AuthSession, RefreshToken, Workspace
from .base import BaseModel, RuleViolation, for_update, utcnow

AUDIT_MINIMUM_DAYS = 365
FIELDS = ("issues_days", "activity_days", "audit_days")
PRUNE_BATCH = 500  # rows per transaction: each holds the write lock only briefly


class RetentionBelowMinimum(RuleViolation):
    code = "retention_below_minimum"


class RetentionSettings(BaseModel):
    """One row per workspace that has set any; null (or no row) keeps that data forever."""

    workspace = pw.ForeignKeyField(Workspace, primary_key=True, on_delete="CASCADE")
    issues_days = pw.IntegerField(null=True)
    activity_days = pw.IntegerField(null=True)
    audit_days = pw.IntegerField(null=True)
    updated_at = pw.DateTimeField(default=utcnow)

    @classmethod
    def of(cls, workspace_id):
        row = cls.get_or_none(cls.workspace == workspace_id)
        return {name: getattr(row, name, None) for name in FIELDS}

    @classmethod
    def change(cls, workspace_id, changes):
        """Apply a partial update (audited as `retention.changed`); returns the settings."""
        audit_days = changes.get("audit_days")
        if audit_days is not None and audit_days < AUDIT_MINIMUM_DAYS:
            raise RetentionBelowMinimum("audit_days", f"The audit log is kept at least {AUDIT_MINIMUM_DAYS} days")
        with events.transaction():
            row = for_update(cls.select().where(cls.workspace == workspace_id)).first()
            before = {name: getattr(row, name, None) for name in FIELDS}
            after = {**before, **{name: changes[name] for name in FIELDS if name in changes}}
            if after != before:
                if row is None:
                    cls.create(workspace=workspace_id, **after)
                else:
                    cls.update(updated_at=utcnow(), **after).where(cls.workspace == workspace_id).execute()
                audit.record(workspace_id, "retention.changed", "workspace", workspace_id,
                             {name: {"before": before[name], "after": after[name]}
                              for name in FIELDS if before[name] != after[name]})
        return after


def prune(now=None, batch=PRUNE_BATCH):
    """Delete what every workspace's retention says has expired, `batch` rows per transaction.
    Returns {workspace id: {"issues" | "sessions" | "audit_entries": deleted}}."""
    now = now or utcnow()
    done = {}
    for settings in list(RetentionSettings.select()):
        workspace_id, counts = settings.workspace_id, {}
        if settings.issues_days is not None:
            cutoff = now - datetime.timedelta(days=settings.issues_days)
            counts["issues"] = _in_batches(lambda: _prune_issues(workspace_id, cutoff, batch))
        if settings.activity_days is not None:
            cutoff = now - datetime.timedelta(days=settings.activity_days)
            counts["sessions"] = _in_batches(lambda: _prune_sessions(workspace_id, cutoff, now, batch))
        if settings.audit_days is not None:
            cutoff = now - datetime.timedelta(days=max(settings.audit_days, AUDIT_MINIMUM_DAYS))
            counts["audit_entries"] = _in_batches(lambda: _prune_audit(workspace_id, cutoff, batch))
        done[workspace_id] = counts
    return done


def _in_batches(step):
    total = 0
    while deleted := step():
        total += deleted
    return total


def _prune_issues(workspace_id, cutoff, batch):
    """Issues last changed before `cutoff`; their patterns' counters move as for an unlink."""
    from .issues import Issue
    from .patterns import NO_LINK, Pattern

    with events.transaction():
        issues = list(for_update(Issue.in_workspace(workspace_id).where(Issue.updated_at < cutoff)
                                 .order_by(Issue.id).limit(batch)))
        if not issues:
            return 0
        moves = [(issue.link, NO_LINK) for issue in issues]
        Issue.delete().where(Issue.id.in_([issue.id for issue in issues])).execute()
        Pattern.links_changed(workspace_id, moves)
    return len(issues)


def _prune_sessions(workspace_id, cutoff, now, batch):
    """Sign-in sessions started before `cutoff` that are over: revoked, or with no refresh token
    left that could renew them."""
    live = (RefreshToken.select(RefreshToken.session).where(RefreshToken.used_at.is_null()
                                                           & (RefreshToken.expires_at > now)))
    with events.transaction():
        ids = [row.id for row in AuthSession.select(AuthSession.id).where(
            (AuthSession.workspace == workspace_id) & (AuthSession.created_at < cutoff)
            & (AuthSession.revoked_at.is_null(False) | AuthSession.id.not_in(live))).limit(batch)]
        if ids:
            AuthSession.delete().where(AuthSession.id.in_(ids)).execute()
    return len(ids)


def _prune_audit(workspace_id, cutoff, batch):
    with events.transaction():
        ids = [row.id for row in audit.AuditEntry.select(audit.AuditEntry.id).where(
            (audit.AuditEntry.workspace == workspace_id) & (audit.AuditEntry.occurred_at < cutoff)).limit(batch)]
        if ids:
            audit.AuditEntry.delete().where(audit.AuditEntry.id.in_(ids)).execute()
    return len(ids)
