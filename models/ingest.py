"""Ingestion: records from other systems become issues — deduplicated by (source, external_id)
and placed: a record's own fingerprint or a team rule's groups by fingerprint (the workspace's
pattern for it, created once it recurs); any other issue is placed by similarity
(models/grouping/similarity.py), the vocabulary naming its fingerprint when one is convincing.
The `Grouper` here places issues for every writer (ingestion, creates, edits, re-analysis)."""
import functools
import hashlib
import json
import operator

import peewee as pw

from . import detection, events
from .grouping import representation, similarity
from .grouping import rules as grouping_rules
from .base import db, for_update, insert_rows, is_postgres, utcnow
from .issues import SEVERITY_RISK, Issue
from .patterns import NO_LINK, Pattern

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


def _fields(record, rules, embedding):
    """The issue's columns from a record, and the pattern a team rule sends it to (or None)."""
    inferred, pattern_id = fingerprint_fields(record, rules)
    fields = {name: record[name] for name in UPDATABLE if name in record}
    fields.update(inferred, embedding=embedding)
    return fields, pattern_id


def fingerprint_fields(record, rules):
    """The fingerprint columns and explanation for a record, and the pattern a team rule sends
    it to (or None)."""
    fingerprint, explanation, pattern_id = _fingerprint(record, rules)
    return {"fingerprint_domain": fingerprint and fingerprint["domain"],
            "fingerprint_root_cause": fingerprint and fingerprint["root_cause"],
            "detection": explanation}, pattern_id


def by_fingerprint(explanation):
    """Whether an issue is grouped by its fingerprint (its own, or a team rule's) rather than
    by similarity."""
    return bool(explanation) and explanation.get("method") in ("provided", "rule")


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
    fields = dict(fields)
    if fields.get("title", issue.title) == issue.title and \
            fields.get("description", issue.description) == issue.description:
        # Same text: same representation and inference; the stored explanation also says where
        # the issue was placed, which a repeat does not change.
        fields.pop("embedding", None)
        fields.pop("detection", None)
    changed = [name for name, value in fields.items() if getattr(issue, name) != value]
    if not changed:
        return []
    for name in changed:
        setattr(issue, name, fields[name])
    if "severity" in changed:
        issue.risk_score = SEVERITY_RISK[issue.severity]
    issue.updated_at = now
    issue.save()
    public = [name for name in changed
              if name not in ("fingerprint_domain", "fingerprint_root_cause", "detection", "embedding")]
    if any(name.startswith("fingerprint_") for name in changed):
        public.append("fingerprint")
    if public:
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


class Grouper:
    """Places the issues of one write (a batch, a create, an edit, a re-analysis): by
    fingerprint, or by similarity. Finds (or, on recurrence, creates) the pattern of each
    fingerprint once per write, and keeps each issue the write touches as one object with its
    link before the write, for links_changed."""

    def __init__(self, workspace_id, now, keys=(), similarity_index=None, batched=False):
        """`batched` (a batch write): explanations' nearest members are read for all the
        write's issues at once by settle(), and the issue.updated events placement causes are
        recorded then, once the explanations they carry are whole."""
        self.workspace_id, self.now, self.batched = workspace_id, now, batched
        self._unexplained = []  # batched: (issue, pattern id, its query) whose nearest settle() adds
        self._updates = {}  # batched: id -> issue whose issue.updated event settle() records
        self.created = set()
        self.fresh = set()  # issues this write created: their issue.created event says it all
        self._grown = set()  # patterns similarity placement created or grew in this write
        self._counted = {}  # issue id -> (pattern id, weight) it joined in the index in this write
        self._unsaved = {}  # issue id -> Issue whose link or explanation flush() must save
        self.issues = {}  # id -> (link before this write, the Issue as the write leaves it)
        self.patterns = _patterns(workspace_id, keys)
        self._index = similarity_index
        # Only a fingerprint with no pattern yet is locked: batches joining existing patterns
        # (the usual case) do not wait on each other.
        self._lock([key for key, pattern_id in self.patterns.items() if pattern_id is None])

    @property
    def index(self):
        if self._index is None:
            self._index = similarity.Index(self.workspace_id)
        return self._index

    def _lock(self, keys):
        if keys and is_postgres():
            _lock_fingerprints(self.workspace_id, keys)
            self.patterns.update(_patterns(self.workspace_id, keys))  # one created while we waited

    def track(self, issue, new=False):
        """The write's object for this issue (the one already tracked, if any)."""
        if issue.id not in self.issues:
            self.issues[issue.id] = (NO_LINK if new else issue.link, issue)
        return self.issues[issue.id][1]

    def moves(self):
        """(link before, link after) of every issue the write touched, for links_changed (the
        links are saved first)."""
        self.settle()
        self.flush()
        return [(before, issue.link) for before, issue in self.issues.values()]

    def flush(self):
        """Save the links and explanations placement changed, in one statement run per issue
        (building a query per issue cost more than the database's work)."""
        if not self._unsaved:
            return
        detection = f"{db.param}::jsonb" if is_postgres() else f"json({db.param})"
        sql = (f'UPDATE "issue" SET "pattern_id" = {db.param}, "updated_at" = {db.param}, '
               f'"detection" = {detection} WHERE "id" = {db.param}')
        rows = [[issue.pattern_id, Issue.updated_at.db_value(issue.updated_at),
                 None if issue.detection is None else json.dumps(issue.detection), issue.id]
                for issue in self._unsaved.values()]
        with pw.__exception_wrapper__:
            db.cursor().executemany(sql, rows)
        self._unsaved.clear()

    def pattern_id(self, key):
        """The pattern for a fingerprint key (domain, root cause), if there is one yet."""
        if key not in self.patterns:  # not one of the batch's keys, so not looked up yet
            self.patterns.update(_patterns(self.workspace_id, [key]))
            if self.patterns[key] is None:
                self._lock([key])
        return self.patterns[key]

    def _link(self, issue, pattern_id, explained=False):
        """Link (or unlink) the issue; saved by flush(). `explained`: its detection changed."""
        if issue.pattern_id != pattern_id:
            issue.pattern = pattern_id
            issue.updated_at = self.now
            if issue.id not in self.fresh and self.batched:
                self._updates[issue.id] = issue  # one event, at settle(), however often it moves
            elif issue.id not in self.fresh:
                events.record(issue.workspace_id, "issue.updated", issue=issue, changed=["pattern_id"])
        elif not explained:
            return
        self._unsaved[issue.id] = issue

    def _create_pattern(self, name, fingerprint, description):
        pattern_id = Pattern.create(
            id=Pattern.next_id(), workspace=self.workspace_id, name=name[:200], description=description,
            status="watching", fingerprint_domain=fingerprint and fingerprint["domain"],
            fingerprint_root_cause=fingerprint and fingerprint["root_cause"],
            tags=["detected"], created_at=self.now, updated_at=self.now).id
        self.created.add(pattern_id)
        return pattern_id

    def place(self, issue, rule_pattern_id=None):
        """Place a stored issue: where a team rule sends it, by its fingerprint when it was given
        one (by the sender or a team rule), else by similarity. A pinned issue stays put."""
        if issue.pinned:
            return
        if rule_pattern_id is not None:
            self._link(issue, rule_pattern_id)
        elif by_fingerprint(issue.detection):
            self._place_by_fingerprint(issue)
        elif issue.embedding is not None:
            self._place_by_similarity(issue)

    def _place_by_fingerprint(self, issue):
        """Link to its fingerprint's pattern; create that pattern on recurrence."""
        key = (issue.fingerprint_domain, issue.fingerprint_root_cause)
        pattern_id = self.pattern_id(key)
        if pattern_id is None:
            siblings = [self.track(sibling) for sibling in for_update(Issue.in_workspace(self.workspace_id).where(
                (Issue.fingerprint_domain == key[0]) & (Issue.fingerprint_root_cause == key[1])
                & Issue.pattern.is_null() & ~Issue.pinned & (Issue.id != issue.id)).order_by(Issue.created_at, Issue.id))]
            if len(siblings) + 1 < RECURRENCE_FOR_PATTERN:
                return
            fingerprint = {"domain": key[0], "root_cause": key[1]}
            pattern_id = self._create_pattern(
                detection.pattern_name(fingerprint), fingerprint,
                "Detected automatically: these issues share a root-cause fingerprint.")
            self.patterns[key] = pattern_id
            for sibling in siblings:
                self._link(sibling, pattern_id)
        self._link(issue, pattern_id)

    def _place_by_similarity(self, issue):
        index = self.index
        vector = representation.decode_one(issue.embedding)
        index.stop_waiting(issue.id)
        before = issue.pattern_id
        self._uncount(issue, vector)  # not judged against itself
        placement = index.place(vector, issue.source, current=before)
        while placement.pattern_id is None and placement.paired_with:
            partner = self.track(Issue.get_by_id(placement.paired_with))
            if partner.pattern_id is None and not partner.pinned and not by_fingerprint(partner.detection):
                break
            index.stop_waiting(partner.id)  # placed by its fingerprint, or by a person meanwhile
            placement = index.place(vector, issue.source, current=before)
        pattern_id = placement.pattern_id
        if pattern_id is None and placement.paired_with:
            pattern_id = self._pattern_from_pair(issue, partner, vector)
            index.stop_waiting(partner.id)
            self._count(partner, pattern_id, representation.decode_one(partner.embedding))
            self._link(partner, pattern_id)
            self._explain(partner, placement, pattern_id, paired_with=issue.id)
            placement.pattern_id = pattern_id
        if pattern_id is not None:
            self._count(issue, pattern_id, vector)
            self._grown.add(pattern_id)
        else:
            index.wait(issue.id, vector, issue.source)
        self._explain(issue, placement, pattern_id)
        self._link(issue, pattern_id, explained=True)

    def settle(self):
        """Finish placement before the write's own events are recorded: adopt waiting issues,
        then (batched) complete the explanations and record the issue.updated events."""
        self.adopt_waiting()
        if self._unexplained:
            found = similarity.nearest_members(self.index, self._unexplained)
            for issue, pattern_id, _ in self._unexplained:
                if (issue.detection or {}).get("pattern_id") == pattern_id:  # not explained again since
                    issue.detection["nearest"] = found[issue.id]
            self._unexplained.clear()
        for issue in self._updates.values():
            events.record(issue.workspace_id, "issue.updated", issue=issue, changed=["pattern_id"])
        self._updates.clear()

    def adopt_waiting(self, rounds=3):
        """Waiting issues that now clear the threshold with a pattern this write created or
        grew are placed again (that pattern did not exist, or was farther, when they arrived;
        without this they would wait until a report pairs with them, or a regroup). Each
        adoption may grow a pattern in turn: a few rounds."""
        for _ in range(rounds):
            grown, self._grown = self._grown, set()
            if not grown or self._index is None:
                return
            candidates = self._index.waiting_matches(grown)
            stored = {issue.id: issue for issue in for_update(Issue.select().where(Issue.id.in_(candidates)))}
            for issue_id in candidates:
                issue = self.track(stored[issue_id]) if issue_id in stored else None
                if issue is None or issue.pattern_id is not None or issue.pinned or by_fingerprint(issue.detection):
                    self._index.stop_waiting(issue_id)
                    continue
                self._place_by_similarity(issue)

    def _count(self, issue, pattern_id, vector):
        """Add the issue to the in-memory centroid of the pattern it joins in this write."""
        self.index.join(pattern_id, vector, issue.source, issue.link.weight)
        self._counted[issue.id] = (pattern_id, issue.link.weight)

    def _uncount(self, issue, vector):
        """Take the issue out of the in-memory centroid it counts in: the one it joined in
        this write, else the one it belonged to before the write."""
        if issue.id in self._counted:
            pattern_id, weight = self._counted.pop(issue.id)
            self.index.join(pattern_id, vector, issue.source, -weight)
        else:
            self.index.forget(self.issues[issue.id][0] if issue.id in self.issues else issue.link)

    def _pattern_from_pair(self, issue, partner, vector):
        """A new pattern from two issues: named and fingerprinted by the vocabulary's best
        match among them, else named by the more representative title."""
        inferred = [(member.detection or {}).get("score") or 0 for member in (issue, partner)]
        best = max((issue, partner), key=lambda member: (member.detection or {}).get("score") or 0)
        fingerprint = best.fingerprint if max(inferred) > 0 else None
        if fingerprint is not None:
            name = detection.pattern_name(fingerprint)
        else:
            name = similarity.representative_title(
                [(issue.title, vector), (partner.title, representation.decode_one(partner.embedding))])
        return self._create_pattern(name, fingerprint, "Detected automatically: these issues read alike.")

    def _explain(self, issue, placement, pattern_id, paired_with=None):
        """Keep why the issue is where it is (or waits) with it."""
        explanation = placement.explain()
        explanation["pattern_id"] = pattern_id
        if pattern_id is not None and self.batched:
            explanation["nearest"] = []  # settle() adds them
            self._unexplained.append((issue, pattern_id, None if paired_with else placement.query))
        elif pattern_id is not None:
            query = None if paired_with else placement.query
            explanation["nearest"] = similarity.nearest_members(self.index, [(issue, pattern_id, query)])[issue.id]
        if paired_with is not None:
            explanation["paired_with"] = paired_with
        vocabulary = issue.detection or {}
        if vocabulary.get("method") == "vocabulary":
            explanation["vocabulary"] = {key: vocabulary[key] for key in ("score", "matched", "runner_up", "against")
                                         if key in vocabulary} | {"fingerprint": issue.fingerprint}
        elif vocabulary.get("method") == "similarity" and "vocabulary" in vocabulary:
            explanation["vocabulary"] = vocabulary["vocabulary"]
        issue.detection = explanation
        self._unsaved[issue.id] = issue


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
    # Inference and the representation are CPU work: done before the transaction, so no lock
    # waits on them.
    rules = grouping_rules.rules_for(workspace_id)
    embeddings = representation.represent([(r["title"], r.get("description", "")) for r in records])
    prepared = [(record, *_fields(record, rules, embedding)) for record, embedding in zip(records, embeddings)]
    keys = {(fields["fingerprint_domain"], fields["fingerprint_root_cause"])
            for _, fields, rule_pattern in prepared
            if rule_pattern is None and by_fingerprint(fields["detection"]) and fields["fingerprint_domain"]}
    with events.transaction():
        index = None
        if any(rule_pattern is None and not by_fingerprint(fields["detection"]) for _, fields, rule_pattern in prepared):
            similarity.lock_workspace(workspace_id)
            # Loaded before this batch's rows exist: they wait for a partner only once placed.
            index = similarity.Index(workspace_id)
            index.add_to_profiles([(record["source"], vector) for (record, _, _), vector
                                   in zip(prepared, representation.decode(embeddings))])
        grouper = Grouper(workspace_id, now, keys, similarity_index=index, batched=True)
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
                row = _new_row(workspace_id, record, fields, rule_pattern, now)
                rows[key if key[1] is not None else row["id"]] = row
                plan.append(("new", row["id"], fields, rule_pattern))
        inserted = _insert(list(rows.values())) if rows else set()
        created = {row["id"]: grouper.track(Issue(**row), new=True) for row in rows.values() if row["id"] in inserted}
        grouper.fresh.update(created)
        lost = [row for row in rows.values() if row["id"] not in inserted]
        known.update({key: grouper.track(issue) for key, issue in _existing(
            workspace_id, [{"source": r["source"], "external_id": r["external_id"]} for r in lost]).items()})
        ids, placed = [], set()
        for kind, target, fields, rule_pattern in plan:
            if kind == "new" and target in created:
                issue = created[target]
                changed = ["new"]
            else:  # an earlier delivery, or a concurrent one that won the insert
                issue = target if kind == "known" else known[_key_of(rows, target)]
                changed = _refresh(issue, fields, now)
            if issue.id not in placed and (changed or rule_pattern is not None or by_fingerprint(issue.detection)):
                # A repeat with the same text stays where it is (a person may have moved it).
                grouper.place(issue, rule_pattern)
                placed.add(issue.id)
            ids.append(issue.id)
        grouper.settle()
        for issue in created.values():  # after placement: the event shows where it went
            events.record(workspace_id, "issue.created", issue=issue)
        Pattern.links_changed(workspace_id, grouper.moves(), new=grouper.created, rescore=True)
    return ids


def _key_of(rows, row_id):
    return next((row["source"], row["external_id"]) for row in rows.values() if row["id"] == row_id)
