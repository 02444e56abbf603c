"""Issues carry the fingerprint detection gave them, and why."""
from peewee import CharField, JSONField


def up(migrator, db):
    migrator.migrate(
        migrator.add_column("issue", "fingerprint_domain", CharField(max_length=100, null=True)),
        migrator.add_column("issue", "fingerprint_root_cause", CharField(max_length=100, null=True)),
        migrator.add_column("issue", "detection", JSONField(null=True)),
    )
    db.execute_sql('CREATE INDEX "issue_workspace_fingerprint" ON "issue" '
                   "(workspace_id, fingerprint_domain, fingerprint_root_cause)")
    db.execute_sql('CREATE INDEX "pattern_workspace_fingerprint" ON "pattern" '
                   "(workspace_id, fingerprint_domain, fingerprint_root_cause)")


def down(migrator, db):
    db.execute_sql('DROP INDEX "pattern_workspace_fingerprint"')
    db.execute_sql('DROP INDEX "issue_workspace_fingerprint"')
    migrator.migrate(
        migrator.drop_column("issue", "detection"),
        migrator.drop_column("issue", "fingerprint_root_cause"),
        migrator.drop_column("issue", "fingerprint_domain"),
    )
