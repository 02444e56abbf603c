"""Similarity grouping: each issue's stored representation and pinned flag; each pattern's
centroid (derived), merge target; per-source profiles, cannot-link pairs, corrections and the
workspace's threshold (frozen copies of models/grouping/)."""
from peewee import *


def up(migrator, db):
    # Plain ADD COLUMN: the migrator's NOT NULL step rebuilds tables on SQLite, which would
    # drop the triggers that keep the search indexes.
    for statement in (
            'ALTER TABLE "issue" ADD COLUMN "embedding" {blob}',
            'ALTER TABLE "issue" ADD COLUMN "pinned" BOOLEAN NOT NULL DEFAULT FALSE',
            'ALTER TABLE "pattern" ADD COLUMN "centroid" {blob}',
            'ALTER TABLE "pattern" ADD COLUMN "centroid_weight" REAL NOT NULL DEFAULT 0',
            'ALTER TABLE "pattern" ADD COLUMN "source_weights" {json}',
            'ALTER TABLE "pattern" ADD COLUMN "merged_into_id" VARCHAR(40) NULL '
            'REFERENCES "pattern" ("id") ON DELETE SET NULL'):
        blob = "BYTEA" if isinstance(db, PostgresqlDatabase) else "BLOB"
        json = "JSONB" if isinstance(db, PostgresqlDatabase) else "JSON"
        db.execute_sql(statement.format(blob=blob, json=json))

    class Workspace(Model):
        id = CharField(primary_key=True, max_length=40)

        class Meta:
            database = db
            table_name = 'workspace'

    class Pattern(Model):
        id = CharField(primary_key=True, max_length=40)

        class Meta:
            database = db
            table_name = 'pattern'

    class Issue(Model):
        id = CharField(primary_key=True, max_length=40)

        class Meta:
            database = db
            table_name = 'issue'

    class SourceProfile(Model):
        workspace = ForeignKeyField(Workspace, on_delete='CASCADE')
        source = CharField(max_length=64)
        count = IntegerField(default=0)
        total = BlobField(null=True)

        class Meta:
            database = db
            table_name = 'grouping_source_profile'
            primary_key = CompositeKey('workspace', 'source')

    class CannotLink(Model):
        workspace = ForeignKeyField(Workspace, on_delete='CASCADE')
        pattern_a = ForeignKeyField(Pattern, on_delete='CASCADE')
        pattern_b = ForeignKeyField(Pattern, on_delete='CASCADE')
        created_at = DateTimeField()

        class Meta:
            database = db
            table_name = 'grouping_cannot_link'
            primary_key = CompositeKey('pattern_a', 'pattern_b')

    class GroupingSettings(Model):
        workspace = ForeignKeyField(Workspace, primary_key=True, on_delete='CASCADE')
        threshold = FloatField(null=True)
        calibrated_at = DateTimeField(null=True)

        class Meta:
            database = db
            table_name = 'grouping_settings'

    class GroupingCorrection(Model):
        workspace = ForeignKeyField(Workspace, on_delete='CASCADE')
        issue = ForeignKeyField(Issue, null=True, on_delete='SET NULL')
        score = FloatField()
        positive = BooleanField()
        created_at = DateTimeField()

        class Meta:
            database = db
            table_name = 'grouping_correction'
            indexes = ((('workspace', 'created_at'), False),)

    db.create_tables([SourceProfile, CannotLink, GroupingSettings, GroupingCorrection])


def down(migrator, db):
    for table in ('grouping_correction', 'grouping_settings', 'grouping_cannot_link',
                  'grouping_source_profile'):
        migrator.migrate(migrator.drop_table(table))
    for table, column in (('pattern', 'merged_into_id'), ('pattern', 'source_weights'),
                          ('pattern', 'centroid_weight'), ('pattern', 'centroid'),
                          ('issue', 'pinned'), ('issue', 'embedding')):
        db.execute_sql(f'ALTER TABLE "{table}" DROP COLUMN "{column}"')
