"""Outbound webhooks: a workspace's endpoints, and one delivery row per (endpoint, event) that
is the truth about whether a message reached its receiver.

Messages follow the Standard Webhooks spec (https://www.standardwebhooks.com): `webhook-id`
(the message id, the same on every retry), `webhook-timestamp`, `webhook-signature` (`v1,<base64
HMAC-SHA256 of "id.timestamp.body">`, one per valid secret, space-separated, while a rotated-out
secret still signs). Body: `{"type", "timestamp", "data"}`, data being the event's payload as
the live stream carries it.

Endpoints receive the event types they subscribe to, except `alert.fired`, which goes to the
endpoints an alert rule's webhook channel names (models/alerts.py): it is addressed, not
subscribed to.

Delivery is at least once. `fan_out()` reads the event outbox past a per-workspace cursor and
writes the deliveries in one transaction (so an event is never lost between commit and
fan-out: the cursor only moves with the rows it produced); `deliver_due()` claims an
endpoint's due deliveries in batches with a lease, sends each batch over one kept-alive
connection to an address checked at that moment (no SSRF), and records the outcomes, each with
its next attempt's time, in one transaction; `deliver()` does the same for one delivery (a
retry, a test, a redelivery); `due()` finds the endpoints a lost task left work for. The task
queue (app/tasks.py) only makes things prompt: everything it carries can be rebuilt from these
rows.
"""
import base64
import collections
import dataclasses
import datetime
import email.utils
import ipaddress
import json
import logging
import random
import secrets
import socket
import threading
import time
import urllib.parse

import certifi
import peewee as pw
import urllib3
from standardwebhooks.webhooks import Webhook

from . import events
from .accounts import Workspace
from .base import (BaseModel, NotFound, RuleViolation, WorkspaceScoped, db, for_update, insert_rows, is_postgres,
                   new_id, prepared_rows, update_rows, utcnow)
from .events import Event

log = logging.getLogger("causeloop.webhooks")

# Every event type the stream carries, plus our own; `*` subscribes to all, present and future.
EVENT_TYPES = ("issue.created", "issue.updated", "issue.status.changed", "pattern.detected",
               "pattern.updated", "webhook.disabled")
ALL_EVENTS = "*"
# Sent where something names an endpoint, never by subscription: an alert rule's webhook
# channel names its endpoint (models/alerts.py), so `*` does not bring every rule's firings.
ADDRESSED_EVENTS = ("alert.fired",)
TEST_EVENT = "webhook.test"
SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
ROTATION_OVERLAP = datetime.timedelta(hours=24)
MAX_ENDPOINTS = 50  # per workspace, so the list is one page
MAX_ATTEMPTS_KEPT = 20  # per delivery: the newest attempts (redeliveries add more)
# The spec's schedule: the first attempt at once, then after each failure these many seconds.
RETRY_SCHEDULE_S = (0, 5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 14 * 3600, 20 * 3600, 24 * 3600)
MAX_RETRY_AFTER_S = 24 * 3600
RESPONSE_READ_MAX = 64 * 1024  # of a receiver's answer; a longer one is cut and its connection closed
BATCH_SIZE = 100  # deliveries claimed together, for one endpoint, and sent over one kept-alive connection
POOLS_PER_THREAD = 64  # kept-alive connections a worker thread holds, the least recently used closed first
# Cloud metadata services: link-local already, named anyway so a rule change cannot let them by.
METADATA_ADDRESSES = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}


@dataclasses.dataclass(frozen=True)
class Policy:
    """How deliveries behave; built from the app config (app/tasks.py), or by a test."""

    retry_scale: float = 1.0  # every wait of the schedule, and disable_after, times this
    timeout_s: float = 15.0
    allow_insecure: bool = False  # http:// and loopback receivers: development only
    disable_after: datetime.timedelta = datetime.timedelta(days=5)
    jitter: float = 0.1  # each wait varies by up to ±10 %

    def wait_before(self, attempt):
        """Seconds to wait before attempt number `attempt` (1-based); None past the schedule."""
        if attempt > len(RETRY_SCHEDULE_S):
            return None
        base = RETRY_SCHEDULE_S[attempt - 1] * self.retry_scale
        return base * (1 + random.uniform(-self.jitter, self.jitter))

    @property
    def lease(self):
        """How long a claimed batch stays claimed: longer than sending it can take (no send
        starts after `timeout_s` of sending, and one takes at most a connect and a read timeout)."""
        return datetime.timedelta(seconds=3 * self.timeout_s + 5)

    @property
    def failing_limit(self):
        return self.disable_after * self.retry_scale


def now():
    """Now, naive UTC with microseconds: retry times need finer steps than the API's seconds."""
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


def new_secret():
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def write_transaction():
    """A transaction that takes SQLite's write lock up front (as events.transaction does)."""
    return db.atomic() if is_postgres() else db.atomic(lock_type="IMMEDIATE")


# ---------------------------------------------------------------------------------------------
# Where a message may go: https to a public address, checked at registration and at each send.

def _refused(address):
    address = getattr(address, "ipv4_mapped", None) or address
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    for label, test in (("a loopback", "is_loopback"), ("a private", "is_private"),
                        ("a link-local", "is_link_local"), ("a multicast", "is_multicast"),
                        ("a reserved", "is_reserved"), ("an unspecified", "is_unspecified")):
        if getattr(address, test):
            return f"{label} address"
    if not address.is_global:
        return "a non-public address"
    return None


def resolve(url, allow_insecure=False):
    """(host, port, the checked addresses) for a receiver URL; RuleViolation on `url` if it may
    not receive: not https, or a name resolving to any address that is not public. With
    `allow_insecure`, http and loopback addresses are let through (never private or metadata)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # e.g. a bracketed host that is no IPv6 address
        raise RuleViolation("url", "The URL's host is not a valid name or address") from None
    allowed_schemes = ("https", "http") if allow_insecure else ("https",)
    if parts.scheme not in allowed_schemes:
        raise RuleViolation("url", "A webhook URL must use https")
    if parts.username or parts.password:
        raise RuleViolation("url", "A webhook URL must not carry credentials")
    try:
        host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise RuleViolation("url", "The URL's port is not a number from 1 to 65535") from None
    if not host:
        raise RuleViolation("url", "A webhook URL must name a host")
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, ValueError):
        raise RuleViolation("url", f"The host {host!r} does not resolve") from None
    addresses = []
    for *_, sockaddr in found:
        address = ipaddress.ip_address(sockaddr[0].split("%")[0])
        why = _refused(address)
        if why and not (allow_insecure and address.is_loopback):
            raise RuleViolation("url", f"The host {host!r} resolves to {why} ({address}): webhooks are "
                                       "sent to public addresses only")
        addresses.append(str(address))
    if not addresses:
        raise RuleViolation("url", f"The host {host!r} does not resolve")
    return host, port, addresses


class _Pools(threading.local):
    """Each thread's kept-alive connections: one pool of one connection per (endpoint, checked
    address, ...), so a connection carries only its own endpoint's messages, and only to the
    address that was checked when it was opened."""

    def __init__(self):
        self.pools = collections.OrderedDict()

    def get(self, key, make):
        pool = self.pools.pop(key, None) or make()
        self.pools[key] = pool
        while len(self.pools) > POOLS_PER_THREAD:
            self.pools.popitem(last=False)[1].close()
        return pool


_pools = _Pools()


class _Sender:
    """POSTs signed messages to one receiver URL: resolved and checked once (at construction),
    then sent over this thread's kept-alive connection to the address just checked, whatever
    DNS says later; TLS still checks the certificate against the URL's host name. No proxy,
    no redirects, no retries (the schedule retries)."""

    def __init__(self, url, owner, policy):
        self.refused = None
        try:
            host, port, addresses = resolve(url, policy.allow_insecure)
        except RuleViolation as refusal:
            self.refused = refusal.message
            return
        parts = urllib.parse.urlsplit(url)
        self.target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
        default_port = 443 if parts.scheme == "https" else 80
        self.host_header = host if port == default_port else f"{host}:{port}"
        self.pool = _pools.get((owner, parts.scheme, host, port, addresses[0], policy.timeout_s),
                               lambda: _pool(parts.scheme, host, port, addresses[0], policy.timeout_s))

    def send(self, message_id, body, signing_secrets):
        """POST one signed message; the Outcome, never an exception."""
        timestamp = datetime.datetime.now(datetime.UTC)
        signature = " ".join(Webhook(secret).sign(message_id, timestamp, body) for secret in signing_secrets)
        return self.post(body, {"User-Agent": "Causeloop-Webhooks/1", "webhook-id": message_id,
                                "webhook-timestamp": str(int(timestamp.timestamp())),
                                "webhook-signature": signature})

    def post(self, body, headers):
        """POST a JSON body with these headers; the Outcome, never an exception."""
        started = time.perf_counter()
        if self.refused:
            return Outcome(error=self.refused)
        payload = body.encode()
        headers = {"Host": self.host_header, "Content-Type": "application/json", **headers}
        try:
            response = self.pool.urlopen("POST", self.target, body=payload, headers=headers, retries=False,
                                         redirect=False, preload_content=False, assert_same_host=False)
        except urllib3.exceptions.HTTPError as error:
            return Outcome(duration_ms=_since(started), error=f"{type(error).__name__}: {str(error)[:300]}")
        try:
            response.read(RESPONSE_READ_MAX)
            if not response.closed:  # longer than we read: the connection is not reused with its rest
                response.close()
        except urllib3.exceptions.HTTPError:
            response.close()  # the status came; what followed it is not our business
        finally:
            response.release_conn()
        outcome = Outcome(status_code=response.status, duration_ms=_since(started),
                          retry_after=_retry_after(response))
        if not outcome.ok:
            outcome.error = f"HTTP {response.status}"
        return outcome


def _pool(scheme, host, port, address, timeout_s):
    timeout = urllib3.Timeout(connect=timeout_s, read=timeout_s)
    if scheme == "https":
        return urllib3.HTTPSConnectionPool(address, port, maxsize=1, timeout=timeout, retries=False,
                                           cert_reqs="CERT_REQUIRED", ca_certs=certifi.where(),
                                           server_hostname=host, assert_hostname=host)
    return urllib3.HTTPConnectionPool(address, port, maxsize=1, timeout=timeout, retries=False)


def _retry_after(response):
    raw = response.headers.get("Retry-After", "").strip()
    if not raw:
        return None
    if raw.isdigit():
        return min(int(raw), MAX_RETRY_AFTER_S)
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return min(max(0.0, (when - datetime.datetime.now(datetime.UTC)).total_seconds()), MAX_RETRY_AFTER_S)


@dataclasses.dataclass
class Outcome:
    status_code: int | None = None
    duration_ms: int = 0
    error: str | None = None
    retry_after: float | None = None

    @property
    def ok(self):
        return self.status_code is not None and 200 <= self.status_code < 300


def send(url, message_id, body, signing_secrets, policy, owner=None):
    """POST one signed message to `url`, checked now; the Outcome, never an exception."""
    return _Sender(url, owner or url, policy).send(message_id, body, signing_secrets)


def post(url, body, policy, headers):
    """POST a JSON body to a receiver checked now (no SSRF), at the address just checked; the
    Outcome, never an exception. Also what Slack messages travel by (models/alerts.py)."""
    return _Sender(url, url, policy).post(body, headers)


def _since(started):
    return int((time.perf_counter() - started) * 1000)


# ---------------------------------------------------------------------------------------------
# Endpoints.

class WebhookEndpoint(WorkspaceScoped, BaseModel):
    KIND = "Webhook"
    ID_PREFIX = "whk"
    id = pw.CharField(primary_key=True, max_length=40)
    workspace = pw.ForeignKeyField(Workspace, on_delete="CASCADE")
    url = pw.TextField()
    description = pw.TextField(default="")
    events = pw.JSONField()
    secret = pw.TextField()
    previous_secret = pw.TextField(null=True)
    previous_secret_expires_at = pw.DateTimeField(null=True)
    # Events numbered after this one are for this endpoint: none from before it existed.
    since_seq = pw.BigIntegerField(default=0)
    paused = pw.BooleanField(default=False)
    disabled_at = pw.DateTimeField(null=True)
    disabled_reason = pw.TextField(null=True)
    last_delivery_status = pw.CharField(max_length=16, null=True)  # succeeded, failed
    last_status_code = pw.IntegerField(null=True)
    last_attempt_at = pw.DateTimeField(null=True)
    failures_in_a_row = pw.IntegerField(default=0)
    failing_since = pw.DateTimeField(null=True)
    created_at = pw.DateTimeField()
    updated_at = pw.DateTimeField()

    @property
    def status(self):
        return "disabled" if self.disabled_at else "paused" if self.paused else "active"

    @property
    def health(self):
        return {"last_delivery_status": self.last_delivery_status, "last_status_code": self.last_status_code,
                "last_attempt_at": self.last_attempt_at, "failures_in_a_row": self.failures_in_a_row,
                "failing_since": self.failing_since}

    def signing_secrets(self, at=None):
        """The current secret, and the previous one while its overlap lasts."""
        at = at or now()
        if self.previous_secret and self.previous_secret_expires_at and self.previous_secret_expires_at > at:
            return [self.secret, self.previous_secret]
        return [self.secret]

    def wants(self, event_type):
        return event_type not in ADDRESSED_EVENTS and (ALL_EVENTS in self.events or event_type in self.events)

    @classmethod
    def listed(cls, workspace_id):
        return cls.in_workspace(workspace_id).order_by(cls.created_at, cls.id)

    @classmethod
    def create_in(cls, workspace_id, data, policy):
        resolve(data["url"], policy.allow_insecure)
        with write_transaction():
            if cls.in_workspace(workspace_id).count() >= MAX_ENDPOINTS:
                raise RuleViolation("url", f"A workspace has at most {MAX_ENDPOINTS} webhooks")
            last_seq = events.last_seq(workspace_id)
            WebhookCursor.insert(workspace=workspace_id, last_seq=last_seq).on_conflict_ignore().execute()
            at = now()
            endpoint = cls.create(id=cls.next_id(), workspace=workspace_id, url=data["url"],
                                  description=data.get("description", ""), events=_events(data["events"]),
                                  secret=new_secret(), since_seq=last_seq, created_at=at, updated_at=at)
        endpoint.new_secret = endpoint.secret
        return endpoint

    @classmethod
    def update_in(cls, endpoint_id, workspace_id, changes):
        with write_transaction():
            endpoint = cls.get_in_workspace(endpoint_id, workspace_id, lock=True)
            if "events" in changes:
                endpoint.events = _events(changes["events"])
            if "description" in changes:
                endpoint.description = changes["description"]
            if "paused" in changes:
                endpoint.paused = changes["paused"]
                if not changes["paused"]:  # resuming also re-enables a disabled endpoint
                    endpoint.disabled_at = endpoint.disabled_reason = endpoint.failing_since = None
                    endpoint.failures_in_a_row = 0
            endpoint.updated_at = now()
            endpoint.save()
        return endpoint

    @classmethod
    def delete_in(cls, endpoint_id, workspace_id):
        with write_transaction():
            cls.get_in_workspace(endpoint_id, workspace_id, lock=True).delete_instance()

    @classmethod
    def rotate_in(cls, endpoint_id, workspace_id):
        """A new secret; the one it replaces keeps signing alongside it for ROTATION_OVERLAP."""
        with write_transaction():
            endpoint = cls.get_in_workspace(endpoint_id, workspace_id, lock=True)
            at = now()
            endpoint.previous_secret, endpoint.previous_secret_expires_at = endpoint.secret, at + ROTATION_OVERLAP
            endpoint.secret = new_secret()
            endpoint.updated_at = at
            endpoint.save()
        endpoint.new_secret = endpoint.secret
        return endpoint

    @classmethod
    def send_test(cls, endpoint_id, workspace_id):
        """Queue a `webhook.test` message to this endpoint alone; returns its delivery."""
        with write_transaction():
            endpoint = cls.get_in_workspace(endpoint_id, workspace_id)
            at = now()
            body = _body(TEST_EVENT, at, {"webhook_id": endpoint.id})
            return WebhookDelivery.create(id=WebhookDelivery.next_id(), workspace=workspace_id, endpoint=endpoint.id,
                                          message_id=new_id("msg"), event_type=TEST_EVENT, body=body,
                                          next_attempt_at=at, created_at=utcnow())

    def disable(self, reason, at):
        """Stop sending here, and say so on the event stream (in the caller's events.transaction)."""
        self.disabled_at, self.disabled_reason = at, reason
        events.record(self.workspace_id, "webhook.disabled",
                      webhook={"id": self.id, "url": self.url, "disabled_reason": reason})


def _events(requested):
    """The subscription as stored: `*` alone, or the named types once each, in catalogue order."""
    unknown = [name for name in requested if name != ALL_EVENTS and name not in EVENT_TYPES]
    if unknown:
        raise RuleViolation("events", f"Unknown event type {unknown[0]!r}; known: {', '.join(EVENT_TYPES)}, or *")
    if ALL_EVENTS in requested:
        return [ALL_EVENTS]
    return [name for name in EVENT_TYPES if name in requested]


def _body(event_type, at, data):
    return json.dumps({"type": event_type, "timestamp": at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
                       "data": data}, separators=(",", ":"), ensure_ascii=False)


# ---------------------------------------------------------------------------------------------
# Deliveries.

class WebhookCursor(BaseModel):
    """The last outbox event of the workspace that fan-out has turned into deliveries."""

    workspace = pw.ForeignKeyField(Workspace, primary_key=True, on_delete="CASCADE")
    last_seq = pw.BigIntegerField(default=0)


class WebhookDelivery(WorkspaceScoped, BaseModel):
    KIND = "Delivery"
    ID_PREFIX = "whd"
    STATUSES = ("pending", "succeeded", "failed")
    id = pw.CharField(primary_key=True, max_length=40)
    workspace = pw.ForeignKeyField(Workspace, on_delete="CASCADE")
    endpoint = pw.ForeignKeyField(WebhookEndpoint, on_delete="CASCADE")
    event = pw.BigIntegerField(null=True, column_name="event_id")  # the outbox Event.id; null for a test
    event_seq = pw.BigIntegerField(null=True)
    event_type = pw.CharField(max_length=64)
    message_id = pw.CharField(max_length=40)
    body = pw.TextField()  # exactly what is signed and sent: outlives the outbox's retention
    status = pw.CharField(max_length=16, default="pending")
    attempt_count = pw.IntegerField(default=0)
    attempts = pw.JSONField(default=list)
    last_status_code = pw.IntegerField(null=True)
    last_error = pw.TextField(null=True)
    next_attempt_at = pw.DateTimeField(null=True)
    locked_until = pw.DateTimeField(null=True)
    created_at = pw.DateTimeField()
    delivered_at = pw.DateTimeField(null=True)

    class Meta:
        # Migrations own the schema; these mirror the indexes they create.
        indexes = ((("endpoint", "event"), True), (("status", "next_attempt_at"), False),
                   (("endpoint", "created_at"), False), (("endpoint", "status", "next_attempt_at"), False))

    @classmethod
    def of_endpoint(cls, endpoint_id, workspace_id):
        endpoint = WebhookEndpoint.get_in_workspace(endpoint_id, workspace_id)
        return cls.select().where(cls.endpoint == endpoint.id)

    @classmethod
    def redeliver_in(cls, delivery_id, endpoint_id, workspace_id):
        """Send the same message (same `webhook-id`) again, now, whatever became of it."""
        with write_transaction():
            endpoint = WebhookEndpoint.get_in_workspace(endpoint_id, workspace_id)
            delivery = for_update(cls.select().where((cls.id == delivery_id) & (cls.endpoint == endpoint.id))).first()
            if delivery is None:
                raise NotFound(cls.KIND, delivery_id)
            delivery.status, delivery.next_attempt_at, delivery.locked_until = "pending", now(), None
            delivery.save()
        return delivery


def has_endpoints(workspace_id):
    """Whether any endpoint of the workspace may receive: one indexed read after each write."""
    return bool(prepared_rows("WebhookEndpoint.has_endpoints", lambda workspace_id: (
        WebhookEndpoint.select(pw.SQL("1")).where((WebhookEndpoint.workspace == workspace_id)
                                                   & WebhookEndpoint.disabled_at.is_null()).limit(1)),
        workspace_id=workspace_id))


def fan_out(workspace_id=None, limit=1000):
    """Turn outbox events past each workspace's cursor into deliveries, moving the cursor in
    the same transaction; returns the ids of the endpoints that got new deliveries (to send now)."""
    endpoints = set()
    cursors = WebhookCursor.select(WebhookCursor.workspace)
    if workspace_id is not None:
        cursors = cursors.where(WebhookCursor.workspace == workspace_id)
    for (workspace,) in list(cursors.tuples()):
        endpoints.update(_fan_out_workspace(workspace, limit))
    return sorted(endpoints)


def _fan_out_workspace(workspace_id, limit):
    with write_transaction():
        cursor = for_update(WebhookCursor.select().where(WebhookCursor.workspace == workspace_id)).first()
        if cursor is None:
            return set()
        batch = list(Event.select().where((Event.workspace == workspace_id) & (Event.seq > cursor.last_seq))
                     .order_by(Event.seq).limit(limit))
        if not batch:
            return set()
        endpoints = list(WebhookEndpoint.select().where((WebhookEndpoint.workspace == workspace_id)
                                                        & WebhookEndpoint.disabled_at.is_null()))
        at, created_at, rows = now(), utcnow(), []
        for event in batch:
            named = _addressees(event)
            targets = [e for e in endpoints if (e.wants(event.type) or e.id in named) and e.since_seq < event.seq]
            if not targets:
                continue
            message_id, body = new_id("msg"), _body(event.type, event.created_at, event.payload)
            rows += [{"id": WebhookDelivery.next_id(), "workspace": workspace_id, "endpoint": endpoint.id,
                      "event": event.id, "event_seq": event.seq, "event_type": event.type,
                      "message_id": message_id, "body": body, "next_attempt_at": at, "created_at": created_at}
                     for endpoint in targets]
        insert_rows(WebhookDelivery, rows, ignore_conflicts=True)
        WebhookCursor.update(last_seq=batch[-1].seq).where(WebhookCursor.workspace == workspace_id).execute()
    return {row["endpoint"] for row in rows}


def _due(at):
    """Pending, due, and held by nobody."""
    return ((WebhookDelivery.status == "pending") & (WebhookDelivery.next_attempt_at <= at)
            & (WebhookDelivery.locked_until.is_null() | (WebhookDelivery.locked_until < at)))


def _addressees(event):
    """The endpoints an addressed event is for (the subscribed ones are not among them)."""
    if event.type != "alert.fired":
        return set()
    from .alerts import webhook_endpoints_of

    return webhook_endpoints_of(event.payload["alert"]["rule_id"])


def due(grace_s=0.0, limit=1000):
    """The endpoints, sending, with deliveries due at least `grace_s` ago that nobody holds:
    what a task lost with its worker (or a batch cut short) left behind."""
    at = now()
    query = (WebhookDelivery.select(WebhookDelivery.endpoint).join(WebhookEndpoint)
             .where(_due(at) & (WebhookDelivery.next_attempt_at <= at - datetime.timedelta(seconds=grace_s))
                    & ~WebhookEndpoint.paused & WebhookEndpoint.disabled_at.is_null())
             .distinct().limit(limit))
    return sorted(endpoint_id for (endpoint_id,) in query.tuples())


CLAIMED = ("id", "endpoint", "message_id", "body", "status", "attempt_count", "attempts", "next_attempt_at",
           "delivered_at", "event_seq")


def _claim(policy, endpoint_id=None, delivery_id=None, limit=BATCH_SIZE):
    """Lease up to `limit` due deliveries nobody holds (of the endpoint, oldest first, or the
    one named) with one UPDATE; returns them, oldest first. On PostgreSQL concurrent claimers
    skip each other's rows; SQLite runs one writer at a time."""
    at = now()
    if delivery_id is not None:
        which = (WebhookDelivery.id == delivery_id) & _due(at)
    else:
        oldest = (WebhookDelivery.select(WebhookDelivery.id)
                  .where((WebhookDelivery.endpoint == endpoint_id) & _due(at))
                  .order_by(WebhookDelivery.next_attempt_at).limit(limit))
        if is_postgres():
            oldest = oldest.for_update(skip_locked=True)
        which = WebhookDelivery.id.in_(oldest)
    claimed = (WebhookDelivery.update(locked_until=at + policy.lease).where(which)
               .returning(*(WebhookDelivery._meta.fields[name] for name in CLAIMED)).execute())
    return sorted(claimed, key=lambda delivery: (delivery.next_attempt_at, delivery.event_seq or 0, delivery.id))


def _sending_endpoint(endpoint_id):
    """The endpoint, if it exists and is neither paused nor disabled."""
    return WebhookEndpoint.get_or_none((WebhookEndpoint.id == endpoint_id) & ~WebhookEndpoint.paused
                                       & WebhookEndpoint.disabled_at.is_null())


def deliver(delivery_id, policy):
    """Make the delivery's next attempt if it is due and nobody else holds it; returns the
    seconds until its next attempt when one is scheduled, else None."""
    delivery = WebhookDelivery.select(WebhookDelivery.endpoint).where(WebhookDelivery.id == delivery_id).first()
    endpoint = delivery and _sending_endpoint(delivery.endpoint_id)
    if endpoint is None:
        return None  # kept pending while paused or disabled: resuming sends it (the sweep finds it again)
    claimed = _claim(policy, delivery_id=delivery_id)  # one UPDATE: atomic on its own
    if not claimed:
        return None
    _, retries = _attempt(endpoint, claimed, policy)
    return retries[0][1] if retries else None


def deliver_due(endpoint_id, policy, batch_size=BATCH_SIZE):
    """Send the endpoint's due deliveries, a claimed batch at a time over one kept-alive
    connection, each batch's outcomes written in one transaction, until none is left or a
    batch is cut short. Returns [(delivery id, seconds until its retry)] for each that failed
    and will be tried again: retries are scheduled one by one, as `deliver` makes them."""
    retries = []
    while True:
        endpoint = _sending_endpoint(endpoint_id)
        claimed = _claim(policy, endpoint_id=endpoint_id, limit=batch_size) if endpoint else []
        if not claimed:
            return retries
        finished, failed = _attempt(endpoint, claimed, policy)
        retries += failed
        if not finished or len(claimed) < batch_size:
            return retries  # what came in since was announced by its own fan-out


def _attempt(endpoint, claimed, policy):
    """Send claimed deliveries to their endpoint in order, then record every outcome in one
    transaction. A batch stops at a receiver that gave no answer, answered 410, or asked to
    wait (Retry-After), and when sending took longer than `timeout_s` (the lease must outlast
    the last send): the rest is released unattempted, after the wait asked for if any.
    Returns (whether all were sent, [(delivery id, wait)] of the failures to retry)."""
    started = time.monotonic()
    sender = _Sender(endpoint.url, endpoint.id, policy)
    signing_secrets = endpoint.signing_secrets()
    sent = []
    for delivery in claimed:
        if sent and (_cuts_short(sent[-1][1]) or time.monotonic() - started > policy.timeout_s):
            break
        sent.append((delivery, sender.send(delivery.message_id, delivery.body, signing_secrets)))
    postpone = sent[-1][1].retry_after if len(sent) < len(claimed) else None
    return len(sent) == len(claimed), _record(endpoint.id, sent, claimed[len(sent):], policy, postpone)


def _cuts_short(outcome):
    return outcome.status_code in (None, 410) or outcome.retry_after is not None


DELIVERY_OUTCOME = ("attempt_count", "attempts", "last_status_code", "last_error", "locked_until", "status",
                    "delivered_at", "next_attempt_at")
ENDPOINT_HEALTH = ("last_status_code", "last_attempt_at", "last_delivery_status", "failures_in_a_row",
                   "failing_since", "disabled_at", "disabled_reason")


def _record(endpoint_id, sent, unsent, policy, postpone=None):
    """Write a batch's outcomes in one transaction: each delivery's (held under our lease, so
    nobody else writes it), and the endpoint's health, its row locked for the failure rules,
    which apply outcome by outcome in the order sent. Unsent deliveries are released, after
    `postpone` seconds if given. Returns [(delivery id, wait)] of the failures to retry."""
    at = now()
    retries = []
    with events.transaction():
        endpoint = for_update(WebhookEndpoint.select().where(WebhookEndpoint.id == endpoint_id)).first()
        if endpoint is None:  # deleted meanwhile, its deliveries with it
            return []
        for delivery, outcome in sent:
            wait = _apply(endpoint, delivery, outcome, at, policy)
            if wait is not None:
                retries.append((delivery.id, wait))
        for delivery in unsent:
            delivery.locked_until = None
            if postpone is not None:
                delivery.next_attempt_at = max(delivery.next_attempt_at, at + datetime.timedelta(seconds=postpone))
        endpoint.save(only=[WebhookEndpoint._meta.fields[name] for name in ENDPOINT_HEALTH])
        update_rows(WebhookDelivery, [delivery for delivery, _ in sent], DELIVERY_OUTCOME)
        update_rows(WebhookDelivery, unsent, ("locked_until", "next_attempt_at"))
    return retries


def _apply(endpoint, delivery, outcome, at, policy):
    """One attempt's outcome, onto the delivery and the endpoint's health (objects, written by
    the caller); returns the seconds until the delivery's retry, or None."""
    delivery.attempt_count += 1
    delivery.attempts = (delivery.attempts + [{
        "at": at.strftime("%Y-%m-%dT%H:%M:%SZ"), "status_code": outcome.status_code,
        "duration_ms": outcome.duration_ms, "error": outcome.error}])[-MAX_ATTEMPTS_KEPT:]
    delivery.last_status_code, delivery.last_error, delivery.locked_until = outcome.status_code, outcome.error, None
    endpoint.last_status_code, endpoint.last_attempt_at = outcome.status_code, at
    if outcome.ok:
        delivery.status, delivery.delivered_at, delivery.next_attempt_at = "succeeded", at, None
        endpoint.last_delivery_status, endpoint.failures_in_a_row, endpoint.failing_since = "succeeded", 0, None
        return None
    endpoint.last_delivery_status = "failed"
    endpoint.failures_in_a_row += 1
    endpoint.failing_since = endpoint.failing_since or at
    if outcome.status_code == 410 and not endpoint.disabled_at:
        endpoint.disable("The receiver answered 410 Gone", at)
    elif not endpoint.disabled_at and at - endpoint.failing_since >= policy.failing_limit:
        endpoint.disable(f"Failing since {endpoint.failing_since:%Y-%m-%dT%H:%M:%SZ}", at)
    wait = None if endpoint.disabled_at else policy.wait_before(delivery.attempt_count + 1)
    if wait is not None and outcome.retry_after is not None:
        wait = max(wait, outcome.retry_after)
    if wait is None:
        delivery.status, delivery.next_attempt_at = "failed", None
    else:
        delivery.next_attempt_at = at + datetime.timedelta(seconds=wait)
    return wait
