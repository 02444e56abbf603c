"""Initial schema: accounts, sessions, patterns and issues (a frozen copy of the models)."""
from peewee import *

def up(migrator, db):
    class User(Model):
        id = CharField(primary_key=True, max_length=40)
        clerk_user_id = CharField(unique=True, null=True, max_length=100)
        email = CharField(null=True, max_length=320)
        name = CharField(null=True, max_length=200)
        created_at = DateTimeField()
        class Meta:
            database = db
            table_name = 'user'
    db.create_tables([User])

    class Organization(Model):
        id = CharField(primary_key=True, max_length=40)
        name = CharField(max_length=200)
        clerk_org_id = CharField(unique=True, null=True, max_length=100)
        created_at = DateTimeField()
        class Meta:
            database = db
            table_name = 'organization'
    db.create_tables([Organization])

    class Workspace(Model):
        id = CharField(primary_key=True, max_length=40)
        organization = ForeignKeyField(Organization, on_delete='CASCADE')
        name = CharField(max_length=200)
        created_at = DateTimeField()
        class Meta:
            database = db
            table_name = 'workspace'
    db.create_tables([Workspace])

    class AuthSession(Model):
        id = CharField(primary_key=True, max_length=40)
        user = ForeignKeyField(User, on_delete='CASCADE')
        workspace = ForeignKeyField(Workspace, on_delete='CASCADE')
        scope = TextField()
        created_at = DateTimeField()
        revoked_at = DateTimeField(null=True)
        class Meta:
            database = db
            table_name = 'auth_session'
    db.create_tables([AuthSession])

    class Pattern(Model):
        id = CharField(primary_key=True, max_length=40)
        workspace = ForeignKeyField(Workspace, on_delete='CASCADE')
        name = CharField(max_length=200)
        description = TextField(default='')
        status = CharField(max_length=16, default='watching')
        risk_score = SmallIntegerField(default=0)
        issue_count = IntegerField(default=0)
        last_seen_at = DateTimeField(null=True)
        fingerprint_domain = CharField(null=True, max_length=100)
        fingerprint_root_cause = CharField(null=True, max_length=100)
        tags = JSONField(default=list)
        created_at = DateTimeField()
        updated_at = DateTimeField()
        class Meta:
            database = db
            table_name = 'pattern'
            indexes = ((('workspace', 'risk_score', 'id'), False), (('workspace', 'created_at', 'id'), False))
    db.create_tables([Pattern])

    class Issue(Model):
        id = CharField(primary_key=True, max_length=40)
        workspace = ForeignKeyField(Workspace, on_delete='CASCADE')
        title = CharField(max_length=300)
        description = TextField(default='')
        status = CharField(max_length=16, default='open')
        severity = SmallIntegerField(default=1)  # rank in models.issues.SEVERITIES
        pattern = ForeignKeyField(Pattern, null=True, on_delete='SET NULL')
        source = CharField(max_length=64, default='api')
        external_id = CharField(null=True)
        external_url = CharField(null=True, max_length=2048)
        team = CharField(null=True, max_length=100)
        risk_score = SmallIntegerField(default=45)
        metadata = JSONField(default=dict)
        created_at = DateTimeField()
        updated_at = DateTimeField()
        resolved_at = DateTimeField(null=True)
        class Meta:
            database = db
            table_name = 'issue'
            indexes = ((('workspace', 'created_at', 'id'), False), (('pattern', 'created_at'), False), (('workspace', 'source', 'external_id'), True))
    db.create_tables([Issue])

    class Membership(Model):
        id = CharField(primary_key=True, max_length=40)
        user = ForeignKeyField(User, on_delete='CASCADE')
        workspace = ForeignKeyField(Workspace, on_delete='CASCADE')
        role = CharField(max_length=20)
        created_at = DateTimeField()
        class Meta:
            database = db
            table_name = 'membership'
            indexes = ((('user', 'workspace'), True),)
    db.create_tables([Membership])

    class RefreshToken(Model):
        token_hash = CharField(primary_key=True, max_length=64)
        session = ForeignKeyField(AuthSession, on_delete='CASCADE')
        expires_at = DateTimeField()
        used_at = DateTimeField(null=True)
        class Meta:
            database = db
            table_name = 'refresh_token'
    db.create_tables([RefreshToken])


def down(migrator, db):
    migrator.migrate(migrator.drop_table('refresh_token'))
    migrator.migrate(migrator.drop_table('membership'))
    migrator.migrate(migrator.drop_table('issue'))
    migrator.migrate(migrator.drop_table('pattern'))
    migrator.migrate(migrator.drop_table('auth_session'))
    migrator.migrate(migrator.drop_table('workspace'))
    migrator.migrate(migrator.drop_table('organization'))
    migrator.migrate(migrator.drop_table('user'))
