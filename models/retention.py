"""Data retention: how long a workspace keeps its issues, sign-in activity and audit log, and
the prune that applies it in bounded batches."""
import contextlib
import datetime
import time

import peewee as pw

from . import audit, events
from .accounts import AuthSession, RefreshToken, Workspace
from .base import BaseModel, RuleViolation, for_update, is_postgres, utcnow

AUDIT_MINIMUM_DAYS = 365
FIELDS = ("issues_days", "activity_days", "audit_days")
PRUNE_BATCH = 500  # most rows per transaction
# The batch size adapts so that each transaction holds its locks about this long (an issue's
# unlink costs more than a session's delete, and more under load).
TRANSACTION_TARGET_S = 0.05
FIRST_BATCH = 50  # rows in a first transaction, before one has been timed
# SQLite: the rest after each transaction. A writer in another process asks for its turn
# (models.base.WriterTurns) every millisecond at most; without a pause the prune takes its next
# turn first, batch after batch, and the writer waits on.
SQLITE_PAUSE_S = 0.05


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


def prune(now=None, batch=PRUNE_BATCH, timings=None):
    """Delete what every workspace's retention says has expired, at most `batch` rows per
    transaction. Returns {workspace id: {"issues" | "sessions" | "audit_entries": deleted}};
    appends to `timings`, if given, the seconds each transaction held its locks."""
    now, timings = now or utcnow(), [] if timings is None else timings
    done = {}
    for settings in list(RetentionSettings.select()):
        workspace_id, counts = settings.workspace_id, {}
        if settings.issues_days is not None:
            cutoff = now - datetime.timedelta(days=settings.issues_days)
            counts["issues"] = sum(
                _in_batches(lambda size: _prune_issues(workspace_id, cutoff, size, timings, pattern_id),
                            batch, timings)
                for pattern_id in [*_patterns_with_issues_before(workspace_id, cutoff), None])
        if settings.activity_days is not None:
            cutoff = now - datetime.timedelta(days=settings.activity_days)
            counts["sessions"] = _in_batches(
                lambda size: _prune_sessions(workspace_id, cutoff, now, size, timings), batch, timings)
        if settings.audit_days is not None:
            cutoff = now - datetime.timedelta(days=max(settings.audit_days, AUDIT_MINIMUM_DAYS))
            counts["audit_entries"] = _in_batches(
                lambda size: _prune_audit(workspace_id, cutoff, size, timings), batch, timings)
        done[workspace_id] = counts
    return done


def _in_batches(step, most, timings):
    """Run `step(size)` (one transaction deleting up to `size` rows, timed into `timings`)
    until it deletes nothing; returns the rows deleted. `size` starts small and follows
    TRANSACTION_TARGET_S, up to `most`."""
    total, size = 0, min(most, FIRST_BATCH)
    while deleted := step(size):
        total += deleted
        held = max(timings[-1], 0.001)
        size = max(1, min(most, 2 * size, int(size * TRANSACTION_TARGET_S / held)))
        if not is_postgres():
            time.sleep(SQLITE_PAUSE_S)
    return total


@contextlib.contextmanager
def _transaction(timings):
    """events.transaction(), timed from when it holds the write lock (SQLite takes it at the
    start) to its commit."""
    with events.transaction():
        began = time.monotonic()
        yield
    timings.append(time.monotonic() - began)


def _patterns_with_issues_before(workspace_id, cutoff):
    from .issues import Issue

    return [row.pattern_id for row in Issue.select(Issue.pattern).distinct().where(
        (Issue.workspace == workspace_id) & (Issue.updated_at < cutoff) & Issue.pattern.is_null(False))]


def _prune_issues(workspace_id, cutoff, batch, timings, pattern_id):
    """Issues last changed before `cutoff`, of one pattern (then, with None, any left: the
    unlinked); their pattern's counters move as for an unlink.

    One pattern a transaction: the derived data a transaction rewrites is then one pattern's
    (its prediction reads its issues' times), not that of every pattern the oldest issues
    happen to span, which made each transaction cost the same however few rows it deleted."""
    from .issues import Issue
    from .patterns import NO_LINK, Pattern

    with _transaction(timings):
        old = Issue.in_workspace(workspace_id).where(Issue.updated_at < cutoff)
        if pattern_id is None:  # the (workspace, updated_at, id) index's order: a seek
            old = old.order_by(Issue.updated_at, Issue.id)
        else:  # the (pattern, created_at, id) index's: an issue is changed after it was created
            old = old.where((Issue.pattern == pattern_id) & (Issue.created_at < cutoff)).order_by(
                Issue.created_at, Issue.id)
        issues = list(for_update(old.limit(batch)))
        if not issues:
            return 0
        moves = [(issue.link, NO_LINK) for issue in issues]
        Issue.delete().where(Issue.id.in_([issue.id for issue in issues])).execute()
        Pattern.links_changed(workspace_id, moves)
    return len(issues)


def _prune_sessions(workspace_id, cutoff, now, batch, timings):
    """Sign-in sessions started before `cutoff` that are over: revoked, or with no refresh token
    left that could renew them."""
    live = (RefreshToken.select(RefreshToken.session).where(RefreshToken.used_at.is_null()
                                                           & (RefreshToken.expires_at > now)))
    with _transaction(timings):
        ids = [row.id for row in AuthSession.select(AuthSession.id).where(
            (AuthSession.workspace == workspace_id) & (AuthSession.created_at < cutoff)
            & (AuthSession.revoked_at.is_null(False) | AuthSession.id.not_in(live))).limit(batch)]
        if ids:
            AuthSession.delete().where(AuthSession.id.in_(ids)).execute()
    return len(ids)


def _prune_audit(workspace_id, cutoff, batch, timings):
    with _transaction(timings):
        ids = [row.id for row in audit.AuditEntry.select(audit.AuditEntry.id).where(
            (audit.AuditEntry.workspace == workspace_id) & (audit.AuditEntry.occurred_at < cutoff)).limit(batch)]
        if ids:
            audit.AuditEntry.delete().where(audit.AuditEntry.id.in_(ids)).execute()
    return len(ids)
