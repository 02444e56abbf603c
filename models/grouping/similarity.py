"""Similarity grouping: which pattern a new or edited issue joins, and why.

Each issue's representation (models/grouping/representation.py) is compared *centred*: the
workspace's mean vector of the issue's source is subtracted first. Reports from one tool share
a voice (every PagerDuty alert reads like a PagerDuty alert, every customer ticket like a
customer ticket) that says nothing about the cause; removing it is what makes reports of one
cause in different voices meet (on the tuning sets, it multiplied cold-start recall at equal
precision by four). Each pattern keeps the weighted sum of its members' vectors and its
weight per source (models.patterns.Pattern.links_changed), so its centred centroid is exact
for the current profiles: sum - sum over sources of (weight of the source x its mean).

Score = the mean of the dense and hashed parts' cosines between the centred issue and the
centred centroid. An issue joins the best pattern when the score reaches the workspace's
threshold (`GroupingSettings`); else it waits, unlinked, until a later issue scores at least
that with it, and the two become a pattern. A member a person moved takes its vector with it,
so corrections pull later reports their way (models/grouping/corrections.py).
"""
import collections
import dataclasses
import hashlib

import numpy as np
import peewee as pw

from ..accounts import Workspace
from ..base import BaseModel, db, is_postgres, utcnow
from ..issues import Issue
from ..patterns import Pattern
from . import representation

DEFAULT_THRESHOLD = 0.25
THRESHOLD_FLOOR, THRESHOLD_CEILING = 0.10, 0.60
PAIR_MARGIN = 0.05  # two lone issues need a little more than an issue joining a pattern
PRIOR_WEIGHT = 3.0  # a source's mean is shrunk toward zero while it has few issues
WAITING_LIMIT = 500  # the most recent unlinked issues a new one may pair with
NEAREST_SHOWN = 3


def lock_workspace(workspace_id):
    """Take the workspace's grouping lock until commit (PostgreSQL; SQLite writers are serial).

    Placement reads the workspace's centroids and waiting issues, then links issues, creates
    patterns and moves the derived data: two writers doing that at once would each place
    against a state the other is changing, and could lock the same waiting issues in opposite
    orders. Every writer that places takes this lock first, before any row lock."""
    if is_postgres():
        key = int.from_bytes(hashlib.sha256(f"{workspace_id}/grouping".encode()).digest()[:8], "big", signed=True)
        db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (key,))


class SourceProfile(BaseModel):
    """The sum of the vectors of a workspace's issues from one source (derived, like the
    pattern counters, by Pattern.links_changed)."""
    workspace = pw.ForeignKeyField(Workspace, on_delete="CASCADE")
    source = pw.CharField(max_length=64)
    count = pw.IntegerField(default=0)
    total = pw.BlobField(null=True)

    class Meta:
        table_name = "grouping_source_profile"
        primary_key = pw.CompositeKey("workspace", "source")

    @classmethod
    def add(cls, workspace_id, changes):
        """Apply {source: [(+1 | -1, embedding)]}."""
        if not changes:
            return
        query = cls.select().where((cls.workspace == workspace_id) & cls.source.in_(sorted(changes)))
        if is_postgres():
            query = query.for_update()
        current = {row.source: row for row in query}
        for source, entries in sorted(changes.items()):
            signs = np.array([sign for sign, _ in entries], np.float64)
            moved = signs @ representation.decode([embedding for _, embedding in entries])
            row = current.get(source)
            if row is None:
                cls.insert(workspace=workspace_id, source=source, count=int(signs.sum()),
                           total=moved.astype(np.float32).tobytes()).on_conflict_ignore().execute()
                if is_postgres():  # a concurrent first writer of this source won the insert
                    row = cls.select().where((cls.workspace == workspace_id) & (cls.source == source)).for_update().get()
                    if row.count != int(signs.sum()):
                        cls._move(row, signs, moved)
                continue
            cls._move(row, signs, moved)

    @classmethod
    def _move(cls, row, signs, moved):
        total = np.frombuffer(bytes(row.total), np.float32).astype(np.float64) + moved
        (cls.update(count=cls.count + int(signs.sum()), total=total.astype(np.float32).tobytes())
         .where((cls.workspace == row.workspace_id) & (cls.source == row.source)).execute())

    @classmethod
    def means(cls, workspace_id):
        """{source: the mean vector, shrunk toward zero while the source has few issues}."""
        return {row.source: np.frombuffer(bytes(row.total), np.float32) / (max(row.count, 0) + PRIOR_WEIGHT)
                for row in cls.select().where(cls.workspace == workspace_id) if row.total is not None}

    @classmethod
    def recount(cls, workspace_id):
        """Rebuild from the issues (for loaders that insert issues in bulk)."""
        cls.delete().where(cls.workspace == workspace_id).execute()
        changes = collections.defaultdict(list)
        for source, embedding in (Issue.select(Issue.source, Issue.embedding)
                                  .where((Issue.workspace == workspace_id) & Issue.embedding.is_null(False))
                                  .tuples()):
            changes[source].append((1, bytes(embedding)))
        cls.add(workspace_id, changes)


class GroupingSettings(BaseModel):
    """A workspace's threshold, calibrated from its corrections (None: the default)."""
    workspace = pw.ForeignKeyField(Workspace, primary_key=True, on_delete="CASCADE")
    threshold = pw.FloatField(null=True)
    calibrated_at = pw.DateTimeField(null=True)

    class Meta:
        table_name = "grouping_settings"

    @classmethod
    def threshold_of(cls, workspace_id):
        row = cls.get_or_none(cls.workspace == workspace_id)
        return DEFAULT_THRESHOLD if row is None or row.threshold is None else row.threshold


class GroupingCorrection(BaseModel):
    """A person's correction as evidence for the threshold: the score the issue had with the
    pattern a person put it in (positive) or took it out of (negative)."""
    workspace = pw.ForeignKeyField(Workspace, on_delete="CASCADE")
    issue = pw.ForeignKeyField(Issue, null=True, on_delete="SET NULL")
    score = pw.FloatField()
    positive = pw.BooleanField()
    created_at = pw.DateTimeField(default=utcnow)

    class Meta:
        table_name = "grouping_correction"
        indexes = ((("workspace", "created_at"), False),)


class CannotLink(BaseModel):
    """Two patterns a person split apart: automatic grouping never merges them again."""
    workspace = pw.ForeignKeyField(Workspace, on_delete="CASCADE")
    pattern_a = pw.ForeignKeyField(Pattern, on_delete="CASCADE", backref="+")
    pattern_b = pw.ForeignKeyField(Pattern, on_delete="CASCADE", backref="+")
    created_at = pw.DateTimeField(default=utcnow)

    class Meta:
        table_name = "grouping_cannot_link"
        primary_key = pw.CompositeKey("pattern_a", "pattern_b")

    @classmethod
    def record(cls, workspace_id, first, second):
        a, b = sorted((first, second))
        cls.insert(workspace=workspace_id, pattern_a=a, pattern_b=b).on_conflict_ignore().execute()

    @classmethod
    def pairs(cls, workspace_id):
        return {frozenset(pair) for pair in cls.select(cls.pattern_a, cls.pattern_b)
                .where(cls.workspace == workspace_id).tuples()}


def calibrated_threshold(scores):
    """The threshold that best separates corrections: [(score, positive)] -> a threshold in
    [floor, ceiling]. A negative above it (a wrong join) costs twice a positive below it (a
    missed join): over-grouping hides a second root cause, under-grouping costs one merge."""
    if not scores:
        return DEFAULT_THRESHOLD
    candidates = sorted({THRESHOLD_FLOOR, THRESHOLD_CEILING, DEFAULT_THRESHOLD}
                        | {min(THRESHOLD_CEILING, max(THRESHOLD_FLOOR, s + d)) for s, _ in scores for d in (-1e-3, 1e-3)})

    def cost(threshold):
        return sum(2.0 if not positive and s >= threshold else 1.0 if positive and s < threshold else 0.0
                   for s, positive in scores)

    # Ties go to the candidate nearest the default: a few corrections move it little.
    return min(candidates, key=lambda t: (cost(t), abs(t - DEFAULT_THRESHOLD)))


def recalibrate(workspace_id, limit=500):
    """Set the workspace's threshold from its most recent corrections."""
    rows = (GroupingCorrection.select(GroupingCorrection.score, GroupingCorrection.positive)
            .where(GroupingCorrection.workspace == workspace_id)
            .order_by(GroupingCorrection.created_at.desc()).limit(limit).tuples())
    threshold = calibrated_threshold(list(rows))
    (GroupingSettings.insert(workspace=workspace_id, threshold=threshold, calibrated_at=utcnow())
     .on_conflict(conflict_target=[GroupingSettings.workspace],
                  update={GroupingSettings.threshold: threshold, GroupingSettings.calibrated_at: utcnow()})
     .execute())
    return threshold


@dataclasses.dataclass
class Candidate:
    pattern_id: str
    score: float


@dataclasses.dataclass
class Placement:
    """Where similarity puts one issue: a pattern (existing, or new with a waiting issue), or
    nowhere yet."""
    pattern_id: str | None
    score: float | None
    threshold: float
    runner_up: Candidate | None = None
    paired_with: str | None = None  # the waiting issue a new pattern is formed with
    query: tuple | None = dataclasses.field(default=None, repr=False, compare=False)  # the issue's, as scored

    def explain(self):
        explanation = {"method": "similarity", "pattern_id": self.pattern_id,
                       "score": None if self.score is None else round(self.score, 4),
                       "threshold": round(self.threshold, 4),
                       "runner_up": None if self.runner_up is None else {
                           "pattern_id": self.runner_up.pattern_id, "score": round(self.runner_up.score, 4)},
                       "model_version": representation.MODEL_VERSION}
        if self.paired_with:
            explanation["paired_with"] = self.paired_with
        if self.pattern_id is None:
            explanation["reason"] = "no pattern or waiting issue was similar enough yet"
        return explanation


def _split_unit(matrix):
    dense, hashed = representation.split_unit(matrix)
    return dense, hashed


def _query(centred):
    """A centred vector's two unit parts (float32), as the rows' products take them."""
    vector = centred.astype(np.float32)
    dense, hashed = vector[:representation.DENSE_DIMS], vector[representation.DENSE_DIMS:]
    return dense / max(float(np.sqrt(dense @ dense)), 1e-9), hashed / max(float(np.sqrt(hashed @ hashed)), 1e-9)


class _Rows:
    """Centred unit rows (dense and hashed parts) by id, in preallocated arrays: adding,
    replacing or removing one row costs one row, and scoring all of them is two products."""

    def __init__(self, capacity=64):
        self.ids, self.position = [], {}
        self.dense = np.zeros((capacity, representation.DENSE_DIMS), np.float32)
        self.hashed = np.zeros((capacity, representation.HASHED_DIMS), np.float32)

    def __len__(self):
        return len(self.position)

    def __contains__(self, key):
        return key in self.position

    def set(self, key, centred):
        row = self.position.get(key)
        if row is None:
            row = len(self.ids)
            if row == len(self.dense):
                self.dense = np.vstack([self.dense, np.zeros_like(self.dense)])
                self.hashed = np.vstack([self.hashed, np.zeros_like(self.hashed)])
            self.ids.append(key)
            self.position[key] = row
        dense, hashed = _split_unit(centred)
        self.dense[row], self.hashed[row] = dense[0], hashed[0]

    def remove(self, key):
        row = self.position.pop(key, None)
        if row is not None:  # a zero row scores 0, below any threshold; its slot is not reused
            self.ids[row] = None
            self.dense[row] = 0
            self.hashed[row] = 0

    def scores(self, query):
        """(ids, scores) of every row against a query split by _query() (removed rows score 0
        and have id None)."""
        dense, hashed = query
        count = len(self.ids)
        return self.ids, 0.5 * (self.dense[:count] @ dense) + 0.5 * (self.hashed[:count] @ hashed)


def _top(ids, scores, count):
    """The `count` best (id, score) pairs, best first; ties by position (older first)."""
    if count < len(scores):  # only the few best need sorting
        keep = np.sort(np.argpartition(-scores, count)[:count + 1])
        order = keep[np.argsort(-scores[keep], kind="stable")]
    else:
        order = np.argsort(-scores, kind="stable")
    return [(ids[i], float(scores[i])) for i in order if ids[i] is not None][:count]


class Index:
    """A workspace's patterns and waiting issues, centred, for placing a write's issues.

    Loaded once per write; placing an issue updates the in-memory copy (the database's copy is
    moved by links_changed when the write commits). A pattern's centred row is recomputed only
    when its sum or the source means change."""

    def __init__(self, workspace_id, threshold=None):
        self.workspace_id = workspace_id
        self.threshold = GroupingSettings.threshold_of(workspace_id) if threshold is None else threshold
        self.means = SourceProfile.means(workspace_id)
        self.sums, self.source_weights = {}, {}
        for pattern in (Pattern.select(Pattern.id, Pattern.centroid, Pattern.source_weights)
                        .where((Pattern.workspace == workspace_id) & (Pattern.status != "merged")
                               & Pattern.centroid.is_null(False))
                        .order_by(Pattern.created_at, Pattern.id)):
            self.sums[pattern.id] = np.frombuffer(bytes(pattern.centroid), np.float32).astype(np.float64)
            self.source_weights[pattern.id] = collections.Counter(pattern.source_weights or {})
        self._patterns, self._stale = _Rows(max(64, len(self.sums))), set(self.sums)
        # A person's unlinking pins an issue where it is: it never waits to be paired. The
        # condition is the partial index "issue_waiting"'s (migration 0019).
        self.waiting_query = (Issue.select(Issue.id, Issue.source, Issue.embedding)
                              .where((Issue.workspace == workspace_id) & Issue.pattern.is_null() & ~Issue.pinned
                                     & Issue.embedding.is_null(False))
                              .order_by(Issue.created_at.desc(), Issue.id.desc()).limit(WAITING_LIMIT))
        self.waiting = {issue.id: (issue.source, representation.decode_one(issue.embedding))
                        for issue in reversed(list(self.waiting_query))}
        self._waiting_rows, self._waiting_stale = _Rows(WAITING_LIMIT + 64), set(self.waiting)

    def centred(self, vector, source):
        mean = self.means.get(source)
        return vector if mean is None else vector - mean

    def _centred_sum(self, pattern_id):
        shift = np.zeros(representation.DIMS)
        for source, weight in self.source_weights[pattern_id].items():
            if source in self.means:
                shift += weight * self.means[source]
        return self.sums[pattern_id] - shift

    def _refresh(self):
        for pattern_id in self._stale:
            self._patterns.set(pattern_id, self._centred_sum(pattern_id))
        self._stale.clear()
        for issue_id in self._waiting_stale:
            if issue_id in self.waiting:
                source, vector = self.waiting[issue_id]
                self._waiting_rows.set(issue_id, self.centred(vector, source))
        self._waiting_stale.clear()

    def query(self, vector, source):
        """A raw vector as scoring takes it: centred, its two parts unit (computed once per
        issue placed, whatever it is scored against)."""
        return _query(self.centred(vector, source))

    def scores(self, query, count=None):
        """[(pattern id, score)] for a query, best first (all of them, or the `count` best)."""
        self._refresh()
        if not len(self._patterns):
            return []
        ids, scores = self._patterns.scores(query)
        return _top(ids, scores, count or len(ids))

    def score_of(self, pattern_id, vector, source):
        """The score of a raw vector with one pattern, or None when it has no centroid."""
        return self._score_of(pattern_id, self.query(vector, source))

    def _score_of(self, pattern_id, query):
        self._refresh()
        if pattern_id not in self._patterns:
            return None
        dense, hashed = query
        row = self._patterns.position[pattern_id]
        return float(0.5 * (self._patterns.dense[row] @ dense) + 0.5 * (self._patterns.hashed[row] @ hashed))

    def pattern_rows(self):
        """(ids, dense rows, hashed rows) of the patterns with a centroid, centred."""
        self._refresh()
        rows = [row for row, key in enumerate(self._patterns.ids) if key is not None]
        return ([self._patterns.ids[row] for row in rows], self._patterns.dense[rows], self._patterns.hashed[rows])

    def waiting_scores(self, query, count=1):
        self._refresh()
        if not len(self._waiting_rows):
            return []
        ids, scores = self._waiting_rows.scores(query)
        return _top(ids, scores, count)

    def place(self, vector, source, current=None):
        """Where an issue with this (raw) vector goes. `current`: its pattern today, kept while
        it still clears the threshold (an edit should not move an issue for a hair's breadth)."""
        query = self.query(vector, source)
        placement = self._place(query, current)
        placement.query = query
        return placement

    def _place(self, query, current):
        ranked = self.scores(query, count=2)
        if current is not None:
            mine = self._score_of(current, query)
            if mine is not None and mine >= self.threshold:
                other = next((Candidate(p, s) for p, s in ranked if p != current), None)
                return Placement(current, mine, self.threshold, other)
        runner_up = Candidate(*ranked[1]) if len(ranked) > 1 else None
        if ranked and ranked[0][1] >= self.threshold:
            return Placement(ranked[0][0], ranked[0][1], self.threshold, runner_up)
        pairs = self.waiting_scores(query)
        if pairs and pairs[0][1] >= self.threshold + PAIR_MARGIN:
            return Placement(None, pairs[0][1], self.threshold, Candidate(*ranked[0]) if ranked else None,
                             paired_with=pairs[0][0])
        return Placement(None, ranked[0][1] if ranked else None, self.threshold,
                         Candidate(*ranked[0]) if ranked else None)

    def waiting_matches(self, pattern_ids):
        """The waiting issues (oldest first) that clear the threshold with one of these
        patterns."""
        self._refresh()
        rows = [self._patterns.position[pattern_id] for pattern_id in pattern_ids if pattern_id in self._patterns]
        count = len(self._waiting_rows.ids)
        if not rows or not len(self._waiting_rows):
            return []
        scores = (0.5 * (self._waiting_rows.dense[:count] @ self._patterns.dense[rows].T)
                  + 0.5 * (self._waiting_rows.hashed[:count] @ self._patterns.hashed[rows].T))
        ids = self._waiting_rows.ids
        return [ids[row] for row in np.flatnonzero(scores.max(axis=1) >= self.threshold) if ids[row] is not None]

    def join(self, pattern_id, vector, source, weight=1.0):
        """Record in memory that an issue joined (or, with a negative weight, left) a pattern."""
        if pattern_id not in self.sums:
            self.sums[pattern_id] = np.zeros(representation.DIMS)
            self.source_weights[pattern_id] = collections.Counter()
        self.sums[pattern_id] = self.sums[pattern_id] + weight * vector
        self.source_weights[pattern_id][source] += weight
        self._stale.add(pattern_id)

    def forget(self, link):
        """Take an issue's contribution (as a Link) out of its pattern's in-memory centroid."""
        if link.pattern_id in self.sums and link.weight:
            self.join(link.pattern_id, representation.decode_one(link.embedding), link.source, -link.weight)

    def wait(self, issue_id, vector, source):
        self.waiting[issue_id] = (source, vector)
        self._waiting_stale.add(issue_id)

    def stop_waiting(self, issue_id):
        if self.waiting.pop(issue_id, None) is not None:
            self._waiting_rows.remove(issue_id)

    def add_to_profiles(self, entries):
        """Count a batch's own issues in the source means before placing them (a first batch
        from a new source then has a mean already)."""
        totals = collections.defaultdict(list)
        for source, vector in entries:
            totals[source].append(vector)
        counts = {}
        for row in SourceProfile.select().where(SourceProfile.workspace == self.workspace_id):
            counts[row.source] = (row.count, np.frombuffer(bytes(row.total), np.float32).astype(np.float64))
        for source, vectors in totals.items():
            count, total = counts.get(source, (0, np.zeros(representation.DIMS)))
            self.means[source] = (total + np.sum(vectors, axis=0)) / (count + len(vectors) + PRIOR_WEIGHT)
        self._stale = set(self.sums)
        self._waiting_stale = set(self.waiting)


MEMBERS_COMPARED = 10  # a pattern's most recent members an explanation compares an issue with


def nearest_members(index, wanted, limit=NEAREST_SHOWN, united=50):
    """For [(issue, pattern id, the issue's Index.query() or None)], the pattern's members
    most like the issue, among its MEMBERS_COMPARED most recent (as the database has them:
    before the write's links are saved): {issue id: [{"issue_id", "score"}, ...]}, best first —
    the evidence a person can open. The members of `united` patterns are read by one statement
    (a LIMIT per pattern, united, each part on the (pattern, created) index) and held only while
    their issues are scored."""
    askers = collections.defaultdict(list)
    for issue, pattern_id, query in wanted:
        askers[pattern_id].append((issue, query))
    found = {issue.id: [] for issue, _, _ in wanted}
    pattern_ids = sorted(askers)
    part = ('SELECT * FROM (SELECT "pattern_id", "id", "source", "embedding" FROM "issue" '
            f'WHERE "pattern_id" = {db.param} AND "embedding" IS NOT NULL '
            f'ORDER BY "created_at" DESC, "id" DESC LIMIT {MEMBERS_COMPARED}) AS "part{{}}"')
    for start in range(0, len(pattern_ids), united):
        chunk = pattern_ids[start:start + united]
        rows = db.execute_sql(" UNION ALL ".join(part.format(n) for n in range(len(chunk))), chunk).fetchall()
        if not rows:
            continue
        vectors = representation.decode([bytes(embedding) for _, _, _, embedding in rows])
        sources = np.array([source for _, _, source, _ in rows])
        for source in set(sources) & set(index.means):
            vectors[sources == source] -= index.means[source].astype(np.float32)
        dense, hashed = _split_unit(vectors)
        by_pattern = collections.defaultdict(list)
        for position, (pattern_id, *_) in enumerate(rows):
            by_pattern[pattern_id].append(position)
        for pattern_id, positions in by_pattern.items():
            ids = [rows[i][1] for i in positions]
            for issue, query in askers[pattern_id]:
                if issue.embedding is None:
                    continue
                mine_dense, mine_hashed = query or index.query(representation.decode_one(issue.embedding), issue.source)
                scores = 0.5 * (dense[positions] @ mine_dense) + 0.5 * (hashed[positions] @ mine_hashed)
                order = [i for i in np.argsort(-scores, kind="stable") if ids[i] != issue.id][:limit]
                found[issue.id] = [{"issue_id": ids[i], "score": round(float(scores[i]), 4)} for i in order]
    return found


def representative_title(titles_and_vectors):
    """The title of the member nearest the group's mean."""
    vectors = np.array([v for _, v in titles_and_vectors])
    dense, hashed = _split_unit(vectors)
    centre_d, centre_h = _split_unit(vectors.mean(0))
    scores = 0.5 * dense @ centre_d[0] + 0.5 * hashed @ centre_h[0]
    return titles_and_vectors[int(np.argmax(scores))][0]


def neighbours(issue, limit, candidates=2_000):
    """The workspace's issues most like `issue` (among its `candidates` most recent with a
    representation): [(issue, score, would_group)], best first. `would_group`: the score
    clears the workspace's threshold."""
    index = Index(issue.workspace_id)
    embedding = issue.embedding or representation.represent([(issue.title, issue.description)])[0]
    mine = _split_unit(index.centred(representation.decode_one(embedding), issue.source))
    others = list(Issue.in_workspace(issue.workspace_id)
                  .where(Issue.embedding.is_null(False) & (Issue.id != issue.id))
                  .order_by(Issue.created_at.desc(), Issue.id.desc()).limit(candidates))
    if not others:
        return []
    raw = representation.decode([bytes(other.embedding) for other in others])
    theirs = _split_unit(np.array([index.centred(v, other.source) for v, other in zip(raw, others)]))
    scores = 0.5 * (theirs[0] @ mine[0][0]) + 0.5 * (theirs[1] @ mine[1][0])
    order = np.argsort(-scores, kind="stable")[:limit]
    return [(others[i], round(float(scores[i]), 4), bool(scores[i] >= index.threshold)) for i in order]
