"""Patterns: clusters of issues that share a root-cause fingerprint, with derived counters."""
import collections
import datetime
import itertools
import json
import math
from typing import NamedTuple

import numpy as np

import peewee as pw

from . import events
from .accounts import Workspace
from .base import BaseModel, Fingerprinted, WorkspaceScoped, db, is_postgres, prepared_rows, utcnow
from .search import matches

PATTERN_STATUSES = ("active", "watching", "resolved", "merged")
WRITABLE_STATUSES = PATTERN_STATUSES[:3]  # `merged` is set by a merge, never by a client
PIN_WEIGHT = 1.0  # what a member a person placed weighs in its centroid (3 and 10 learned less: README)


class Link(NamedTuple):
    """What a pattern's derived data knows of one issue: its pattern and severity (counters),
    and what it adds to the pattern's centroid and to its source's profile."""
    pattern_id: str | None
    severity: str | None
    pinned: bool = False
    source: str | None = None
    embedding: bytes | None = None

    @property
    def weight(self):
        return 0.0 if self.embedding is None else (PIN_WEIGHT if self.pinned else 1.0)


NO_LINK = Link(None, None)  # before a new issue
# Detected patterns' risk (0-100) = 100 * (0.45 frequency + 0.35 severity mix + 0.20 recency):
#   frequency = 1 - exp(-linked issues created in the last 30 days / 10)
#   severity mix = mean over linked issues of critical 1.0, high 0.7, medium 0.4, low 0.15
#   recency = exp(-days since the newest linked issue / 14)
RISK_WEIGHTS = {"frequency": 0.45, "severity": 0.35, "recency": 0.20}
SEVERITY_WEIGHT = {"critical": 1.0, "high": 0.7, "medium": 0.4, "low": 0.15}
# Past this many recent issues 1 - exp(-n / 10) is exactly 1.0 in floating point, so counting
# them stops there: the score is the same, and the count reads at most this many index entries.
RECENT_SATURATION = next(n for n in itertools.count() if 1 - math.exp(-n / 10) == 1.0)


def risk_score(linked_by_severity, recent_count, last_seen, now):
    """The formula above, from per-severity counts of the linked issues."""
    total = sum(linked_by_severity.values())
    if not total:
        return 0
    frequency = 1 - math.exp(-recent_count / 10)
    severity = sum(SEVERITY_WEIGHT[name] * n for name, n in linked_by_severity.items()) / total
    days = max(0.0, (now - last_seen).total_seconds() / 86400) if last_seen else 365.0
    recency = math.exp(-days / 14)
    blended = (RISK_WEIGHTS["frequency"] * frequency + RISK_WEIGHTS["severity"] * severity
               + RISK_WEIGHTS["recency"] * recency)
    return max(0, min(100, round(100 * blended)))


class Pattern(WorkspaceScoped, Fingerprinted, BaseModel):
    KIND = "Pattern"
    ID_PREFIX = "pat"
    id = pw.CharField(primary_key=True, max_length=40)
    workspace = pw.ForeignKeyField(Workspace, backref="patterns", on_delete="CASCADE")
    name = pw.CharField(max_length=200)
    description = pw.TextField(default="")
    status = pw.CharField(max_length=16, default="watching")
    risk_score = pw.SmallIntegerField(default=0)
    # Derived from the linked issues by links_changed(); never written by clients.
    issue_count = pw.IntegerField(default=0)
    last_seen_at = pw.DateTimeField(null=True)
    linked_low = pw.IntegerField(default=0)  # linked issues per severity, for the risk score
    linked_medium = pw.IntegerField(default=0)
    linked_high = pw.IntegerField(default=0)
    linked_critical = pw.IntegerField(default=0)
    fingerprint_domain = pw.CharField(max_length=100, null=True)
    fingerprint_root_cause = pw.CharField(max_length=100, null=True)
    tags = pw.JSONField(default=list)
    created_at = pw.DateTimeField(default=utcnow)
    updated_at = pw.DateTimeField(default=utcnow)
    # Derived by links_changed() for similarity grouping: the weighted sum of the members'
    # vectors (float32), its total weight, and the weight per source (for centring).
    centroid = pw.BlobField(null=True)
    centroid_weight = pw.FloatField(default=0.0)
    source_weights = pw.JSONField(null=True)
    merged_into = pw.ForeignKeyField("self", null=True, on_delete="SET NULL", backref="merged_from")

    class Meta:
        # Migrations own the schema; these mirror the indexes they create.
        indexes = (
            (("workspace", "risk_score", "id"), False),
            (("workspace", "created_at", "id"), False),
            (("workspace", "issue_count", "id"), False),
            (("workspace", "last_seen_at", "id"), False),
            (("workspace", "fingerprint_domain", "fingerprint_root_cause"), False),
        )

    @classmethod
    def search(cls, workspace_id, filters):
        """Patterns of a workspace matching the list filters of spec §4 (all optional)."""
        query = cls.in_workspace(workspace_id)
        if filters.get("status"):
            query = query.where(cls.status.in_(filters["status"]))
        else:  # a merged pattern lives on only to say where it went
            query = query.where(cls.status != "merged")
        if filters.get("domain"):
            query = query.where(cls.fingerprint_domain.in_(filters["domain"]))
        if filters.get("risk_min") is not None:
            query = query.where(cls.risk_score >= filters["risk_min"])
        if filters.get("risk_max") is not None:
            query = query.where(cls.risk_score <= filters["risk_max"])
        if filters.get("q"):
            query = query.where(matches(cls, filters["q"]))
        return query

    @staticmethod
    def _fingerprint_columns(fields):
        if "fingerprint" not in fields:
            return fields
        fingerprint = fields.pop("fingerprint") or {}
        return {**fields, "fingerprint_domain": fingerprint.get("domain"),
                "fingerprint_root_cause": fingerprint.get("root_cause")}

    @classmethod
    def create_in(cls, workspace_id, data):
        now = utcnow()
        with events.transaction():
            pattern = cls.create(id=cls.next_id(), workspace=workspace_id, created_at=now,
                                 updated_at=now, **cls._fingerprint_columns(dict(data)))
            events.record(workspace_id, "pattern.detected", pattern=pattern, is_new=True)
        return pattern

    @classmethod
    def update_in(cls, pattern_id, workspace_id, changes):
        """Apply a partial update (PATCH); returns the pattern as stored."""
        with events.transaction():
            pattern = cls.get_in_workspace(pattern_id, workspace_id)
            columns = cls._fingerprint_columns(dict(changes))
            changed = sorted({"fingerprint" if name.startswith("fingerprint_") else name
                              for name, value in columns.items() if getattr(pattern, name) != value})
            if changed:
                for name, value in columns.items():
                    setattr(pattern, name, value)
                pattern.updated_at = utcnow()
                pattern.save()
                events.record(workspace_id, "pattern.updated", pattern=pattern, changed=changed)
        return pattern

    @property
    def linked_by_severity(self):
        return {name: getattr(self, f"linked_{name}") for name in SEVERITY_WEIGHT}

    @classmethod
    def links_changed(cls, workspace_id, moves, new=(), rescore=False):
        """Issues joined, left or changed in patterns: update the derived data and say so.

        The single place the derived data is written as links change: the counters, the
        centroids similarity grouping compares with, and the workspace's per-source profiles.
        `moves` holds one (before, after) pair of `Link`s per changed issue, as the write found it
        (with the row locked) and as it left it; NO_LINK before a new issue. Everything moves by
        the difference, so the cost follows the changed issues, not the linked ones. It runs
        inside the transaction that changed the links, so the derived data never disagrees with
        the rows. Detection (`rescore`) also recomputes their risk; `new` are the patterns it just
        created.
        """
        from . import predictions
        from .grouping.similarity import SourceProfile
        from .issues import Issue

        delta, relinked = collections.Counter(), set()
        vectors = collections.defaultdict(list)  # pattern id -> [(sign * weight, source, embedding)]
        profiles = collections.defaultdict(list)  # source -> [(sign, embedding)]
        for before, after in moves:
            if before == after:
                continue
            delta[before[:2]] -= 1
            delta[after[:2]] += 1
            if before.pattern_id != after.pattern_id:
                relinked |= {before.pattern_id, after.pattern_id}
            if (before.pattern_id, before.weight, before.source, before.embedding) != (
                    after.pattern_id, after.weight, after.source, after.embedding):
                for sign, link in ((-1.0, before), (1.0, after)):
                    if link.pattern_id and link.weight:
                        vectors[link.pattern_id].append((sign * link.weight, link.source, link.embedding))
            if (before.source, before.embedding) != (after.source, after.embedding):
                for sign, link in ((-1, before), (1, after)):
                    if link.embedding is not None:
                        profiles[link.source].append((sign, link.embedding))
        SourceProfile.add(workspace_id, profiles)
        changed = sorted({pid for (pid, _), n in delta.items() if n and pid} | set(vectors) | relinked - {None})
        if not changed:
            return
        if is_postgres():
            # Lock first: the newest issue (last_seen_at) read below is then read after any
            # concurrent linker of the pattern committed. NO KEY UPDATE does not conflict with
            # the key-share locks that inserting a linked issue takes on the pattern row.
            list(cls.select(cls.id).where(cls.id.in_(changed)).order_by(cls.id)
                 .for_update("FOR NO KEY UPDATE"))
        # One statement run per pattern (executemany): a batch touches hundreds of patterns, and
        # building a query per pattern cost more than the database's work.
        counters = [[sum(delta[(pattern_id, name)] for name in SEVERITY_WEIGHT),
                     *(delta[(pattern_id, name)] for name in SEVERITY_WEIGHT),
                     pattern_id in relinked, pattern_id] for pattern_id in changed]
        _execute_many(_COUNTERS_SQL, counters)
        centroids = cls._moved_centroids(vectors)
        _execute_many(_CENTROID_SQL(), [
            [columns[cls.centroid], columns[cls.centroid_weight], _json_param(columns[cls.source_weights]), pattern_id]
            for pattern_id, columns in sorted(centroids.items())])
        if rescore:
            cls.rescore(changed)
        # Membership and severity are what predictions read (a centroid's move changes none).
        predictions.recompute(workspace_id, sorted({pid for (pid, _), n in delta.items() if n and pid}
                                                   | relinked - {None}))
        announced = changed if rescore else sorted(relinked - {None})
        for pattern in cls.select().where(cls.id.in_(announced)).order_by(cls.id):
            events.record(workspace_id, "pattern.detected", pattern=pattern, is_new=pattern.id in new)

    @classmethod
    def _moved_centroids(cls, vectors):
        """The centroid columns of each pattern in `vectors` after adding its (signed weight,
        source, embedding) entries."""
        if not vectors:
            return {}
        rows = cls.select(cls.id, cls.centroid, cls.centroid_weight, cls.source_weights).where(
            cls.id.in_(sorted(vectors)))
        return {pattern.id: cls._centroid_plus(pattern, vectors[pattern.id]) for pattern in rows}

    @classmethod
    def _centroid_plus(cls, pattern, entries):
        from .grouping import representation

        weights = np.array([weight for weight, _, _ in entries], np.float64)
        total = (np.zeros(representation.DIMS) if pattern.centroid is None
                 else np.frombuffer(bytes(pattern.centroid), np.float32).astype(np.float64))
        total += weights @ representation.decode([embedding for _, _, embedding in entries])
        by_source = collections.Counter(pattern.source_weights or {})
        for weight, source, _ in entries:
            by_source[source] += weight
        weight = pattern.centroid_weight + float(weights.sum())
        if weight < 1e-6:  # no member left: no centroid, rather than the rounding of one
            return {cls.centroid: None, cls.centroid_weight: 0.0, cls.source_weights: None}
        return {cls.centroid: total.astype(np.float32).tobytes(), cls.centroid_weight: weight,
                cls.source_weights: {s: w for s, w in sorted(by_source.items()) if abs(w) > 1e-6}}

    @classmethod
    def rescore(cls, pattern_ids, now=None):
        """Set risk_score by the documented formula from the counters and the recent issues."""
        from .issues import Issue

        now = now or utcnow()
        recent_since = Issue.created_at.db_value(now - datetime.timedelta(days=30))

        def recent_of(pattern_id, since):
            linked = (Issue.select(pw.SQL("1")).where((Issue.pattern == pattern_id) & (Issue.created_at >= since))
                      .limit(RECENT_SATURATION))
            return Issue.select(pw.fn.COUNT(pw.SQL("*"))).from_(linked.alias("recent"))

        scores = []
        for pattern in cls.select(cls.id, cls.last_seen_at, *(getattr(cls, f"linked_{name}") for name in SEVERITY_WEIGHT)
                                  ).where(cls.id.in_(list(pattern_ids))):
            (recent,), = prepared_rows("Pattern.rescore.recent", recent_of, pattern_id=pattern.id, since=recent_since)
            scores.append([risk_score(pattern.linked_by_severity, recent, pattern.last_seen_at, now), pattern.id])
        _execute_many(f'UPDATE "pattern" SET "risk_score" = {db.param} WHERE "id" = {db.param}', scores)

    @classmethod
    def recount(cls, pattern_ids):
        """Set every derived column from the linked issues, reading all of them: for loaders that
        insert issues in bulk (links_changed keeps them exact from then on)."""
        from .issues import Issue

        ids = sorted({pid for pid in pattern_ids if pid})
        if not ids:
            return ids
        linked = Issue.select().where(Issue.pattern == cls.id)
        counts = {getattr(cls, f"linked_{name}"): linked.select(pw.fn.COUNT(Issue.id)).where(Issue.severity == name)
                  for name in SEVERITY_WEIGHT}
        (cls.update(issue_count=linked.select(pw.fn.COUNT(Issue.id)),
                    last_seen_at=linked.select(pw.fn.MAX(Issue.created_at)), **{f.name: q for f, q in counts.items()})
         .where(cls.id.in_(ids))
         .execute())
        for pattern_id in ids:
            cls.update(cls.recomputed_centroid(pattern_id)).where(cls.id == pattern_id).execute()
        return ids

    @classmethod
    def recomputed_centroid(cls, pattern_id):
        """The centroid columns computed afresh from every linked issue."""
        from .issues import Issue

        members = (Issue.select(Issue.pinned, Issue.source, Issue.embedding)
                   .where((Issue.pattern == pattern_id) & Issue.embedding.is_null(False)))
        entries = [(Link(pattern_id, None, issue.pinned, issue.source, bytes(issue.embedding)).weight,
                    issue.source, bytes(issue.embedding)) for issue in members]
        return cls._centroid_plus(cls(centroid=None, centroid_weight=0.0, source_weights=None), entries)


_COUNTERS_SQL_TEMPLATE = (
    'UPDATE "pattern" SET "issue_count" = "issue_count" + {p}, '
    + ", ".join(f'"linked_{name}" = "linked_{name}" + {{p}}' for name in SEVERITY_WEIGHT)
    + ', "last_seen_at" = CASE WHEN {p} THEN (SELECT MAX("created_at") FROM "issue" '
      'WHERE "issue"."pattern_id" = "pattern"."id") ELSE "last_seen_at" END WHERE "id" = {p}')


def _execute_many(sql, rows):
    if rows:
        with pw.__exception_wrapper__:
            db.cursor().executemany(sql() if callable(sql) else sql, rows)


def _COUNTERS_SQL():
    return _COUNTERS_SQL_TEMPLATE.format(p=db.param)


def _CENTROID_SQL():
    weights = f"{db.param}::jsonb" if is_postgres() else f"json({db.param})"
    return (f'UPDATE "pattern" SET "centroid" = {db.param}, "centroid_weight" = {db.param}, '
            f'"source_weights" = {weights} WHERE "id" = {db.param}')


def _json_param(value):
    return None if value is None else json.dumps(value)


Pattern.SORTS = {"risk_score": Pattern.risk_score, "issue_count": Pattern.issue_count,
                 "last_seen_at": Pattern.last_seen_at, "created_at": Pattern.created_at}
