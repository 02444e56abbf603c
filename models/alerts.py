"""Alert rules: "tell us when a pattern's chance of recurring crosses a threshold", their
firings, and the channels that carry them.

A rule fires once per (rule, pattern, window) when the prediction reaches its threshold, and
not again until the prediction has fallen back below it (the firing is then cleared and the
rule re-armed); never while the rule is disabled or snoozed. Rules are evaluated by
`evaluate()` whenever predictions are recomputed (models/predictions.py), and when a rule is
created or changed.

`deliver_alert(alert)` dispatches a firing, in the transaction that fired it:
- every firing is an `alert.fired` event on the outbox (the live stream carries it);
- `in_app` writes the members' notification feed (models/notifications.py);
- `webhook` is that event, sent by the outbound webhooks' own fan-out (models/webhooks.py:
  signed, retried, listed in the endpoint's deliveries, counted in its health) to the
  endpoints the rule's webhook channels name when the event is fanned out (at once after the
  commit, normally). It is addressed, not subscribed: the endpoint need not list
  `alert.fired` (it cannot), `*` does not bring it every rule's firings, and an endpoint
  gets each firing once however it is named. A rule may name only its workspace's
  endpoints; one deleted or disabled since receives nothing;
- `slack` and `email` are `AlertDelivery` rows holding the exact message (Slack's
  incoming-webhook JSON; a subject and a plain-text body), which `deliver()` sends as the
  webhooks' `deliver()` does theirs: claimed with a lease, a Slack URL checked against SSRF
  at each attempt (`webhooks.post`), the email through the SMTP sender the task hands in
  (app/mail.py), retried on the webhooks' schedule (`Policy`, a longer `Retry-After`
  honoured) and `failed` past it, the outcome recorded on the row. A row that succeeded is
  never claimed again, so a repeated task sends nothing; one channel failing holds up no
  other (one row and one task each).

The worker (app/tasks.py) sends a firing's rows once it commits, and its sweeper re-queues
rows that are due and held by nobody (a task lost with its worker): `due()`.
"""
import datetime
import json

import peewee as pw
from flask import current_app

from . import events, webhooks
from .accounts import User, Workspace
from .base import BaseModel, Conflict, RuleViolation, WorkspaceScoped, for_update, new_id, utcnow
from .patterns import Pattern
from .webhooks import WebhookEndpoint

CHANNEL_TYPES = ("in_app", "webhook", "slack", "email")
SLACK_PREFIX = "https://hooks.slack.com/"
MAX_RULES = 100


class AlertRule(WorkspaceScoped, BaseModel):
    KIND = "Alert rule"
    ID_PREFIX = "alr"
    id = pw.CharField(primary_key=True, max_length=40)
    workspace = pw.ForeignKeyField(Workspace, on_delete="CASCADE")
    name = pw.CharField(max_length=100)
    pattern = pw.ForeignKeyField(Pattern, null=True, on_delete="CASCADE")  # null: every pattern
    threshold_probability = pw.DoubleField()
    threshold_window_days = pw.SmallIntegerField()
    channels = pw.JSONField(default=list)
    enabled = pw.BooleanField(default=True)
    snoozed_until = pw.DateTimeField(null=True)
    created_by = pw.ForeignKeyField(User, null=True, on_delete="SET NULL")
    created_at = pw.DateTimeField(default=utcnow)
    updated_at = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("workspace", "created_at", "id"), False),)

    @property
    def scope(self):
        return f"pattern:{self.pattern_id}" if self.pattern_id else "global"

    @property
    def threshold(self):
        return {"probability": self.threshold_probability, "window_days": self.threshold_window_days}

    def active(self, now):
        return self.enabled and (self.snoozed_until is None or self.snoozed_until <= now)

    def covers(self, prediction):
        return (prediction.window_days == self.threshold_window_days
                and self.pattern_id in (None, prediction.pattern_id))

    @staticmethod
    def _columns(workspace_id, data):
        """Request fields -> columns; a scope naming a pattern, or a channel naming a webhook,
        outside the workspace is a 422."""
        columns = {key: value for key, value in data.items() if key not in ("scope", "threshold")}
        if "scope" in data:
            pattern_id = None if data["scope"] == "global" else data["scope"].removeprefix("pattern:")
            if pattern_id is not None and not Pattern.in_workspace(workspace_id).where(Pattern.id == pattern_id).exists():
                raise RuleViolation("scope", f"Pattern {pattern_id} not found in this workspace.")
            columns["pattern"] = pattern_id
        if "threshold" in data:
            columns["threshold_probability"] = data["threshold"]["probability"]
            columns["threshold_window_days"] = data["threshold"]["window_days"]
        for channel in data.get("channels", ()):
            endpoint_id = channel.get("endpoint_id")
            if endpoint_id and not WebhookEndpoint.in_workspace(workspace_id).where(
                    WebhookEndpoint.id == endpoint_id).exists():
                raise RuleViolation("channels", f"Webhook {endpoint_id} not found in this workspace.")
        return columns

    @classmethod
    def create_in(cls, workspace_id, data, created_by=None):
        now = utcnow()
        with events.transaction():
            if cls.in_workspace(workspace_id).count() >= MAX_RULES:
                raise Conflict(f"A workspace has at most {MAX_RULES} alert rules.")
            rule = cls.create(id=cls.next_id(), workspace=workspace_id, created_by=created_by, created_at=now,
                              updated_at=now, **cls._columns(workspace_id, data))
            evaluate_rule(rule)
        return rule

    @classmethod
    def update_in(cls, rule_id, workspace_id, changes):
        with events.transaction():
            rule = cls.get_in_workspace(rule_id, workspace_id, lock=True)
            for name, value in cls._columns(workspace_id, changes).items():
                setattr(rule, name, value)
            rule.updated_at = utcnow()
            rule.save()
            if {"scope", "threshold"} & set(changes):  # what fired no longer means the same
                Alert.delete().where(Alert.rule == rule.id).execute()
            evaluate_rule(rule)
        return rule

    @classmethod
    def delete_in(cls, rule_id, workspace_id):
        with events.transaction():
            rule = cls.get_in_workspace(rule_id, workspace_id, lock=True)
            rule.delete_instance()


class Alert(BaseModel):
    """A rule's standing firing for one pattern and window: while it exists the rule stays
    quiet for them; it is deleted when the prediction falls below the threshold."""

    ID_PREFIX = "alt"
    id = pw.CharField(primary_key=True, max_length=40)
    workspace = pw.ForeignKeyField(Workspace, on_delete="CASCADE")
    rule = pw.ForeignKeyField(AlertRule, on_delete="CASCADE", backref="alerts")
    pattern = pw.ForeignKeyField(Pattern, on_delete="CASCADE")
    window_days = pw.SmallIntegerField()
    prediction_id = pw.CharField(max_length=40)
    probability = pw.DoubleField()
    fired_at = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("rule", "pattern", "window_days"), True), (("workspace", "pattern"), False))


class AlertDelivery(BaseModel):
    """One firing to send on a Slack or email channel: the exact message, and how sending it
    went (`pending` until it `succeeded`, or `failed` past the retry schedule)."""

    ID_PREFIX = "dlv"
    id = pw.CharField(primary_key=True, max_length=40)
    workspace = pw.ForeignKeyField(Workspace, on_delete="CASCADE")
    alert_id = pw.CharField(max_length=40)
    channel = pw.CharField(max_length=16)
    target = pw.CharField(max_length=2048)  # the Slack URL, or the addresses comma-separated
    payload = pw.JSONField()
    status = pw.CharField(max_length=16, default="pending")
    attempts = pw.IntegerField(default=0)
    last_error = pw.TextField(null=True)
    next_attempt_at = pw.DateTimeField(null=True)
    locked_until = pw.DateTimeField(null=True)
    delivered_at = pw.DateTimeField(null=True)
    created_at = pw.DateTimeField(default=utcnow)

    class Meta:
        # Migrations own the schema; these mirror the indexes they create.
        indexes = ((("status", "next_attempt_at"), False), (("alert_id",), False))


def evaluate_rule(rule):
    from .predictions import Prediction

    query = Prediction.in_workspace(rule.workspace_id).where(Prediction.window_days == rule.threshold_window_days)
    if rule.pattern_id:
        query = query.where(Prediction.pattern == rule.pattern_id)
    evaluate(rule.workspace_id, list(query), rules=[rule], full=rule.pattern_id is None)


def evaluate(workspace_id, predictions, rules=None, full=False):
    """Fire or re-arm `rules` (default: the workspace's) for `predictions` (Prediction rows as
    just computed); `full`: they are all of the workspace's, so read all its firings at once."""
    rules = list(AlertRule.in_workspace(workspace_id)) if rules is None else rules
    if not rules or not predictions:
        return []
    now = utcnow()
    firings = Alert.select().where((Alert.workspace == workspace_id) & Alert.rule.in_([rule.id for rule in rules]))
    if not full:
        firings = firings.where(Alert.pattern.in_(sorted({p.pattern_id for p in predictions})))
    standing = {(alert.rule_id, alert.pattern_id, alert.window_days): alert for alert in for_update(firings)}
    fired, cleared = [], []
    for rule in rules:
        for prediction in predictions:
            if not rule.covers(prediction):
                continue
            key = (rule.id, prediction.pattern_id, prediction.window_days)
            above = prediction.probability >= rule.threshold_probability
            if not above and key in standing:
                cleared.append(standing.pop(key).id)
            elif above and key not in standing and rule.active(now):
                alert = Alert.create(id=new_id("alt"), workspace=workspace_id, rule=rule, pattern=prediction.pattern_id,
                                     window_days=prediction.window_days, prediction_id=prediction.id,
                                     probability=prediction.probability, fired_at=now)
                standing[key] = alert
                fired.append(alert)
    if cleared:
        Alert.delete().where(Alert.id.in_(cleared)).execute()
    for alert in fired:
        deliver_alert(alert)
    return fired


def alert_payload(alert):
    pattern = Pattern.get_by_id(alert.pattern_id)
    return {"id": alert.id, "rule_id": alert.rule_id, "rule_name": alert.rule.name,
            "pattern": {"id": pattern.id, "name": pattern.name, "risk_score": pattern.risk_score},
            "prediction_id": alert.prediction_id, "probability": alert.probability,
            "window_days": alert.window_days, "threshold": alert.rule.threshold,
            "fired_at": alert.fired_at.isoformat() + "Z"}


def headline(payload):
    return (f"{payload['pattern']['name']}: {round(payload['probability'] * 100)}% chance of recurring "
            f"within {payload['window_days']} days")


def pattern_url(pattern_id):
    """The pattern's page in the web app (APP_URL), for people reading an alert."""
    return f"{current_app.config['APP_URL'].rstrip('/')}/patterns/{pattern_id}"


def deliver_alert(alert):
    """Send a firing down each of its rule's channels (see the module's docstring)."""
    from . import notifications

    payload = alert_payload(alert)
    events.record(alert.workspace_id, "alert.fired", alert=payload)  # also the webhook channels' message
    at = webhooks.now()
    for channel in alert.rule.channels:
        kind = channel["type"]
        if kind == "in_app":
            notifications.notify_members(alert.workspace_id, "prediction.alert", headline(payload),
                                         {"type": "pattern", "id": payload["pattern"]["id"],
                                          "prediction_id": alert.prediction_id, "alert_rule_id": alert.rule_id},
                                         Pattern.get_by_id(alert.pattern_id))
        elif kind in ("slack", "email"):
            target, body = (channel["url"], slack_message(payload)) if kind == "slack" else \
                (",".join(channel["to"])[:2048], email_message(channel["to"], payload))
            AlertDelivery.create(id=new_id("dlv"), workspace=alert.workspace_id, alert_id=alert.id, channel=kind,
                                 target=target, payload=body, next_attempt_at=at)


def webhook_endpoints_of(rule_id):
    """The endpoints a rule's webhook channels name: where its `alert.fired` events go."""
    rule = AlertRule.get_or_none(AlertRule.id == rule_id)
    return {channel["endpoint_id"] for channel in (rule.channels if rule else ()) if channel["type"] == "webhook"}


def _mrkdwn(text):
    """Text as Slack shows it literally: its three control characters escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_message(payload):
    """An incoming webhook's message: `text` (notifications, and clients without blocks), and
    blocks naming the pattern (linked), the probability, the window and the rule."""
    url, pattern = pattern_url(payload["pattern"]["id"]), payload["pattern"]
    chance = f"{round(payload['probability'] * 100)}% chance of recurring within {payload['window_days']} days"
    return {"text": f"{headline(payload)} ({url})", "blocks": [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*<{url}|{_mrkdwn(pattern['name'])}>*\n{chance}"}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": (
            f"Rule {_mrkdwn(payload['rule_name'])} · threshold "
            f"{round(payload['threshold']['probability'] * 100)}% · pattern `{pattern['id']}`")}]}]}


def email_message(to, payload):
    return {"to": to, "subject": headline(payload),
            "body": (f"{headline(payload)}.\n\n"
                     f"Rule: {payload['rule_name']} (threshold {round(payload['threshold']['probability'] * 100)}%)\n"
                     f"Pattern: {payload['pattern']['name']} ({payload['pattern']['id']})\n"
                     f"{pattern_url(payload['pattern']['id'])}\n")}


# ---------------------------------------------------------------------------------------------
# Sending Slack and email rows: what the worker's tasks call.

def of_alert(alert_id):
    """The ids of a firing's rows still to send (what its commit hands the worker)."""
    query = AlertDelivery.select(AlertDelivery.id).where(
        (AlertDelivery.alert_id == alert_id) & (AlertDelivery.status == "pending"))
    return [delivery_id for (delivery_id,) in query.tuples()]


def due(grace_s=0.0, limit=1000):
    """Pending rows whose time came at least `grace_s` ago and that nobody holds."""
    at = webhooks.now()
    query = (AlertDelivery.select(AlertDelivery.id)
             .where((AlertDelivery.status == "pending")
                    & (AlertDelivery.next_attempt_at <= at - datetime.timedelta(seconds=grace_s))
                    & (AlertDelivery.locked_until.is_null() | (AlertDelivery.locked_until < at)))
             .order_by(AlertDelivery.next_attempt_at).limit(limit))
    return [delivery_id for (delivery_id,) in query.tuples()]


def _claim(delivery_id, policy):
    at = webhooks.now()
    claimed = (AlertDelivery.update(locked_until=at + policy.lease)
               .where((AlertDelivery.id == delivery_id) & (AlertDelivery.status == "pending")
                      & (AlertDelivery.next_attempt_at <= at)
                      & (AlertDelivery.locked_until.is_null() | (AlertDelivery.locked_until < at)))
               .execute())
    return AlertDelivery.get_by_id(delivery_id) if claimed else None


def deliver(delivery_id, policy, send_email):
    """Make the row's next attempt if it is due and nobody else holds it; returns the seconds
    until its next attempt when one is scheduled, else None. `send_email(to, subject, body,
    timeout_s)` returns None when the server took the message, else why not (app/mail.py)."""
    delivery = _claim(delivery_id, policy)  # one UPDATE: atomic on its own
    if delivery is None:
        return None
    retry_after = None
    if delivery.channel == "slack":
        outcome = webhooks.post(delivery.target, json.dumps(delivery.payload, ensure_ascii=False), policy,
                                {"User-Agent": "Causeloop-Alerts/1"})
        error, retry_after = outcome.error, outcome.retry_after
    else:
        message = delivery.payload
        error = send_email(message["to"], message["subject"], message["body"], policy.timeout_s)
    return _record(delivery, error, retry_after, policy)


def _record(delivery, error, retry_after, policy):
    """Write the attempt's outcome on the row (held under our lease: nobody else writes it)."""
    at = webhooks.now()
    delivery.attempts += 1
    delivery.last_error, delivery.locked_until, wait = error, None, None
    if error is None:
        delivery.status, delivery.delivered_at, delivery.next_attempt_at = "succeeded", at, None
    else:
        wait = policy.wait_before(delivery.attempts + 1)
        if wait is not None and retry_after is not None:
            wait = max(wait, retry_after)
        if wait is None:
            delivery.status, delivery.next_attempt_at = "failed", None
        else:
            delivery.next_attempt_at = at + datetime.timedelta(seconds=wait)
    delivery.save(only=[AlertDelivery.attempts, AlertDelivery.last_error, AlertDelivery.locked_until,
                        AlertDelivery.status, AlertDelivery.delivered_at, AlertDelivery.next_attempt_at])
    return wait
