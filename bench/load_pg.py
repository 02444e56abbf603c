"""Load on PostgreSQL: gunicorn (2 workers, the Procfile's settings), 64 concurrent clients,
a mix of list, get, create and patch; then proof that nothing was lost or doubled.

    .venv/bin/python bench/load_pg.py [--seconds 60] [--clients 64]

Starts its own throwaway PostgreSQL (.ci/postgres) and gunicorn on loopback, prints figures,
and stops both. Needs the `bench` extra (pip install -e '.[bench]').
"""
import argparse
import asyncio
import random
import sys
import time
import uuid

import aiohttp
import requests

from servers import postgres, web

MIX = [("list", 0.5), ("get", 0.2), ("create", 0.2), ("patch", 0.1)]


def percentile(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


class Load:
    def __init__(self, base, token, run_id):
        self.base, self.run_id = base, run_id
        self.headers = {"Authorization": f"Bearer {token}"}
        self.latencies = {op: [] for op, _ in MIX}
        self.statuses = {}
        self.created = []  # ids from 201 responses
        self.known = []
        self.counter = 0

    async def one(self, session, op):
        if op == "list":
            params = random.choice([{}, {"status": "open,in_progress"}, {"severity": "high,critical"},
                                    {"q": "timeout"}, {"sort": "-risk_score"}, {"limit": "100"}])
            request = session.get(self.base + "/v1/issues", params=params, headers=self.headers)
        elif op == "get":
            request = session.get(f"{self.base}/v1/issues/{random.choice(self.known)}", headers=self.headers)
        elif op == "create":
            self.counter += 1
            title = f"load-{self.run_id}-{self.counter}"
            request = session.post(self.base + "/v1/issues", headers=self.headers, json={
                "title": title, "severity": random.choice(["low", "medium", "high"]),
                "pattern_id": random.choice(["pat_01xyz789", "pat_01xyz790", None])})
        else:
            request = session.patch(f"{self.base}/v1/issues/{random.choice(self.known)}", headers=self.headers,
                                    json={"status": random.choice(["open", "in_progress", "resolved"])})
        started = time.perf_counter()
        async with request as response:
            body = await response.json()
        self.latencies[op].append((time.perf_counter() - started) * 1000)
        self.statuses[(op, response.status)] = self.statuses.get((op, response.status), 0) + 1
        if op == "create" and response.status == 201:
            self.created.append(body["id"])
            self.known.append(body["id"])

    async def client(self, session, deadline):
        ops, weights = zip(*MIX)
        while time.monotonic() < deadline:
            op = random.choices(ops, weights)[0]
            try:
                await self.one(session, op)
            except (aiohttp.ClientError, asyncio.TimeoutError) as error:
                key = (op, type(error).__name__)
                self.statuses[key] = self.statuses.get(key, 0) + 1

    async def run(self, clients, seconds):
        connector = aiohttp.TCPConnector(limit=clients)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            async with session.get(self.base + "/v1/issues?limit=100", headers=self.headers) as response:
                self.known = [item["id"] for item in (await response.json())["data"]]
            deadline = time.monotonic() + seconds
            await asyncio.gather(*(self.client(session, deadline) for _ in range(clients)))


def stored_titles(database_url, run_id):
    """(id, title) of every issue this run created, read straight from PostgreSQL."""
    import psycopg

    with psycopg.connect(database_url) as connection:
        return connection.execute("SELECT id, title FROM issue WHERE title LIKE %s",
                                  (f"load-{run_id}-%",)).fetchall()


def counters_exact(database_url):
    import psycopg

    with psycopg.connect(database_url) as connection:
        return connection.execute("""
            SELECT count(*) FROM pattern p WHERE p.issue_count <> (SELECT count(*) FROM issue i WHERE i.pattern_id = p.id)
               OR p.last_seen_at IS DISTINCT FROM (SELECT max(created_at) FROM issue i WHERE i.pattern_id = p.id)
        """).fetchone()[0] == 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--clients", type=int, default=64)
    args = parser.parse_args()

    with postgres() as url:
        with web({"DATABASE_URL": url, "USE_MOCK": "1", "WEB_CONCURRENCY": "2", "LOG_LEVEL": "WARNING",
                  "RATE_LIMIT": "1000000/minute"}) as (proc, base):
            token = requests.post(base + "/v1/auth/exchange", json={"subject_token": "bench"}, timeout=10).json()
            load = Load(base, token["access_token"], uuid.uuid4().hex[:8])
            started = time.monotonic()
            asyncio.run(load.run(args.clients, args.seconds))
            elapsed = time.monotonic() - started
            proc.log.seek(0)
            server_log = proc.log.read().decode(errors="replace")
        stored = stored_titles(url, load.run_id)
        exact = counters_exact(url)

    every = [ms for values in load.latencies.values() for ms in values]
    print(f"PostgreSQL load: gunicorn 2 workers x gthread, {args.clients} clients, {elapsed:.0f} s")
    print(f"{'op':8} {'requests':>9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for op, _ in MIX + [("all", 0)]:
        values = every if op == "all" else load.latencies[op]
        print(f"{op:8} {len(values):9d} {len(values) / elapsed:8.1f} {percentile(values, 50):8.1f} "
              f"{percentile(values, 99):8.1f}")
    print("responses:", ", ".join(f"{op} {status}: {n}" for (op, status), n in sorted(load.statuses.items(),
                                                                                    key=str)))
    errors = {key: n for key, n in load.statuses.items() if not (isinstance(key[1], int) and key[1] < 400)}
    ids = [row[0] for row in stored]
    lost = set(load.created) - set(ids)
    unacknowledged = set(ids) - set(load.created)
    print(f"error responses: {sum(errors.values())} {errors or ''}")
    print(f"201s received: {len(load.created)}; stored rows for this run: {len(ids)}; "
          f"lost: {len(lost)}; stored without a 201: {len(unacknowledged)}; "
          f"duplicate ids: {len(ids) - len(set(ids))}")
    print(f"pattern counters exact after the run: {exact}")
    ok = not errors and not lost and not unacknowledged and len(ids) == len(set(ids)) and exact
    if not ok:
        lines = server_log.splitlines()
        marks = [n for n, line in enumerate(lines) if " ERROR " in line or " WARNING " in line]
        print("server log around the last warnings/errors:",
              *[line for n in marks[-3:] for line in lines[n:n + 25]], sep="\n  ")
    print("VERDICT:", "nothing lost, nothing doubled, no errors" if ok else "PROBLEMS (see above)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
