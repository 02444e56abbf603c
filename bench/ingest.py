"""Ingest throughput: N records through POST /v1/ingest/batch (500 a batch), on SQLite and on
PostgreSQL, each served by the Procfile's gunicorn. Records are the evaluation set's realistic
reports, cycled with unique external ids, so detection does its real work on every record.

    .venv/bin/python bench/ingest.py [--records 100000] [--clients 2] [--databases sqlite,postgres]
                                     [--keep-alive]

Prints records/s and per-batch latency p50/p99 per database, each gunicorn worker's CPU seconds
and peak RSS (the grouping model loaded), and, measured in-process on the same reports, the
per-record cost of similarity grouping's two steps: the representation (WordLlama + hashed
features) and the assignment (placing a batch against the workspace's patterns). Needs the
`bench` extra.
"""
import argparse
import collections
import concurrent.futures
import json
import os
import shutil
import tempfile
import threading
import time

import requests

from servers import ROOT, postgres, web

REPORTS = os.path.join(ROOT, "bench", "data", "eval_reports.jsonl")
BATCH = 500


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))] if values else float("nan")


def batches(total, run_id):
    with open(REPORTS) as handle:
        reports = [json.loads(line) for line in handle]
    for start in range(0, total, BATCH):
        yield [{"source": reports[n % len(reports)]["source"], "external_id": f"{run_id}-{n}",
                "title": reports[n % len(reports)]["title"], "body": reports[n % len(reports)]["body"],
                "severity": reports[n % len(reports)]["severity"]}
               for n in range(start, min(total, start + BATCH))]


def worker_cpu_seconds(master_pid):
    """CPU seconds each gunicorn worker has used so far (Linux /proc; empty elsewhere)."""
    try:
        workers = open(f"/proc/{master_pid}/task/{master_pid}/children").read().split()
        ticks = [sum(map(int, open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[11:13])) for pid in workers]
    except OSError:
        return []
    return sorted((tick / os.sysconf("SC_CLK_TCK") for tick in ticks), reverse=True)


def worker_peak_rss_mb(master_pid):
    """Peak resident memory (VmHWM) of each gunicorn worker, in MB (Linux /proc)."""
    try:
        workers = open(f"/proc/{master_pid}/task/{master_pid}/children").read().split()
        peaks = [int(next(line.split()[1] for line in open(f"/proc/{pid}/status") if line.startswith("VmHWM")))
                 for pid in workers]
    except (OSError, StopIteration):
        return []
    return sorted((kb / 1024 for kb in peaks), reverse=True)


def component_costs(batches_measured=20):
    """µs per record of the representation and of the assignment, in this process, on the
    reports the bench sends (batches of 500 into a workspace that grows as the run's does)."""
    import sys

    sys.path.insert(0, ROOT)
    from app import create_app
    from models import Membership, Organization, User, Workspace, db
    from models.grouping import representation, similarity
    from models.ingest import ingest

    folder = tempfile.mkdtemp(prefix="causeloop-bench-costs-")
    app = create_app({"DATABASE_URL": f"sqlite:///{folder}/costs.db", "USE_MOCK": True, "LOG_LEVEL": "WARNING"})
    try:
        with app.app_context(), db.connection_context():
            Organization.create(id="org_cost", name="cost")
            Workspace.create(id="ws_cost", organization="org_cost", name="cost")
            representation.model()  # loaded once per process; not part of a record's cost
            encode = place = total = 0.0
            records = 0
            for number, batch in enumerate(batches(batches_measured * BATCH, "cost")):
                for record in batch:
                    record["description"] = record.pop("body")
                started = time.perf_counter()
                vectors = representation.decode(representation.represent(
                    [(r["title"], r["description"]) for r in batch]))
                encoded = time.perf_counter()
                index = similarity.Index("ws_cost")
                for record, vector in zip(batch, vectors):
                    index.place(vector, record["source"])
                placed = time.perf_counter()
                ingest("ws_cost", batch)
                done = time.perf_counter()
                if number:  # the first batch warms caches
                    encode += encoded - started
                    place += placed - encoded
                    total += done - placed
                    records += len(batch)
        print(f"{'':10} per record, in-process: representation {encode / records * 1e6:5.0f} µs, "
              f"assignment {place / records * 1e6:5.0f} µs (index load + placing against the patterns), "
              f"whole ingest {total / records * 1e6:5.0f} µs")
    finally:
        db.close() if not db.is_closed() else None
        shutil.rmtree(folder, ignore_errors=True)


def measure(database_url, args, label):
    env = {"DATABASE_URL": database_url, "USE_MOCK": "1", "RATE_LIMIT": "1000000/minute",
           "LOG_LEVEL": "WARNING", "WEB_CONCURRENCY": str(args.workers)}
    with web(env) as (server, base):
        token = requests.post(base + "/v1/auth/exchange", json={"subject_token": "bench"}, timeout=10).json()
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        if not args.keep_alive:  # each batch races for a worker, as many short-lived senders do
            headers["Connection"] = "close"
        sessions = threading.local()  # each client its own connection, as separate clients have
        latencies, accepted = [], 0

        retries = []

        def send(records):
            started = time.perf_counter()
            if not hasattr(sessions, "session"):
                sessions.session = requests.Session()
            for _ in range(5):
                response = sessions.session.post(base + "/v1/ingest/batch", headers=headers, json={"records": records},
                                        timeout=120)
                if response.status_code != 503:  # a lock wait that ran out: retry, as a client would
                    break
                retries.append(1)
                time.sleep(float(response.headers.get("Retry-After", "1")))
            assert response.status_code == 202, response.text[:300]
            return (time.perf_counter() - started) * 1000, response.json()["accepted"]

        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
            for ms, count in pool.map(send, batches(args.records, f"bench{int(time.time())}")):
                latencies.append(ms)
                accepted += count
        elapsed = time.perf_counter() - started
        busy = worker_cpu_seconds(server.pid)
        peaks = worker_peak_rss_mb(server.pid)
        stats = requests.get(base + "/v1/patterns?limit=100", headers=headers, timeout=30).json()["page"]["total"]
        server.log.seek(0)
        reasons = collections.Counter(line.split("database unavailable: ", 1)[1].strip()
                                      for line in server.log.read().decode(errors="replace").splitlines()
                                      if "database unavailable: " in line)
    print(f"{label:10} {accepted:8d} records in {elapsed:6.1f} s = {accepted / elapsed:7.0f} records/s; "
          f"batch p50 {percentile(latencies, 50):6.0f} ms, p99 {percentile(latencies, 99):6.0f} ms; "
          f"{stats} patterns; {len(retries)} batches retried after a 503")
    if busy:  # a worker that accepted both clients' keep-alive connections serves both alone
        print(f"{'':10} CPU seconds per gunicorn worker: {', '.join(f'{s:.0f}' for s in busy)}")
    if peaks:
        print(f"{'':10} peak RSS per gunicorn worker: {', '.join(f'{mb:.0f} MB' for mb in peaks)}")
    for reason, count in reasons.most_common():  # why the server answered 503
        print(f"{'':10} 503 x{count}: {reason[:300]}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (WEB_CONCURRENCY)")
    parser.add_argument("--databases", default="sqlite,postgres")
    parser.add_argument("--keep-alive", action="store_true",
                        help="each client keeps one connection alive (default: a new connection per batch)")
    args = parser.parse_args()
    print(f"ingest: {args.records} records, batches of {BATCH}, {args.clients} concurrent clients, "
          f"{args.workers} gunicorn workers")
    component_costs()
    work = tempfile.mkdtemp(prefix="causeloop-bench-ingest-")
    try:
        if "sqlite" in args.databases:
            measure(f"sqlite:///{work}/ingest.db", args, "SQLite")
        if "postgres" in args.databases:
            with postgres() as url:
                measure(url, args, "PostgreSQL")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
