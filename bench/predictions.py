"""How good and how fast the recurrence predictions are (models/rates.py, models/predictions.py).

Quality (default): a synthetic workspace from `flask generate --rates` (patterns recurring at
known rates, half Poisson, half bursty), then the backtest exactly as GET /v1/predictions/accuracy
returns it, for 7 and 30 days: Brier score, log loss and recall at 0.70 next to the two
baselines, calibration by decile and its mean absolute error. Also, since the rates are known,
how far the stored 7-day probabilities are from the true ones.

Scale (--scale): 10,000 patterns over about 1,000,000 issues (generating them takes a minute
or two), then recompute_all() timed from nothing (every row inserted) and again (steady
state), and one write-path recompute of a single pattern. On SQLite, then: lists and GETs
against the Procfile's web process, timed alone and while a warm worker process runs its
periodic recompute (app/tasks.py: recompute_predictions), at steady state and from nothing.

Prints figures, asserts nothing.

    .venv/bin/python bench/predictions.py [--patterns 400] [--issues 60000] [--seed 1]
    .venv/bin/python bench/predictions.py --scale [--busy 1] [--database-url postgresql://...]
"""
import argparse
import contextlib
import math
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

WORKSPACE = "ws_bench_rates"


def open_app(url):
    from app import create_app

    return create_app({"DATABASE_URL": url, "JWT_SECRET": "bench-" + "x" * 40, "USE_MOCK": False})


def print_accuracy(report):
    model, baselines = report["model"], report["baselines"]
    print(f"\nbacktest, window {report['window']}: {report['origins']} origins, {report['samples']} "
          f"(origin, pattern) pairs, recurrence rate {report['recurrence_rate']}")
    print(f"  {'':12} {'brier':>8} {'log loss':>9} {'recall@0.70':>12}")
    for name, scores in (("model", model), ("base rate", baselines["base_rate"]),
                         ("last window", baselines["last_window"])):
        print(f"  {name:12} {scores['brier']:>8} {scores['log_loss']:>9} {str(scores['recall_at_threshold']):>12}")
    print(f"  Brier improvement: {report['brier_improvement']['base_rate']:.1%} over the base rate, "
          f"{report['brier_improvement']['last_window']:.1%} over the last window")
    print(f"  calibration error: {model['calibration_error']} (mean over non-empty deciles), "
          f"{model['weighted_calibration_error']} (weighted by count)")
    for row in model["calibration"]:
        if row["count"]:
            print(f"    [{row['lower']:.1f}, {row['upper']:.1f})  n={row['count']:>6}  predicted "
                  f"{row['mean_predicted']:.3f}  observed {row['observed']:.3f}")


def true_probability(kind, rate, days):
    return 1 - math.exp(-rate * days)  # episodes (a Poisson pattern's issues are its episodes)


def quality(args):
    from fixtures import synthetic
    from models import Prediction, db, predictions, schema

    url = args.database_url or f"sqlite:///{tempfile.mkdtemp()}/predictions.db"
    open_app(url)
    schema.migrate()
    made = synthetic.generate(WORKSPACE, args.issues, args.patterns, seed=args.seed, rates=True)
    print(f"generated {made['issues']} issues in {made['patterns']} patterns ({made['seconds']:.1f} s)")
    with db.connection_context():
        for days in (7, 30):
            started = time.perf_counter()
            report = predictions.accuracy(WORKSPACE, days)
            print_accuracy(report)
            print(f"  (backtest took {time.perf_counter() - started:.2f} s)")
        stored = {p.pattern_id: p.probability for p in Prediction.select().where(Prediction.window_days == 7)}
    gaps = {"poisson": [], "bursty": []}
    for pattern_id, (kind, rate, _) in made["rates"].items():
        if pattern_id in stored:
            gaps[kind].append(abs(stored[pattern_id] - true_probability(kind, rate, 7)))
    for kind, values in gaps.items():
        print(f"\nstored 7-day probability vs the true one ({kind}, {len(values)} patterns): mean |gap| "
              f"{np.mean(values):.3f}, 90th percentile {np.quantile(values, 0.9):.3f}")


def scale(args):
    from fixtures import synthetic
    from models import Prediction, db, events, predictions, schema

    url = args.database_url or f"sqlite:///{tempfile.mkdtemp()}/predictions.db"
    open_app(url)
    schema.migrate()
    started = time.perf_counter()
    made = synthetic.generate(WORKSPACE, args.issues, args.patterns, seed=args.seed, rates=True)
    print(f"generated {made['issues']} issues in {made['patterns']} patterns in {time.perf_counter() - started:.1f} s "
          f"({url.split(':')[0]})")
    with db.connection_context():
        Prediction.delete().execute()
    for label in ("from nothing (every row inserted)", "again (steady state: only changed rows written)"):
        started = time.perf_counter()
        changed = predictions.recompute_all()
        print(f"recompute_all() {label}: {time.perf_counter() - started:.1f} s, {changed[WORKSPACE]} rows changed")
    with db.connection_context():
        busiest = (Prediction.select(Prediction.pattern).where(Prediction.window_days == 7)
                   .order_by(Prediction.expected_count.desc()).limit(1).scalar())
        timings = []
        for _ in range(5):
            started = time.perf_counter()
            with events.transaction():
                predictions.recompute(WORKSPACE, [busiest])
            timings.append(time.perf_counter() - started)
    print(f"write-path recompute of one pattern ({busiest}): {1000 * min(timings):.1f} ms (best of 5)")
    if args.database_url is None:
        reads_during_recompute(url, made["owner_id"], busiest, args.busy)


PERIODIC_TASK = """
import sys
from app import create_app, tasks
app = create_app()
print("ready", flush=True)
sys.stdin.readline()
with app.app_context():
    tasks.recompute_predictions.call_local()
"""
READ_ROUTES = ["/v1/patterns/{pattern}", "/v1/issues?limit=25", "/v1/patterns?limit=25",
               "/v1/predictions?limit=25&window_days=7", "/v1/predictions/summary?window=7d",
               "/v1/issues/{issue}", "/v1/issues?limit=25&severity=high", "/v1/patterns/{pattern}/frequency?window=30d"]


def reads_during_recompute(url, owner_id, pattern_id, busy=0):
    """Lists and GETs against the Procfile's web process (2 workers), timed alone and while a
    warm worker process runs the periodic recompute task: first at steady state, then from
    nothing (every prediction deleted, all rewritten). `busy` processes spinning at normal
    priority throughout stand for a machine with other work on it."""
    import subprocess

    import requests

    from app.auth import start_session
    from models import ROLE_SCOPES, Issue, Prediction, db
    from servers import web

    with open_app(url).app_context(), db.connection_context():
        token = start_session(owner_id, WORKSPACE, ROLE_SCOPES["owner"])["access_token"]
    env = {"DATABASE_URL": url, "JWT_SECRET": "bench-" + "x" * 40, "LOG_LEVEL": "WARNING", "WEB_CONCURRENCY": "2",
           "RATE_LIMIT": "1000000/minute", "WORKER": "external"}
    with db.connection_context():
        issue_id = Issue.select(Issue.id).where(Issue.pattern == pattern_id).limit(1).scalar()
    paths = [path.format(pattern=pattern_id, issue=issue_id) for path in READ_ROUTES]
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
    if hogs:
        print(f"{busy} busy loop(s) at normal priority throughout, alone and during")
    with web(env) as (_, base), requests.Session() as session, contextlib.ExitStack() as stack:
        stack.callback(lambda: [hog.kill() for hog in hogs])
        session.headers["Authorization"] = f"Bearer {token}"

        def one_round():
            took = {}
            for path in paths:
                started = time.perf_counter()
                response = session.get(base + path)
                took[path] = time.perf_counter() - started
                if response.status_code != 200:
                    raise SystemExit(f"{path}: {response.status_code} {response.text[:300]}")
            return took

        def rounds_while(condition, at_least):
            samples = {path: [] for path in paths}
            count = 0
            while count < at_least or condition():
                for path, seconds in one_round().items():
                    samples[path].append(seconds)
                count += 1
            return samples

        for _ in range(20):
            one_round()  # warm caches
        for label, reset in (("steady state", False), ("from nothing", True)):
            if reset:
                with db.connection_context():
                    Prediction.delete().execute()
            alone = rounds_while(lambda: False, 200)  # the same data the worker starts from
            # A warm worker process running its periodic task, as `flask worker` would.
            worker = subprocess.Popen([sys.executable, "-c", PERIODIC_TASK], cwd=ROOT, env={**os.environ, **env},
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert worker.stdout.readline().strip() == "ready"
            started = time.perf_counter()
            worker.stdin.write("go\n")
            worker.stdin.flush()
            during = rounds_while(lambda: worker.poll() is None, 20)
            seconds = time.perf_counter() - started
            print(f"reads while the worker's periodic recompute ran {label} ({seconds:.1f} s, "
                  f"exit {worker.returncode}), median ms alone -> during (change):")
            for path in paths:
                before, after = float(np.median(alone[path])) * 1000, float(np.median(during[path])) * 1000
                print(f"  {path:45} {before:7.2f} -> {after:7.2f}  ({after / before - 1:+.0%}; "
                      f"p95 {np.percentile(alone[path], 95) * 1000:.2f} -> {np.percentile(during[path], 95) * 1000:.2f})")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", action="store_true")
    parser.add_argument("--patterns", type=int)
    parser.add_argument("--issues", type=int)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database-url")
    parser.add_argument("--busy", type=int, default=0,
                        help="--scale: processes spinning at normal priority while reads are timed")
    args = parser.parse_args()
    if args.scale:
        args.patterns, args.issues = args.patterns or 10_000, args.issues or 1_000_000
        scale(args)
    else:
        args.patterns, args.issues = args.patterns or 400, args.issues or 60_000
        quality(args)


if __name__ == "__main__":
    main()
