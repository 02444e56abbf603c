"""Inbound webhooks: other tools' deliveries, verified by their connector's secret, become issues."""
import marshmallow as ma
from flask import request

from app.api import Blueprint
from app.errors import WWW_AUTHENTICATE, ApiError
from app.inbound import PARSERS
from app.inputs import parse_json_body, unstorable_fields
from blueprints.ingest import check_records
from models import Connector

blp = Blueprint("inbound", __name__, url_prefix="/v1/webhooks",
                description="Where connectors' tools send their webhooks: no bearer token, each delivery "
                            "is verified by its connector's signing secret.")

# One answer for an unknown connector, a disabled one and a bad signature: ids cannot be probed.
UNVERIFIED = "The delivery is not verified: unknown or disabled connector, or a missing, stale or wrong signature"
SIGNATURES = """Each delivery is verified over its raw body, as its tool signs it:

| Connector type | Header |
| --- | --- |
| `sentry` | `Sentry-Hook-Signature`: hex HMAC-SHA256 of the body (the integration's client secret) |
| `pagerduty` | `X-PagerDuty-Signature`: `v1=<hex HMAC-SHA256>`, several may be sent, one must match |
| `github` | `X-Hub-Signature-256`: `sha256=<hex HMAC-SHA256>` |
| `alertmanager` | `Authorization: Bearer <secret>` or Basic with the secret as password; Grafana: `X-Grafana-Alerting-Signature` (hex HMAC-SHA256 of the body, or of `<unix>:<body>` with `X-Grafana-Alerting-Timestamp`, 5 min tolerance) |
| `datadog` | `Authorization: Bearer <secret>` or Basic with the secret as password |
| `jira` | `X-Hub-Signature`: `sha256=<hex HMAC-SHA256>` |
| `custom_api` | `x-causeloop-signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, 5 min tolerance |

An unverified delivery, or one to an unknown or disabled connector, is a 401 and stores nothing.
A delivery naming a sender delivery id seen before (same connector) is a 200 that stores
nothing. A delivery with a record the ingest schema refuses is a 400 that stores nothing (the
tool shows it as failed; fix and redeliver). A delivery that carries no failure is a 202
`ignored` with the reason."""


class WebhookReceiptSchema(ma.Schema):
    status = ma.fields.String(required=True, validate=ma.validate.OneOf(("accepted", "ignored", "duplicate")),
                              metadata={"description": "`accepted` (stored), `ignored` (no failure in it) or "
                                                       "`duplicate` (this delivery id was stored before)."})
    reason = ma.fields.String(required=True, allow_none=True, metadata={
        "description": "Why nothing was stored (`ignored`, `duplicate`); null when accepted."})
    delivery_id = ma.fields.String(required=True, allow_none=True, metadata={
        "description": "The sender's id for this delivery, when it gives one."})
    issue_ids = ma.fields.List(ma.fields.String(), required=True, metadata={
        "description": "The issue of each failure in the delivery, in order (existing ones for repeats)."})
    resolved_issue_ids = ma.fields.List(ma.fields.String(), required=True, metadata={
        "description": "Open issues the delivery resolved."})


def _receipt(status, parsed, reason=None, issue_ids=(), resolved=()):
    return {"status": status, "reason": reason, "delivery_id": parsed.delivery_id,
            "issue_ids": list(issue_ids), "resolved_issue_ids": list(resolved)}


def _payload(raw):
    payload = parse_json_body(raw)
    if not isinstance(payload, dict):
        raise ApiError(400, "The body must be a JSON object", code="validation_error",
                       details={"body": ["Must be a JSON object."]})
    problems = unstorable_fields(payload)
    if problems:
        field = next(iter(problems))
        raise ApiError(400, f"Invalid {field}: {problems[field][0]}", code="validation_error", details=problems)
    return payload


def _parse(connector, payload):
    try:
        return PARSERS[connector.type].parse(request.headers, payload)
    except (KeyError, TypeError, AttributeError, ValueError, IndexError) as error:
        raise ApiError(400, f"The body is not a {connector.type} webhook as documented ({type(error).__name__}: "
                            f"{str(error)[:200]})", code="validation_error") from None


def _records(parsed):
    records, rejected = check_records(parsed.records)
    if rejected:
        details = {f"records.{item['index']}": [item["reason"]] for item in rejected}
        raise ApiError(400, f"Record {rejected[0]['index']} was refused: {rejected[0]['reason']}",
                       code="validation_error", details=details)
    return records


@blp.route('/inbound/<id("con"):connector_id>', methods=["POST"])
@blp.doc(security=[], description=SIGNATURES,
         requestBody={"required": True, "description": "The tool's webhook payload, as it sends it.",
                      "content": {"application/json": {"schema": {"type": "object"}}}})
@blp.response(202, WebhookReceiptSchema, description="Stored (`accepted`), or let go (`ignored`).")
@blp.alt_response(200, schema=WebhookReceiptSchema, description="A redelivery (`duplicate`): nothing stored.")
@blp.errors(400, 401, 404, 503)  # 404: an id that is not a connector id is no route
def receive(connector_id):
    """Receive a webhook delivery for a connector."""
    raw = request.get_data(cache=True)  # the signed bytes, before anything parses them (413 past MAX_BODY_BYTES)
    connector = Connector.for_delivery(connector_id)
    if connector is None or not PARSERS[connector.type].verify(request.headers, raw, connector.verifying_secrets()):
        raise ApiError(401, UNVERIFIED, headers={"WWW-Authenticate": WWW_AUTHENTICATE})
    parsed = _parse(connector, _payload(raw))
    if parsed.ignored:
        return _receipt("ignored", parsed, parsed.ignored)
    stored = connector.receive(parsed, _records(parsed))
    if stored is None:
        return _receipt("duplicate", parsed, "This delivery was received before; nothing was stored again."), 200
    return _receipt("accepted", parsed, issue_ids=stored[0], resolved=stored[1])
