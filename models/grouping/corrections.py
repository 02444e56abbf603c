"""What a person's placement of an issue teaches the grouping.

A person linking, moving or unlinking an issue (PATCH, bulk, a create naming its pattern)
pins it: no automatic pass moves it again, and its vector leaves the old pattern's centroid for
the new one's (weighing PIN_WEIGHT), so later reports like it are pulled there.

The threshold decides whether an issue joins a pattern at all, so the corrections kept as its
evidence are those that change that: linking a waiting issue (a join grouping should have
made: its score with the pattern it was put in) and unlinking one grouping had placed (a join
it should not have made: its score with the pattern it was taken from). A move between two
patterns is a ranking error, not a threshold one: the pull of the pinned member answers it.
The workspace's threshold is recalibrated from the evidence (similarity.calibrated_threshold).
"""
from .. import audit, events
from ..base import RuleViolation, db, for_update, utcnow
from ..issues import Issue
from ..patterns import PIN_WEIGHT, Pattern
from . import representation, similarity
from .similarity import CannotLink


def person_placed(index, issue, before, new_pattern):
    """Pin `issue` in `new_pattern` (or in no pattern); `before` is its Link before this write.
    Keeps what the placement says about the threshold; returns whether it was evidence."""
    evidence, old_pattern = [], before.pattern_id
    index.forget(before)  # judged without itself
    if issue.embedding is not None:
        vector = representation.decode_one(issue.embedding)
        if new_pattern is None and old_pattern is not None and not issue.pinned:
            score = index.score_of(old_pattern, vector, issue.source)
            if score is not None:
                evidence.append((score, False))
        if old_pattern is None and new_pattern is not None:
            score = index.score_of(new_pattern, vector, issue.source)
            if score is not None:
                evidence.append((score, True))
        if new_pattern is not None:
            index.join(new_pattern, vector, issue.source, PIN_WEIGHT)
    for score, positive in evidence:
        similarity.GroupingCorrection.create(workspace=issue.workspace_id, issue=issue.id, score=score,
                                             positive=positive, created_at=utcnow())
    issue.pattern = new_pattern
    issue.pinned = True
    issue.updated_at = utcnow()
    issue.detection = {"method": "manual", "pattern_id": new_pattern, "previous_pattern_id": old_pattern,
                       "pinned": True, "model_version": representation.MODEL_VERSION,
                       **({"vocabulary": issue.detection["vocabulary"]}
                          if issue.detection and "vocabulary" in issue.detection else {})}
    issue.save()
    if evidence:
        similarity.recalibrate(issue.workspace_id)
    return bool(evidence)



def merge(workspace_id, target_id, source_ids, by_person=True):
    """Merge patterns into `target_id`: every issue of the sources moves there (pinned: a
    person put it there), each source becomes `merged` with `merged_into`, leaves the default
    lists and takes no new issue; rules that routed to a source route to the target. Returns
    the target."""
    from ..ingest import Grouper
    from .rules import GroupingRule, GroupingRuleVersion

    wanted = list(dict.fromkeys(source_ids))
    with events.transaction():
        similarity.lock_workspace(workspace_id)
        target = Pattern.get_in_workspace(target_id, workspace_id, lock=True)
        if target.status == "merged":
            raise RuleViolation("pattern_id", f"Pattern {target_id} was merged into {target.merged_into_id}.")
        if target_id in wanted:
            raise RuleViolation("source_pattern_ids", "A pattern cannot be merged into itself.")
        sources = {p.id: p for p in for_update(Pattern.in_workspace(workspace_id).where(Pattern.id.in_(wanted))
                                               .order_by(Pattern.id))}
        missing = [pid for pid in wanted if pid not in sources]
        if missing:
            raise RuleViolation("source_pattern_ids", f"Pattern {missing[0]} not found in this workspace.")
        merged = [pid for pid in wanted if sources[pid].status == "merged"]
        if merged:
            raise RuleViolation("source_pattern_ids", f"Pattern {merged[0]} was already merged.")
        grouper = Grouper(workspace_id, utcnow())
        moved = for_update(Issue.select().where(Issue.pattern.in_(wanted)).order_by(Issue.id))
        for issue in moved:
            grouper.track(issue)
            if by_person:
                issue.detection = {"method": "manual", "pattern_id": target_id, "merged_from": issue.pattern_id,
                                   "pinned": True, "model_version": representation.MODEL_VERSION}
            issue.pattern, issue.pinned, issue.updated_at = target_id, issue.pinned or by_person, grouper.now
            issue.save()
            events.record(workspace_id, "issue.updated", issue=issue, changed=["pattern_id"])
        for source in sources.values():
            source.status, source.merged_into, source.updated_at = "merged", target_id, grouper.now
            source.save()
            events.record(workspace_id, "pattern.updated", pattern=source, changed=["status", "merged_into"])
        (CannotLink.delete().where((CannotLink.workspace == workspace_id) & (
            ((CannotLink.pattern_a == target_id) & CannotLink.pattern_b.in_(wanted))
            | ((CannotLink.pattern_b == target_id) & CannotLink.pattern_a.in_(wanted))))).execute()
        rules = list(GroupingRule.select().where((GroupingRule.workspace == workspace_id)
                                                 & GroupingRule.pattern.in_(wanted)))
        for rule in rules:
            rule.pattern, rule.action = target_id, {**rule.action, "pattern_id": target_id}
            rule.save()
        if rules:
            GroupingRuleVersion.bump(workspace_id)
        Pattern.links_changed(workspace_id, grouper.moves(), rescore=True)
        audit.record(workspace_id, "pattern.merged", "pattern", target_id,
                     {"source_pattern_ids": wanted, "by_person": by_person})
    return Pattern.get_in_workspace(target_id, workspace_id)


def split(workspace_id, pattern_id, issue_ids, name=None):
    """A new pattern from some of a pattern's issues (pinned there), recorded with the pattern
    as cannot-link: no automatic pass puts them together again. Returns the new pattern."""
    from ..ingest import Grouper

    wanted = list(dict.fromkeys(issue_ids))
    with events.transaction():
        similarity.lock_workspace(workspace_id)
        pattern = Pattern.get_in_workspace(pattern_id, workspace_id, lock=True)
        if pattern.status == "merged":
            raise RuleViolation("pattern_id", f"Pattern {pattern_id} was merged into {pattern.merged_into_id}.")
        members = {i.id: i for i in for_update(Issue.in_workspace(workspace_id).where(
            Issue.id.in_(wanted) & (Issue.pattern == pattern_id)).order_by(Issue.id))}
        strangers = [issue_id for issue_id in wanted if issue_id not in members]
        if strangers:
            raise RuleViolation("issue_ids", f"Issue {strangers[0]} is not a member of pattern {pattern_id}.")
        if len(members) >= pattern.issue_count:
            raise RuleViolation("issue_ids", "A split must leave at least one issue in the pattern.")
        now = utcnow()
        grouper = Grouper(workspace_id, now)
        new = Pattern.create(id=Pattern.next_id(), workspace=workspace_id,
                             name=(name or f"{pattern.name} (split)")[:200],
                             description=f"Split from {pattern_id} by a person.", status="watching",
                             tags=["split"], created_at=now, updated_at=now)
        grouper.created.add(new.id)
        for issue in members.values():
            grouper.track(issue)
            issue.pattern, issue.pinned, issue.updated_at = new.id, True, now
            issue.detection = {"method": "manual", "pattern_id": new.id, "previous_pattern_id": pattern_id,
                               "pinned": True, "model_version": representation.MODEL_VERSION}
            issue.save()
            events.record(workspace_id, "issue.updated", issue=issue, changed=["pattern_id"])
        CannotLink.record(workspace_id, pattern_id, new.id)
        Pattern.links_changed(workspace_id, grouper.moves(), new=grouper.created, rescore=True)
        audit.record(workspace_id, "pattern.split", "pattern", pattern_id,
                     {"new_pattern_id": new.id, "issue_ids": sorted(members)})
    return Pattern.get_in_workspace(new.id, workspace_id)


class _DryRun(Exception):
    pass


def backfill(workspace_id, batch=500):
    """Give every issue of the workspace without one its representation (issues stored before
    similarity grouping, or by bulk loaders), then rebuild the derived data from them. Returns
    how many issues it embedded."""
    done = 0
    while True:
        with db.atomic():
            rows = list(Issue.select(Issue.id, Issue.title, Issue.description)
                        .where((Issue.workspace == workspace_id) & Issue.embedding.is_null())
                        .order_by(Issue.id).limit(batch))
            if not rows:
                break
            for issue, embedding in zip(rows, representation.represent([(i.title, i.description) for i in rows])):
                Issue.update(embedding=embedding).where(Issue.id == issue.id).execute()
            done += len(rows)
    if done:
        with db.atomic():
            Pattern.recount([pid for (pid,) in Pattern.select(Pattern.id).where(Pattern.workspace == workspace_id)
                             .tuples()])
            similarity.SourceProfile.recount(workspace_id)
    return done


def regroup(workspace_id, apply=False):
    """Re-place every unpinned issue grouped by similarity (oldest first), then merge pattern
    pairs whose centroids now clear the threshold (never a cannot-link pair, never moving a
    pinned issue). Returns {"moves": [(issue id, from, to)], "merges": [(source, target, score)]};
    without `apply`, nothing is kept."""
    from ..ingest import Grouper, by_fingerprint

    plan = {"moves": [], "merges": []}
    try:
        with events.transaction():
            similarity.lock_workspace(workspace_id)
            grouper = Grouper(workspace_id, utcnow(), batched=True)
            for issue in for_update(Issue.in_workspace(workspace_id).where(
                    ~Issue.pinned & Issue.embedding.is_null(False)).order_by(Issue.created_at, Issue.id)):
                if by_fingerprint(issue.detection):
                    continue
                issue = grouper.track(issue)
                before = issue.pattern_id
                grouper.place(issue)
                if issue.pattern_id != before:
                    plan["moves"].append((issue.id, before, issue.pattern_id))
            Pattern.links_changed(workspace_id, grouper.moves(), new=grouper.created, rescore=True)
            plan["merges"] = _mergeable(workspace_id)
            for source, target, _ in plan["merges"]:
                merge(workspace_id, target, [source], by_person=False)
            if not apply:
                raise _DryRun
    except _DryRun:
        pass
    return plan


def _mergeable(workspace_id):
    """Pairs (smaller, larger, score) of patterns whose centred centroids score at least the
    threshold plus the pair margin; the smaller has no pinned member; no cannot-link pair; each
    pattern in at most one pair."""
    index = similarity.Index(workspace_id)
    forbidden = CannotLink.pairs(workspace_id)
    pinned = {pid for (pid,) in Issue.select(Issue.pattern).where(
        (Issue.workspace == workspace_id) & Issue.pinned & Issue.pattern.is_null(False)).distinct().tuples()}
    sizes = dict(Pattern.select(Pattern.id, Pattern.issue_count).where(Pattern.id.in_(list(index.sums))).tuples())
    ids, dense, hashed = index.pattern_rows()
    if len(ids) < 2:
        return []
    scores = 0.5 * dense @ dense.T + 0.5 * hashed @ hashed.T
    pairs, used = [], set()
    for i, j in sorted(((i, j) for i in range(len(ids)) for j in range(i + 1, len(ids))),
                       key=lambda ij: -scores[ij]):
        if scores[i, j] < index.threshold + similarity.PAIR_MARGIN:
            break
        small, large = sorted((ids[i], ids[j]), key=lambda pid: (sizes.get(pid, 0), pid))
        if {small, large} & used or frozenset((small, large)) in forbidden or small in pinned:
            continue
        used |= {small, large}
        pairs.append((small, large, round(float(scores[i, j]), 4)))
    return pairs
