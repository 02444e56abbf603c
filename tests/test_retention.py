"""Data retention: the settings (audit kept at least 365 days), and `flask prune` deleting in
batches while pattern counters stay exact."""
import datetime

import pytest

from conftest import ON_POSTGRES, SEED_WORKSPACE
from models import AuditEntry, AuthSession, Issue, Pattern, RetentionSettings, db, utcnow
from test_errors import assert_envelope

PATH = "/v1/settings/data-retention"


def test_retention_starts_unset_and_changes_by_patch(client, auth):
    assert client.get(PATH, headers=auth("executive")).get_json() == {
        "issues_days": None, "activity_days": None, "audit_days": None}
    changed = client.patch(PATH, headers=auth("compliance_admin"), json={"issues_days": 90, "audit_days": 400})
    assert changed.get_json() == {"issues_days": 90, "activity_days": None, "audit_days": 400}
    assert client.get(PATH, headers=auth("viewer")).status_code == 403


def test_an_audit_retention_under_365_days_is_refused(app, client, auth):
    response = client.patch(PATH, headers=auth(), json={"audit_days": 364})
    assert_envelope(response, 422, "retention_below_minimum")
    with app.app_context(), db.connection_context():
        assert not RetentionSettings.select().exists()
        assert not AuditEntry.select().where(AuditEntry.action == "retention.changed").exists()


def test_analysts_cannot_change_retention(client, auth):
    assert_envelope(client.patch(PATH, headers=auth("analyst"), json={"issues_days": 1}), 403, "forbidden")


def test_a_retention_change_is_audited_with_before_and_after(app, client, auth):
    client.patch(PATH, headers=auth(), json={"activity_days": 30})
    client.patch(PATH, headers=auth(), json={"activity_days": 30})  # no change: no entry
    with app.app_context(), db.connection_context():
        entries = list(AuditEntry.select().where(AuditEntry.action == "retention.changed"))
    assert [entry.changes for entry in entries] == [{"activity_days": {"before": None, "after": 30}}]


def pattern_counts(app):
    with app.app_context(), db.connection_context():
        return {p.id: (p.issue_count, p.linked_by_severity) for p in Pattern.in_workspace(SEED_WORKSPACE)}


def recount(app):
    with app.app_context(), db.connection_context():
        ids = [p.id for p in Pattern.in_workspace(SEED_WORKSPACE)]
        Pattern.recount(ids)
    return pattern_counts(app)


@pytest.mark.parametrize("batch", [1, 7, 500])
def test_prune_deletes_old_issues_in_batches_and_counters_stay_exact(app, client, auth, batch):
    from models import retention

    client.patch(PATH, headers=auth(), json={"issues_days": 30})
    with app.app_context(), db.connection_context():
        old = datetime.datetime(2020, 1, 1)
        ids = [i.id for i in Issue.in_workspace(SEED_WORKSPACE).order_by(Issue.id).limit(20)]
        Issue.update(updated_at=utcnow()).where(Issue.workspace == SEED_WORKSPACE).execute()
        Issue.update(updated_at=old).where(Issue.id.in_(ids)).execute()
        before = Issue.in_workspace(SEED_WORKSPACE).count()
        done = retention.prune(batch=batch)
        assert done[SEED_WORKSPACE]["issues"] == 20
        assert Issue.in_workspace(SEED_WORKSPACE).count() == before - 20
        assert not Issue.select().where(Issue.id.in_(ids)).exists()
    exact = pattern_counts(app)
    assert recount(app) == exact


def test_prune_keeps_audit_entries_for_at_least_365_days_and_ends_old_sessions(app, client, auth):
    from models import retention

    client.patch(PATH, headers=auth(), json={"audit_days": 365, "activity_days": 10})
    long_ago, recently = datetime.datetime(2020, 1, 1), utcnow() - datetime.timedelta(days=300)
    with app.app_context(), db.connection_context():
        entries = [e.id for e in AuditEntry.select().where(AuditEntry.workspace == SEED_WORKSPACE)]
        AuditEntry.update(occurred_at=long_ago).where(AuditEntry.id == entries[0]).execute()
        AuditEntry.update(occurred_at=recently).where(AuditEntry.id == entries[1]).execute()
        AuthSession.update(created_at=long_ago, revoked_at=long_ago).where(
            AuthSession.workspace == SEED_WORKSPACE).execute()
        done = retention.prune()
        assert done[SEED_WORKSPACE]["audit_entries"] == 1
        assert AuditEntry.get_or_none(AuditEntry.id == entries[1]) is not None
        assert done[SEED_WORKSPACE]["sessions"] >= 1


def test_the_prune_command_reports_what_it_deleted(app, client, auth):
    client.patch(PATH, headers=auth(), json={"issues_days": 3650})
    result = app.test_cli_runner().invoke(args=["prune", "--batch-size", "5"])
    assert result.exit_code == 0, result.output
    assert f"{SEED_WORKSPACE}: " in result.output


def test_a_prune_over_a_generated_workspace_keeps_every_counter_exact(app):
    """A realistic mix: 600 issues over 15 patterns (Zipf sizes, every severity, a fifth
    unlinked), two years of timestamps; small batches so many patterns move in each."""
    from models import retention

    workspace = "ws_prune_mix"
    result = app.test_cli_runner().invoke(args=["generate", "--workspace", workspace, "--issues", "600",
                                                "--patterns", "15", "--seed", "3"])
    assert result.exit_code == 0, result.output
    with app.app_context(), db.connection_context():
        RetentionSettings.create(workspace=workspace, issues_days=30)
        cutoff = utcnow() - datetime.timedelta(days=30)
        old = Issue.in_workspace(workspace).where(Issue.updated_at < cutoff)
        expected, kept = old.count(), Issue.in_workspace(workspace).count() - old.count()
        assert old.where(Issue.pattern.is_null(False)).count() > 0 and old.where(Issue.pattern.is_null()).count() > 0
        assert retention.prune(batch=40)[workspace] == {"issues": expected}
        assert Issue.in_workspace(workspace).count() == kept
        patterns = [p.id for p in Pattern.in_workspace(workspace)]
        counted = {p.id: (p.issue_count, p.linked_by_severity) for p in Pattern.in_workspace(workspace)}
        Pattern.recount(patterns)
        assert {p.id: (p.issue_count, p.linked_by_severity) for p in Pattern.in_workspace(workspace)} == counted


@pytest.mark.skipif(ON_POSTGRES, reason="SQLite's database-wide write lock")
def test_a_prune_that_waits_for_the_write_lock_still_records_its_events(app, client, auth):
    """The prune asks for the lock itself; a try that found it taken leaves nothing behind,
    so the transaction that then begins stores its events."""
    import sqlite3
    import threading

    from models import Event, retention

    client.patch(PATH, headers=auth(), json={"issues_days": 30})
    with app.app_context(), db.connection_context():
        linked = Issue.in_workspace(SEED_WORKSPACE).where(Issue.pattern.is_null(False)).order_by(Issue.id).limit(5)
        ids = [issue.id for issue in linked]
        Issue.update(updated_at=utcnow()).where(Issue.workspace == SEED_WORKSPACE).execute()
        Issue.update(updated_at=datetime.datetime(2020, 1, 1)).where(Issue.id.in_(ids)).execute()
        events_before = Event.select().where(Event.workspace == SEED_WORKSPACE).count()
    holder = sqlite3.connect(app.config["DATABASE_URL"][len("sqlite:///"):], isolation_level=None,
                             check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    threading.Timer(0.3, lambda: holder.execute("COMMIT")).start()
    with app.app_context(), db.connection_context():
        assert retention.prune(batch=2)[SEED_WORKSPACE]["issues"] == 5
        assert Event.select().where(Event.workspace == SEED_WORKSPACE).count() > events_before
    holder.close()
    assert recount(app) == pattern_counts(app)


def test_the_worker_prunes_daily(app, client, auth):
    from app import tasks

    headers = auth()
    assert client.patch("/v1/settings/data-retention", headers=headers, json={"issues_days": 1}).status_code == 200
    with app.app_context(), db.connection_context():
        old = Issue.select().where(Issue.workspace == SEED_WORKSPACE).count()
        Issue.update(updated_at=utcnow() - datetime.timedelta(days=2)).where(Issue.workspace == SEED_WORKSPACE).execute()
    with app.app_context():
        tasks.prune_expired.call_local()
    with app.app_context(), db.connection_context():
        assert old and not Issue.select().where(Issue.workspace == SEED_WORKSPACE).exists()
