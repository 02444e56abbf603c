"""The event outbox and the per-workspace event counter (frozen copies of models/events.py)."""
from peewee import *


def up(migrator, db):
    class Workspace(Model):
        id = CharField(primary_key=True, max_length=40)

        class Meta:
            database = db
            table_name = 'workspace'

    class EventCounter(Model):
        workspace = ForeignKeyField(Workspace, primary_key=True, on_delete='CASCADE')
        last_seq = BigIntegerField(default=0)

        class Meta:
            database = db
            table_name = 'event_counter'

    class Event(Model):
        id = BigAutoField()
        workspace = ForeignKeyField(Workspace, on_delete='CASCADE')
        seq = BigIntegerField()
        type = CharField(max_length=64)
        payload = JSONField()
        created_at = DateTimeField()

        class Meta:
            database = db
            table_name = 'event'
            indexes = ((('workspace', 'seq'), True), (('created_at',), False))

    db.create_tables([EventCounter, Event])


def down(migrator, db):
    migrator.migrate(migrator.drop_table('event'))
    migrator.migrate(migrator.drop_table('event_counter'))
