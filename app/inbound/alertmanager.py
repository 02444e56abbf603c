"""Prometheus Alertmanager webhooks (payload version 4), and Grafana Alerting's webhook contact
point, which sends the same shape.

Each alert is one record, its `fingerprint` (a hash of its labels, stable across
notifications) the external_id; an alert with `status: resolved` is listed as resolved.
Alertmanager sends no delivery id, so the delivery id is a digest of the group and its alerts'
states: a repeat notification of an unchanged group has the same one.

Alertmanager cannot sign: it authenticates with the connector secret as
`Authorization: Bearer <secret>` or HTTP Basic (the secret as the password). Grafana can sign:
`X-Grafana-Alerting-Signature` is the hex HMAC-SHA256 of the body, or of `<unix>:<body>` when
the contact point names a timestamp header — configure it as `X-Grafana-Alerting-Timestamp`
(Grafana has no default name) and a timestamp older than 5 minutes is refused as a replay.
"""
import hashlib
import json

from .base import Parsed, bearer_or_basic, compact, fresh, header, ignore, record, signed_by_any

SOURCE = "alertmanager"
GRAFANA_SIGNATURE = "X-Grafana-Alerting-Signature"
GRAFANA_TIMESTAMP = "X-Grafana-Alerting-Timestamp"
SEVERITY = {"critical": "critical", "page": "critical", "high": "high", "error": "high", "major": "high",
            "warning": "medium", "warn": "medium", "medium": "medium", "minor": "low", "low": "low",
            "info": "low", "none": "low"}


def verify(headers, raw_body, secrets):
    signature = header(headers, GRAFANA_SIGNATURE)
    if signature is None:
        return bearer_or_basic(headers, secrets)
    stamp = header(headers, GRAFANA_TIMESTAMP)
    if stamp is None:
        return signed_by_any([signature], raw_body, secrets)
    return fresh(stamp) and signed_by_any([signature], stamp.encode() + b":" + raw_body, secrets)


def parse(headers, payload):
    alerts = payload.get("alerts") or []
    delivery_id = _delivery_id(payload, alerts)
    if not alerts:
        return ignore("the notification carries no alerts", delivery_id)
    source = "grafana" if "orgId" in payload else SOURCE
    records, resolved = [], []
    for alert in alerts:
        external_id = alert.get("fingerprint") or _labels_key(alert.get("labels") or {})
        if alert.get("status") == "resolved":
            resolved.append(external_id)
        else:
            records.append(_record(source, external_id, alert, payload))
    return Parsed(records=records, resolved_external_ids=resolved, delivery_id=delivery_id)


def _record(source, external_id, alert, payload):
    labels = alert.get("labels") or {}
    annotations = alert.get("annotations") or {}
    common = payload.get("commonLabels") or {}
    name, summary = labels.get("alertname"), annotations.get("summary")
    title = f"{name}: {summary}" if name and summary else summary or name
    return record(
        source, external_id, title,
        body=annotations.get("description") or annotations.get("message"),
        severity=SEVERITY.get(str(labels.get("severity", "")).lower(), "medium"),
        external_url=alert.get("generatorURL") or payload.get("externalURL"),
        team=labels.get("team") or common.get("team"),
        created_at=alert.get("startsAt"),
        metadata=compact(labels=labels, receiver=payload.get("receiver"),
                         runbook_url=annotations.get("runbook_url"), group_key=payload.get("groupKey")))


def _labels_key(labels):
    """Older senders omit the fingerprint: the labels identify the alert just as well."""
    return hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16]


def _delivery_id(payload, alerts):
    states = sorted((alert.get("fingerprint") or _labels_key(alert.get("labels") or {}),
                     alert.get("status") or "", alert.get("startsAt") or "") for alert in alerts)
    key = json.dumps([payload.get("groupKey"), payload.get("status"), states])
    return "am-" + hashlib.sha256(key.encode()).hexdigest()[:32]
