"""The cost of evaluating a workspace's grouping rules (models/grouping/rules.py) per issue.

20 rules of every condition kind (contains, glob, regex over title/description/text; source,
team, metadata), most of which miss (the costly case: every rule is tried), run over the
labelled dev reports (real titles and bodies, up to a few kB). Prints µs per issue for

- first_match(): what placement calls per issue, the version read included;
- RuleSet.first_match(): the same rules compiled once, as a batch would use them;
- the compile a rule write costs the next call (cold cache);
- for scale, the built-in vocabulary's detection.infer() on the same reports.

    .venv/bin/python bench/rules.py [--database-url postgresql://...] [--repeat 5]
"""
import argparse
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

REPORTS = os.path.join(ROOT, "bench", "data", "dev", "reports.jsonl")
WORKSPACE = "ws_01abc123"
FINGERPRINT = {"domain": "bench", "root_cause": "rule"}

CONDITIONS = [
    {"match": {"field": "title", "type": "contains", "pattern": "jwks"}},
    {"match": {"field": "text", "type": "contains", "pattern": "certificate has expired"}},
    {"match": {"field": "description", "type": "contains", "pattern": "oomkilled"}, "team": "platform"},
    {"match": {"field": "title", "type": "glob", "pattern": "*kafka*rebalanc*"}},
    {"match": {"field": "text", "type": "glob", "pattern": "*no space left on device*"}},
    {"match": {"field": "title", "type": "glob", "pattern": "[A-Z]*Exception: *deadlock*"}},
    {"match": {"field": "title", "type": "regex", "pattern": r"(?i)\bjwt\b.*(expired|invalid)"}},
    {"match": {"field": "description", "type": "regex", "pattern": r"ERR_[A-Z_]{4,}\s+at\s+\w+\.js"}},
    {"match": {"field": "text", "type": "regex", "pattern": r"(?i)too many (open files|connections)\b"}},
    {"match": {"field": "text", "type": "regex", "pattern": r"upstream connect error.*reset reason: \w+"}},
    {"source": "pagerduty", "team": "payments-core"},
    {"source": "github", "metadata": {"key": "workflow", "value": "nightly-e2e"}},
    {"team": "identity"},
    {"metadata": {"key": "canary"}},
    {"metadata": {"key": "region", "value": "ap-south-2"}},
    {"match": {"field": "title", "type": "contains", "pattern": "stripe webhook"}, "source": "sentry"},
    {"match": {"field": "text", "type": "glob", "pattern": "*quota*exceeded*project*"}},
    {"match": {"field": "title", "type": "regex", "pattern": r"^\[(SEV|P)[0-2]\] .*dns"}},
    {"match": {"field": "description", "type": "contains", "pattern": "SSL routines"}},
    {"match": {"field": "text", "type": "regex", "pattern": r"(?i)(504|gateway time-?out)"}},  # often matches
]


def load_reports():
    with open(REPORTS) as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return [(row["title"], row.get("body", ""), row.get("source", "custom_api"), None, {}) for row in rows]


def per_issue_us(func, issues, repeat):
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for issue in issues:
            func(*issue)
        best = min(best, time.perf_counter() - started)
    return best / len(issues) * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=None, help="default: a temporary SQLite file")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure; the best is printed")
    args = parser.parse_args()

    from app import create_app
    from models import GroupingRule, db, detection
    from models.grouping import rules

    url = args.database_url or f"sqlite:///{tempfile.mkdtemp(prefix='causeloop-rules-')}/bench.db"
    create_app({"USE_MOCK": True, "DATABASE_URL": url, "JWT_SECRET": "bench-" + "x" * 40})
    issues = load_reports()
    with db.connection_context():
        GroupingRule.delete().where(GroupingRule.workspace == WORKSPACE).execute()
        for position, conditions in enumerate(CONDITIONS):
            GroupingRule.create_in(WORKSPACE, {"position": position, "conditions": conditions,
                                               "action": {"fingerprint": FINGERPRINT}})
        matched = sum(rules.first_match(WORKSPACE, *issue) is not None for issue in issues)
        full = per_issue_us(lambda *issue: rules.first_match(WORKSPACE, *issue), issues, args.repeat)
        rule_set = rules.rules_for(WORKSPACE)
        pure = per_issue_us(rule_set.first_match, issues, args.repeat)
        version = per_issue_us(lambda *issue: rules.GroupingRuleVersion.current(WORKSPACE), issues, args.repeat)
        started = time.perf_counter()
        for _ in range(args.repeat):
            rules._compiled.clear()
            rules.rules_for(WORKSPACE)
        compile_ms = (time.perf_counter() - started) / args.repeat * 1e3

    detection.infer("warm up")
    vocabulary = per_issue_us(lambda title, body, *rest: detection.infer(title, body), issues, args.repeat)
    sizes = sorted(len(title) + len(body) for title, body, *_ in issues)
    print(f"database: {url.split(':', 1)[0]}; {len(CONDITIONS)} rules; {len(issues)} reports "
          f"(text median {sizes[len(sizes) // 2]} chars, max {sizes[-1]}); {matched} matched a rule")
    print(f"first_match(), version read included: {full:7.1f} µs/issue")
    print(f"  of which the version read:          {version:7.1f} µs")
    print(f"RuleSet.first_match() (batch):        {pure:7.1f} µs/issue")
    print(f"compile after a rule write:           {compile_ms:7.2f} ms (once per process per write)")
    print(f"for scale, detection.infer():         {vocabulary:7.1f} µs/issue")


if __name__ == "__main__":
    main()
