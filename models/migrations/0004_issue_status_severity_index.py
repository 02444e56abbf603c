"""An index for counting issues by status and severity: a filtered list's total reads index
entries only, instead of every row of the workspace."""


def up(migrator, db):
    db.execute_sql('CREATE INDEX "issue_workspace_status_severity" ON "issue" '
                   "(workspace_id, status, severity)")


def down(migrator, db):
    db.execute_sql('DROP INDEX "issue_workspace_status_severity"')
