"""peewee models, their query builders, and the database proxy they are bound to."""
from .accounts import (ADMIN_ROLES, ALL_SCOPES, ROLE_SCOPES, ROLES, AuthSession, Membership,
                       Organization, RefreshToken, User, Workspace, provision_owner)
from .events import Event, EventCounter
from .idempotency import IdempotencyKey
from .base import Conflict, Forbidden, NotFound, RuleViolation, db, make_database, new_id, utcnow
from .issues import ISSUE_STATUSES, SEVERITIES, Issue
from .patterns import PATTERN_STATUSES, Pattern
from .grouping.rules import GroupingRule, GroupingRuleVersion
from .grouping.similarity import CannotLink, GroupingCorrection, GroupingSettings, SourceProfile
from .tokens import ApiToken, ServiceAccount
from .connectors import Connector, InboundDelivery
from .webhooks import WebhookCursor, WebhookDelivery, WebhookEndpoint
from .members import Invitation, InvitationLink, LastAdmin
from .audit import AuditEntry
from .retention import RetentionBelowMinimum, RetentionSettings
from .predictions import Prediction, PredictionSettings
from .alerts import Alert, AlertDelivery, AlertRule
from .notifications import Notification, NotificationPreference

MODELS = [Organization, Workspace, User, Membership, AuthSession, RefreshToken, Pattern, Issue,
          EventCounter, Event, IdempotencyKey, GroupingRule, GroupingRuleVersion, SourceProfile,
          GroupingSettings, GroupingCorrection, CannotLink, ServiceAccount, ApiToken, Connector, InboundDelivery,
          WebhookEndpoint, WebhookCursor, WebhookDelivery, Invitation, InvitationLink, AuditEntry, RetentionSettings,
          PredictionSettings, Prediction, AlertRule, Alert, AlertDelivery, Notification, NotificationPreference]

__all__ = [
    "ADMIN_ROLES", "ALL_SCOPES", "ROLE_SCOPES", "ROLES", "ISSUE_STATUSES", "SEVERITIES", "PATTERN_STATUSES",
    "AuthSession", "Membership", "Organization", "RefreshToken", "User", "Workspace",
    "Issue", "Pattern", "GroupingRule", "GroupingRuleVersion", "Event", "EventCounter", "IdempotencyKey", "MODELS",
    "ApiToken", "ServiceAccount", "Connector", "InboundDelivery", "WebhookCursor", "WebhookDelivery", "WebhookEndpoint",
    "Invitation", "InvitationLink", "LastAdmin", "AuditEntry", "RetentionSettings",
    "Prediction", "PredictionSettings", "AlertRule", "Alert", "AlertDelivery", "Notification", "NotificationPreference",
    "Conflict", "Forbidden", "NotFound", "RuleViolation",
    "db", "make_database", "new_id", "provision_owner", "utcnow",
]
