"""The Procfile's web command serves the app under gunicorn (a real process on loopback)."""
import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest
import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.live


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def procfile_command(process):
    with open(os.path.join(ROOT, "Procfile")) as handle:
        for line in handle:
            name, _, command = line.partition(":")
            if name.strip() == process:
                return shlex.split(command.strip())
    raise AssertionError(f"no {process}: process in the Procfile")


def run_procfile_web(env, timeout=30):
    """Start the Procfile's web process; its output goes to a file (a pipe nobody reads would
    fill up and stall the server)."""
    command = procfile_command("web")
    command[0] = os.path.join(os.path.dirname(sys.executable), command[0])
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    proc.log = log
    base = f"http://127.0.0.1:{env['PORT']}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise AssertionError(log.read().decode())
        try:
            requests.get(base + "/health", timeout=1)
            return proc, base
        except (requests.ConnectionError, requests.Timeout):  # not listening, or workers still warming up
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("gunicorn did not answer in time")


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.log.close()


@contextlib.contextmanager
def mock_server(tmp_path, **env):
    """The Procfile's web process in mock mode on the suite's database (the PostgreSQL server in
    that pass, else a SQLite file); yields (base URL, the seed owner's headers, the process)."""
    from conftest import ON_POSTGRES, TEST_DATABASE_URL

    env = {**os.environ, "PORT": str(free_port()), "USE_MOCK": "1", "RATE_LIMIT": "100000/minute",
           "DATABASE_URL": TEST_DATABASE_URL if ON_POSTGRES else f"sqlite:///{tmp_path / 'live.db'}", **env}
    proc, base = run_procfile_web(env)
    try:
        tokens = requests.post(base + "/v1/auth/exchange", json={"subject_token": "x"}, timeout=5).json()
        yield base, {"Authorization": f"Bearer {tokens['access_token']}"}, proc
    finally:
        stop(proc)


@pytest.fixture
def server(tmp_path):
    env = {**os.environ, "PORT": str(free_port()), "USE_MOCK": "1",
           "DATABASE_URL": f"sqlite:///{tmp_path / 'live.db'}"}
    proc, base = run_procfile_web(env)
    yield base
    stop(proc)


def test_procfile_web_serves_health(server):
    response = requests.get(server + "/health", timeout=5)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert requests.get(server + "/ready", timeout=5).status_code == 200


def test_quickstart_over_real_http(server):
    tokens = requests.post(server + "/v1/auth/exchange", json={"subject_token": "<your_clerk_session_jwt>"},
                           timeout=5).json()
    headers = {"Authorization": f"Bearer {tokens['access_token']} "}  # the walkthrough's trailing space
    listing = requests.get(server + "/v1/issues", headers=headers, timeout=5).json()
    assert listing["data"][0]["id"] == "iss_01abc123" and listing["page"]["total"] == 87
    pattern = requests.get(server + "/v1/patterns/pat_01xyz789", headers=headers, timeout=5).json()
    assert pattern["issue_count"] == 14
    created = requests.post(server + "/v1/issues", headers=headers, json={"title": "Live"}, timeout=5)
    assert created.status_code == 201
    listing = requests.get(server + "/v1/issues", headers=headers, timeout=5).json()
    assert listing["data"][0]["id"] == created.json()["id"] and listing["page"]["total"] == 88
