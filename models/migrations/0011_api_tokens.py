"""Service accounts and API tokens (frozen copies of models/tokens.py)."""
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

    class ServiceAccount(Model):
        id = CharField(primary_key=True, max_length=40)
        workspace = ForeignKeyField(Workspace, on_delete='CASCADE')
        name = CharField(max_length=100)
        description = TextField(default='')
        created_by = ForeignKeyField(User, null=True, on_delete='SET NULL')
        created_at = DateTimeField()
        updated_at = DateTimeField()

        class Meta:
            database = db
            table_name = 'service_account'
            indexes = ((('workspace', 'name'), True),)

    class ApiToken(Model):
        id = CharField(primary_key=True, max_length=40)
        workspace = ForeignKeyField(Workspace, on_delete='CASCADE')
        user = ForeignKeyField(User, null=True, on_delete='CASCADE')
        service_account = ForeignKeyField(ServiceAccount, null=True, on_delete='CASCADE')
        name = CharField(max_length=100)
        scope = TextField()
        allowed_cidrs = JSONField(default=list)
        token_hash = CharField(max_length=64, unique=True)
        last_four = CharField(max_length=4)
        created_by = ForeignKeyField(User, null=True, on_delete='SET NULL', backref='+')
        created_at = DateTimeField()
        expires_at = DateTimeField()
        last_used_at = DateTimeField(null=True)
        rotated_at = DateTimeField(null=True)

        class Meta:
            database = db
            table_name = 'api_token'
            indexes = ((('workspace', 'user', 'name'), True), (('service_account', 'name'), True))

    db.create_tables([ServiceAccount, ApiToken])


def down(migrator, db):
    migrator.migrate(migrator.drop_table('api_token'))
    migrator.migrate(migrator.drop_table('service_account'))
