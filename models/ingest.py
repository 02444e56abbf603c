"""Ingestion: records from other systems become issues — deduplicated by (source, external_id),
fingerprinted (their own fingerprint, or one inferred from their text) and grouped into the
workspace's pattern for that fingerprint, created once a fingerprint recurs."""
import hashlib

import peewee as pw

from . import detection, events
from .base import db, utcnow
from .issues import SEVERITY_RISK, Issue
from .patterns import Pattern
from .search import is_postgres

RECURRENCE_FOR_PATTERN = 2  # issues sharing a fingerprint before a pattern is created
UPDATABLE = ("title", "description", "severity", "external_url", "team", "metadata")


def _fingerprint(record):
    """The record's own fingerprint, or the inferred one; with the explanation kept on the issue."""
    if record.get("fingerprint"):
        return record["fingerprint"], {"method": "provided"}
    found = detection.infer(record["title"], record.get("description", ""))
    if found is None:
        return None, {"method": "vocabulary", "matched": [], "reason": "no root cause was convincing"}
    return found.fingerprint, found.explain()


def _fields(record):
    fingerprint, explanation = _fingerprint(record)
    fields = {name: record[name] for name in UPDATABLE if name in record}
    fields.update(fingerprint_domain=fingerprint and fingerprint["domain"],
                  fingerprint_root_cause=fingerprint and fingerprint["root_cause"],
                  detection=explanation)
    return fields


def _existing(workspace_id, record):
    if record.get("external_id") is None:
        return None
    return Issue.in_workspace(workspace_id).where(
        (Issue.source == record["source"]) & (Issue.external_id == record["external_id"])).first()


def _refresh(issue, fields, now):
    """A repeat delivery updates the issue it created; returns the fields that changed."""
    changed = [name for name, value in fields.items() if getattr(issue, name) != value]
    if not changed:
        return []
    for name in changed:
        setattr(issue, name, fields[name])
    if "severity" in changed:
        issue.risk_score = SEVERITY_RISK[issue.severity]
    issue.updated_at = now
    issue.save()
    public = [name for name in changed if name not in ("fingerprint_domain", "fingerprint_root_cause", "detection")]
    if len(public) < len(changed):
        public.append("fingerprint")
    events.record(issue.workspace_id, "issue.updated", issue=issue, changed=public)
    return changed


def _upsert(workspace_id, record, now):
    fields = _fields(record)
    existing = _existing(workspace_id, record)
    if existing is not None:
        _refresh(existing, fields, now)
        return existing
    created_at = min(record.get("created_at") or now, now)
    try:
        with db.atomic():  # a savepoint: a concurrent delivery may win the insert
            issue = Issue.create(
                id=Issue.next_id(), workspace=workspace_id, source=record["source"],
                external_id=record.get("external_id"), status="open",
                risk_score=SEVERITY_RISK[fields.get("severity", "medium")],
                created_at=created_at, updated_at=now, **fields)
    except pw.IntegrityError:
        existing = _existing(workspace_id, record)
        if existing is None:
            raise
        _refresh(existing, fields, now)
        return existing
    events.record(workspace_id, "issue.created", issue=issue)
    return issue


def _lock_fingerprint(workspace_id, fingerprint):
    """Serialize pattern creation for one fingerprint (SQLite writers are serial already)."""
    if is_postgres():
        digest = hashlib.sha256(f"{workspace_id}/{fingerprint['domain']}/{fingerprint['root_cause']}".encode())
        db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (int.from_bytes(digest.digest()[:8], "big", signed=True),))


def _pattern_for(workspace_id, fingerprint):
    return (Pattern.in_workspace(workspace_id)
            .where((Pattern.fingerprint_domain == fingerprint["domain"])
                   & (Pattern.fingerprint_root_cause == fingerprint["root_cause"]))
            .order_by(Pattern.created_at, Pattern.id).first())


def _link(issue, pattern_id, now):
    if issue.pattern_id == pattern_id:
        return False
    issue.pattern = pattern_id
    issue.updated_at = now
    issue.save()
    events.record(issue.workspace_id, "issue.updated", issue=issue, changed=["pattern_id"])
    return True


def _group(workspace_id, issue, patterns, created, now):
    """Join the issue to its fingerprint's pattern, creating the pattern on recurrence.
    Returns the ids of the patterns whose links changed."""
    fingerprint = issue.fingerprint
    if fingerprint is None:
        return set()
    key = (fingerprint["domain"], fingerprint["root_cause"])
    if key not in patterns:
        _lock_fingerprint(workspace_id, fingerprint)
        patterns[key] = _pattern_for(workspace_id, fingerprint)
    pattern = patterns[key]
    touched = {issue.pattern_id} if issue.pattern_id else set()
    if pattern is None:
        siblings = list(Issue.in_workspace(workspace_id).where(
            (Issue.fingerprint_domain == key[0]) & (Issue.fingerprint_root_cause == key[1])
            & Issue.pattern.is_null() & (Issue.id != issue.id)).order_by(Issue.created_at))
        if len(siblings) + 1 < RECURRENCE_FOR_PATTERN:
            return touched
        pattern = Pattern.create(
            id=Pattern.next_id(), workspace=workspace_id, name=detection.pattern_name(fingerprint),
            description="Detected automatically: these issues share a root-cause fingerprint.",
            status="watching", fingerprint_domain=key[0], fingerprint_root_cause=key[1],
            tags=["detected"], created_at=now, updated_at=now)
        patterns[key] = pattern
        created.add(pattern.id)
        for sibling in siblings:
            _link(sibling, pattern.id, now)
    _link(issue, pattern.id, now)
    return touched | {pattern.id}


def ingest(workspace_id, records):
    """Store validated records as issues, group them, and return their ids in order."""
    now = utcnow()
    with events.transaction():
        patterns, created, touched, ids = {}, set(), set(), []
        for record in records:
            issue = _upsert(workspace_id, record, now)
            touched |= _group(workspace_id, issue, patterns, created, now)
            ids.append(issue.id)
        Pattern.links_changed(workspace_id, touched, new=created, rescore=True)
    return ids


def similar(issue, limit):
    """Issues of the same workspace most like `issue`: [(issue, score in [0, 1])], best first.

    Score = half for sharing its root-cause fingerprint, half the cosine similarity of the words
    of title and description. Candidates come from the fingerprint and a word search.
    """
    from .search import matches

    words = detection.words(f"{issue.title} {issue.description}")
    candidates = {}
    if issue.fingerprint is not None:
        for other in (Issue.in_workspace(issue.workspace_id)
                      .where((Issue.fingerprint_domain == issue.fingerprint_domain)
                             & (Issue.fingerprint_root_cause == issue.fingerprint_root_cause)
                             & (Issue.id != issue.id))
                      .order_by(Issue.created_at.desc()).limit(200)):
            candidates[other.id] = other
    distinctive = sorted({w for w in words if len(w) >= 4 and not w.isdigit()}, key=lambda w: (-len(w), w))[:12]
    if distinctive:
        for other in (Issue.in_workspace(issue.workspace_id)
                      .where(matches(Issue, " OR ".join(distinctive)) & (Issue.id != issue.id))
                      .order_by(Issue.created_at.desc()).limit(200)):
            candidates.setdefault(other.id, other)
    scored = []
    for other in candidates.values():
        same_cause = issue.fingerprint is not None and other.fingerprint == issue.fingerprint
        text = detection.cosine(words, detection.words(f"{other.title} {other.description}"))
        scored.append((round(0.5 * same_cause + 0.5 * text, 4), other))
    scored.sort(key=lambda pair: (-pair[0], pair[1].id))
    return [(other, score) for score, other in scored[:limit]]

