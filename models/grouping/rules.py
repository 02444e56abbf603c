"""A workspace's own grouping rules: conditions on an issue's text, source, team or metadata
that give it a fingerprint or a pattern, evaluated before the built-in vocabulary.

Placement calls `first_match(workspace_id, title, description, source, team, metadata)`: the
first enabled rule, in ascending `position` (ties by creation order, i.e. by id), whose every
condition holds, as a `Match`; None when no rule matches. Each workspace's rules are compiled
once per process and reused while the workspace's rule version is unchanged: every write of a
rule sets a new random version token in the same transaction, so a process notices another
process's change on its next call, at the cost of one primary-key read.

Text conditions never hang a worker: `contains` is a literal (case-insensitive) substring
test; `glob` (fnmatch syntax, case-insensitive, over the whole field) is translated to an
RE2 expression; `regex` is RE2 syntax, compiled by RE2 (linear time, no backreferences or
lookaround).
"""
import json
import logging
from dataclasses import dataclass

import peewee as pw
import re2
from ulid import ULID

from .. import audit
from ..accounts import Workspace
from ..base import BaseModel, RuleViolation, WorkspaceScoped, db, prepared_rows, utcnow
from ..patterns import Pattern

log = logging.getLogger("causeloop.grouping.rules")

MATCH_TYPES = ("contains", "glob", "regex")
TEXT_FIELDS = ("title", "description", "text")  # text: the title, a newline, the description
MAX_PATTERN_LENGTH = 500
MAX_POSITION = 1_000_000
MERGED = "merged"  # a pattern status that may exist one day; a merged pattern takes no rule
MAX_CACHED_WORKSPACES = 1_000

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a refused expression is the client's 422, not a log line


@dataclass(frozen=True)
class Match:
    """The rule that placed an issue, what it assigns, and why, for the issue's explanation."""

    rule_id: str
    fingerprint: dict | None
    pattern_id: str | None
    reason: str


class GroupingRule(WorkspaceScoped, BaseModel):
    KIND = "Grouping rule"
    ID_PREFIX = "gru"
    id = pw.CharField(primary_key=True, max_length=40)
    workspace = pw.ForeignKeyField(Workspace, backref="grouping_rules", on_delete="CASCADE")
    name = pw.CharField(max_length=200, null=True)
    position = pw.IntegerField()
    enabled = pw.BooleanField(default=True)
    # As the API shows them: {"match": {...}, "source": ..., "team": ..., "metadata": {...}}
    # (the given ones), and {"fingerprint": {...} | None, "pattern_id": ... | None}.
    conditions = pw.JSONField()
    action = pw.JSONField()
    # action["pattern_id"] again, so the database keeps it a pattern of the rule's workspace
    # and a rule leaves with its pattern.
    pattern = pw.ForeignKeyField(Pattern, null=True, backref="grouping_rules", on_delete="CASCADE")
    created_at = pw.DateTimeField(default=utcnow)
    updated_at = pw.DateTimeField(default=utcnow)

    class Meta:
        # Migrations own the schema; these mirror the indexes they create.
        indexes = ((("workspace", "position", "id"), False),)

    @classmethod
    def in_order(cls, workspace_id):
        """The workspace's rules in evaluation order: position, then creation (the id)."""
        return cls.in_workspace(workspace_id).order_by(cls.position, cls.id)

    @classmethod
    def create_in(cls, workspace_id, data):
        fields = dict(data)
        _check(fields)
        now = utcnow()
        with db.atomic():
            # First: on PostgreSQL it locks the workspace's version row, so concurrent
            # creates take "after the last" positions one at a time.
            GroupingRuleVersion.bump(workspace_id)
            _check_pattern(workspace_id, fields["action"])
            if fields.get("position") is None:
                last = cls.in_workspace(workspace_id).select(pw.fn.MAX(cls.position)).scalar()
                fields["position"] = 0 if last is None else min(last + 1, MAX_POSITION)
            rule = cls.create(id=cls.next_id(), workspace=workspace_id, created_at=now, updated_at=now,
                              **_columns(fields))
            audit.record(workspace_id, "grouping_rule.created", "grouping_rule", rule.id,
                         {"name": rule.name, "position": rule.position})
            return rule

    @classmethod
    def update_in(cls, rule_id, workspace_id, changes):
        """Apply a partial update (PATCH: `conditions` and `action` are replaced whole)."""
        changes = dict(changes)
        _check(changes)
        with db.atomic():
            rule = cls.get_in_workspace(rule_id, workspace_id, lock=True)
            columns = _columns(changes)
            changed = {name: value for name, value in columns.items()
                       if getattr(rule, "pattern_id" if name == "pattern" else name) != value}
            if not changed:
                return rule
            if "action" in changed:
                _check_pattern(workspace_id, changes["action"])
            GroupingRuleVersion.bump(workspace_id)
            before = {name: getattr(rule, "pattern_id" if name == "pattern" else name) for name in changed}
            for name, value in changed.items():
                setattr(rule, name, value)
            rule.updated_at = utcnow()
            rule.save()
            audit.record(workspace_id, "grouping_rule.updated", "grouping_rule", rule.id,
                         {name: {"before": before[name], "after": value} for name, value in changed.items()})
        return rule

    @classmethod
    def delete_in(cls, rule_id, workspace_id):
        with db.atomic():
            rule = cls.get_in_workspace(rule_id, workspace_id, lock=True)
            GroupingRuleVersion.bump(workspace_id)
            rule.delete_instance()
            audit.record(workspace_id, "grouping_rule.deleted", "grouping_rule", rule.id, {"name": rule.name})


class GroupingRuleVersion(BaseModel):
    """One row per workspace that has had rules: a token that changes with every rule write,
    the key of the compiled rules each process keeps. Random rather than a counter, so no
    two states ever share one (a counter restarts when a database is reset)."""

    workspace = pw.ForeignKeyField(Workspace, primary_key=True, on_delete="CASCADE")
    version = pw.CharField(max_length=26)

    @classmethod
    def bump(cls, workspace_id):
        token = str(ULID())
        (cls.insert(workspace=workspace_id, version=token)
         .on_conflict(conflict_target=[cls.workspace], update={cls.version: token})
         .execute())

    @classmethod
    def current(cls, workspace_id):
        rows = prepared_rows("GroupingRuleVersion.current", lambda workspace_id: (
            cls.select(cls.version).where(cls.workspace == workspace_id)), workspace_id=workspace_id)
        return rows[0][0] if rows else None


def _columns(fields):
    """Request fields -> model columns (the action's pattern id is also the `pattern` column)."""
    columns = dict(fields)
    if "action" in columns:
        action = {"fingerprint": columns["action"].get("fingerprint"),
                  "pattern_id": columns["action"].get("pattern_id")}
        columns["action"] = action
        columns["pattern"] = action["pattern_id"]
    return columns


def _check(fields):
    """The rules a schema cannot say: the text condition must compile (RE2)."""
    if fields.get("conditions"):
        _compile_conditions(fields["conditions"])


def _check_pattern(workspace_id, action):
    pattern_id = action.get("pattern_id")
    if pattern_id is None:
        return
    found = Pattern.in_workspace(workspace_id).select(Pattern.id, Pattern.status).where(
        Pattern.id == pattern_id).first()
    if found is None:
        raise RuleViolation("action.pattern_id", f"Pattern {pattern_id} not found in this workspace.")
    if getattr(found, "status", None) == MERGED:
        raise RuleViolation("action.pattern_id",
                            f"Pattern {pattern_id} is merged; route to the pattern it was merged into.")


# ---------------------------------------------------------------------------------------------
# Compiling and evaluating.

def _quoted(text):
    return json.dumps(text, ensure_ascii=False)


def compile_re2(expression, field="conditions.match.pattern"):
    """An RE2 program for `expression` (UTF-8 bytes in, for speed), or RuleViolation naming
    `field` with RE2's reason."""
    try:
        return re2.compile(expression.encode("utf-8"), _RE2_OPTIONS)
    except re2.error as error:
        reason = error.args[0] if error.args else "invalid expression"
        reason = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
        raise RuleViolation(field, f"Not a valid RE2 regular expression: {reason}.") from None


def glob_to_re2(pattern):
    """fnmatch syntax (`*`, `?`, `[seq]`, `[!seq]`) as an RE2 expression matching the whole
    text, case-insensitively, newlines included."""
    out, i, n = [], 0, len(pattern)
    while i < n:
        char = pattern[i]
        i += 1
        if char == "*":
            if not out or out[-1] != ".*":
                out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "[":
            j = i + (i < n and pattern[i] == "!")
            j += j < n and pattern[j] == "]"
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:  # no closing bracket: a literal "[", as fnmatch reads it
                out.append(re2.escape("["))
                continue
            body, i = pattern[i:j], j + 1
            negate = body.startswith("!")
            body = body[1:] if negate else body
            body = body.replace("\\", "\\\\").replace("[", "\\[").replace("]", "\\]").replace("^", "\\^")
            out.append("[" + ("^" if negate else "") + body + "]")
        else:
            out.append(re2.escape(char))
    return "(?is)^" + "".join(out) + "$"


class _Subject:
    """One issue's fields as the conditions read them, each form made at most once."""

    __slots__ = ("source", "team", "metadata", "_plain", "_folded", "_utf8")

    def __init__(self, title, description, source, team, metadata):
        self.source, self.team, self.metadata = source, team, metadata or {}
        self._plain = {"title": title or "", "description": description or ""}
        self._folded, self._utf8 = {}, {}

    def plain(self, field):
        if field == "text" and "text" not in self._plain:
            self._plain["text"] = self._plain["title"] + "\n" + self._plain["description"]
        return self._plain[field]

    def folded(self, field):
        if field not in self._folded:
            self._folded[field] = self.plain(field).casefold()
        return self._folded[field]

    def utf8(self, field):
        if field not in self._utf8:
            self._utf8[field] = self.plain(field).encode("utf-8", "surrogatepass")
        return self._utf8[field]


_ABSENT = object()


def _metadata_text(value):
    """A metadata value as a condition's `value` compares with it: strings as they are,
    other scalars as their JSON (5, true, null); objects and lists never equal."""
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, (bool, int, float)):
        return json.dumps(value)
    return _ABSENT


def _compile_match(match):
    kind, field, pattern = match["type"], match.get("field", "text"), match["pattern"]
    if kind == "contains":
        needle = pattern.casefold()
        return (lambda issue: needle in issue.folded(field)), f"{field} contains {_quoted(pattern)}"
    if kind == "glob":
        program = compile_re2(glob_to_re2(pattern))
        return (lambda issue: program.search(issue.utf8(field)) is not None), \
            f"{field} matches glob {_quoted(pattern)}"
    program = compile_re2(pattern)
    return (lambda issue: program.search(issue.utf8(field)) is not None), \
        f"{field} matches regex {_quoted(pattern)}"


def _compile_conditions(conditions):
    """(checks, reason): the checks cheapest first, the reason in the order the API shows."""
    checks, reasons = [], []
    if "source" in conditions:
        source = conditions["source"]
        checks.append(lambda issue: issue.source == source)
    if "team" in conditions:
        team = conditions["team"]
        checks.append(lambda issue: issue.team == team)
    if "metadata" in conditions:
        key, value = conditions["metadata"]["key"], conditions["metadata"].get("value", _ABSENT)
        if value is _ABSENT:
            checks.append(lambda issue: key in issue.metadata)
        else:
            checks.append(lambda issue: _metadata_text(issue.metadata.get(key, _ABSENT)) == value)
    if "match" in conditions:
        check, reason = _compile_match(conditions["match"])
        checks.append(check)
        reasons.append(reason)
    if "source" in conditions:
        reasons.append(f"source is {_quoted(conditions['source'])}")
    if "team" in conditions:
        reasons.append(f"team is {_quoted(conditions['team'])}")
    if "metadata" in conditions:
        key, value = conditions["metadata"]["key"], conditions["metadata"].get("value", _ABSENT)
        reasons.append(f"metadata has {_quoted(key)}" if value is _ABSENT
                       else f"metadata.{key} is {_quoted(value)}")
    if not checks:
        raise RuleViolation("conditions", "A rule needs at least one condition.")
    return tuple(checks), " and ".join(reasons)


@dataclass(frozen=True)
class CompiledRule:
    rule_id: str
    checks: tuple
    match: Match

    def matches(self, issue):
        return all(check(issue) for check in self.checks)


class RuleSet:
    """A workspace's enabled rules, compiled, in evaluation order."""

    def __init__(self, rules):
        self.rules = tuple(rules)

    @classmethod
    def compile(cls, rows):
        compiled = []
        for row in rows:
            try:
                checks, reason = _compile_conditions(row.conditions)
            except RuleViolation as error:  # stored before a stricter RE2: skip it, say so
                log.warning("grouping rule %s does not compile and is skipped: %s", row.id, error.message)
                continue
            action = row.action or {}
            compiled.append(CompiledRule(row.id, checks, Match(
                rule_id=row.id, fingerprint=action.get("fingerprint"), pattern_id=action.get("pattern_id"),
                reason=reason)))
        return cls(compiled)

    def first_match(self, title, description, source, team, metadata):
        if not self.rules:
            return None
        issue = _Subject(title, description, source, team, metadata)
        return next((rule.match for rule in self.rules if rule.matches(issue)), None)


_EMPTY = RuleSet(())
_compiled = {}  # workspace id -> (version token, RuleSet)


def rules_for(workspace_id):
    """The workspace's compiled rules, recompiled only when its version token moved.

    For a batch, call once and use the RuleSet's first_match for every issue: one read fewer
    per issue. The version is read before the rules, so a write landing in between makes
    the next call recompile rather than keep stale rules.
    """
    version = GroupingRuleVersion.current(workspace_id)
    if version is None:
        return _EMPTY
    cached = _compiled.get(workspace_id)
    if cached is not None and cached[0] == version:
        return cached[1]
    rule_set = RuleSet.compile(GroupingRule.in_order(workspace_id).where(GroupingRule.enabled == True))  # noqa: E712
    if len(_compiled) >= MAX_CACHED_WORKSPACES:
        _compiled.clear()
    _compiled[workspace_id] = (version, rule_set)
    return rule_set


def first_match(workspace_id, title, description, source, team, metadata):
    """The first of the workspace's enabled rules that the issue meets, as a Match, else None.

    Rules run in ascending position, ties by creation order; all of a rule's conditions must
    hold. Needs a database connection (the caller's, inside its transaction if it has one).
    Match.fingerprint ({domain, root_cause}) or Match.pattern_id (exactly one is set) is what
    the rule assigns; Match.reason says why, e.g. `title contains "jwks" and source is "sentry"`.
    """
    return rules_for(workspace_id).first_match(title, description, source, team, metadata)
