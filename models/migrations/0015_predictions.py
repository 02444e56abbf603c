"""Predictions, alert rules and their firings and outside deliveries, the notification feed and
its preferences (frozen copies of models/predictions.py, alerts.py, notifications.py)."""
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

    class Pattern(Model):
        id = CharField(primary_key=True, max_length=40)

        class Meta:
            database = db
            table_name = 'pattern'

    class PredictionSettings(Model):
        workspace = ForeignKeyField(Workspace, primary_key=True, on_delete='CASCADE')
        as_of = DateTimeField(null=True)
        computed_at = DateTimeField(null=True)
        prior_alpha = DoubleField(null=True)
        prior_beta = DoubleField(null=True)

        class Meta:
            database = db
            table_name = 'prediction_settings'

    class Prediction(Model):
        id = CharField(primary_key=True, max_length=40)
        workspace = ForeignKeyField(Workspace, on_delete='CASCADE')
        pattern = ForeignKeyField(Pattern, on_delete='CASCADE')
        window_days = SmallIntegerField()
        probability = DoubleField()
        expected_count = DoubleField()
        interval_lower = DoubleField()
        interval_upper = DoubleField()
        impact = DoubleField()
        status = CharField(max_length=16, default='open')
        feedback_reason = TextField(null=True)
        feedback_at = DateTimeField(null=True)
        alpha = DoubleField()
        beta = DoubleField()
        episode_size = DoubleField()
        created_at = DateTimeField()
        updated_at = DateTimeField()

        class Meta:
            database = db
            table_name = 'prediction'
            indexes = ((('pattern', 'window_days'), True), (('workspace', 'probability', 'id'), False),
                       (('workspace', 'impact', 'id'), False))

    class AlertRule(Model):
        id = CharField(primary_key=True, max_length=40)
        workspace = ForeignKeyField(Workspace, on_delete='CASCADE')
        name = CharField(max_length=100)
        pattern = ForeignKeyField(Pattern, null=True, on_delete='CASCADE')
        threshold_probability = DoubleField()
        threshold_window_days = SmallIntegerField()
        channels = JSONField(default=list)
        enabled = BooleanField(default=True)
        snoozed_until = DateTimeField(null=True)
        created_by = ForeignKeyField(User, null=True, on_delete='SET NULL')
        created_at = DateTimeField()
        updated_at = DateTimeField()

        class Meta:
            database = db
            table_name = 'alert_rule'
            indexes = ((('workspace', 'created_at', 'id'), False),)

    class Alert(Model):
        id = CharField(primary_key=True, max_length=40)
        workspace = ForeignKeyField(Workspace, on_delete='CASCADE')
        rule = ForeignKeyField(AlertRule, on_delete='CASCADE')
        pattern = ForeignKeyField(Pattern, on_delete='CASCADE')
        window_days = SmallIntegerField()
        prediction_id = CharField(max_length=40)
        probability = DoubleField()
        fired_at = DateTimeField()

        class Meta:
            database = db
            table_name = 'alert'
            indexes = ((('rule', 'pattern', 'window_days'), True), (('workspace', 'pattern'), False))

    class AlertDelivery(Model):
        id = CharField(primary_key=True, max_length=40)
        workspace = ForeignKeyField(Workspace, on_delete='CASCADE')
        alert_id = CharField(max_length=40)
        channel = CharField(max_length=16)
        target = CharField(max_length=2048)
        payload = JSONField()
        status = CharField(max_length=16, default='pending')
        attempts = IntegerField(default=0)
        created_at = DateTimeField()

        class Meta:
            database = db
            table_name = 'alert_delivery'
            indexes = ((('status', 'created_at'), False),)

    class Notification(Model):
        id = CharField(primary_key=True, max_length=40)
        workspace = ForeignKeyField(Workspace, on_delete='CASCADE')
        user = ForeignKeyField(User, on_delete='CASCADE')
        type = CharField(max_length=64)
        title = CharField(max_length=300)
        target = JSONField()
        read = BooleanField(default=False)
        read_at = DateTimeField(null=True)
        dismissed_at = DateTimeField(null=True)
        created_at = DateTimeField()

        class Meta:
            database = db
            table_name = 'notification'
            indexes = ((('workspace', 'user', 'created_at', 'id'), False),)

    class NotificationPreference(Model):
        user = ForeignKeyField(User, on_delete='CASCADE')
        workspace = ForeignKeyField(Workspace, on_delete='CASCADE')
        min_severity = CharField(max_length=16, default='low')
        min_risk = SmallIntegerField(default=0)
        delivery = CharField(max_length=16, default='immediate')
        updated_at = DateTimeField()

        class Meta:
            database = db
            table_name = 'notification_preference'
            primary_key = CompositeKey('user', 'workspace')

    db.create_tables([PredictionSettings, Prediction, AlertRule, Alert, AlertDelivery, Notification,
                      NotificationPreference])


def down(migrator, db):
    for table in ('notification_preference', 'notification', 'alert_delivery', 'alert', 'alert_rule', 'prediction',
                  'prediction_settings'):
        migrator.migrate(migrator.drop_table(table))
