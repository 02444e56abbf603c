"""Inbound webhook connectors: a workspace's sources (Sentry, PagerDuty, GitHub, ...), their
signing secrets, and the deliveries received from them.

Checking a signature (an HMAC over the body) needs the secret itself, so it is stored, sealed:
AES-256-GCM under a key derived with HKDF-SHA256 from JWT_SECRET, with the connector's id as
associated data (a sealed secret copied to another connector's row does not open). A database
dump alone reveals no secret; replacing JWT_SECRET makes every sealed secret unreadable, so
rotate each connector's secret after replacing it (deliveries are 401s until then).

A rotated-out secret keeps verifying for PREVIOUS_SECRET_TTL, so a sender can be reconfigured
without losing deliveries. Each delivery's sender-given id is kept (unique per connector) in
the transaction that stores its issues: a redelivery, even a concurrent one, stores nothing.
"""
import base64
import datetime
import functools
import hashlib
import logging
import os
import random
import secrets
import time

import peewee as pw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import current_app

from . import events
from .accounts import User, Workspace
from .base import (BaseModel, Conflict, RuleViolation, WorkspaceScoped, db, prepared, prepared_cursor,
                   prepared_rows, utcnow)
from .ingest import ingest
from .issues import DONE_STATUSES, Issue

CONNECTOR_TYPES = ("sentry", "pagerduty", "github", "alertmanager", "datadog", "jira", "custom_api")
SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32  # 256 bits, base64url: 43 characters after the prefix
PREVIOUS_SECRET_TTL = datetime.timedelta(hours=24)
MAX_CONNECTORS = 100  # per workspace, so a list is one page
DELIVERY_RETENTION = datetime.timedelta(days=30)  # redeliveries older than this are stored again
DELIVERY_ID_MAX = 255
DEADLOCK_ATTEMPTS = 5
_HKDF_INFO = b"causeloop connector secret v1"
_NONCE_BYTES = 12
# The issue sources each type writes, for resolving by external id (Grafana sends Alertmanager's shape).
SOURCES = {"alertmanager": ("alertmanager", "grafana")}

log = logging.getLogger("causeloop.webhooks")


def new_secret():
    return SECRET_PREFIX + secrets.token_urlsafe(SECRET_BYTES)


@functools.lru_cache(maxsize=4)
def _cipher(master):
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(master.encode())
    return AESGCM(key)


def seal(secret, connector_id):
    """The secret encrypted for storage, bound to its connector: base64 of nonce + ciphertext."""
    nonce = os.urandom(_NONCE_BYTES)
    sealed = _cipher(current_app.config["JWT_SECRET"]).encrypt(nonce, secret.encode(), connector_id.encode())
    return base64.b64encode(nonce + sealed).decode()


def unseal(stored, connector_id):
    """The secret, or None when it cannot be opened (JWT_SECRET was replaced, or the row altered)."""
    try:
        raw = base64.b64decode(stored)
        plain = _cipher(current_app.config["JWT_SECRET"]).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:],
                                                                  connector_id.encode())
    except (InvalidTag, ValueError):
        log.warning("connector %s: its secret cannot be unsealed (was JWT_SECRET replaced?); rotate it", connector_id)
        return None
    return plain.decode()


class Connector(WorkspaceScoped, BaseModel):
    """One source sending webhooks into a workspace, at its own URL, with its own secret."""

    KIND = "Connector"
    ID_PREFIX = "con"
    id = pw.CharField(primary_key=True, max_length=40)
    workspace = pw.ForeignKeyField(Workspace, backref="connectors", on_delete="CASCADE")
    type = pw.CharField(max_length=20)
    display_name = pw.CharField(max_length=100)
    enabled = pw.BooleanField(default=True)
    secret_sealed = pw.TextField()
    secret_last_four = pw.CharField(max_length=4)
    previous_secret_sealed = pw.TextField(null=True)
    previous_secret_expires_at = pw.DateTimeField(null=True)
    created_by = pw.ForeignKeyField(User, null=True, on_delete="SET NULL")
    created_at = pw.DateTimeField(default=utcnow)
    updated_at = pw.DateTimeField(default=utcnow)
    rotated_at = pw.DateTimeField(null=True)

    class Meta:
        # Migrations own the schema; these mirror the indexes they create.
        indexes = ((("workspace", "display_name"), True),)

    @property
    def previous_secret_valid_until(self):
        """When the rotated-out secret stops verifying; None when there is none (or no longer)."""
        until = self.previous_secret_expires_at
        return until if self.previous_secret_sealed and until and until > utcnow() else None

    def verifying_secrets(self):
        """Every secret a delivery may be signed with right now: the current one, and the
        previous one during its grace period."""
        found = [unseal(self.secret_sealed, self.id)]
        if self.previous_secret_valid_until is not None:
            found.append(unseal(self.previous_secret_sealed, self.id))
        return [secret for secret in found if secret]

    def _set_secret(self, secret):
        self.secret_sealed, self.secret_last_four = seal(secret, self.id), secret[-4:]
        self.secret = secret  # on this object only: the one response that shows it

    @classmethod
    def listed(cls, workspace_id):
        return cls.in_workspace(workspace_id).order_by(cls.display_name, cls.id)

    @classmethod
    def create_in(cls, workspace_id, data, created_by):
        """A new connector with a fresh secret (or the sender's own, for tools that mint
        theirs); the secret is on the returned object only."""
        with db.atomic():
            if cls.in_workspace(workspace_id).count() >= MAX_CONNECTORS:
                raise RuleViolation("display_name", f"A workspace has at most {MAX_CONNECTORS} connectors")
            _unique_name(workspace_id, data["display_name"])
            connector = cls(id=cls.next_id(), workspace=workspace_id, type=data["type"],
                            display_name=data["display_name"], created_by=created_by)
            connector._set_secret(data.get("secret") or new_secret())
            with _conflict_on_duplicate(data["display_name"]):
                connector.save(force_insert=True)
        return connector

    @classmethod
    def update_in(cls, connector_id, workspace_id, changes):
        with db.atomic():
            connector = cls.get_in_workspace(connector_id, workspace_id, lock=True)
            if changes.get("display_name", connector.display_name) != connector.display_name:
                _unique_name(workspace_id, changes["display_name"])
            for name, value in changes.items():
                setattr(connector, name, value)
            connector.updated_at = utcnow()
            with _conflict_on_duplicate(connector.display_name):
                connector.save()
        return connector

    @classmethod
    def rotate_in(cls, connector_id, workspace_id, secret=None):
        """A new secret (shown once); the one it replaces keeps verifying for 24 h. Only one
        previous secret is kept: rotating twice within a day ends the oldest at once."""
        with db.atomic():
            connector = cls.get_in_workspace(connector_id, workspace_id, lock=True)
            now = utcnow()
            connector.previous_secret_sealed = connector.secret_sealed
            connector.previous_secret_expires_at = now + PREVIOUS_SECRET_TTL
            connector._set_secret(secret or new_secret())
            connector.rotated_at = connector.updated_at = now
            connector.save()
        return connector

    @classmethod
    def delete_in(cls, connector_id, workspace_id):
        """Delete the connector and its delivery record; its URL answers 401 from now on."""
        with db.atomic():
            connector = cls.get_in_workspace(connector_id, workspace_id, lock=True)
            InboundDelivery.delete().where(InboundDelivery.connector == connector.id).execute()
            connector.delete_instance()

    @classmethod
    def for_delivery(cls, connector_id):
        """The enabled connector a delivery is addressed to, or None (unknown and disabled
        read the same to the sender)."""
        found = list(prepared("Connector.for_delivery", lambda connector_id: (
            cls.select().where((cls.id == connector_id) & cls.enabled).limit(1)), connector_id=connector_id))
        return found[0] if found else None

    def receive(self, parsed, records):
        """Store one verified delivery: its records as issues (through ingestion: dedupe,
        grouping, events) and the issues it resolves, together with its delivery id, in one
        transaction. Returns (issue ids, resolved issue ids), or None for a redelivery."""
        delivery_id = _delivery_key(parsed.delivery_id)
        if delivery_id is not None and InboundDelivery.seen(self.id, delivery_id):
            return None  # the common redelivery, answered without taking the write lock
        for attempt in range(1, DEADLOCK_ATTEMPTS + 1):
            try:
                return self._store(delivery_id, parsed, records)
            except pw.OperationalError as error:
                # Concurrent deliveries placing issues of one workspace can deadlock on PostgreSQL
                # (ingestion links partner issues in placement order); the loser was rolled back
                # whole, its delivery id included, so it is simply run again.
                if attempt == DEADLOCK_ATTEMPTS or not _deadlocked(error):
                    raise
                time.sleep(random.uniform(0.01, 0.05) * attempt)

    def _store(self, delivery_id, parsed, records):
        # Ingestion joins this transaction (its CPU work too, on SQLite under the write lock):
        # the delivery id must commit with the issues or not at all.
        with events.transaction():
            if delivery_id is not None and not InboundDelivery.claim(self.id, delivery_id):
                return None  # a concurrent redelivery got here first
            issue_ids = ingest(self.workspace_id, records) if records else []
            sources = set(SOURCES.get(self.type, (self.type,))) | {record["source"] for record in records}
            resolved = resolve(self.workspace_id, sources, parsed.resolved_external_ids)
        return issue_ids, resolved


def _deadlocked(error):
    """Whether PostgreSQL chose this transaction as a deadlock's victim (SQLSTATE 40P01)."""
    return any(getattr(arg, "sqlstate", None) == "40P01" for arg in error.args) or "deadlock detected" in str(error)


def resolve(workspace_id, sources, external_ids):
    """Set the open issues with these (source, external id) resolved, through the issue's own
    update path (its counters and events); returns their ids."""
    if not external_ids:
        return []
    wanted = (Issue.in_workspace(workspace_id).select(Issue.id)
              .where(Issue.source.in_(sorted(sources)) & Issue.external_id.in_(sorted(set(external_ids)))
                     & Issue.status.not_in(DONE_STATUSES))
              .order_by(Issue.id))
    ids = [issue_id for (issue_id,) in wanted.tuples()]
    for issue_id in ids:
        Issue.update_in(issue_id, workspace_id, {"status": "resolved"})
    return ids


def _delivery_key(delivery_id):
    """The sender's delivery id as stored: as given when it fits, else its digest."""
    if delivery_id in (None, ""):
        return None
    delivery_id = str(delivery_id)
    if len(delivery_id) > DELIVERY_ID_MAX:
        return "sha256:" + hashlib.sha256(delivery_id.encode()).hexdigest()
    return delivery_id


class InboundDelivery(BaseModel):
    """A delivery stored from a connector, by the sender's own id: what makes a redelivery a no-op."""

    id = pw.AutoField()
    connector = pw.ForeignKeyField(Connector, backref="deliveries", on_delete="CASCADE")
    delivery_id = pw.CharField(max_length=DELIVERY_ID_MAX)
    received_at = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("connector", "delivery_id"), True), (("received_at",), False))

    @classmethod
    def seen(cls, connector_id, delivery_id):
        return bool(prepared_rows("InboundDelivery.seen", lambda connector_id, delivery_id, cutoff: (
            cls.select(pw.SQL("1")).where((cls.connector == connector_id) & (cls.delivery_id == delivery_id)
                                          & (cls.received_at >= cutoff)).limit(1)),
            connector_id=connector_id, delivery_id=delivery_id,
            cutoff=cls.received_at.db_value(utcnow() - DELIVERY_RETENTION)))

    @classmethod
    def claim(cls, connector_id, delivery_id):
        """Record the delivery; False when it was already recorded. On PostgreSQL a concurrent
        claim of the same id waits at the unique index for the first to commit (then finds it)
        or roll back (then records it)."""
        now = utcnow()
        prepared_cursor("InboundDelivery.forget", lambda cutoff: cls.delete().where(cls.received_at < cutoff),
                        cutoff=cls.received_at.db_value(now - DELIVERY_RETENTION))
        cursor = prepared_cursor("InboundDelivery.claim", lambda connector_id, delivery_id, received_at: (
            cls.insert(connector=connector_id, delivery_id=delivery_id, received_at=received_at)
            .on_conflict_ignore()), connector_id=connector_id, delivery_id=delivery_id,
            received_at=cls.received_at.db_value(now))
        return cursor.rowcount == 1


def _unique_name(workspace_id, name):
    if Connector.in_workspace(workspace_id).where(Connector.display_name == name).exists():
        _raise_duplicate(name)


def _raise_duplicate(name, cause=None):
    message = f"A connector named {name!r} already exists"
    raise Conflict(message, display_name=[message]) from cause


class _conflict_on_duplicate:
    """A concurrent write with the same name loses at the unique index: a 409 too."""

    def __init__(self, name):
        self.name = name
        self.savepoint = db.atomic()

    def __enter__(self):
        self.savepoint.__enter__()

    def __exit__(self, kind, error, traceback):
        self.savepoint.__exit__(kind, error, traceback)
        if kind is not None and issubclass(kind, pw.IntegrityError):
            _raise_duplicate(self.name, error)
        return False
