#!/usr/bin/env python3
"""Validate reports.jsonl (stdlib only). Exits non-zero on any problem."""
import json, re, sys
from collections import Counter, defaultdict

PATH = sys.argv[1] if len(sys.argv) > 1 else "reports.jsonl"
KEYS = {"id", "domain", "root_cause", "source", "severity", "title", "body", "hard", "note"}
SOURCES = {"sentry", "pagerduty", "github", "jira", "datadog", "grafana", "alertmanager", "custom_api", "slack", "logs"}
SEVERITIES = {"critical", "high", "medium", "low"}
HARD = {"worded_many_ways", "several_domains", "shared_surface_words", "body_only_clue"}
SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
ID_RE = re.compile(r"^fr\d{3,}$")

errors = []
def err(msg):
    errors.append(msg)

recs = []
try:
    with open(PATH, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                err(f"line {n}: blank line")
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                err(f"line {n}: invalid JSON ({e})")
                continue
            if not isinstance(r, dict):
                err(f"line {n}: not an object")
                continue
            recs.append((n, r))
except OSError as e:
    print(f"cannot read {PATH}: {e}")
    sys.exit(2)

ids = Counter()
pairs = set()
groups = Counter()
domains = set()
tagged = 0
tag_counts = Counter()
rc_domains = defaultdict(set)
for n, r in recs:
    keys = set(r)
    if keys != KEYS:
        err(f"line {n}: keys differ: missing={sorted(KEYS - keys)} extra={sorted(keys - KEYS)}")
        continue
    for k in ("id", "domain", "root_cause", "source", "severity", "title", "body", "note"):
        if not isinstance(r[k], str):
            err(f"line {n}: {k} must be a string")
    if not isinstance(r["hard"], list) or not all(isinstance(t, str) for t in r["hard"]):
        err(f"line {n}: hard must be a list of strings")
        continue
    if not all(isinstance(r[k], str) for k in KEYS - {"hard"}):
        continue
    if not ID_RE.match(r["id"]):
        err(f"line {n}: bad id {r['id']!r}")
    ids[r["id"]] += 1
    for k in ("domain", "root_cause"):
        if not SNAKE.match(r[k]):
            err(f"line {n}: {k} not snake_case: {r[k]!r}")
    if r["source"] not in SOURCES:
        err(f"line {n}: bad source {r['source']!r}")
    if r["severity"] not in SEVERITIES:
        err(f"line {n}: bad severity {r['severity']!r}")
    if not (10 <= len(r["title"]) <= 200):
        err(f"line {n}: title length {len(r['title'])} outside 10-200")
    if r["title"] != r["title"].strip() or "\n" in r["title"]:
        err(f"line {n}: title has surrounding whitespace or newline")
    if r["body"] and len(r["body"].split("\n")) > 12:
        err(f"line {n}: body has {len(r['body'].split(chr(10)))} lines (> 12)")
    bad = [t for t in r["hard"] if t not in HARD]
    if bad:
        err(f"line {n}: unknown hard tags {bad}")
    if len(set(r["hard"])) != len(r["hard"]):
        err(f"line {n}: duplicate hard tags")
    if r["hard"] and not r["note"].strip():
        err(f"line {n}: hard tags without note")
    if not r["hard"] and r["note"]:
        err(f"line {n}: note must be empty when hard is empty")
    key = (r["title"], r["body"])
    if key in pairs:
        err(f"line {n}: duplicate title+body")
    pairs.add(key)
    groups[(r["domain"], r["root_cause"])] += 1
    domains.add(r["domain"])
    rc_domains[r["root_cause"]].add(r["domain"])
    if r["hard"]:
        tagged += 1
    tag_counts.update(r["hard"])

for i, c in ids.items():
    if c > 1:
        err(f"duplicate id {i} ({c}x)")
total = len(recs)
if total < 420:
    err(f"only {total} reports (< 420)")
if len(groups) < 32:
    err(f"only {len(groups)} groups (< 32)")
if len(domains) < 12:
    err(f"only {len(domains)} domains (< 12)")
for g, c in groups.items():
    if not (6 <= c <= 25):
        err(f"group {g} has {c} reports (outside 6-25)")
if len(set(groups.values())) < 2:
    err("all groups have the same size")
if total and tagged * 3 < total:
    err(f"only {tagged}/{total} reports carry a hard tag (< 1/3)")
for t in HARD:
    if tag_counts[t] == 0:
        err(f"no report tagged {t}")
shared_rc = {rc: sorted(d) for rc, d in rc_domains.items() if len(d) > 1}

print(f"reports={total} groups={len(groups)} domains={len(domains)} tagged={tagged}")
print("hard tags: " + ", ".join(f"{t}={tag_counts[t]}" for t in sorted(HARD)))
print("group sizes: min=%d max=%d distinct=%d" % (min(groups.values() or [0]), max(groups.values() or [0]), len(set(groups.values()))))
if shared_rc:
    print(f"note: root_cause names used under several domains: {shared_rc}")
if errors:
    print(f"FAIL: {len(errors)} problem(s)")
    for e in errors[:50]:
        print("  " + e)
    sys.exit(1)
print("OK")
