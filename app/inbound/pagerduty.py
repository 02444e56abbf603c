"""PagerDuty v3 webhooks: `incident.*` events.

Signed: `X-PagerDuty-Signature` holds comma-separated `v1=<hex HMAC-SHA256 of the body>`
entries, one per signing secret (PagerDuty signs with old and new during a rotation); any
match will do. Each delivery is named by `event.id`.

Every event whose data is the incident itself (triggered, reopened, acknowledged, escalated,
priority_updated ...) yields the incident as a record: the ingest path treats a repeat as an
update of the same issue, so these keep its title, severity and team current. `resolved`
resolves it. Events about something else (a note, a responder, a status update, a workflow)
carry no failure and are ignored.
"""
from .base import Parsed, compact, header, ignore, record, signed_by_any

SOURCE = "pagerduty"
PRIORITY_SEVERITY = {"P1": "critical", "P2": "high", "P3": "medium", "P4": "low", "P5": "low"}
URGENCY_SEVERITY = {"high": "high", "low": "low"}


def verify(headers, raw_body, secrets):
    signatures = (header(headers, "X-PagerDuty-Signature") or "").split(",")
    return signed_by_any([entry for entry in signatures if entry.strip()], raw_body, secrets, prefix="v1=")


def parse(headers, payload):
    event = payload.get("event") or {}
    delivery_id = event.get("id")
    event_type = event.get("event_type", "")
    incident = event.get("data") or {}
    if incident.get("type") != "incident":
        return ignore(f"PagerDuty {event_type or 'event'} is about {incident.get('type') or 'nothing'}, "
                      "not an incident's state", delivery_id)
    if event_type == "incident.resolved" or incident.get("status") == "resolved":
        return Parsed(resolved_external_ids=[incident["id"]], delivery_id=delivery_id)
    return Parsed(records=[_record(incident, event)], delivery_id=delivery_id)


def _record(incident, event):
    priority = (incident.get("priority") or {}).get("summary")
    service = (incident.get("service") or {}).get("summary")
    teams = [team.get("summary") for team in incident.get("teams") or [] if team.get("summary")]
    escalation_policy = (incident.get("escalation_policy") or {}).get("summary")
    severity = PRIORITY_SEVERITY.get(priority) or URGENCY_SEVERITY.get(incident.get("urgency"), "medium")
    return record(
        SOURCE, incident["id"], incident.get("title") or incident.get("summary"),
        body=f"PagerDuty incident #{incident['number']} on {service}" if incident.get("number") and service else None,
        severity=severity,
        external_url=incident.get("html_url"),
        # The owning team where PagerDuty knows one; else the service that paged.
        team=teams[0] if teams else service,
        created_at=incident.get("created_at") or event.get("occurred_at"),
        metadata=compact(incident_number=incident.get("number"), status=incident.get("status"),
                         urgency=incident.get("urgency"), priority=priority, service=service,
                         escalation_policy=escalation_policy, incident_key=incident.get("incident_key"),
                         event_type=event.get("event_type")))
