"""Outbound webhooks: endpoints that receive the workspace's events, signed (Standard Webhooks)."""
import marshmallow as ma
from flask import url_for
from flask.views import MethodView

from app import tasks
from app.api import Blueprint, HttpUrl, Timestamp
from app.auth import current_principal
from app.extensions import protector
from app.pagination import PageArgsSchema, list_schema, paginate
from blueprints.grouping_rules import StrictBoolean
from blueprints.tokens import whole_list
from models import WebhookDelivery, WebhookEndpoint
from models.webhooks import ALL_EVENTS, EVENT_TYPES, MAX_ENDPOINTS

blp = Blueprint("webhooks", __name__, url_prefix="/v1", protector=protector,
                description="Endpoints that receive the workspace's events as signed HTTPS POSTs "
                            "(Standard Webhooks), with retries. Managed only with a signed-in member's "
                            "access token (the `webhooks:admin` scope), never with an API token.")

Length = ma.validate.Length
ADMIN = "webhooks:admin"
SUBSCRIBABLE = (ALL_EVENTS, *EVENT_TYPES)
DELIVERY_SORTS = {"created_at": WebhookDelivery.created_at}


class WebhookHealthSchema(ma.Schema):
    last_delivery_status = ma.fields.String(required=True, allow_none=True, validate=ma.validate.OneOf(
        ("succeeded", "failed")), metadata={"description": "The last attempt's result; null before any."})
    last_status_code = ma.fields.Integer(required=True, allow_none=True)
    last_attempt_at = Timestamp(required=True, allow_none=True)
    failures_in_a_row = ma.fields.Integer(required=True)
    failing_since = Timestamp(required=True, allow_none=True, metadata={
        "description": "Failing without a success since then; 5 days of it disable the endpoint."})


class WebhookSchema(ma.Schema):
    id = ma.fields.String(required=True, metadata={"example": "whk_01j9z3k8m2q4r6t8v0w2x4y6z8"})
    url = ma.fields.String(required=True, metadata={"example": "https://hooks.example.com/causeloop"})
    description = ma.fields.String(required=True)
    events = ma.fields.List(ma.fields.String(), required=True, metadata={"description": "`[\"*\"]`: all."})
    status = ma.fields.String(required=True, validate=ma.validate.OneOf(("active", "paused", "disabled")))
    paused = ma.fields.Boolean(required=True)
    disabled_at = Timestamp(required=True, allow_none=True)
    disabled_reason = ma.fields.String(required=True, allow_none=True, metadata={
        "description": "Why sending stopped (a 410 Gone, or 5 days of failures); resume with paused=false."})
    health = ma.fields.Nested(WebhookHealthSchema, required=True)
    created_at = Timestamp(required=True)
    updated_at = Timestamp(required=True)


class WebhookCreatedSchema(WebhookSchema):
    secret = ma.fields.String(attribute="new_secret", required=True, metadata={
        "description": "The signing secret (`whsec_` + base64), shown only in this response: store it now.",
        "example": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"})


class WebhookUpdateSchema(ma.Schema):
    events = ma.fields.List(ma.fields.String(validate=ma.validate.OneOf(SUBSCRIBABLE)),
                            validate=Length(1, len(SUBSCRIBABLE)), metadata={
                                "description": "Event types to receive; `*` for all, present and future."})
    description = ma.fields.String(validate=Length(max=1000))
    paused = StrictBoolean(metadata={"description": "true: keep deliveries waiting; false: send them (and "
                                                    "re-enable a disabled endpoint)."})


class WebhookCreateSchema(WebhookUpdateSchema):
    url = HttpUrl(required=True, metadata={"description": "https, on a public address (checked now and at every "
                                                          "delivery; else 422)."})
    events = ma.fields.List(ma.fields.String(validate=ma.validate.OneOf(SUBSCRIBABLE)), required=True,
                            validate=Length(1, len(SUBSCRIBABLE)), metadata={
                                "description": "Event types to receive; `*` for all, present and future."})
    paused = None


class DeliveryAttemptSchema(ma.Schema):
    at = ma.fields.String(required=True, metadata={"description": "When it was made (RFC 3339, UTC)."})
    status_code = ma.fields.Integer(required=True, allow_none=True, metadata={
        "description": "The receiver's HTTP status; null when none came (refused, timed out)."})
    duration_ms = ma.fields.Integer(required=True)
    error = ma.fields.String(required=True, allow_none=True)


class DeliverySchema(ma.Schema):
    id = ma.fields.String(required=True, metadata={"example": "whd_01j9z3k8m2q4r6t8v0w2x4y6z8"})
    webhook_id = ma.fields.String(attribute="endpoint_id", required=True)
    event_type = ma.fields.String(required=True, metadata={"example": "issue.created"})
    event_id = ma.fields.Integer(attribute="event_seq", required=True, allow_none=True, metadata={
        "description": "The event's number on the live stream; null for a test message."})
    message_id = ma.fields.String(required=True, metadata={"description": "The `webhook-id` header: the same "
                                                                          "on every attempt."})
    status = ma.fields.String(required=True, validate=ma.validate.OneOf(WebhookDelivery.STATUSES))
    attempt_count = ma.fields.Integer(required=True)
    attempts = ma.fields.List(ma.fields.Nested(DeliveryAttemptSchema), required=True, metadata={
        "description": "The newest attempts, oldest first."})
    last_status_code = ma.fields.Integer(required=True, allow_none=True)
    last_error = ma.fields.String(required=True, allow_none=True)
    next_attempt_at = Timestamp(required=True, allow_none=True, metadata={
        "description": "When the next retry is due; null once delivered or given up."})
    created_at = Timestamp(required=True)
    delivered_at = Timestamp(required=True, allow_none=True)


WebhookListSchema = list_schema(WebhookSchema, "WebhookList")
DeliveryListSchema = list_schema(DeliverySchema, "WebhookDeliveryList")


@blp.route("/webhooks")
class Webhooks(MethodView):
    @blp.auth_required(ADMIN, members_only=True)
    @blp.response(200, WebhookListSchema)
    def get(self):
        """List the workspace's webhooks, oldest first, with each one's health."""
        return whole_list(WebhookEndpoint.listed(current_principal().workspace_id), MAX_ENDPOINTS)

    @blp.auth_required(ADMIN, members_only=True)
    @blp.arguments(WebhookCreateSchema)
    @blp.response(201, WebhookCreatedSchema, headers={"Location": {"schema": {"type": "string"}}})
    @blp.errors(422)
    def post(self, body):
        """Register a webhook; its signing secret is in this response only."""
        endpoint = WebhookEndpoint.create_in(current_principal().workspace_id, body, tasks.policy())
        return endpoint, {"Location": url_for("webhooks.WebhookById", webhook_id=endpoint.id)}


@blp.route('/webhooks/<id("whk"):webhook_id>')
class WebhookById(MethodView):
    @blp.auth_required(ADMIN, members_only=True)
    @blp.response(200, WebhookSchema)
    @blp.errors(404)
    def get(self, webhook_id):
        """Fetch one webhook with its health."""
        return WebhookEndpoint.get_in_workspace(webhook_id, current_principal().workspace_id)

    @blp.auth_required(ADMIN, members_only=True)
    @blp.arguments(WebhookUpdateSchema)
    @blp.response(200, WebhookSchema)
    @blp.errors(404)
    def patch(self, changes, webhook_id):
        """Change a webhook's events or description, or pause and resume it."""
        return WebhookEndpoint.update_in(webhook_id, current_principal().workspace_id, changes)

    @blp.auth_required(ADMIN, members_only=True)
    @blp.response(204)
    @blp.errors(404)
    def delete(self, webhook_id):
        """Delete a webhook and its delivery records; nothing more is sent to it."""
        WebhookEndpoint.delete_in(webhook_id, current_principal().workspace_id)


@blp.route('/webhooks/<id("whk"):webhook_id>/rotate', methods=["POST"])
@blp.auth_required(ADMIN, members_only=True)
@blp.response(200, WebhookCreatedSchema)
@blp.errors(404)
def rotate(webhook_id):
    """Give a webhook a new secret; the old one keeps signing alongside it for 24 hours."""
    return WebhookEndpoint.rotate_in(webhook_id, current_principal().workspace_id)


@blp.route('/webhooks/<id("whk"):webhook_id>/test', methods=["POST"])
@blp.auth_required(ADMIN, members_only=True)
@blp.response(202, DeliverySchema)
@blp.errors(404)
def send_test(webhook_id):
    """Send a `webhook.test` message to this webhook (whatever its events)."""
    delivery = WebhookEndpoint.send_test(webhook_id, current_principal().workspace_id)
    tasks.send_soon(delivery.id)
    return delivery


@blp.route('/webhooks/<id("whk"):webhook_id>/deliveries')
@blp.auth_required(ADMIN, members_only=True)
@blp.arguments(PageArgsSchema, location="query")
@blp.response(200, DeliveryListSchema)
@blp.errors(404)
def deliveries(args, webhook_id):
    """List a webhook's deliveries, newest first: attempts, status codes, durations, next retry."""
    query = WebhookDelivery.of_endpoint(webhook_id, current_principal().workspace_id)
    return paginate(query, {**args, "sort": "-created_at"}, sorts=DELIVERY_SORTS, id_field=WebhookDelivery.id,
                    item_schema=DeliverySchema)


@blp.route('/webhooks/<id("whk"):webhook_id>/deliveries/<id("whd"):delivery_id>/redeliver', methods=["POST"])
@blp.auth_required(ADMIN, members_only=True)
@blp.response(202, DeliverySchema)
@blp.errors(404)
def redeliver(webhook_id, delivery_id):
    """Send a delivery's message again now (same `webhook-id`), whatever became of it."""
    delivery = WebhookDelivery.redeliver_in(delivery_id, webhook_id, current_principal().workspace_id)
    tasks.send_soon(delivery.id)
    return delivery
