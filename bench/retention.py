"""Retention under load: `flask prune` over 200,000 issues on SQLite while clients keep writing.

Generates a workspace of `--issues` issues over `--patterns` patterns with `flask generate`
(timestamps over two years ending now, so most are older than 30 days), sets its
`issues_days` to 30, serves the database with the Procfile's web process, and keeps
`--writers` clients (one by default) creating issues (POST /v1/issues) in that workspace throughout. After a
few seconds of writes alone (the baseline), `flask prune` runs as a separate process, as
production runs it. Beside the clients, a lock probe opens a write transaction
(BEGIN IMMEDIATE; COMMIT) every 20 ms on its own connection and times how long it waited for
the database's write lock: the longest of those waits is how long the prune blocked writes.

Prints the rows deleted and the prune's duration, write latency p50/p99/max before and during
the prune, the lock probe's longest wait (the target: at most 200 ms), then checks that
every pattern's counters equal a fresh COUNT of its issues. SQLite only: PostgreSQL's row
locks never block an insert of another row.

    .venv/bin/python bench/retention.py [--issues 200000] [--patterns 2000] [--writers 1] [--batch-size 500]
"""
import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

import requests

from servers import ROOT, web

WORKSPACE = "ws_bench_retention"
SECRET = "bench-retention-secret-0123456789abcdefghijklmnop"
WARM_UP_S = 3.0  # the first writes load the grouping model
BASELINE_S = 5.0
PROBE_EVERY_S = 0.02


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))] if values else float("nan")


def flask(env, *args):
    began = time.perf_counter()
    done = subprocess.run([os.path.join(os.path.dirname(sys.executable), "flask"), "--app", "wsgi", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"flask {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout, time.perf_counter() - began


def owner_headers(url):
    """A real session token for the generated workspace's owner, with retention set to 30 days."""
    sys.path.insert(0, ROOT)
    from app import create_app
    from app.auth import start_session
    from models import ROLE_SCOPES, Membership, RetentionSettings, db

    app = create_app({"DATABASE_URL": url, "JWT_SECRET": SECRET, "USE_MOCK": True, "LOG_LEVEL": "WARNING"})
    with app.app_context(), db.connection_context():
        RetentionSettings.replace(workspace=WORKSPACE, issues_days=30).execute()
        owner = Membership.get(Membership.workspace == WORKSPACE).user_id
        token = start_session(owner, WORKSPACE, ROLE_SCOPES["owner"])["access_token"]
    db.close_all() if hasattr(db.obj, "close_all") else None
    return {"Authorization": f"Bearer {token}"}


def counters_exact(path):
    """(patterns checked, patterns whose counters differ from a fresh COUNT of their issues)."""
    with sqlite3.connect(path) as connection:
        rows = connection.execute(
            "SELECT p.id, p.issue_count, p.linked_low, p.linked_medium, p.linked_high, p.linked_critical,"
            " COUNT(i.id), COALESCE(SUM(i.severity = 0), 0), COALESCE(SUM(i.severity = 1), 0),"
            " COALESCE(SUM(i.severity = 2), 0), COALESCE(SUM(i.severity = 3), 0)"
            " FROM pattern p LEFT JOIN issue i ON i.pattern_id = p.id WHERE p.workspace_id = ?"
            " GROUP BY p.id", (WORKSPACE,)).fetchall()
    return len(rows), [row[0] for row in rows if row[1:6] != row[6:11]]


def count_issues(path):
    with sqlite3.connect(path) as connection:
        return connection.execute("SELECT COUNT(*) FROM issue WHERE workspace_id = ?", (WORKSPACE,)).fetchone()[0]


class Writers:
    """`count` clients creating issues back to back; each write's (start, latency ms, status)."""

    def __init__(self, base, headers, count):
        self.base, self.headers, self.count = base, headers, count
        self.samples, self.stopping = [], threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(n,)) for n in range(count)]

    def run(self, number):
        session, n = requests.Session(), 0
        while not self.stopping.is_set():
            n += 1
            began = time.perf_counter()
            response = session.post(self.base + "/v1/issues", headers=self.headers, timeout=60, json={
                "title": f"Checkout API timeout under load {number}-{n}", "source": "bench",
                "description": "Requests to the payment gateway time out after 30 s during the retention run."})
            self.samples.append((began, (time.perf_counter() - began) * 1000, response.status_code))

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        for thread in self.threads:
            thread.join()


class LockProbe:
    """Opens a write transaction every PROBE_EVERY_S and times the wait for the write lock,
    asking for it every millisecond: SQLite's own busy handler backs off to one look every
    100 ms and then misses the gaps between other writers' transactions, which would measure
    its back-off, not how long the lock was held."""

    def __init__(self, path):
        self.path, self.samples, self.stopping = path, [], threading.Event()
        self.thread = threading.Thread(target=self.run)

    def run(self):
        connection = sqlite3.connect(self.path, timeout=0, isolation_level=None)
        while not self.stopping.wait(PROBE_EVERY_S):
            began = time.perf_counter()
            while True:
                try:
                    connection.execute("BEGIN IMMEDIATE")
                    break
                except sqlite3.OperationalError:  # locked: look again
                    time.sleep(0.001)
            waited = (time.perf_counter() - began) * 1000
            connection.execute("COMMIT")
            self.samples.append((began, waited))
        connection.close()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.thread.join()


def summary(label, latencies):
    if not latencies:
        return f"{label}: none"
    return (f"{label}: {len(latencies):5d} writes, p50 {percentile(latencies, 50):6.1f} ms, "
            f"p99 {percentile(latencies, 99):6.1f} ms, max {max(latencies):6.1f} ms")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--issues", type=int, default=200_000)
    parser.add_argument("--patterns", type=int, default=2_000)
    parser.add_argument("--writers", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=500, help="flask prune --batch-size")
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="causeloop-bench-retention-")
    path = os.path.join(work, "retention.db")
    url = f"sqlite:///{path}"
    env = {**os.environ, "DATABASE_URL": url, "JWT_SECRET": SECRET, "USE_MOCK": "1", "LOG_LEVEL": "WARNING",
           "RATE_LIMIT": "1000000/minute"}
    try:
        print(f"load average (1, 5, 15 min): {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        _, seconds = flask(env, "generate", "--workspace", WORKSPACE, "--issues", str(args.issues),
                           "--patterns", str(args.patterns))
        print(f"generated {args.issues:,} issues over {args.patterns:,} patterns in {seconds:.0f} s")
        headers = owner_headers(url)
        before = count_issues(path)
        with web(env) as (_, base), Writers(base, headers, args.writers) as writers, LockProbe(path) as probe:
            time.sleep(WARM_UP_S)
            baseline_began = time.perf_counter()
            time.sleep(BASELINE_S)
            prune_began = time.perf_counter()
            output, prune_s = flask(env, "prune", "--batch-size", str(args.batch_size))
            prune_ended = time.perf_counter()
            time.sleep(1.0)
        print(f"prune (--batch-size {args.batch_size}) took {prune_s:.1f} s; {before:,} issues before, "
              f"{count_issues(path):,} after (the writers' included); it printed:")
        print("\n".join("    " + line for line in output.strip().splitlines()))
        baseline = [ms for began, ms, _ in writers.samples if baseline_began <= began < prune_began]
        during = [ms for began, ms, _ in writers.samples if prune_began <= began < prune_ended]
        failed = [status for _, _, status in writers.samples if status != 201]
        print(summary(f"{args.writers} writers before the prune", baseline))
        print(summary(f"{args.writers} writers during the prune", during))
        if failed:
            print(f"writes that failed: {len(failed)} (statuses {sorted(set(failed))})")
        for label, low, high in (("before", baseline_began, prune_began), ("during", prune_began, prune_ended)):
            waits = [ms for began, ms in probe.samples if low <= began < high]
            print(f"lock probe {label} the prune: {len(waits):5d} write transactions, waited for the write lock "
                  f"p50 {percentile(waits, 50):6.1f} ms, p99 {percentile(waits, 99):6.1f} ms, "
                  f"max {max(waits, default=0):6.1f} ms")
        checked, wrong = counters_exact(path)
        print(f"counters: {checked:,} patterns checked against a fresh COUNT, "
              f"{'all exact' if not wrong else f'{len(wrong)} differ: ' + ', '.join(wrong[:5])}")
        print(f"load average (1, 5, 15 min): {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
