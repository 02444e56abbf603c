"""A workspace's grouping rules and their version token (frozen copies of models/grouping/rules.py)."""
from peewee import *


def up(migrator, db):
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

    class GroupingRule(Model):
        id = CharField(primary_key=True, max_length=40)
        workspace = ForeignKeyField(Workspace, on_delete='CASCADE')
        name = CharField(max_length=200, null=True)
        position = IntegerField()
        enabled = BooleanField(default=True)
        conditions = JSONField()
        action = JSONField()
        pattern = ForeignKeyField(Pattern, null=True, on_delete='CASCADE')
        created_at = DateTimeField()
        updated_at = DateTimeField()

        class Meta:
            database = db
            table_name = 'grouping_rule'
            indexes = ((('workspace', 'position', 'id'), False),)

    class GroupingRuleVersion(Model):
        workspace = ForeignKeyField(Workspace, primary_key=True, on_delete='CASCADE')
        version = CharField(max_length=26)

        class Meta:
            database = db
            table_name = 'grouping_rule_version'

    db.create_tables([GroupingRule, GroupingRuleVersion])


def down(migrator, db):
    migrator.migrate(migrator.drop_table('grouping_rule_version'))
    migrator.migrate(migrator.drop_table('grouping_rule'))
