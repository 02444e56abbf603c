"""The audit log's filters page in the log's order: each filter column's index goes on with
(occurred_at, id), so a filtered page seeks to its cursor instead of walking the whole log
for the matches (models/audit.py)."""

FILTERS = ("actor_id", "target_id", "action")


def up(migrator, db):
    for column in FILTERS:
        db.execute_sql(f'DROP INDEX "auditentry_workspace_id_{column}"')
        db.execute_sql(f'CREATE INDEX "auditentry_workspace_id_{column}_occurred_at_id" ON "audit_entry" '
                       f'(workspace_id, {column}, occurred_at, id)')


def down(migrator, db):
    for column in FILTERS:
        db.execute_sql(f'DROP INDEX "auditentry_workspace_id_{column}_occurred_at_id"')
        db.execute_sql(f'CREATE INDEX "auditentry_workspace_id_{column}" ON "audit_entry" (workspace_id, {column})')
