"""Grouping quality and cost of root-cause inference (models/detection.py) on a labelled set.

    .venv/bin/python bench/detection_quality.py [--data PATH] [--half all|first|second]
                                                [--show N] [--verbose] [--repeat N]

--data: a JSON-lines file of labelled reports (title, body, domain, root_cause); default
bench/data/eval_reports.jsonl. Gold labels need not use the vocabulary's names: what is
measured is whether inference groups reports the way the labels do.

Two reports are "grouped" when both get the same non-None inferred fingerprint. Over all
pairs of reports:

    precision = grouped pairs that share a gold label / grouped pairs
    recall    = grouped pairs that share a gold label / pairs that share a gold label
    F1        = their harmonic mean
    no fingerprint = share of reports infer() returns None for

plus the mean time of one infer() call in microseconds (best of --repeat passes).

--half: split the set's groups in two by a fixed rule: sort the distinct gold root_cause
names, even positions are the "first" half, odd positions the "second". Tune the vocabulary
by looking at the first half only; the second half is a held-out estimate, so for it (and for
any --half all run) only aggregate numbers are printed, never a report's text or id.
"""
import argparse
import collections
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from models.detection import infer, vocabulary  # noqa: E402

DATA = os.path.join(ROOT, "bench", "data", "eval_reports.jsonl")


def load(path=DATA):
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def label(report):
    return f"{report['domain']}/{report['root_cause']}"


def half_of(reports, which):
    """The reports of the `which` ("first"/"second") half of the groups (see module doc)."""
    names = sorted({r["root_cause"] for r in reports})
    keep = {name for index, name in enumerate(names) if index % 2 == (0 if which == "first" else 1)}
    return [r for r in reports if r["root_cause"] in keep]


def predict(reports):
    out = []
    for report in reports:
        detection = infer(report["title"], report["body"])
        out.append(None if detection is None else f"{detection.domain}/{detection.root_cause}")
    return out


def timing(reports, repeat):
    """Mean microseconds per infer() call, best of `repeat` passes."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for report in reports:
            infer(report["title"], report["body"])
        best = min(best, time.perf_counter() - started)
    return best / len(reports) * 1e6 if reports else 0.0


def pair_counts(gold, predicted):
    """(grouped pairs, correctly grouped pairs, gold pairs) in O(n) from the contingency table."""
    def pairs(n):
        return n * (n - 1) // 2

    by_gold = collections.Counter(gold)
    by_pred = collections.Counter(p for p in predicted if p is not None)
    cells = collections.Counter((g, p) for g, p in zip(gold, predicted) if p is not None)
    return (sum(pairs(n) for n in by_pred.values()), sum(pairs(n) for n in cells.values()),
            sum(pairs(n) for n in by_gold.values()))


def metrics(reports, predicted):
    gold = [label(r) for r in reports]
    grouped, correct, gold_pairs = pair_counts(gold, predicted)
    precision = correct / grouped if grouped else 0.0
    recall = correct / gold_pairs if gold_pairs else 0.0
    return {
        "reports": len(reports),
        "groups": len(set(gold)),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "no_fingerprint": sum(p is None for p in predicted) / len(reports) if reports else 0.0,
        "fingerprints": len({p for p in predicted if p is not None}),
    }


def confusions(reports, predicted):
    """For each gold group, how its reports were fingerprinted: {gold: Counter(predicted)}."""
    table = collections.defaultdict(collections.Counter)
    for report, p in zip(reports, predicted):
        table[label(report)][p or "None"] += 1
    return table


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=DATA, help="labelled reports (JSON lines)")
    parser.add_argument("--half", choices=["all", "first", "second"], default="all",
                        help="which half of the groups to measure (see module doc)")
    parser.add_argument("--show", type=int, default=0,
                        help="first half only: list how each gold group was fingerprinted")
    parser.add_argument("--verbose", action="store_true",
                        help="first half only: print the reports of groups that were split or merged")
    parser.add_argument("--repeat", type=int, default=3, help="timing passes (best is kept)")
    args = parser.parse_args()

    reports = load(args.data)
    if args.half != "all":
        reports = half_of(reports, args.half)
    vocabulary()  # compile once, outside the timing
    infer("warm-up", "")
    predicted = predict(reports)
    m = metrics(reports, predicted)
    micros = timing(reports, args.repeat)
    print(f"{os.path.relpath(args.data, ROOT)} [{args.half}]: {m['reports']} reports, {m['groups']} groups -> "
          f"{m['fingerprints']} fingerprints  P {m['precision']:.3f}  R {m['recall']:.3f}  F1 {m['f1']:.3f}"
          f"  no fingerprint {m['no_fingerprint']:.1%}  {micros:.0f} us/record")
    if args.half != "first" or not (args.show or args.verbose):
        return
    table = confusions(reports, predicted)
    for gold, counter in sorted(table.items()):
        print(f"  {gold:60s} " + ", ".join(f"{p} x{n}" for p, n in counter.most_common(args.show or None)))
    if args.verbose:
        owners = collections.defaultdict(collections.Counter)  # predicted -> gold groups it holds
        for report, p in zip(reports, predicted):
            owners[p][label(report)] += 1
        for report, p in zip(reports, predicted):
            main_fp = table[label(report)].most_common(1)[0][0]
            if (p or "None") == main_fp and p is not None and len(owners[p]) == 1:
                continue
            d = infer(report["title"], report["body"])
            print(f"-- {report['id']} {label(report)} -> {p}")
            print(f"   T: {report['title']}")
            for line in report["body"].split("\n"):
                print(f"   B: {line}")
            if d is not None:
                print(f"   matched={d.matched} score={d.score:.2f} runner_up={d.runner_up}")


if __name__ == "__main__":
    main()
