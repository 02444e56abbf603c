"""Grouping quality through the real API, on the labelled report sets in bench/data.

    .venv/bin/python bench/grouping.py [--set eval,dev,fresh] [--seed 1] [--misgroupings 20]
                                       [--json PATH]

Sets (a report's group label is its (domain, root_cause) pair):

- `eval`  bench/data/eval_reports.jsonl  tuning set (also figures on its held-out third: ids
                                         divisible by 3)
- `dev`   bench/data/dev/reports.jsonl   tuning set
- `fresh` bench/data/fresh/reports.jsonl ACCEPTANCE set, held out: only aggregate figures are
                                         ever printed or written for it (no misgroupings, nothing
                                         per report), whatever the options say

Every run below gets its own fresh workspace in its own temporary SQLite file, served by the app
in-process through the Flask test client, with an owner's session. Reports are sent through
`POST /v1/ingest/batch` in batches of 100, in the set's file order, as {source, external_id
(the report id), title, body, severity} — never with a fingerprint. Any non-2xx answer (or a
rejected record) stops the script with the response body and exit status 1.

Pairwise figures: two issues are grouped iff they carry the same non-null `pattern_id` (after
following a pattern's merge, should one report `status: merged` with a `merged_into*` id);
unlinked issues are singletons. Over all pairs of the issues measured,
precision = same-pattern pairs with the same label / same-pattern pairs, recall = same-pattern
pairs with the same label / same-label pairs, F1 their harmonic mean.

1. Cold start. Ingest the whole set; print pairwise P/R/F1, the number of patterns holding
   issues, the share of issues left unlinked and the wall time. Tuning sets only:
   `--misgroupings N` lists the N most common (label -> label of the pattern's plurality) pairs.

2. Learning protocol, in a fresh workspace.
   a. Split: each group's reports (in file order) are shuffled with random.Random(f"{seed}:{label}")
      (label = "domain/root_cause"); A = the first floor(n/2) of them, B = the rest. A and B are
      each sent in file order.
   b. Ingest all of A.
   c. Homes. Each pattern's plurality groups are those with the most A issues in it (ties give
      several). The candidates (group, pattern, count) are taken greedily by count (descending;
      ties by the pattern's earliest A report in file order, then the label): a group gets the
      pattern if neither already has a home/owner. A group left without one gets a new pattern,
      `POST /v1/patterns {"name": "Group <k>"}` (k = its 1-based position in sorted label order;
      no fingerprint: the create schema needs only `name`).
   d. Re-link: `PATCH /v1/issues/{id} {"pattern_id": <home>}` for every A issue not already in
      its group's home.
   e. Ingest all of B; print the share of B reports whose pattern_id is their group's home, and
      the pairwise P/R/F1 over the B issues alone.
   The 10% variant repeats a-e in another fresh workspace, but in (d) only
   round(0.1 * |A|) A issues (Python's round), drawn from all A issues (in file order) with
   random.Random(f"{seed}:relink").sample, are candidates for re-linking (those of them already
   home need no PATCH). Homes are chosen as in (c), from all A issues, so a group may have an
   empty created home.
"""
import argparse
import collections
import contextlib
import json
import os
import random
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

DATA = os.path.join(ROOT, "bench", "data")
SETS = {  # name: (path, role, held-out third reported)
    "eval": (os.path.join(DATA, "eval_reports.jsonl"), "tuning", True),
    "dev": (os.path.join(DATA, "dev", "reports.jsonl"), "tuning", False),
    "fresh": (os.path.join(DATA, "fresh", "reports.jsonl"), "acceptance", False),
}
BATCH = 100
RELINK_FRACTION = 0.1


class Fatal(SystemExit):
    pass


# --- the API, in-process ---------------------------------------------------------------------

class Api:
    """A test client with an owner's token; every call must answer 2xx or the script stops."""

    def __init__(self, client, token):
        self.client, self.headers = client, {"Authorization": f"Bearer {token}"}

    def call(self, method, path, body=None, allow=()):
        response = self.client.open(path, method=method, headers=self.headers, json=body)
        if response.status_code in allow:
            return None
        if not 200 <= response.status_code < 300:
            sys.stderr.write(f"{method} {path} answered {response.status_code}:\n"
                             f"{response.get_data(as_text=True)}\n")
            raise Fatal(1)
        return response.get_json()


@contextlib.contextmanager
def workspace(tag):
    """A fresh app on its own temporary SQLite file, and an owner's session in a new workspace."""
    from app import create_app
    from app.auth import start_session
    from models import ROLE_SCOPES, Membership, Organization, User, Workspace, db

    folder = tempfile.mkdtemp(prefix=f"causeloop-grouping-{tag}-")
    app = create_app({"DATABASE_URL": f"sqlite:///{folder}/grouping.db", "USE_MOCK": True,
                      "TESTING": True, "RATE_LIMIT": "1000000/minute", "LOG_LEVEL": "WARNING",
                      # No task consumer: nothing here is delivered, and its sweeper would
                      # outlive this run's temporary database.
                      "WORKER": "external"})
    database = db.obj
    try:
        with app.app_context(), db.connection_context():
            Organization.create(id="org_bench", name="Grouping bench")
            Workspace.create(id="ws_bench", organization="org_bench", name="Grouping bench")
            User.create(id="usr_bench", email="bench@example.test")
            Membership.create(id="mem_bench", user="usr_bench", workspace="ws_bench", role="owner")
            token = start_session("usr_bench", "ws_bench", ROLE_SCOPES["owner"])["access_token"]
        yield Api(app.test_client(), token)
    finally:
        if not db.is_closed():
            db.close()
        if hasattr(database, "close_all"):
            database.close_all()
        shutil.rmtree(folder, ignore_errors=True)


def ingest(api, reports):
    """Send reports (in the given order, no fingerprints); {report id: issue id}."""
    issue_of = {}
    for start in range(0, len(reports), BATCH):
        chunk = reports[start:start + BATCH]
        records = [{"source": r["source"], "external_id": r["id"], "title": r["title"],
                    "body": r["body"], "severity": r["severity"]} for r in chunk]
        answer = api.call("POST", "/v1/ingest/batch", {"records": records})
        if answer.get("rejected") or len(answer["issue_ids"]) != len(chunk):
            sys.stderr.write(f"ingest rejected records: {json.dumps(answer.get('rejected'))}\n")
            raise Fatal(1)
        issue_of.update(zip((r["id"] for r in chunk), answer["issue_ids"]))
    return issue_of


def links(api, issue_ids):
    """{issue id: pattern id or None} for the given issues, read back by listing the workspace
    (each one missing from the list is fetched on its own)."""
    found, cursor = {}, None
    while True:
        page = api.call("GET", "/v1/issues?limit=100" + (f"&cursor={cursor}" if cursor else ""))
        found.update((issue["id"], issue.get("pattern_id")) for issue in page["data"])
        cursor = page["page"].get("next_cursor")
        if not cursor:
            break
    for issue_id in issue_ids:
        if issue_id not in found:
            found[issue_id] = api.call("GET", f"/v1/issues/{issue_id}").get("pattern_id")
    return {issue_id: found[issue_id] for issue_id in issue_ids}


def canonical(api, pattern_ids):
    """{pattern id: the pattern it stands for}: itself, or, for a pattern whose status is
    `merged`, the end of its `merged_into*` chain (itself when it names none)."""
    answer = {}
    for start in set(pattern_ids) - {None}:
        current, seen = start, set()
        while current not in seen:
            seen.add(current)
            pattern = api.call("GET", f"/v1/patterns/{current}", allow=(404,))
            if not pattern or pattern.get("status") != "merged":
                break
            target = next((value for key, value in sorted(pattern.items())
                           if key.startswith("merged_into") and isinstance(value, str)), None)
            if not target:
                break
            current = target
        answer[start] = current
    answer[None] = None
    return answer


def grouping(api, issue_of):
    """{report id: canonical pattern id or None} for the reports in issue_of."""
    raw = links(api, list(issue_of.values()))
    resolve = canonical(api, raw.values())
    return {report_id: resolve[raw[issue_id]] for report_id, issue_id in issue_of.items()}


# --- figures ---------------------------------------------------------------------------------

def label_of(report):
    return f"{report['domain']}/{report['root_cause']}"


def pairwise(groups, labels, members):
    """(precision, recall, F1) over all pairs of `members`; None groups are singletons."""
    pairs = lambda counter: sum(n * (n - 1) // 2 for n in counter.values())  # noqa: E731
    both = pairs(collections.Counter((groups[m], labels[m]) for m in members if groups[m] is not None))
    grouped = pairs(collections.Counter(groups[m] for m in members if groups[m] is not None))
    same_label = pairs(collections.Counter(labels[m] for m in members))
    precision, recall = both / max(1, grouped), both / max(1, same_label)
    return precision, recall, 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def prf(figures):
    return {"precision": round(figures[0], 4), "recall": round(figures[1], 4), "f1": round(figures[2], 4)}


def misgroupings(groups, labels, members, limit):
    """The most common (label -> label of the plurality of the report's pattern) pairs."""
    in_pattern = collections.defaultdict(collections.Counter)
    for m in members:
        if groups[m] is not None:
            in_pattern[groups[m]][labels[m]] += 1
    plurality = {pattern: max(sorted(counts), key=counts.__getitem__) for pattern, counts in in_pattern.items()}
    confusion = collections.Counter((labels[m], plurality[groups[m]] if groups[m] else "(unlinked)")
                                    for m in members if groups[m] is None or plurality[groups[m]] != labels[m])
    return confusion.most_common(limit)


def show_prf(name, members, figures):
    precision, recall, f1 = figures
    print(f"  {name:16} ({len(members):3d}): pairwise precision {precision:.3f}  recall {recall:.3f}  F1 {f1:.3f}")


# --- phases ----------------------------------------------------------------------------------

def cold_start(name, reports, held_out, misgrouping_limit):
    """Phase 1: the whole set into an empty workspace."""
    started = time.perf_counter()
    with workspace(f"{name}-cold") as api:
        groups = grouping(api, ingest(api, reports))
    seconds = time.perf_counter() - started
    labels = {r["id"]: label_of(r) for r in reports}
    everyone = [r["id"] for r in reports]
    result = {"reports": len(reports), "whole_set": prf(pairwise(groups, labels, everyone)),
              "patterns": len({g for g in groups.values() if g is not None}),
              "unlinked_share": round(sum(g is None for g in groups.values()) / len(reports), 4),
              "seconds": round(seconds, 2)}
    print("-- cold start: the whole set ingested into an empty workspace --")
    show_prf("whole set", everyone, pairwise(groups, labels, everyone))
    if held_out:
        held = [r for r in everyone if int(r[2:]) % 3 == 0]
        result["held_out_third"] = prf(pairwise(groups, labels, held))
        show_prf("held-out third", held, pairwise(groups, labels, held))
    unlinked = sum(g is None for g in groups.values())
    print(f"  {result['patterns']} patterns; {unlinked} issues unlinked ({result['unlinked_share']:.1%}); "
          f"{seconds:.1f} s")
    if misgrouping_limit:
        top = misgroupings(groups, labels, everyone, misgrouping_limit)
        result["misgroupings"] = [{"label": a, "grouped_with": b, "count": n} for (a, b), n in top]
        print(f"  misgroupings (label -> plurality label of its pattern), top {misgrouping_limit}:")
        for (label, other), count in top:
            print(f"    {count:3d}  {label} -> {other}")
    return result


def split_halves(reports, seed):
    """(A, B), each in file order: per group, a seeded shuffle, A = the first floor(n/2)."""
    by_label = collections.defaultdict(list)
    for report in reports:
        by_label[label_of(report)].append(report["id"])
    in_a = set()
    for label, ids in by_label.items():
        ids = list(ids)
        random.Random(f"{seed}:{label}").shuffle(ids)
        in_a.update(ids[:len(ids) // 2])
    return [r for r in reports if r["id"] in in_a], [r for r in reports if r["id"] not in in_a]


def choose_homes(api, a_reports, groups):
    """{label: home pattern id}, and how many homes had to be created (see the docstring, 2c)."""
    order = {r["id"]: index for index, r in enumerate(a_reports)}
    counts = collections.defaultdict(collections.Counter)
    first = {}
    for report in a_reports:
        pattern = groups[report["id"]]
        if pattern is not None:
            counts[pattern][label_of(report)] += 1
            first.setdefault(pattern, order[report["id"]])
    candidates = []
    for pattern, by_label in counts.items():
        top = max(by_label.values())
        candidates += [(-top, first[pattern], label, pattern) for label, n in by_label.items() if n == top]
    homes, owned = {}, set()
    for _, _, label, pattern in sorted(candidates):
        if label not in homes and pattern not in owned:
            homes[label] = pattern
            owned.add(pattern)
    created = 0
    for number, label in enumerate(sorted({label_of(r) for r in a_reports}), start=1):
        if label not in homes:
            homes[label] = api.call("POST", "/v1/patterns", {"name": f"Group {number}"})["id"]
            created += 1
    return homes, created


def relink(api, report_ids, issue_of, groups, labels, homes):
    """PATCH each given A issue not already in its group's home; returns how many were sent."""
    sent = 0
    for report_id in report_ids:
        home = homes[labels[report_id]]
        if groups[report_id] != home:
            api.call("PATCH", f"/v1/issues/{issue_of[report_id]}", {"pattern_id": home})
            sent += 1
    return sent


def learning(name, reports, seed, fraction=None):
    """Phase 2: ingest A, give each group a home, re-link A (all, or a seeded fraction of A),
    ingest B; how many B reports land in their group's home."""
    started = time.perf_counter()
    labels = {r["id"]: label_of(r) for r in reports}
    a_reports, b_reports = split_halves(reports, seed)
    tag = "learn-all" if fraction is None else "learn-part"
    with workspace(f"{name}-{tag}") as api:
        a_issue = ingest(api, a_reports)
        a_groups = grouping(api, a_issue)
        homes, created = choose_homes(api, a_reports, a_groups)
        a_ids = [r["id"] for r in a_reports]
        chosen = a_ids if fraction is None else random.Random(f"{seed}:relink").sample(
            a_ids, round(fraction * len(a_ids)))
        patched = relink(api, chosen, a_issue, a_groups, labels, homes)
        b_issue = ingest(api, b_reports)
        b_groups = grouping(api, b_issue)
        resolve = canonical(api, homes.values())
        homes = {label: resolve[pattern] for label, pattern in homes.items()}
    seconds = time.perf_counter() - started
    b_ids = [r["id"] for r in b_reports]
    at_home = sum(b_groups[r] == homes[labels[r]] for r in b_ids)
    figures = pairwise(b_groups, labels, b_ids)
    result = {"a_reports": len(a_reports), "b_reports": len(b_reports), "relink_candidates": len(chosen),
              "patches": patched, "homes_existing": len(homes) - created, "homes_created": created,
              "b_at_home_share": round(at_home / len(b_ids), 4), "b_pairwise": prf(figures),
              "b_unlinked_share": round(sum(b_groups[r] is None for r in b_ids) / len(b_ids), 4),
              "seconds": round(seconds, 2)}
    what = "every A issue" if fraction is None else f"{fraction:.0%} of A issues ({len(chosen)}, seeded)"
    print(f"-- learning protocol: {what} re-linked to its group's home --")
    print(f"  A {len(a_reports)} / B {len(b_reports)} reports; homes: {result['homes_existing']} existing "
          f"patterns, {created} created; {patched} PATCHes")
    print(f"  B reports in their group's home: {result['b_at_home_share']:.3f} ({at_home}/{len(b_ids)}); "
          f"B unlinked {result['b_unlinked_share']:.1%}; {seconds:.1f} s")
    show_prf("B reports", b_ids, figures)
    return result


def run_set(name, args):
    path, role, held_out = SETS[name]
    with open(path) as handle:
        reports = [json.loads(line) for line in handle if line.strip()]
    groups = len({label_of(r) for r in reports})
    if role == "acceptance":
        print(f"\n==== {name}: ACCEPTANCE figures (held-out set: {len(reports)} reports, {groups} groups; "
              f"aggregates only) ====")
    else:
        print(f"\n==== {name}: tuning figures ({len(reports)} reports, {groups} groups) ====")
    return {"role": role, "groups": groups,
            "cold_start": cold_start(name, reports, held_out, args.misgroupings if role == "tuning" else 0),
            "learning_all": learning(name, reports, args.seed),
            "learning_10pct": learning(name, reports, args.seed, RELINK_FRACTION)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--set", default="eval,dev,fresh",
                        help="comma-separated sets among eval, dev, fresh (default: all three)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the A/B split and the 10%% choice")
    parser.add_argument("--misgroupings", type=int, default=20, metavar="N",
                        help="top N misgroupings of the cold start, tuning sets only (0: none)")
    parser.add_argument("--json", metavar="PATH", help="write every figure as JSON")
    args = parser.parse_args()
    names = [name.strip() for name in args.set.split(",") if name.strip()]
    unknown = [name for name in names if name not in SETS]
    if unknown or not names:
        parser.error(f"unknown set(s): {', '.join(unknown) or '(none)'}; choose among {', '.join(SETS)}")

    started = time.perf_counter()
    results = {"seed": args.seed, "batch": BATCH, "sets": {}}
    for name in names:
        results["sets"][name] = run_set(name, args)
    results["seconds"] = round(time.perf_counter() - started, 1)

    print("\n==== summary (cold F1 / unlinked; B at home, all re-linked / 10%) ====")
    for name, figures in results["sets"].items():
        cold = figures["cold_start"]
        print(f"  {name:5} {figures['role']:10}  cold P {cold['whole_set']['precision']:.3f} "
              f"R {cold['whole_set']['recall']:.3f} F1 {cold['whole_set']['f1']:.3f}, "
              f"unlinked {cold['unlinked_share']:.1%};  B at home {figures['learning_all']['b_at_home_share']:.3f}"
              f" / {figures['learning_10pct']['b_at_home_share']:.3f}")
    print(f"  total {results['seconds']:.1f} s")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
            handle.write("\n")


if __name__ == "__main__":
    main()
