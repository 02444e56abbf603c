"""Alert deliveries are sent by the worker: each row keeps its last error, when it is next due,
its lease and when it arrived (frozen copy of models/alerts.py's AlertDelivery).

Rows left pending by the code before the sender are marked failed, not sent: those alerts are
stale, and webhook-channel rows now travel as webhook deliveries."""
from peewee import *


def up(migrator, db):
    migrator.migrate(
        migrator.add_column('alert_delivery', 'last_error', TextField(null=True)),
        migrator.add_column('alert_delivery', 'next_attempt_at', DateTimeField(null=True)),
        migrator.add_column('alert_delivery', 'locked_until', DateTimeField(null=True)),
        migrator.add_column('alert_delivery', 'delivered_at', DateTimeField(null=True)),
        migrator.drop_index('alert_delivery', 'alertdelivery_status_created_at'),
        migrator.add_index('alert_delivery', ('status', 'next_attempt_at'), False),
        migrator.add_index('alert_delivery', ('alert_id',), False),
    )
    db.execute_sql("UPDATE alert_delivery SET status = 'failed', "
                   "last_error = 'Recorded before the worker sent alerts; not sent.' WHERE status = 'pending'")


def down(migrator, db):
    migrator.migrate(
        migrator.drop_index('alert_delivery', 'alert_delivery_alert_id'),
        migrator.drop_index('alert_delivery', 'alert_delivery_status_next_attempt_at'),
        migrator.add_index('alert_delivery', ('status', 'created_at'), False),
        migrator.drop_column('alert_delivery', 'delivered_at'),
        migrator.drop_column('alert_delivery', 'locked_until'),
        migrator.drop_column('alert_delivery', 'next_attempt_at'),
        migrator.drop_column('alert_delivery', 'last_error'),
    )
