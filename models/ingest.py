"""Ingestion: records from other systems become issues — deduplicated by (source, external_id),
fingerprinted (their own fingerprint, or one inferred from their text) and grouped into the
workspace's pattern for that fingerprint, created once a fingerprint recurs."""
import functools
import hashlib
import operator

from . import detection, events
from .grouping import rules as grouping_rules
from .base import db, for_update, insert_rows, is_postgres, utcnow
from .issues import SEVERITY_RISK, Issue
from .patterns import Pattern

RECURRENCE_FOR_PATTERN = 2  # issues sharing a fingerprint before a pattern is created
UPDATABLE = ("title", "description", "severity", "external_url", "team", "metadata")


def _fingerprint(record, rules):
    """The record's own fingerprint, else the first team rule it meets (which may name a pattern
    instead), else the vocabulary's inference; with the explanation kept on the issue.
    Returns (fingerprint or None, explanation, the rule's pattern id or None)."""
    if record.get("fingerprint"):
        return record["fingerprint"], {"method": "provided"}, None
    rule = rules.first_match(record["title"], record.get("description", ""), record["source"],
                             record.get("team"), record.get("metadata"))
    if rule is not None:
        return rule.fingerprint, {"method": "rule", "rule_id": rule.rule_id, "reason": rule.reason,
                                  "pattern_id": rule.pattern_id}, rule.pattern_id
    found = detection.infer(record["title"], record.get("description", ""))
    if found is None:
        return None, {"method": "vocabulary", "matched": [], "reason": "no root cause was convincing"}, None
    return found.fingerprint, found.explain(), None


def _fields(record, rules):
    """The issue's columns from a record, and the pattern a team rule sends it to (or None)."""
    fingerprint, explanation, pattern_id = _fingerprint(record, rules)
    fields = {name: record[name] for name in UPDATABLE if name in record}
    fields.update(fingerprint_domain=fingerprint and fingerprint["domain"],
                  fingerprint_root_cause=fingerprint and fingerprint["root_cause"],
                  detection=explanation)
    return fields, pattern_id


def _existing(workspace_id, records):
    """The issues earlier deliveries created, by (source, external_id), in one query."""
    by_source = {}
    for record in records:
        if record.get("external_id") is not None:
            by_source.setdefault(record["source"], set()).add(record["external_id"])
    if not by_source:
        return {}
    # One term per source, each naming the whole key of the unique index (workspace, source,
    # external_id): with the workspace outside the OR, SQLite scans the workspace's issues.
    wanted = functools.reduce(operator.or_, [
        (Issue.workspace == workspace_id) & (Issue.source == source) & Issue.external_id.in_(sorted(ids))
        for source, ids in sorted(by_source.items())])
    return {(issue.source, issue.external_id): issue
            for issue in for_update(Issue.select().where(wanted).order_by(Issue.id))}


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


def _lock_fingerprints(workspace_id, keys):
    """Serialize pattern creation per fingerprint (SQLite writers are serial already). All of
    a batch's are taken at once, in one order, so two batches never wait on each other in turn."""
    if is_postgres() and keys:
        locks = sorted(int.from_bytes(hashlib.sha256(f"{workspace_id}/{domain}/{root_cause}".encode())
                                      .digest()[:8], "big", signed=True) for domain, root_cause in keys)
        db.execute_sql("SELECT pg_advisory_xact_lock(key) FROM unnest(%s::bigint[]) AS key ORDER BY key",
                       (locks,))


def _patterns(workspace_id, keys):
    """The workspace's pattern id for each fingerprint key (domain, root cause), or None: the
    oldest, should there be several."""
    found = dict.fromkeys(keys)
    if not found:
        return found
    wanted = functools.reduce(operator.or_, [  # each term a key of the fingerprint index, as in _existing
        (Pattern.workspace == workspace_id) & (Pattern.fingerprint_domain == domain)
        & (Pattern.fingerprint_root_cause == root_cause) for domain, root_cause in sorted(found)])
    query = (Pattern.select(Pattern.id, Pattern.fingerprint_domain, Pattern.fingerprint_root_cause)
             .where(wanted).order_by(Pattern.created_at.desc(), Pattern.id.desc()))
    for pattern in query:
        found[(pattern.fingerprint_domain, pattern.fingerprint_root_cause)] = pattern.id
    return found


class _Grouper:
    """Finds (or, on recurrence, creates) the pattern of each fingerprint, once per batch, and
    keeps each issue the batch touches as one object with its link before the batch."""

    def __init__(self, workspace_id, now, keys):
        self.workspace_id, self.now = workspace_id, now
        self.created = set()
        self.issues = {}  # id -> (link before this batch, the Issue as the batch leaves it)
        self.patterns = _patterns(workspace_id, keys)
        # Only a fingerprint with no pattern yet is locked: batches joining existing patterns
        # (the usual case) do not wait on each other.
        self._lock([key for key, pattern_id in self.patterns.items() if pattern_id is None])

    def _lock(self, keys):
        if keys and is_postgres():
            _lock_fingerprints(self.workspace_id, keys)
            self.patterns.update(_patterns(self.workspace_id, keys))  # one created while we waited

    def track(self, issue, new=False):
        """The batch's object for this issue (the one already tracked, if any)."""
        if issue.id not in self.issues:
            self.issues[issue.id] = ((None, None) if new else issue.link, issue)
        return self.issues[issue.id][1]

    def moves(self):
        """(link before, link after) of every issue the batch touched, for links_changed."""
        return [(before, issue.link) for before, issue in self.issues.values()]

    def pattern_id(self, key):
        """The pattern for a fingerprint key (domain, root cause), if there is one yet."""
        if key not in self.patterns:  # not one of the batch's keys, so not looked up yet
            self.patterns.update(_patterns(self.workspace_id, [key]))
            if self.patterns[key] is None:
                self._lock([key])
        return self.patterns[key]

    def _link(self, issue, pattern_id):
        if issue.pattern_id == pattern_id:
            return
        issue.pattern = pattern_id
        issue.updated_at = self.now
        issue.save(only=[Issue.pattern, Issue.updated_at])
        events.record(issue.workspace_id, "issue.updated", issue=issue, changed=["pattern_id"])

    def place(self, issue, rule_pattern_id=None):
        """Link a stored issue to the pattern a team rule names, else to its fingerprint's
        pattern; create the fingerprint's pattern on recurrence."""
        if rule_pattern_id is not None:
            self._link(issue, rule_pattern_id)
            return
        if issue.fingerprint_domain is None:
            return
        key = (issue.fingerprint_domain, issue.fingerprint_root_cause)
        pattern_id = self.pattern_id(key)
        if pattern_id is None:
            siblings = [self.track(sibling) for sibling in for_update(Issue.in_workspace(self.workspace_id).where(
                (Issue.fingerprint_domain == key[0]) & (Issue.fingerprint_root_cause == key[1])
                & Issue.pattern.is_null() & (Issue.id != issue.id)).order_by(Issue.created_at, Issue.id))]
            if len(siblings) + 1 < RECURRENCE_FOR_PATTERN:
                return
            pattern_id = Pattern.create(
                id=Pattern.next_id(), workspace=self.workspace_id, name=detection.pattern_name(
                    {"domain": key[0], "root_cause": key[1]}),
                description="Detected automatically: these issues share a root-cause fingerprint.",
                status="watching", fingerprint_domain=key[0], fingerprint_root_cause=key[1],
                tags=["detected"], created_at=self.now, updated_at=self.now).id
            self.patterns[key] = pattern_id
            self.created.add(pattern_id)
            for sibling in siblings:
                self._link(sibling, pattern_id)
        self._link(issue, pattern_id)


def _new_row(workspace_id, record, fields, pattern_id, now):
    return {"id": Issue.next_id(), "workspace": workspace_id, "source": record["source"],
            "external_id": record.get("external_id"), "status": "open", "pattern": pattern_id,
            "risk_score": SEVERITY_RISK[fields.get("severity", "medium")],
            "created_at": min(record.get("created_at") or now, now), "updated_at": now, **fields}


def _insert(rows):
    """Insert new issues in bulk; a row whose (source, external_id) a concurrent delivery
    stored first is skipped. Returns the ids actually inserted."""
    insert_rows(Issue, rows, ignore_conflicts=True)
    ids = [row["id"] for row in rows]
    return {issue_id for (issue_id,) in Issue.select(Issue.id).where(Issue.id.in_(ids)).tuples()}


def ingest(workspace_id, records):
    """Store validated records as issues, group them, and return their ids in order."""
    now = utcnow()
    # Detection is CPU work: done before the transaction, so no lock waits on it.
    rules = grouping_rules.rules_for(workspace_id)
    prepared = [(record, *_fields(record, rules)) for record in records]
    keys = {(fields["fingerprint_domain"], fields["fingerprint_root_cause"])
            for _, fields, rule_pattern in prepared if fields["fingerprint_domain"] and rule_pattern is None}
    with events.transaction():
        grouper = _Grouper(workspace_id, now, keys)
        known = {key: grouper.track(issue) for key, issue in _existing(workspace_id, records).items()}
        rows, plan = {}, []  # plan: per record, ("new", row id) or ("known", Issue)
        for record, fields, rule_pattern in prepared:
            key = (record["source"], record.get("external_id"))
            pending = rows.get(key) if key[1] is not None else None
            if key in known:
                plan.append(("known", known[key], fields, rule_pattern))
            elif pending is not None:  # the same failure twice in one batch: last one wins
                pending.update(fields, pattern=rule_pattern or pending["pattern"])
                plan.append(("new", pending["id"], fields, rule_pattern))
            else:
                domain, root_cause = fields["fingerprint_domain"], fields["fingerprint_root_cause"]
                pattern_id = rule_pattern or (grouper.pattern_id((domain, root_cause)) if domain else None)
                row = _new_row(workspace_id, record, fields, pattern_id, now)
                rows[key if key[1] is not None else row["id"]] = row
                plan.append(("new", row["id"], fields, rule_pattern))
        inserted = _insert(list(rows.values())) if rows else set()
        created = {row["id"]: grouper.track(Issue(**row), new=True) for row in rows.values() if row["id"] in inserted}
        lost = [row for row in rows.values() if row["id"] not in inserted]
        known.update({key: grouper.track(issue) for key, issue in _existing(
            workspace_id, [{"source": r["source"], "external_id": r["external_id"]} for r in lost]).items()})
        for issue in created.values():
            events.record(workspace_id, "issue.created", issue=issue)
        ids = []
        for kind, target, fields, rule_pattern in plan:
            if kind == "new" and target in created:
                issue = created[target]
            else:  # an earlier delivery, or a concurrent one that won the insert
                issue = target if kind == "known" else known[_key_of(rows, target)]
                _refresh(issue, fields, now)
            grouper.place(issue, rule_pattern)
            ids.append(issue.id)
        Pattern.links_changed(workspace_id, grouper.moves(), new=grouper.created, rescore=True)
    return ids


def _key_of(rows, row_id):
    return next((row["source"], row["external_id"]) for row in rows.values() if row["id"] == row_id)


def similar(issue, limit):
    """Issues of the same workspace most like `issue`: [(issue, score in [0, 1])], best first.

    Score = half for sharing its root-cause fingerprint, half the cosine similarity of the words
    of title and description (weighted by rarity among the candidates). Candidates come from the
    fingerprint and a word search.
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
    texts = {other.id: detection.words(f"{other.title} {other.description}") for other in candidates.values()}
    weights = detection.idf([words, *texts.values()])  # rare words say more than common ones
    scored = []
    for other in candidates.values():
        same_cause = issue.fingerprint is not None and other.fingerprint == issue.fingerprint
        text = detection.cosine(words, texts[other.id], weights)
        scored.append((round(0.5 * same_cause + 0.5 * text, 4), other))
    scored.sort(key=lambda pair: (-pair[0], pair[1].id))
    return [(other, score) for score, other in scored[:limit]]

