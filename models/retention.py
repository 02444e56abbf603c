"""Data retention: how long a workspace keeps its issues, sign-in activity and audit log."""
import peewee as pw

from .accounts import Workspace
from .base import BaseModel, utcnow

AUDIT_MINIMUM_DAYS = 365


class RetentionSettings(BaseModel):
    """One row per workspace that has set any; null (or no row) keeps that data forever."""

    workspace = pw.ForeignKeyField(Workspace, primary_key=True, on_delete="CASCADE")
    issues_days = pw.IntegerField(null=True)
    activity_days = pw.IntegerField(null=True)
    audit_days = pw.IntegerField(null=True)
    updated_at = pw.DateTimeField(default=utcnow)
