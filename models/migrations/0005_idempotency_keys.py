"""Idempotency keys (a frozen copy of models/idempotency.py)."""
from peewee import *


def up(migrator, db):
    class Workspace(Model):
        id = CharField(primary_key=True, max_length=40)

        class Meta:
            database = db
            table_name = 'workspace'

    class IdempotencyKey(Model):
        workspace = ForeignKeyField(Workspace, on_delete='CASCADE')
        key = CharField(max_length=255)
        request_hash = CharField(max_length=64)
        status = SmallIntegerField()
        body = TextField()
        location = CharField(max_length=2048, null=True)
        created_at = DateTimeField()

        class Meta:
            database = db
            table_name = 'idempotency_key'
            indexes = ((('workspace', 'key'), True), (('created_at',), False))

    db.create_tables([IdempotencyKey])


def down(migrator, db):
    migrator.migrate(migrator.drop_table('idempotency_key'))
