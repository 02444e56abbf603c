"""The in-app notification feed: one row per member it is meant for, and each member's
preferences (the least severe pattern and the lowest risk worth a notification, and whether
outside channels send them at once or in a digest)."""
import peewee as pw

from .accounts import Membership, User, Workspace
from .base import BaseModel, NotFound, new_id, utcnow
from .issues import SEVERITIES

DELIVERY_MODES = ("immediate", "digest")
DEFAULT_PREFERENCES = {"min_severity": "low", "min_risk": 0, "delivery": "immediate"}


class Notification(BaseModel):
    KIND = "Notification"
    ID_PREFIX = "ntf"
    id = pw.CharField(primary_key=True, max_length=40)
    workspace = pw.ForeignKeyField(Workspace, on_delete="CASCADE")
    user = pw.ForeignKeyField(User, on_delete="CASCADE")
    type = pw.CharField(max_length=64)
    title = pw.CharField(max_length=300)
    target = pw.JSONField()
    read = pw.BooleanField(default=False)
    read_at = pw.DateTimeField(null=True)
    dismissed_at = pw.DateTimeField(null=True)
    created_at = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("workspace", "user", "created_at", "id"), False),)

    @classmethod
    def feed(cls, workspace_id, user_id, unread=None):
        """A member's feed in a workspace: what they have not dismissed."""
        query = cls.select().where((cls.workspace == workspace_id) & (cls.user == user_id) & cls.dismissed_at.is_null())
        if unread is not None:
            query = query.where(cls.read == (not unread))
        return query

    @classmethod
    def get_in_feed(cls, notification_id, workspace_id, user_id):
        found = cls.feed(workspace_id, user_id).where(cls.id == notification_id).first()
        if found is None:
            raise NotFound(cls.KIND, notification_id)
        return found

    @classmethod
    def mark_read(cls, notification_id, workspace_id, user_id):
        notification = cls.get_in_feed(notification_id, workspace_id, user_id)
        if not notification.read:
            notification.read, notification.read_at = True, utcnow()
            notification.save()
        return notification

    @classmethod
    def mark_all_read(cls, workspace_id, user_id, type_prefix=None):
        """Mark the feed read (only types starting with `type_prefix`, if given);
        returns (how many were marked, how many stay unread)."""
        unread = cls.feed(workspace_id, user_id, unread=True)
        if type_prefix:
            unread = unread.where(cls.type.startswith(type_prefix))
        marked = (cls.update(read=True, read_at=utcnow())
                  .where(cls.id.in_(unread.select(cls.id))).execute())
        return marked, cls.feed(workspace_id, user_id, unread=True).count()

    @classmethod
    def dismiss(cls, notification_id, workspace_id, user_id):
        notification = cls.get_in_feed(notification_id, workspace_id, user_id)
        notification.dismissed_at = utcnow()
        notification.save()


class NotificationPreference(BaseModel):
    user = pw.ForeignKeyField(User, on_delete="CASCADE")
    workspace = pw.ForeignKeyField(Workspace, on_delete="CASCADE")
    min_severity = pw.CharField(max_length=16, default="low")
    min_risk = pw.SmallIntegerField(default=0)
    delivery = pw.CharField(max_length=16, default="immediate")
    updated_at = pw.DateTimeField(default=utcnow)

    class Meta:
        primary_key = pw.CompositeKey("user", "workspace")

    @classmethod
    def of(cls, user_id, workspace_id):
        found = cls.get_or_none((cls.user == user_id) & (cls.workspace == workspace_id))
        return {name: getattr(found, name) for name in DEFAULT_PREFERENCES} if found else dict(DEFAULT_PREFERENCES)

    @classmethod
    def set(cls, user_id, workspace_id, changes):
        merged = {**cls.of(user_id, workspace_id), **changes}
        cls.insert(user=user_id, workspace=workspace_id, updated_at=utcnow(), **merged).on_conflict(
            conflict_target=[cls.user, cls.workspace], update={**{getattr(cls, k): v for k, v in merged.items()},
                                                               cls.updated_at: utcnow()}).execute()
        return merged


def pattern_severity(pattern):
    """The most severe level among the pattern's linked issues ("low" when none)."""
    return next((name for name in reversed(SEVERITIES) if getattr(pattern, f"linked_{name}")), "low")


def notify_members(workspace_id, type_, title, target, pattern):
    """A notification in the feed of each member of the workspace whose preferences let this
    pattern through (severity and risk); returns how many were written."""
    severity = SEVERITIES.index(pattern_severity(pattern))
    preferences = {row.user_id: row for row in NotificationPreference.select().where(
        NotificationPreference.workspace == workspace_id)}
    now, rows = utcnow(), []
    for (user_id,) in Membership.select(Membership.user).where(Membership.workspace == workspace_id).tuples():
        wanted = preferences.get(user_id)
        if wanted and (SEVERITIES.index(wanted.min_severity) > severity or wanted.min_risk > pattern.risk_score):
            continue
        rows.append({"id": new_id("ntf"), "workspace": workspace_id, "user": user_id, "type": type_,
                     "title": title[:300], "target": target, "created_at": now})
    if rows:
        Notification.insert_many(rows).execute()
    return len(rows)
