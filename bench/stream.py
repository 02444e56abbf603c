"""Live-stream fan-out: 200 subscribers on one workspace, held by ONE gunicorn worker on
PostgreSQL (LISTEN/NOTIFY bus); writes go through the HTTP API while they listen.

    .venv/bin/python bench/stream.py [--subscribers 200] [--writes 200] [--rate 20]

Prints delivery latency (commit -> frame received, from the event's `ts`, which is stamped
just before commit), how many sockets the worker holds, and plain HTTP latency meanwhile.
Needs the `bench` extra (aiohttp).
"""
import argparse
import asyncio
import datetime
import json
import time

import aiohttp
import requests

from servers import postgres, web


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))] if values else float("nan")


def parse_ts(ts):
    return datetime.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


async def subscriber(session, url, ready, latencies, expected, done):
    async with session.ws_connect(url, heartbeat=None, max_msg_size=0) as ws:
        first = await ws.receive_json()
        assert first["type"] == "connected", first
        ready.append(1)
        seen = 0
        async for message in ws:
            frame = json.loads(message.data)
            if frame["type"] == "issue.updated":
                latencies.append((time.time() - parse_ts(frame["ts"])) * 1000)
                seen += 1
                if seen == expected:
                    break
    done.append(seen)


async def run(base, token, args):
    ws_url = f"{base.replace('http', 'ws')}/v1/stream?token={token}&workspace=ws_01abc123"
    headers = {"Authorization": f"Bearer {token}"}
    latencies, ready, done, http_ms = [], [], [], []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = [asyncio.create_task(subscriber(session, ws_url, ready, latencies, args.writes, done))
                 for _ in range(args.subscribers)]
        deadline = time.monotonic() + 60
        while len(ready) < args.subscribers and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        held = len(ready)
        for n in range(args.writes):
            started = time.perf_counter()
            async with session.patch(f"{base}/v1/issues/iss_01abc123", headers=headers,
                                     json={"title": f"stream bench {n}"}) as response:
                assert response.status == 200, await response.text()
            async with session.get(f"{base}/v1/issues?limit=25", headers=headers) as response:
                assert response.status == 200
                await response.read()
            http_ms.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(1 / args.rate)
        try:
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
        except asyncio.TimeoutError:
            pass
    return held, latencies, done, http_ms


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--writes", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20, help="writes per second")
    args = parser.parse_args()

    threads = args.subscribers + 40
    with postgres() as url:
        with web({"DATABASE_URL": url, "USE_MOCK": "1", "WEB_CONCURRENCY": "1", "GUNICORN_THREADS": str(threads),
                  "RATE_LIMIT": "1000000/minute", "LOG_LEVEL": "WARNING"}) as (_, base):
            token = requests.post(base + "/v1/auth/exchange", json={"subject_token": "bench"}, timeout=10).json()
            held, latencies, done, http_ms = asyncio.run(run(base, token["access_token"], args))

    expected = args.subscribers * args.writes
    print(f"stream fan-out on PostgreSQL, 1 gunicorn worker ({threads} threads)")
    print(f"sockets held by the worker: {held} of {args.subscribers}")
    print(f"writes: {args.writes} at ~{args.rate:g}/s; frames delivered: {len(latencies)} of {expected} "
          f"({sum(1 for n in done if n == args.writes)} subscribers got every event)")
    print(f"delivery latency commit->frame: p50 {percentile(latencies, 50):.1f} ms, "
          f"p99 {percentile(latencies, 99):.1f} ms, max {max(latencies or [float('nan')]):.1f} ms")
    print(f"HTTP meanwhile (PATCH + GET list per write): p50 {percentile(http_ms, 50):.1f} ms, "
          f"p99 {percentile(http_ms, 99):.1f} ms")


if __name__ == "__main__":
    main()
