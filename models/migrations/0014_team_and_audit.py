"""Invitations (with their hashed links), the audit log and data-retention settings (frozen
copies of models/members.py, models/audit.py and models/retention.py)."""
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

    class Invitation(Model):
        id = CharField(primary_key=True, max_length=40)
        workspace = ForeignKeyField(Workspace, on_delete='CASCADE')
        email = CharField(max_length=320)
        role = CharField(max_length=20)
        invited_by = ForeignKeyField(User, null=True, on_delete='SET NULL', backref='+')
        created_at = DateTimeField()
        expires_at = DateTimeField()
        accepted_at = DateTimeField(null=True)
        accepted_by = ForeignKeyField(User, null=True, on_delete='SET NULL', backref='+')

        class Meta:
            database = db
            table_name = 'invitation'
            indexes = ((('workspace', 'email'), False),)

    class InvitationLink(Model):
        token_hash = CharField(primary_key=True, max_length=64)
        invitation = ForeignKeyField(Invitation, on_delete='CASCADE')
        created_at = DateTimeField()
        expires_at = DateTimeField()

        class Meta:
            database = db
            table_name = 'invitation_link'

    class AuditEntry(Model):
        id = CharField(primary_key=True, max_length=40)
        workspace = ForeignKeyField(Workspace, on_delete='CASCADE')
        occurred_at = DateTimeField()
        action = CharField(max_length=64)
        actor_type = CharField(max_length=20)
        actor_id = CharField(max_length=64)
        actor_display = CharField(max_length=320)
        target_type = CharField(max_length=40, null=True)
        target_id = CharField(max_length=64, null=True)
        ip = CharField(max_length=64, null=True)
        user_agent = CharField(max_length=512, null=True)
        request_id = CharField(max_length=128, null=True)
        changes = JSONField(null=True)

        class Meta:
            database = db
            table_name = 'audit_entry'
            indexes = ((('workspace', 'occurred_at', 'id'), False), (('workspace', 'actor_id'), False),
                       (('workspace', 'target_id'), False), (('workspace', 'action'), False))

    class RetentionSettings(Model):
        workspace = ForeignKeyField(Workspace, primary_key=True, on_delete='CASCADE')
        issues_days = IntegerField(null=True)
        activity_days = IntegerField(null=True)
        audit_days = IntegerField(null=True)
        updated_at = DateTimeField()

        class Meta:
            database = db
            table_name = 'retention_settings'

    db.create_tables([Invitation, InvitationLink, AuditEntry, RetentionSettings])


def down(migrator, db):
    for table in ('retention_settings', 'audit_entry', 'invitation_link', 'invitation'):
        migrator.migrate(migrator.drop_table(table))
