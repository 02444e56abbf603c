"""Production on PostgreSQL: release then web from an empty database, migrations on top,
and riding out a database outage. Each test runs its own throwaway PostgreSQL server."""
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import pytest
import requests

from conftest import ON_POSTGRES
from test_server import ROOT, free_port, procfile_command, run_procfile_web, stop

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(not ON_POSTGRES, reason="runs in the PostgreSQL pass of the suite"),
]
SECRET = "postgres-suite-secret-0123456789-abcdefghijklmnop"


class Cluster:
    def __init__(self, folder):
        self.folder = str(folder)
        self.url = None

    def start(self):
        self.url = subprocess.run(["bash", ".ci/postgres", "start", self.folder], cwd=ROOT, check=True,
                                  capture_output=True, text=True).stdout.strip()
        return self.url

    def stop(self):
        subprocess.run(["bash", ".ci/postgres", "stop", self.folder], cwd=ROOT, check=True)

    def restart(self):
        """Start the same data folder again, on the same port."""
        port = self.url.rsplit(":", 1)[1].split("/")[0]
        owner = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
        pg_ctl = os.path.join(os.path.dirname(os.path.realpath(shutil.which("initdb"))), "pg_ctl")
        subprocess.run(owner + [pg_ctl, "-D", f"{self.folder}/data", "-l", f"{self.folder}/server.log", "-w",
                                "-o", f"-c listen_addresses=127.0.0.1 -p {port} -k {self.folder}", "start"],
                       check=True, capture_output=True)


@pytest.fixture
def cluster():
    # Not under pytest's tmp_path: its parents are private to root, and the server runs as postgres.
    folder = tempfile.mkdtemp(prefix="causeloop-pg-")
    cluster = Cluster(folder)
    cluster.start()
    yield cluster
    cluster.stop()
    shutil.rmtree(folder, ignore_errors=True)


def procfile_env(url, **extra):
    env = {k: v for k, v in os.environ.items() if k != "USE_MOCK"}
    return {**env, "DATABASE_URL": url, "JWT_SECRET": SECRET, "PORT": str(free_port()), **extra}


def run_release(env):
    command = procfile_command("release")
    command[0] = os.path.join(os.path.dirname(sys.executable), command[0])
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_release_then_web_from_an_empty_database(cluster):
    env = procfile_env(cluster.url)
    first = run_release(env)
    assert first.returncode == 0, first.stderr
    assert "applied: 0001_initial" in first.stdout
    again = run_release(env)
    assert again.returncode == 0 and "schema is up to date" in again.stdout
    proc, base = run_procfile_web(env)
    try:
        assert requests.get(base + "/ready", timeout=5).status_code == 200
        response = requests.get(base + "/v1/issues", timeout=5)
        assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"
    finally:
        stop(proc)


def test_a_new_migration_applies_on_top(cluster, tmp_path):
    from models import db, make_database, schema

    directory = tmp_path / "migrations"
    shutil.copytree(schema.MIGRATIONS_DIR, directory)
    db.initialize(make_database(cluster.url, pool_size=2))
    assert schema.migrate(str(directory))
    (directory / "0099_add_issue_component.py").write_text(
        "from peewee import CharField\n\n"
        "def up(migrator, db):\n"
        "    migrator.migrate(migrator.add_column('issue', 'component', CharField(null=True)))\n")
    assert schema.migrate(str(directory)) == ["0099_add_issue_component"]
    with db.connection_context():
        assert "component" in {column.name for column in db.get_columns("issue")}
    assert schema.migrate(str(directory)) == []
    db.obj.close_all()


def test_outage_gives_503_then_service_resumes_by_itself(cluster):
    env = procfile_env(cluster.url, USE_MOCK="1")
    proc, base = run_procfile_web(env)
    try:
        token = requests.post(base + "/v1/auth/exchange", json={"subject_token": "x"}, timeout=5).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        assert requests.get(base + "/v1/issues", headers=headers, timeout=5).status_code == 200

        statuses, stop_flag = [], threading.Event()

        def traffic():
            while not stop_flag.is_set():
                try:
                    statuses.append(requests.get(base + "/v1/issues", headers=headers, timeout=10).status_code)
                except requests.RequestException as error:
                    statuses.append(type(error).__name__)
                time.sleep(0.02)

        worker = threading.Thread(target=traffic)
        worker.start()
        time.sleep(0.5)
        cluster.stop()
        time.sleep(1.5)
        started = time.monotonic()
        down = requests.get(base + "/v1/issues", headers=headers, timeout=10)
        assert time.monotonic() - started < 6
        assert down.status_code == 503
        assert down.json()["error"]["code"] == "service_unavailable"
        assert down.json()["error"]["trace_id"] == down.headers["X-Request-Id"]
        assert requests.get(base + "/ready", timeout=10).status_code == 503
        cluster.restart()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if requests.get(base + "/v1/issues", headers=headers, timeout=10).status_code == 200:
                break
            time.sleep(0.2)
        stop_flag.set()
        worker.join(timeout=15)
        assert requests.get(base + "/v1/issues", headers=headers, timeout=5).status_code == 200
        assert requests.get(base + "/ready", timeout=5).status_code == 200
        assert 503 in statuses
        assert set(statuses) <= {200, 503}, set(statuses)
    finally:
        stop(proc)


def test_concurrent_writes_on_two_workers_are_all_stored(cluster):
    """Workers forked from a master that did start-up DB work must not share a connection."""
    import concurrent.futures

    import psycopg

    env = procfile_env(cluster.url, USE_MOCK="1", WEB_CONCURRENCY="2")
    proc, base = run_procfile_web(env)
    try:
        token = requests.post(base + "/v1/auth/exchange", json={"subject_token": "x"}, timeout=5).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}

        def create(n):
            response = requests.post(base + "/v1/issues", headers=headers, timeout=30,
                                     json={"title": f"concurrent-{n}", "pattern_id": "pat_01xyz789"})
            return response.status_code, response.json().get("id")

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            results = list(pool.map(create, range(200)))
    finally:
        stop(proc)
    assert {status for status, _ in results} == {201}
    with psycopg.connect(cluster.url) as connection:
        stored = {row[0] for row in connection.execute("SELECT id FROM issue WHERE title LIKE 'concurrent-%'")}
        count = connection.execute("SELECT issue_count FROM pattern WHERE id = 'pat_01xyz789'").fetchone()[0]
    assert stored == {issue_id for _, issue_id in results}
    assert count == 14 + 200


def test_stream_on_one_worker_receives_writes_handled_by_the_other(cluster):
    import json
    import re

    from simple_websocket import Client

    env = procfile_env(cluster.url, USE_MOCK="1", WEB_CONCURRENCY="2")
    proc, base = run_procfile_web(env)

    def server_log():
        proc.log.seek(0)
        return proc.log.read().decode(errors="replace")

    try:
        token = requests.post(base + "/v1/auth/exchange", json={"subject_token": "x"}, timeout=5).json()["access_token"]
        ws = Client.connect(f"{base.replace('http', 'ws')}/v1/stream?token={token}&workspace=ws_01abc123")
        assert json.loads(ws.receive(timeout=5))["type"] == "connected"
        stream_pid = re.search(r"pid=(\d+) stream.open", server_log()).group(1)
        other = None
        for n in range(200):
            request_id = f"cross-worker-{n}"
            response = requests.post(base + "/v1/issues", timeout=5, json={"title": request_id},
                                     headers={"Authorization": f"Bearer {token}", "X-Request-Id": request_id})
            assert response.status_code == 201
            handled_by = re.search(rf"pid=(\d+) method=POST path=/v1/issues status=201 .* request_id={request_id}$",
                                   server_log(), re.M).group(1)
            if handled_by != stream_pid:
                other = response.json()
                break
        assert other is not None, "every write landed on the stream's own worker"
        deadline = time.monotonic() + 5
        titles = []
        while time.monotonic() < deadline and other["title"] not in titles:
            frame = json.loads(ws.receive(timeout=5) or "{}")
            if frame.get("type") == "issue.created":
                titles.append(frame["payload"]["issue"]["title"])
        assert other["title"] in titles
        ws.close()
    finally:
        stop(proc)
