"""Outbound webhooks under load: 10,000 events fanned out to 5 receivers on loopback.

The Procfile's web process (WORKER=external) and its worker process on a SQLite file; five
threaded receivers verifying every message with standardwebhooks, one of them failing a share
of its requests (`--flaky`, default 20 %) with retries scaled down (`--retry-scale`). Events
come from `/v1/ingest/batch` (each record: an issue.created, plus the pattern events it causes).
Prints deliveries/s, commit → delivery p50/p99 (the outbox event's commit time to the receiver
verifying it: one clock) for the burst (mostly time queued behind it) and for single writes
afterwards, and whether every receiver got every event of the burst. Asserts nothing.

    .venv/bin/python bench/webhooks.py [--events 10000] [--endpoints 5] [--threads 16]
"""
import argparse
import contextlib
import datetime
import http.server
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

import requests
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from servers import ROOT, web

SEED_WORKSPACE = "ws_01abc123"


class Receiver:
    def __init__(self, fail_share, seed):
        self.secret, self.fail_share, self.random = None, fail_share, random.Random(seed)
        self.lock = threading.Lock()
        self.arrived = {}  # webhook-id -> seconds from commit to verified arrival (first arrival)
        self.requests = self.refused = self.bad = 0
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

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


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def outbox_count(database):
    with contextlib.closing(sqlite3.connect(database)) as connection:
        return connection.execute("SELECT count(*) FROM event WHERE workspace_id = ?", (SEED_WORKSPACE,)).fetchone()[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--endpoints", type=int, default=5)
    parser.add_argument("--threads", type=int, default=16, help="the worker's delivery threads")
    parser.add_argument("--flaky", type=float, default=0.2, help="share of requests the last receiver fails")
    parser.add_argument("--retry-scale", type=float, default=0.002)
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for every delivery")
    parser.add_argument("--trickle", type=int, default=50, help="single writes after the burst, for idle latency")
    args = parser.parse_args()

    folder = tempfile.mkdtemp(prefix="causeloop-bench-webhooks-")
    database = os.path.join(folder, "bench.db")
    env = {"USE_MOCK": "1", "RATE_LIMIT": "1000000/minute", "DATABASE_URL": f"sqlite:///{database}",
           "WORKER": "external", "WORKER_THREADS": str(args.threads), "WEBHOOKS_ALLOW_INSECURE": "1",
           "WEBHOOK_RETRY_SCALE": str(args.retry_scale), "WEBHOOK_SWEEP_S": "1", "LOG_LEVEL": "WARNING"}
    receivers = [Receiver(args.flaky if n == args.endpoints - 1 else 0.0, n) for n in range(args.endpoints)]
    with web(env) as (_, base):
        tokens = requests.post(base + "/v1/auth/exchange", json={"subject_token": "x"}, timeout=5).json()
        headers = {"Authorization": f"Bearer {tokens['access_token']}"}
        for receiver in receivers:
            created = requests.post(base + "/v1/webhooks", headers=headers, timeout=5,
                                    json={"url": receiver.url, "events": ["*"]}).json()
            receiver.secret = created["secret"]
        before = outbox_count(database)
        log = tempfile.TemporaryFile()
        worker = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "flask"), "--app", "wsgi", "worker"],
                                  cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
        try:
            started = time.perf_counter()
            sent = 0
            while outbox_count(database) - before < args.events:
                records = [{"title": f"Bench failure {sent + n} in checkout-{n % 37}", "source": "bench",
                            "external_id": f"bench-{sent + n}", "severity": "medium"} for n in range(200)]
                response = requests.post(base + "/v1/ingest/batch", headers=headers, json={"records": records},
                                         timeout=60)
                response.raise_for_status()
                sent += len(records)
            written = time.perf_counter() - started
            events = outbox_count(database) - before
            expected = events * len(receivers)
            deadline = time.monotonic() + args.timeout
            while time.monotonic() < deadline and sum(len(r.arrived) for r in receivers) < expected:
                time.sleep(0.2)
            elapsed = time.perf_counter() - started
            # Then at a trickle, with no backlog: one issue every 200 ms.
            burst_ids = [set(r.arrived) for r in receivers]
            for n in range(args.trickle):
                requests.post(base + "/v1/issues", headers=headers, json={"title": f"Trickle {n}"}, timeout=10)
                time.sleep(0.2)
            trickle_events = outbox_count(database) - before - events
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and \
                    sum(len(r.arrived) for r in receivers) < (events + trickle_events) * len(receivers):
                time.sleep(0.2)
        finally:
            worker.terminate()
            worker.wait(timeout=30)
            log.close()

    trickle = [latency for r, seen in zip(receivers[:-1], burst_ids) for message_id, latency in r.arrived.items()
               if message_id not in seen]
    for r, seen in zip(receivers, burst_ids):
        r.arrived = {message_id: latency for message_id, latency in r.arrived.items() if message_id in seen}
    delivered = sum(len(r.arrived) for r in receivers)
    latencies = [latency for r in receivers for latency in r.arrived.values()]
    steady = [latency for r in receivers[:-1] for latency in r.arrived.values()]
    print(f"events: {events} in {written:.1f} s through /v1/ingest/batch ({sent} records); "
          f"{len(receivers)} endpoints, worker threads {args.threads}, retry scale {args.retry_scale}")
    print(f"delivered: {delivered} of {expected} in {elapsed:.1f} s from the first write: "
          f"{delivered / elapsed:,.0f} deliveries/s")
    print(f"commit -> delivery: p50 {percentile(latencies, 0.5) * 1000:,.0f} ms, "
          f"p99 {percentile(latencies, 0.99) * 1000:,.0f} ms "
          f"(healthy receivers only: p50 {percentile(steady, 0.5) * 1000:,.0f} ms, "
          f"p99 {percentile(steady, 0.99) * 1000:,.0f} ms)")
    print(f"at a trickle afterwards ({trickle_events} events, one write per 200 ms, healthy receivers): "
          f"p50 {percentile(trickle, 0.5) * 1000:,.0f} ms, p99 {percentile(trickle, 0.99) * 1000:,.0f} ms")
    for n, receiver in enumerate(receivers):
        print(f"  receiver {n}: {len(receiver.arrived)} of {events} events, {receiver.requests} requests, "
              f"{receiver.refused} refused on purpose, {receiver.bad} failed verification")
    print("nothing lost" if delivered == expected else f"MISSING: {expected - delivered}")


if __name__ == "__main__":
    main()
