#!/usr/bin/env python3
"""Validate reports.jsonl against the brief. Stdlib only. Exit 1 on any problem."""
import json, re, sys, os
from collections import Counter, defaultdict

PATH = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "reports.jsonl")
KEYS = {"id", "domain", "root_cause", "source", "severity", "title", "body", "hard", "note"}
SOURCES = {"sentry", "pagerduty", "github", "jira", "datadog", "grafana", "alertmanager", "custom_api", "slack", "logs"}
SEVERITIES = {"critical", "high", "medium", "low"}
TAGS = {"worded_many_ways", "several_domains", "shared_surface_words", "body_only_clue"}
SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
ID = re.compile(r"^dv\d{3,}$")
MIN_REPORTS, MIN_GROUPS, MIN_DOMAINS, MIN_G, MAX_G = 420, 32, 12, 6, 25

errors = []
def err(msg): errors.append(msg)

rows = []
with open(PATH, encoding="utf-8") as f:
    for n, line in enumerate(f, 1):
        if not line.strip():
            err(f"line {n}: blank line"); continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            err(f"line {n}: invalid JSON: {e}"); continue
        if not isinstance(d, dict):
            err(f"line {n}: not an object"); continue
        if set(d) != KEYS:
            err(f"line {n}: keys {sorted(d)} != {sorted(KEYS)}"); continue
        for k in KEYS - {"hard"}:
            if not isinstance(d[k], str):
                err(f"line {n}: {k} must be a string")
        if not isinstance(d["hard"], list) or not all(isinstance(t, str) for t in d["hard"]):
            err(f"line {n}: hard must be a list of strings"); continue
        if any(not isinstance(d[k], str) for k in KEYS - {"hard"}):
            continue
        if not ID.match(d["id"]): err(f"line {n}: bad id {d['id']!r}")
        for k in ("domain", "root_cause"):
            if not SNAKE.match(d[k]): err(f"line {n}: {k} not snake_case: {d[k]!r}")
        if d["source"] not in SOURCES: err(f"line {n}: bad source {d['source']!r}")
        if d["severity"] not in SEVERITIES: err(f"line {n}: bad severity {d['severity']!r}")
        if not 10 <= len(d["title"]) <= 200: err(f"{d['id']}: title length {len(d['title'])}")
        if "\n" in d["title"]: err(f"{d['id']}: newline in title")
        if d["body"] and len(d["body"].split("\n")) > 12: err(f"{d['id']}: body has {len(d['body'].split(chr(10)))} lines (max 12)")
        bad = [t for t in d["hard"] if t not in TAGS]
        if bad: err(f"{d['id']}: unknown hard tags {bad}")
        if len(set(d["hard"])) != len(d["hard"]): err(f"{d['id']}: duplicate hard tags")
        if d["hard"] and not d["note"].strip(): err(f"{d['id']}: hard tags but empty note")
        if not d["hard"] and d["note"]: err(f"{d['id']}: note without hard tags")
        rows.append(d)

ids = Counter(r["id"] for r in rows)
for i, c in ids.items():
    if c > 1: err(f"duplicate id {i} x{c}")
texts = Counter((r["title"], r["body"]) for r in rows)
for t, c in texts.items():
    if c > 1: err(f"duplicate report (title+body) x{c}: {t[0][:60]!r}")

groups = Counter((r["domain"], r["root_cause"]) for r in rows)
domains = {d for d, _ in groups}
rc_domains = defaultdict(set)
for d, rc in groups: rc_domains[rc].add(d)
if len(rows) < MIN_REPORTS: err(f"only {len(rows)} reports (< {MIN_REPORTS})")
if len(groups) < MIN_GROUPS: err(f"only {len(groups)} groups (< {MIN_GROUPS})")
if len(domains) < MIN_DOMAINS: err(f"only {len(domains)} domains (< {MIN_DOMAINS})")
for g, c in groups.items():
    if not MIN_G <= c <= MAX_G: err(f"group {g} has {c} reports (allowed {MIN_G}-{MAX_G})")
if len(set(groups.values())) < 2: err("all groups have the same size")
for rc, ds in rc_domains.items():
    if len(ds) > 1: print(f"note: root_cause {rc!r} appears under domains {sorted(ds)} (must be genuinely different groups)")
tagged = sum(1 for r in rows if r["hard"])
if rows and tagged * 3 < len(rows): err(f"only {tagged}/{len(rows)} reports carry a hard tag (< 1/3)")
tag_counts = Counter(t for r in rows for t in r["hard"])
for t in TAGS:
    if tag_counts[t] == 0: err(f"no report tagged {t}")
# per group: at least 2 sources (brief: mix sources within each group)
src_by_group = defaultdict(set)
for r in rows: src_by_group[(r["domain"], r["root_cause"])].add(r["source"])
for g, s in src_by_group.items():
    if len(s) < 3: err(f"group {g} uses only {len(s)} sources")
# ids must not follow group order (shuffled): adjacent ids should rarely share a group
ordered = sorted(rows, key=lambda r: int(r["id"][2:]))
same = sum(1 for a, b in zip(ordered, ordered[1:]) if (a["domain"], a["root_cause"]) == (b["domain"], b["root_cause"]))
if ordered and same > len(ordered) * 0.15: err(f"ids look unshuffled: {same} adjacent same-group pairs")

print(f"reports={len(rows)} groups={len(groups)} domains={len(domains)} tagged={tagged} ({tagged/len(rows):.0%})" if rows else "no rows")
print("sizes:", sorted(groups.values()))
print("hard:", dict(sorted(tag_counts.items())))
print("sources:", dict(Counter(r["source"] for r in rows).most_common()))
print("severity:", dict(Counter(r["severity"] for r in rows).most_common()))
if errors:
    print(f"FAIL: {len(errors)} problem(s)")
    for e in errors[:200]: print("  -", e)
    sys.exit(1)
print("OK")
