"""Alert rules: "tell us when a pattern's chance of recurring crosses a threshold", their
firings, and the channels that carry them.

A rule fires once per (rule, pattern, window) when the prediction reaches its threshold, and
not again until the prediction has fallen back below it (the firing is then cleared and the
rule re-armed); never while the rule is disabled or snoozed. Rules are evaluated by
`evaluate()` whenever predictions are recomputed (models/predictions.py), and when a rule is
created or changed.

`deliver_alert(alert)` dispatches a firing to the rule's channels: `in_app` writes the
members' notification feed now (models/notifications.py); `webhook`, `slack` and `email` are
recorded as pending `AlertDelivery` rows, with the exact payload to send, for the worker to
send (the sender lands with the worker; nothing here opens a connection).
"""
import peewee as pw

from . import events
from .accounts import User, Workspace
from .base import BaseModel, Conflict, RuleViolation, WorkspaceScoped, for_update, new_id, utcnow
from .patterns import Pattern

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
        """Request fields -> columns; a scope naming a pattern outside the workspace is a 422."""
        columns = {key: value for key, value in data.items() if key not in ("scope", "threshold")}
        if "scope" in data:
            pattern_id = None if data["scope"] == "global" else data["scope"].removeprefix("pattern:")
            if pattern_id is not None and not Pattern.in_workspace(workspace_id).where(Pattern.id == pattern_id).exists():
                raise RuleViolation("scope", f"Pattern {pattern_id} not found in this workspace.")
            columns["pattern"] = pattern_id
        if "threshold" in data:
            columns["threshold_probability"] = data["threshold"]["probability"]
            columns["threshold_window_days"] = data["threshold"]["window_days"]
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
    """One firing to send on an outside channel: pending until the worker's sender takes it."""

    ID_PREFIX = "dlv"
    id = pw.CharField(primary_key=True, max_length=40)
    workspace = pw.ForeignKeyField(Workspace, on_delete="CASCADE")
    alert_id = pw.CharField(max_length=40)
    channel = pw.CharField(max_length=16)
    target = pw.CharField(max_length=2048)
    payload = pw.JSONField()
    status = pw.CharField(max_length=16, default="pending")
    attempts = pw.IntegerField(default=0)
    created_at = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("status", "created_at"), False),)


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


def deliver_alert(alert):
    """Send a firing down each of its rule's channels (see the module's docstring)."""
    from . import notifications

    payload = alert_payload(alert)
    events.record(alert.workspace_id, "alert.fired", alert=payload)
    for channel in alert.rule.channels:
        kind = channel["type"]
        if kind == "in_app":
            notifications.notify_members(alert.workspace_id, "prediction.alert", headline(payload),
                                         {"type": "pattern", "id": payload["pattern"]["id"],
                                          "prediction_id": alert.prediction_id, "alert_rule_id": alert.rule_id},
                                         Pattern.get_by_id(alert.pattern_id))
            continue
        target, body = _outbound(kind, channel, payload)
        AlertDelivery.create(id=new_id("dlv"), workspace=alert.workspace_id, alert_id=alert.id, channel=kind,
                             target=target, payload=body)


def _outbound(kind, channel, payload):
    """(where to, what to send) for an outside channel, in that channel's own format."""
    if kind == "webhook":
        return channel["endpoint_id"], {"type": "alert.fired", "data": payload}
    if kind == "slack":  # an incoming webhook's message: text, plus blocks for clients that show them
        text = headline(payload)
        return channel["url"], {"text": text, "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{text}*"}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": (
                f"Rule {payload['rule_name']} · threshold {round(payload['threshold']['probability'] * 100)}% "
                f"· pattern {payload['pattern']['id']}")}]}]}
    return ",".join(channel["to"]), {"to": channel["to"], "subject": headline(payload),
                                     "body": f"{headline(payload)}.\n\nRule: {payload['rule_name']}\n"
                                             f"Pattern: {payload['pattern']['id']}\n"}

