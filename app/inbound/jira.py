"""Jira webhooks: `jira:issue_created` and `jira:issue_updated`.

Signed (admin webhooks registered with a secret): `X-Hub-Signature: sha256=<hex HMAC-SHA256 of
the body>` — Jira's header is `X-Hub-Signature`; `X-Hub-Signature-256` is read too, should a
proxy rename it. Each delivery is named by `X-Atlassian-Webhook-Identifier`, which a retry keeps.

Jira has no notion of "failure", so which issues count is the webhook's own JQL filter (e.g.
`issuetype = Bug`). An issue that has a resolution is listed as resolved; other events
(deletions, comments, sprints) are ignored.
"""
from urllib.parse import urlsplit

from .base import Parsed, compact, header, ignore, record, signed_by_any

SOURCE = "jira"
ISSUE_EVENTS = ("jira:issue_created", "jira:issue_updated")
SEVERITY = {"highest": "critical", "blocker": "critical", "critical": "critical", "high": "high",
            "major": "high", "medium": "medium", "low": "low", "lowest": "low", "minor": "low", "trivial": "low"}


def verify(headers, raw_body, secrets):
    signature = header(headers, "X-Hub-Signature") or header(headers, "X-Hub-Signature-256")
    return bool(signature) and signed_by_any([signature], raw_body, secrets, prefix="sha256=")


def parse(headers, payload):
    delivery_id = header(headers, "X-Atlassian-Webhook-Identifier")
    event = payload.get("webhookEvent")
    if event not in ISSUE_EVENTS:
        return ignore(f"Jira {event or 'unnamed'} events carry no failure Causeloop reads", delivery_id)
    issue = payload["issue"]
    fields = issue.get("fields") or {}
    if fields.get("resolution"):
        return Parsed(resolved_external_ids=[issue["key"]], delivery_id=delivery_id)
    return Parsed(records=[_record(issue, fields)], delivery_id=delivery_id)


def _record(issue, fields):
    # Jira Cloud sends objects ({"name": "High"}); older Jira sent plain strings ("Minor").
    priority = _name(fields.get("priority"))
    project = fields.get("project") or {}
    description = fields.get("description")
    return record(
        SOURCE, issue["key"], fields.get("summary"),
        body=description if isinstance(description, str) else None,  # not Cloud's document format
        severity=SEVERITY.get((priority or "").lower(), "medium"),
        external_url=_browse_url(issue),
        # An issue key is its project key, a hyphen and a number.
        team=project.get("key") or issue["key"].rpartition("-")[0] or None,
        created_at=fields.get("created"),
        metadata=compact(priority=priority, issue_type=_name(fields.get("issuetype")),
                         status=_name(fields.get("status")), labels=fields.get("labels")))


def _name(value):
    return value.get("name") if isinstance(value, dict) else value


def _browse_url(issue):
    """The page people open: `self` is the REST URL of the issue, on the same site."""
    parts = urlsplit(issue.get("self") or "")
    return f"{parts.scheme}://{parts.netloc}/browse/{issue['key']}" if parts.scheme and parts.netloc else None
