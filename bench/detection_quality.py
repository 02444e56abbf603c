"""Grouping quality of root-cause inference (models/detection.py) on the labelled set.

    .venv/bin/python bench/detection_quality.py [--split all|dev|heldout] [--show N] [--verbose]

Two reports are "grouped" when both get the same non-None inferred fingerprint. Over all
pairs of reports, a grouped pair is correct when both carry the same gold label:

    precision = correctly grouped pairs / grouped pairs
    recall    = correctly grouped pairs / pairs that share a gold label
    accuracy  = reports whose inferred fingerprint equals the gold one / reports

Held-out split: reports whose numeric id is divisible by 3 (ev003, ev006, ...). Tune the
vocabulary by looking at "dev" (the other two thirds) only; report held-out figures as they are.
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


def is_heldout(report):
    return int(report["id"].lstrip("ev")) % 3 == 0


def label(report):
    return f"{report['domain']}/{report['root_cause']}"


def predict(reports):
    out = []
    for report in reports:
        detection = infer(report["title"], report["body"])
        out.append(None if detection is None else f"{detection.domain}/{detection.root_cause}")
    return out


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
    return {
        "reports": len(reports),
        "precision": correct / grouped if grouped else 0.0,
        "recall": correct / gold_pairs if gold_pairs else 0.0,
        "accuracy": sum(g == p for g, p in zip(gold, predicted)) / len(reports) if reports else 0.0,
        "unclassified": sum(p is None for p in predicted),
    }


def confusions(reports, predicted):
    counter = collections.Counter()
    examples = collections.defaultdict(list)
    for report, p in zip(reports, predicted):
        if p != label(report):
            key = (label(report), p or "None")
            counter[key] += 1
            examples[key].append(report["id"])
    return counter, examples


def report_block(name, reports, predicted, show, verbose):
    m = metrics(reports, predicted)
    print(f"== {name}: {m['reports']} reports  precision {m['precision']:.3f}  recall {m['recall']:.3f}"
          f"  accuracy {m['accuracy']:.3f}  unclassified {m['unclassified']}")
    counter, examples = confusions(reports, predicted)
    for (gold, pred), n in counter.most_common(show):
        print(f"   {n:3d}  {gold} -> {pred}   [{' '.join(examples[(gold, pred)])}]")
    if verbose:
        by_id = {r["id"]: r for r in reports}
        for (gold, pred) in counter:
            for rid in examples[(gold, pred)]:
                r = by_id[rid]
                d = infer(r["title"], r["body"])
                print(f"-- {rid} {gold} -> {pred}")
                print(f"   T: {r['title']}")
                for line in r["body"].split("\n"):
                    print(f"   B: {line}")
                if d is not None:
                    print(f"   matched={d.matched} score={d.score:.2f} runner_up={d.runner_up}")
    return m


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--split", choices=["all", "dev", "heldout"], default="all",
                        help="which blocks to print (all prints whole set, dev and held-out)")
    parser.add_argument("--show", type=int, default=40, help="confusion pairs to list per block")
    parser.add_argument("--verbose", action="store_true", help="print misclassified reports (dev only!)")
    args = parser.parse_args()

    reports = load()
    vocabulary()  # compile once, outside the timing
    infer("warm-up", "")
    started = time.perf_counter()
    predicted = predict(reports)
    elapsed = time.perf_counter() - started
    dev = [(r, p) for r, p in zip(reports, predicted) if not is_heldout(r)]
    held = [(r, p) for r, p in zip(reports, predicted) if is_heldout(r)]

    if args.split == "all":
        report_block("whole set", reports, predicted, args.show, False)
    if args.split in ("all", "dev"):
        report_block("dev (id % 3 != 0)", [r for r, _ in dev], [p for _, p in dev], args.show,
                     args.verbose)
    if args.split in ("all", "heldout"):
        report_block("held-out (id % 3 == 0)", [r for r, _ in held], [p for _, p in held], args.show,
                     False)
    print(f"inference: {len(reports) / elapsed:,.0f} reports/s")


if __name__ == "__main__":
    main()
