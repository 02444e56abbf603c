"""Webhooks under load: outbound, 10,000 events fanned out to 5 receivers on loopback; inbound,
signed deliveries from concurrent senders to 2 gunicorn workers, at full tilt and at half of it.

Outbound: the Procfile's web process (WORKER=external) and its worker process on a SQLite file;
five threaded HTTP/1.1 receivers verifying every message with standardwebhooks, the last one
failing a share of its requests (`--flaky`, default 20 %) with retries scaled down
(`--retry-scale`). Events come from `/v1/ingest/batch` (each record: an issue.created, plus the
pattern events it causes). Commit → delivery is the outbox event's time to the receiver verifying
it (one clock), measured in three phases, each waiting for the one before to drain:
  burst    `--events` written as fast as ingestion commits them (the rate is printed); the
           latency is then mostly time queued behind the burst
  rate     as many events again (`--events`), offered evenly at `--rate` records a second; by
           default at 60 % of the delivery throughput the burst reached (the rate is printed):
           latency at a stated load below capacity
  trickle  one write every 200 ms: latency with no backlog
Prints deliveries/s, p50/p99 per phase (all receivers, and the healthy ones only), whether every
receiver got every event, each process's CPU seconds and the load average.

Inbound: a `custom_api` connector (HMAC-SHA256 over "<t>.<body>"), `--inbound` signed deliveries
from `--inbound-clients` concurrent senders (a new connection each, as webhook senders do) to
gunicorn with 2 workers, on each of `--inbound-databases`; then half as many offered at half the
throughput the senders reached (open loop: latency from when each delivery was due). Three kinds,
each timed on its own:
  accepted    a new failure: verify, dedupe claim, ingestion with detection (representation,
              vocabulary, grouping), commit
  resolve     a delivery resolving an issue by external id: the same path without detection
  duplicate   a redelivery of an accepted id: verify and the dedupe lookup only
Asserts nothing.

    .venv/bin/python bench/webhooks.py [--events 10000] [--rate RECORDS_PER_S] [--inbound 2000]
                                       [--skip-outbound] [--skip-inbound]
"""
import argparse
import concurrent.futures
import contextlib
import datetime
import http.server
import json
import os
import random
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

import requests
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from servers import ROOT, postgres, web

sys.path.insert(0, ROOT)
from app.inbound import custom_api  # noqa: E402  (the documented signing, as a sender does it)

SEED_WORKSPACE = "ws_01abc123"


class Receiver:
    def __init__(self, fail_share, seed):
        self.secret, self.fail_share, self.random = None, fail_share, random.Random(seed)
        self.lock = threading.Lock()
        self.arrived = {}  # webhook-id -> seconds from commit to verified arrival (first arrival)
        self.requests = self.refused = self.bad = 0
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keeps connections alive, as production servers do

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                self.send_response(receiver.receive(body, {k.lower(): v for k, v in self.headers.items()}))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def receive(self, body, headers):
        with self.lock:
            self.requests += 1
            if self.random.random() < self.fail_share:
                self.refused += 1
                return 503
        try:
            message = Webhook(self.secret).verify(body, headers)
        except WebhookVerificationError:
            with self.lock:
                self.bad += 1
            return 401
        committed = datetime.datetime.fromisoformat(message["timestamp"].replace("Z", "+00:00"))
        latency = (datetime.datetime.now(datetime.UTC) - committed).total_seconds()
        with self.lock:
            self.arrived.setdefault(headers["webhook-id"], latency)
        return 204

    def seen(self):
        with self.lock:
            return dict(self.arrived)


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def ms(values, q):
    return f"{percentile(values, q) * 1000:,.0f} ms"


def outbox_count(database):
    with contextlib.closing(sqlite3.connect(database)) as connection:
        return connection.execute("SELECT count(*) FROM event WHERE workspace_id = ?", (SEED_WORKSPACE,)).fetchone()[0]


def cpu_seconds(pid, children=False):
    """CPU seconds of a process (and of its child processes, for gunicorn's workers), from /proc."""
    def own(p):
        try:
            fields = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            return 0.0
    total = own(pid)
    if children:
        with contextlib.suppress(OSError):
            total += sum(own(child) for child in open(f"/proc/{pid}/task/{pid}/children").read().split())
    return total


def load():
    return "load average " + " ".join(f"{value:.2f}" for value in os.getloadavg())


def ingest(base, headers, count, start):
    records = [{"title": f"Bench failure {start + n} in checkout-{n % 37}", "source": "bench",
                "external_id": f"bench-{start + n}", "severity": "medium"} for n in range(count)]
    requests.post(base + "/v1/ingest/batch", headers=headers, json={"records": records}, timeout=60).raise_for_status()
    return count


def wait_for(receivers, expected, started, timeout):
    """Wait until each receiver has its expected count; returns the seconds from `started` until
    the healthy ones (all but the last) had theirs, and until all had."""
    deadline, healthy_done = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        counts = [len(r.seen()) for r in receivers]
        if healthy_done is None and all(c >= e for c, e in zip(counts[:-1], expected[:-1])):
            healthy_done = time.perf_counter() - started
        if all(c >= e for c, e in zip(counts, expected)):
            break
        time.sleep(0.05)
    return healthy_done or float("nan"), time.perf_counter() - started


def outbound(args):
    folder = tempfile.mkdtemp(prefix="causeloop-bench-webhooks-")
    database = os.path.join(folder, "bench.db")
    env = {"USE_MOCK": "1", "RATE_LIMIT": "1000000/minute", "DATABASE_URL": f"sqlite:///{database}",
           "WORKER": "external", "WORKER_THREADS": str(args.threads), "WEBHOOKS_ALLOW_INSECURE": "1",
           "WEBHOOK_RETRY_SCALE": str(args.retry_scale), "WEBHOOK_SWEEP_S": "1", "LOG_LEVEL": "WARNING"}
    receivers = [Receiver(args.flaky if n == args.endpoints - 1 else 0.0, n) for n in range(args.endpoints)]
    # name -> (events, seconds writing, (seconds until the healthy receivers had all, until all had),
    #          {webhook-id} per receiver)
    phases = {}
    print(f"outbound: {args.endpoints} endpoints, worker threads {args.threads}, retry scale {args.retry_scale}, "
          f"receiver {args.endpoints - 1} failing {args.flaky:.0%}; {load()}")
    with web(env) as (server, base):
        tokens = requests.post(base + "/v1/auth/exchange", json={"subject_token": "x"}, timeout=5).json()
        headers = {"Authorization": f"Bearer {tokens['access_token']}"}
        for receiver in receivers:
            created = requests.post(base + "/v1/webhooks", headers=headers, timeout=5,
                                    json={"url": receiver.url, "events": ["*"]}).json()
            receiver.secret = created["secret"]
        log = tempfile.TemporaryFile()
        worker = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "flask"), "--app", "wsgi", "worker"],
                                  cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
        cpu_before = (cpu_seconds(server.pid, children=True), resource.getrusage(resource.RUSAGE_SELF))
        sent, total = 0, outbox_count(database)

        def phase(name, write, timeout):
            nonlocal total
            before = [set(r.seen()) for r in receivers]
            started = time.perf_counter()
            write()
            written = time.perf_counter() - started
            events = outbox_count(database) - total
            total += events
            done = wait_for(receivers, [len(b) + events for b in before], started, timeout)
            phases[name] = (events, written, done, [set(r.seen()) - b for r, b in zip(receivers, before)])
            print(f"  {name}: {events} events written in {written:.1f} s ({events / written:,.0f} events/s); "
                  f"{load()}", flush=True)

        def burst():
            nonlocal sent
            while outbox_count(database) - total < args.events:
                sent += ingest(base, headers, 200, sent)

        def offered(rate):
            nonlocal sent
            per_tick, tick = max(1, round(rate / 20)), 0.05  # records every 50 ms
            started, first = time.perf_counter(), total
            for n in range(10**9):
                if outbox_count(database) - first >= args.events:
                    break
                sent += ingest(base, headers, per_tick, sent)
                time.sleep(max(0.0, started + (n + 1) * tick - time.perf_counter()))

        def trickle():
            for n in range(args.trickle):
                requests.post(base + "/v1/issues", headers=headers, json={"title": f"Trickle {n}"}, timeout=10)
                time.sleep(0.2)

        try:
            sent_before = sent
            phase("burst", burst, args.timeout)
            # The burst's records over the time the healthy receivers took to get all their events:
            # the records a second whose deliveries the worker keeps up with.
            rate = args.rate or round(0.6 * (sent - sent_before) / phases["burst"][2][0])
            if rate:
                phase(f"rate {rate} records/s", lambda: offered(rate), args.timeout)
            if args.trickle:
                phase("trickle", trickle, 60)
        finally:
            worker_cpu = cpu_seconds(worker.pid)
            web_cpu = cpu_seconds(server.pid, children=True) - cpu_before[0]
            own = resource.getrusage(resource.RUSAGE_SELF)
            own_cpu = own.ru_utime + own.ru_stime - cpu_before[1].ru_utime - cpu_before[1].ru_stime
            worker.terminate()
            worker.wait(timeout=30)
            log.close()
    shutil.rmtree(folder, ignore_errors=True)

    for name, (events, written, (healthy_s, all_s), arrived) in phases.items():
        latencies = [r.arrived[i] for r, ids in zip(receivers, arrived) for i in ids]
        healthy = [r.arrived[i] for r, ids in zip(receivers[:-1], arrived[:-1]) for i in ids]
        delivered, expected = len(latencies), events * len(receivers)
        print(f"{name}: {events} events written at {events / written:,.0f}/s -> {delivered} of {expected} deliveries; "
              f"the healthy receivers had all theirs {healthy_s:.1f} s after the first write "
              f"({len(healthy) / healthy_s:,.0f} deliveries/s), the flaky one {all_s:.1f} s (its retry schedule); "
              f"{'nothing lost' if delivered == expected else f'MISSING {expected - delivered}'}\n"
              f"    commit -> delivery: all p50 {ms(latencies, 0.5)}, p99 {ms(latencies, 0.99)}; "
              f"healthy receivers p50 {ms(healthy, 0.5)}, p99 {ms(healthy, 0.99)}, max {ms(healthy, 1.0)}")
    for n, receiver in enumerate(receivers):
        print(f"  receiver {n}: {len(receiver.arrived)} messages, {receiver.requests} requests, "
              f"{receiver.refused} refused on purpose, {receiver.bad} failed verification")
    print(f"  CPU seconds over the run: web {web_cpu:.0f}, worker {worker_cpu:.0f}, "
          f"this process (receivers, senders) {own_cpu:.0f}; {load()}")


def inbound(database_url, label, args):
    env = {"DATABASE_URL": database_url, "USE_MOCK": "1", "RATE_LIMIT": "1000000/minute", "LOG_LEVEL": "WARNING",
           "WEB_CONCURRENCY": "2", "WORKER": "external"}
    with web(env) as (server, base):
        tokens = requests.post(base + "/v1/auth/exchange", json={"subject_token": "x"}, timeout=5).json()
        headers = {"Authorization": f"Bearer {tokens['access_token']}"}
        connector = requests.post(base + "/v1/connectors", headers=headers, timeout=5,
                                  json={"type": "custom_api", "display_name": f"bench {time.time()}"}).json()
        url, secret = connector["inbound_url"], connector["secret"]
        url = base + url[url.index("/v1/"):]
        run = f"in{int(time.time())}"

        def deliver(kind_number, due=None):
            kind, n = kind_number
            if kind == "resolve":
                body = {"resolved_external_ids": [f"{run}-{n}"]}
            else:
                body = {"title": f"Checkout failed: payment gateway timeout after 30s (order {n})",
                        "body": "requests.exceptions.ReadTimeout: HTTPSConnectionPool(host='pay.example', "
                                "port=443): Read timed out.", "external_id": f"{run}-{n}", "severity": "high"}
            raw = json.dumps(body).encode()
            signed = {"Content-Type": "application/json", "Connection": "close",
                      "x-causeloop-signature": custom_api.sign(secret, raw, int(time.time())),
                      "Idempotency-Key": f"{run}-{kind if kind == 'resolve' else 'new'}-{n}"}
            started = time.perf_counter() if due is None else due  # open loop: from when it was due
            response = requests.post(url, data=raw, headers=signed, timeout=60)
            elapsed = time.perf_counter() - started
            want = {"accepted": 202, "resolve": 202, "duplicate": 200}[kind]
            return elapsed, response.status_code == want, response.status_code

        print(f"inbound on {label}: {args.inbound} deliveries of each kind, {args.inbound_clients} concurrent "
              f"senders, a new connection each, gunicorn 2 workers; {load()}")
        def report(label, results, elapsed, cpu):
            latencies = [seconds for seconds, _, _ in results]
            wrong = [status for _, ok, status in results if not ok]
            print(f"  {label:27} {len(results) / elapsed:6,.0f} deliveries/s, p50 {ms(latencies, 0.5)}, "
                  f"p99 {ms(latencies, 0.99)}; server CPU {(cpu_seconds(server.pid, children=True) - cpu) / len(results) * 1000:.1f} ms "
                  f"a delivery{f'; UNEXPECTED statuses {sorted(set(wrong))} x{len(wrong)}' if wrong else ''}; {load()}",
                  flush=True)

        # Each kind twice: closed loop (the senders at once, each sending again as soon as answered:
        # throughput, and latency mostly as time queued), then open loop at half that throughput,
        # deliveries due at even intervals whatever the answers (latency at a stated load, from
        # when each was due). The open loop's deliveries are numbered after the closed loop's.
        capacity = {}
        for kind in ("accepted", "resolve", "duplicate"):
            cpu, started = cpu_seconds(server.pid, children=True), time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(args.inbound_clients) as pool:
                results = list(pool.map(deliver, [(kind, n) for n in range(args.inbound)]))
            elapsed = time.perf_counter() - started
            capacity[kind] = len(results) / elapsed
            report(f"{kind}, {args.inbound_clients} senders at once", results, elapsed, cpu)

            rate, count = capacity[kind] / 2, args.inbound // 2
            cpu, futures = cpu_seconds(server.pid, children=True), []
            with concurrent.futures.ThreadPoolExecutor(64) as pool:
                started = time.perf_counter()
                for i in range(count):
                    due = started + i / rate
                    time.sleep(max(0.0, due - time.perf_counter()))
                    futures.append(pool.submit(deliver, (kind, args.inbound + i), due))
                results = [future.result() for future in futures]
            report(f"{kind}, offered {rate:,.0f}/s", results, time.perf_counter() - started, cpu)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--endpoints", type=int, default=5)
    parser.add_argument("--threads", type=int, default=8, help="the worker's threads (WORKER_THREADS)")
    parser.add_argument("--flaky", type=float, default=0.2, help="share of requests the last receiver fails")
    parser.add_argument("--retry-scale", type=float, default=0.002)
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for a phase's deliveries")
    parser.add_argument("--rate", type=int, default=0,
                        help="records/s offered in the rate phase (default: 60 %% of the burst's delivery throughput)")
    parser.add_argument("--trickle", type=int, default=50, help="single writes after the burst, for idle latency")
    parser.add_argument("--inbound", type=int, default=1000, help="inbound deliveries of each kind")
    parser.add_argument("--inbound-clients", type=int, default=8)
    parser.add_argument("--inbound-databases", default="sqlite,postgres")
    parser.add_argument("--skip-outbound", action="store_true")
    parser.add_argument("--skip-inbound", action="store_true")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs")
    if not args.skip_outbound:
        outbound(args)
    if not args.skip_inbound:
        work = tempfile.mkdtemp(prefix="causeloop-bench-inbound-")
        try:
            if "sqlite" in args.inbound_databases:
                inbound(f"sqlite:///{work}/inbound.db", "SQLite", args)
            if "postgres" in args.inbound_databases:
                with postgres() as url:
                    inbound(url, "PostgreSQL", args)
        finally:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
