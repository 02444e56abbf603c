"""Sentry integration-platform webhooks: issue alerts (`event_alert`) and issue events (`issue`).

Signed: `Sentry-Hook-Signature` is the hex HMAC-SHA256 of the body under the integration's
client secret. The resource is named by `Sentry-Hook-Resource`; each delivery by `Request-ID`.
Both kinds use the Sentry issue id as external_id, so an alert and later issue events (a
resolve) land on one Causeloop issue.
"""
from .base import Parsed, compact, header, ignore, record, signed_by_any

SOURCE = "sentry"
SEVERITY = {"fatal": "critical", "error": "high", "warning": "medium", "info": "low", "debug": "low"}
# Issue actions that say "this failure is happening"; `resolved` resolves it; the rest
# (assigned, archived/ignored) change who looks at it, not whether it fails.
FAILING_ACTIONS = ("created", "unresolved")


def verify(headers, raw_body, secrets):
    signature = header(headers, "Sentry-Hook-Signature")
    return bool(signature) and signed_by_any([signature], raw_body, secrets)


def parse(headers, payload):
    delivery_id = header(headers, "Request-ID")
    resource = header(headers, "Sentry-Hook-Resource")
    action = payload.get("action")
    data = payload.get("data") or {}
    if resource == "event_alert" or (resource is None and "event" in data):
        return Parsed(records=[_from_event_alert(data)], delivery_id=delivery_id)
    if resource == "issue" or (resource is None and "issue" in data):
        issue = data.get("issue") or {}
        if action == "resolved":
            return Parsed(resolved_external_ids=[str(issue["id"])], delivery_id=delivery_id)
        if action not in FAILING_ACTIONS:
            return ignore(f"Sentry issue {action}: no new failure", delivery_id)
        return Parsed(records=[_from_issue(issue)], delivery_id=delivery_id)
    return ignore(f"Sentry {resource or 'unknown'} webhooks are not failures Causeloop reads", delivery_id)


def _from_event_alert(data):
    event = data["event"]
    return record(
        SOURCE, event["issue_id"], event.get("title") or event.get("message"),
        body=_body(event.get("culprit"), event.get("metadata")),
        severity=SEVERITY.get(event.get("level"), "medium"),
        external_url=event.get("web_url"),
        created_at=event.get("datetime"),
        metadata=compact(event_id=event.get("event_id"), rule=data.get("triggered_rule"),
                           level=event.get("level"), platform=event.get("platform")))


def _from_issue(issue):
    project = issue.get("project") or {}
    return record(
        SOURCE, issue["id"], issue.get("title"),
        body=_body(issue.get("culprit"), issue.get("metadata")),
        severity=SEVERITY.get(issue.get("level"), "medium"),
        external_url=issue.get("web_url") or issue.get("permalink"),
        team=project.get("slug"),
        created_at=issue.get("firstSeen"),
        metadata=compact(short_id=issue.get("shortId"), level=issue.get("level"),
                           platform=issue.get("platform"), substatus=issue.get("substatus")))


def _body(culprit, metadata):
    """The exception and where it happened: what the vocabulary reads for a root cause."""
    metadata = metadata or {}
    exception = ": ".join(part for part in (metadata.get("type"), metadata.get("value")) if part)
    return "\n".join(part for part in (exception, culprit and f"in {culprit}") if part) or None
