"""Outbound webhooks: endpoints, deliveries, the fan-out cursor (frozen copies of models/webhooks.py)."""
from peewee import *


def up(migrator, db):
    class Workspace(Model):
        id = CharField(primary_key=True, max_length=40)

        class Meta:
            database = db
            table_name = 'workspace'

    class WebhookEndpoint(Model):
        id = CharField(primary_key=True, max_length=40)
        workspace = ForeignKeyField(Workspace, on_delete='CASCADE')
        url = TextField()
        description = TextField(default='')
        events = JSONField()
        secret = TextField()
        previous_secret = TextField(null=True)
        previous_secret_expires_at = DateTimeField(null=True)
        since_seq = BigIntegerField(default=0)
        paused = BooleanField(default=False)
        disabled_at = DateTimeField(null=True)
        disabled_reason = TextField(null=True)
        last_delivery_status = CharField(max_length=16, null=True)
        last_status_code = IntegerField(null=True)
        last_attempt_at = DateTimeField(null=True)
        failures_in_a_row = IntegerField(default=0)
        failing_since = DateTimeField(null=True)
        created_at = DateTimeField()
        updated_at = DateTimeField()

        class Meta:
            database = db
            table_name = 'webhook_endpoint'

    class WebhookCursor(Model):
        workspace = ForeignKeyField(Workspace, primary_key=True, on_delete='CASCADE')
        last_seq = BigIntegerField(default=0)

        class Meta:
            database = db
            table_name = 'webhook_cursor'

    class WebhookDelivery(Model):
        id = CharField(primary_key=True, max_length=40)
        workspace = ForeignKeyField(Workspace, on_delete='CASCADE')
        endpoint = ForeignKeyField(WebhookEndpoint, on_delete='CASCADE')
        event = BigIntegerField(null=True, column_name='event_id')
        event_seq = BigIntegerField(null=True)
        event_type = CharField(max_length=64)
        message_id = CharField(max_length=40)
        body = TextField()
        status = CharField(max_length=16, default='pending')
        attempt_count = IntegerField(default=0)
        attempts = JSONField(default=list)
        last_status_code = IntegerField(null=True)
        last_error = TextField(null=True)
        next_attempt_at = DateTimeField(null=True)
        locked_until = DateTimeField(null=True)
        created_at = DateTimeField()
        delivered_at = DateTimeField(null=True)

        class Meta:
            database = db
            table_name = 'webhook_delivery'
            indexes = ((('endpoint', 'event'), True), (('status', 'next_attempt_at'), False),
                       (('endpoint', 'created_at'), False))

    db.create_tables([WebhookEndpoint, WebhookCursor, WebhookDelivery])


def down(migrator, db):
    for table in ('webhook_delivery', 'webhook_cursor', 'webhook_endpoint'):
        migrator.migrate(migrator.drop_table(table))
