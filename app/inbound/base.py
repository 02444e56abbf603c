"""What every inbound parser shares: the result type, the record builder and signature checks."""
import base64
import binascii
import dataclasses
import datetime
import hashlib
import hmac
import time

# The ingest record's limits (blueprints/ingest.py RecordSchema); the tests load every parsed
# record through that schema, so a drift between the two fails there.
TITLE_MAX = 300
BODY_MAX = 10_000
TEAM_MAX = 100
EXTERNAL_ID_MAX = 255
URL_MAX = 2048
TIMESTAMP_TOLERANCE_S = 300  # for senders that sign a timestamp: older (or newer) is a replay


@dataclasses.dataclass
class Parsed:
    """One delivery, understood. `records` are ingest records (the IngestRecord shape); `ignored`
    says why a delivery that carries no failure was let go; `delivery_id` is the sender's own id
    for this delivery, for redelivery dedupe; `resolved_external_ids` name failures it resolves."""
    records: list = dataclasses.field(default_factory=list)
    ignored: str | None = None
    delivery_id: str | None = None
    resolved_external_ids: list = dataclasses.field(default_factory=list)


def ignore(reason, delivery_id=None):
    return Parsed(ignored=reason, delivery_id=delivery_id)


def header(headers, name):
    """A header by name, whatever its case (Flask's headers ignore case, a plain dict does not)."""
    if name in headers:
        return headers[name]
    lowered = name.lower()
    return next((value for key, value in headers.items() if key.lower() == lowered), None)


def clip(text, limit):
    """Text cut to the schema's limit, with an ellipsis when something was cut."""
    if text is None or len(text) <= limit:
        return text
    return text[:limit - 1] + "…"


def timestamp(value):
    """Any ISO-8601 string, or epoch seconds/milliseconds, as ISO-8601 UTC with a Z; None if
    it is absent or unreadable (a bad timestamp should not cost the record)."""
    if value in (None, ""):
        return None
    try:
        if isinstance(value, (int, float)) or str(value).isdigit():
            seconds = float(value)
            if seconds > 1e11:  # epoch milliseconds (Datadog's $DATE)
                seconds /= 1000
            moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
        else:
            moment = datetime.datetime.fromisoformat(str(value))
    except (ValueError, OverflowError, OSError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    if moment.year < 1971:  # Alertmanager's "0001-01-01T00:00:00Z" means "not set"
        return None
    return moment.astimezone(datetime.UTC).replace(microsecond=0, tzinfo=None).isoformat() + "Z"


def record(source, external_id, title, *, body=None, severity="medium", external_url=None,
           team=None, created_at=None, metadata=None):
    """An ingest record, cut to the schema's limits, with absent fields left out."""
    fields = {
        "source": source,
        "external_id": clip(str(external_id), EXTERNAL_ID_MAX) if external_id is not None else None,
        "title": clip((title or "").strip() or str(external_id), TITLE_MAX),
        "body": clip(body, BODY_MAX) or None,
        "severity": severity,
        "external_url": external_url if external_url and len(external_url) <= URL_MAX else None,
        "team": clip(team, TEAM_MAX) or None,
        "source_created_at": timestamp(created_at),
        "metadata": metadata or None,
    }
    return {name: value for name, value in fields.items() if value is not None}


def compact(**fields):
    """The fields that have a value (a record's metadata without empty noise)."""
    return {name: value for name, value in fields.items() if value not in (None, "", [], {})}


def hmac_hex(secret, message):
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signed_by_any(signatures, message, secrets, prefix=""):
    """Whether any received signature is `prefix` + the hex HMAC-SHA256 of `message` under any
    secret: several secrets are valid while one is being rotated."""
    expected = [prefix + hmac_hex(secret, message) for secret in secrets if secret]
    return any(hmac.compare_digest(candidate.strip().encode(), good.encode())
               for candidate in signatures for good in expected)


def fresh(unix_seconds, tolerance=TIMESTAMP_TOLERANCE_S):
    """Whether a signed timestamp is within the tolerance of now (a replay is not)."""
    try:
        return abs(time.time() - int(unix_seconds)) <= tolerance
    except (TypeError, ValueError):
        return False


def bearer_or_basic(headers, secrets):
    """For senders that cannot sign: `Authorization: Bearer <secret>`, or HTTP Basic with the
    secret as the password, compared in constant time."""
    authorization = header(headers, "Authorization") or ""
    scheme, _, credentials = authorization.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "basic":
        try:
            credentials = base64.b64decode(credentials, validate=True).decode().partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return False
    elif scheme.lower() != "bearer":
        return False
    if not credentials:
        return False
    return any(hmac.compare_digest(credentials.encode(), secret.encode()) for secret in secrets if secret)
