"""Causeloop's own inbound format, for senders of any kind: a body that is one ingest record
(IngestRecord) or `{"records": [...], "resolved_external_ids": [...]}`.

Signed by `x-causeloop-signature: t=<unix seconds>,v1=<hex>` where the hex is the HMAC-SHA256
of `<t>.<raw body>` under the connector secret. Several `v1=` entries may be sent (a sender
signs with old and new secrets while rotating); one must match, and `t` must be within 5
minutes of now, so a captured request cannot be replayed later. The delivery id is the
sender's `Idempotency-Key` header, as on the ingest API.
"""
from .base import Parsed, fresh, header, hmac_hex, ignore, signed_by_any

SOURCE = "custom_api"
SIGNATURE = "x-causeloop-signature"


def sign(secret, raw_body, unix_seconds):
    """The header value a sender sends (for senders' docs and the tests)."""
    return f"t={unix_seconds},v1={hmac_hex(secret, str(unix_seconds).encode() + b'.' + raw_body)}"


def verify(headers, raw_body, secrets):
    entries = [entry.strip().partition("=") for entry in (header(headers, SIGNATURE) or "").split(",")]
    stamps = [value for key, _, value in entries if key == "t"]
    signatures = [value for key, _, value in entries if key == "v1"]
    if len(stamps) != 1 or not signatures or not fresh(stamps[0]):
        return False
    return signed_by_any(signatures, stamps[0].encode() + b"." + raw_body, secrets)


def parse(headers, payload):
    delivery_id = header(headers, "Idempotency-Key")
    if "records" in payload or "resolved_external_ids" in payload:
        records = payload.get("records") or []
        if not isinstance(records, list):
            raise TypeError("records must be a list of ingest records")
        resolved = [str(external_id) for external_id in payload.get("resolved_external_ids") or []]
    else:
        records, resolved = [payload], []
    if not records and not resolved:
        return ignore("the delivery carries no records", delivery_id)
    # Records pass through as sent: the ingest path validates each and reports a bad one.
    records = [{"source": SOURCE, **item} if isinstance(item, dict) else item for item in records]
    return Parsed(records=records, resolved_external_ids=resolved, delivery_id=delivery_id)
