"""Datadog Webhooks integration: its default payload (`body`, `last_updated`, `event_type`,
`title`, `date`, `org`, `id`), read together with the documented template variables a team
commonly adds under their own lowercase names (`alert_id` = $ALERT_ID, `alert_cycle_key`,
`alert_transition`, `alert_priority`, `alert_type`, `priority`, `link`, `tags`, ...).

The external_id is $ALERT_CYCLE_KEY where sent (it links a trigger to its recovery), else the
monitor's $ALERT_ID, else $AGGREG_KEY, else the event's $ID — with only the default payload a
recovery cannot be linked to its trigger, so add `"alert_cycle_key": "$ALERT_CYCLE_KEY"`.
`Recovered` resolves; `Triggered`, `Re-Triggered`, `Warn`, `Re-Warn` and `Renotify` are
failures; `No Data` is a gap in monitoring, not a failure, and is ignored. The default payload
has no transition field, so it is read from the title's `[Triggered]` prefix.

Datadog cannot sign: the connector secret goes in a custom header,
`{"Authorization": "Bearer <secret>"}`, or in HTTP Basic auth as the password.
"""
import re

from .base import Parsed, bearer_or_basic, compact, ignore, record

SOURCE = "datadog"
# "[Triggered] [Memory Alert]", "[Recovered on {host:ip-012345}] Host is Down"
TRANSITION_PREFIX = re.compile(r"^\s*\[(?P<transition>[^\]]+?)(?: on [^\]]*)?\]\s*")
PRIORITY_SEVERITY = {"P1": "critical", "P2": "high", "P3": "medium", "P4": "low", "P5": "low"}
TYPE_SEVERITY = {"error": "high", "warning": "medium", "info": "low", "success": "low"}
RESOLVING = ("recovered",)
NOT_FAILING = ("no data", "re-no data", "null")
IDENTITY = ("alert_cycle_key", "alert_id", "aggreg_key", "id")  # the first one sent names the failure


def verify(headers, raw_body, secrets):
    return bearer_or_basic(headers, secrets)


def parse(headers, payload):
    delivery_id = _text(payload.get("id"))
    title = _text(payload.get("alert_title")) or _text(payload.get("title")) or ""
    prefix = TRANSITION_PREFIX.match(_text(payload.get("title")) or "")
    transition = _text(payload.get("alert_transition")) or (prefix and prefix["transition"]) or ""
    external_id = next(filter(None, (_text(payload.get(key)) for key in IDENTITY)), None)
    if external_id is None:
        return ignore("the Datadog payload names no alert or event id", delivery_id)
    if transition.lower() in RESOLVING:
        return Parsed(resolved_external_ids=[external_id], delivery_id=delivery_id)
    if transition.lower() in NOT_FAILING:
        return ignore(f"Datadog {transition}: a gap in monitoring, not a failure", delivery_id)
    tags = [tag.strip() for tag in (_text(payload.get("tags")) or "").split(",") if tag.strip()]
    team = next((tag.partition(":")[2] for tag in tags if tag.startswith("team:")), None)
    return Parsed(records=[record(
        SOURCE, external_id, TRANSITION_PREFIX.sub("", title, count=1) or title,
        body=_text(payload.get("text_only_msg")) or _text(payload.get("body")),
        severity=_severity(payload, transition),
        external_url=_text(payload.get("link")),
        team=team,
        created_at=_text(payload.get("date")) or _text(payload.get("last_updated")),
        metadata=compact(transition=transition, monitor_id=_text(payload.get("alert_id")),
                         event_type=_text(payload.get("event_type")), tags=tags,
                         scope=_text(payload.get("alert_scope")), metric=_text(payload.get("alert_metric")),
                         org=(payload.get("org") or {}).get("name")))],
        delivery_id=delivery_id)


def _severity(payload, transition):
    """The monitor's priority (P1-P5), else the alert type, else the transition: a warning is
    medium, a trigger high."""
    return (PRIORITY_SEVERITY.get(_text(payload.get("alert_priority")) or "")
            or TYPE_SEVERITY.get(_text(payload.get("alert_type")) or "")
            or ("low" if _text(payload.get("priority")) == "low" else None)
            or ("medium" if "warn" in transition.lower() else "high"))


def _text(value):
    """A template variable's value: Datadog leaves an unset one empty (or as its $NAME)."""
    if value is None:
        return None
    value = str(value).strip()
    return None if not value or value.startswith("$") else value
