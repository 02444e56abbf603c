"""Inbound webhook connectors and their deliveries (frozen copies of models/webhooks.py)."""
from peewee import *


def up(migrator, db):
    class Workspace(Model):
        id = CharField(primary_key=True, max_length=40)

        class Meta:
            database = db
            table_name = 'workspace'

    class User(Model):
        id = CharField(primary_key=True, max_length=40)

        class Meta:
            database = db
            table_name = 'user'

    class Connector(Model):
        id = CharField(primary_key=True, max_length=40)
        workspace = ForeignKeyField(Workspace, on_delete='CASCADE')
        type = CharField(max_length=20)
        display_name = CharField(max_length=100)
        enabled = BooleanField(default=True)
        secret_sealed = TextField()
        secret_last_four = CharField(max_length=4)
        previous_secret_sealed = TextField(null=True)
        previous_secret_expires_at = DateTimeField(null=True)
        created_by = ForeignKeyField(User, null=True, on_delete='SET NULL')
        created_at = DateTimeField()
        updated_at = DateTimeField()
        rotated_at = DateTimeField(null=True)

        class Meta:
            database = db
            table_name = 'connector'
            indexes = ((('workspace', 'display_name'), True),)

    class WebhookDelivery(Model):
        id = AutoField()
        connector = ForeignKeyField(Connector, on_delete='CASCADE')
        delivery_id = CharField(max_length=255)
        received_at = DateTimeField()

        class Meta:
            database = db
            table_name = 'inbound_delivery'
            indexes = ((('connector', 'delivery_id'), True), (('received_at',), False))

    db.create_tables([Connector, WebhookDelivery])


def down(migrator, db):
    migrator.migrate(migrator.drop_table('inbound_delivery'))
    migrator.migrate(migrator.drop_table('connector'))
