"""Your notification feed in this workspace, and what you want in it.

The feed is a member's own: a personal API token reads its member's feed; a service account
has none (403), since no person reads it."""
import marshmallow as ma
from flask.views import MethodView

from app.api import Blueprint, Timestamp
from app.auth import current_principal
from app.errors import ApiError
from app.extensions import protector
from app.pagination import PageArgsSchema, list_schema, paginate
from blueprints.grouping_rules import StrictInteger
from models import Notification, NotificationPreference
from models.issues import SEVERITIES
from models.notifications import DELIVERY_MODES

blp = Blueprint("notifications", __name__, url_prefix="/v1", protector=protector,
                description="Your in-app notifications (alert rules with the in_app channel) and your preferences.")

Length = ma.validate.Length
SORTS = {"created_at": Notification.created_at}


class NotificationSchema(ma.Schema):
    id = ma.fields.String(required=True, metadata={"example": "ntf_01j9z3k8m2q4r6t8v0w2x4y6z8"})
    type = ma.fields.String(required=True, metadata={"example": "prediction.alert"})
    title = ma.fields.String(required=True)
    read = ma.fields.Boolean(required=True)
    created_at = Timestamp(required=True)
    target = ma.fields.Dict(required=True, metadata={
        "description": "What it is about: {type: \"pattern\", id, prediction_id, alert_rule_id}."})


class FeedQuerySchema(PageArgsSchema):
    unread = ma.fields.Boolean(metadata={"description": "true: only unread; false: only read."})


class ReadAllSchema(ma.Schema):
    type = ma.fields.String(validate=Length(1, 64), metadata={
        "description": "Only notifications whose type starts with this (e.g. `prediction.`)."})


class ReadAllResultSchema(ma.Schema):
    marked = ma.fields.Integer(required=True)
    unread_count = ma.fields.Integer(required=True)


class PreferencesUpdateSchema(ma.Schema):
    OPENAPI_RULES = {"minProperties": 1}
    min_severity = ma.fields.String(validate=ma.validate.OneOf(SEVERITIES), metadata={
        "description": "Only patterns with an issue at least this severe."})
    min_risk = StrictInteger(validate=ma.validate.Range(0, 100), metadata={"description": "Only patterns this risky."})
    delivery = ma.fields.String(validate=ma.validate.OneOf(DELIVERY_MODES), metadata={
        "description": "How outside channels (email) reach you: at once or in a daily digest (sent by the worker)."})

    @ma.validates_schema
    def at_least_one(self, data, **kwargs):
        if not data:
            raise ma.ValidationError("Give at least one of min_severity, min_risk, delivery.")


class PreferencesSchema(ma.Schema):
    min_severity = ma.fields.String(required=True, metadata={"enum": list(SEVERITIES)})
    min_risk = ma.fields.Integer(required=True)
    delivery = ma.fields.String(required=True, metadata={"enum": list(DELIVERY_MODES)})


NotificationListSchema = list_schema(NotificationSchema, "NotificationList")


def reader():
    """(workspace id, user id) of the feed's reader; a service account has no feed."""
    principal = current_principal()
    if principal.user_id is None:
        raise ApiError(403, "A service account has no notification feed; notifications are a member's")
    return principal.workspace_id, principal.user_id


@blp.route("/me/notifications/feed")
@blp.auth_required("alerts:read")
@blp.arguments(FeedQuerySchema, location="query")
@blp.response(200, NotificationListSchema)
def feed(args):
    """Your notifications, newest first (dismissed ones are gone)."""
    query = Notification.feed(*reader(), unread=args.get("unread"))
    return paginate(query, {**args, "sort": "-created_at"}, sorts=SORTS, id_field=Notification.id,
                    item_schema=NotificationSchema, total=lambda matches: matches.count())


@blp.route('/me/notifications/feed/<id("ntf"):notification_id>/read', methods=["POST"])
@blp.auth_required("alerts:read")
@blp.response(200, NotificationSchema)
@blp.errors(404)
def mark_read(notification_id):
    """Mark one notification read."""
    return Notification.mark_read(notification_id, *reader())


@blp.route('/me/notifications/feed/<id("ntf"):notification_id>/dismiss', methods=["POST"])
@blp.auth_required("alerts:read")
@blp.response(204)
@blp.errors(404)
def dismiss(notification_id):
    """Dismiss a notification: it leaves your feed."""
    Notification.dismiss(notification_id, *reader())


@blp.route("/me/notifications/feed/read-all", methods=["POST"])
@blp.auth_required("alerts:read")
@blp.arguments(ReadAllSchema, required=False)
@blp.response(200, ReadAllResultSchema)
def read_all(body):
    """Mark your whole feed read, or only the types starting with `type`."""
    marked, unread = Notification.mark_all_read(*reader(), type_prefix=body.get("type"))
    return {"marked": marked, "unread_count": unread}


@blp.route("/me/notifications/preferences")
class Preferences(MethodView):
    @blp.auth_required("alerts:read")
    @blp.response(200, PreferencesSchema)
    def get(self):
        """Your notification preferences in this workspace."""
        workspace_id, user_id = reader()
        return NotificationPreference.of(user_id, workspace_id)

    @blp.auth_required("alerts:read")
    @blp.arguments(PreferencesUpdateSchema)
    @blp.response(200, PreferencesSchema)
    def patch(self, changes):
        """Change your notification preferences in this workspace."""
        workspace_id, user_id = reader()
        return NotificationPreference.set(user_id, workspace_id, changes)
